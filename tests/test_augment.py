"""Data augmentation: exact identities, integer shifts, rotations by 90 degrees, and
training with it."""

import functools

import numpy as np
import pytest

from cnn.augment import (
    affine_transform,
    augment_batch,
    bilinear_sample,
    elastic_distortion,
    random_affine,
    train_with_augmentation,
)
from cnn.layers import Flatten, FullyConnectedLayer
from cnn.model import Sequential


def _images(shape=(4, 1, 6, 6), seed=0, dtype=np.float32):
    return np.random.default_rng(seed).random(shape).astype(dtype)


@pytest.mark.parametrize("shape", [(3, 6, 7), (3, 1, 6, 7), (2, 3, 5, 5)])
def test_zero_rotation_and_shift_is_the_identity(shape):
    X = _images(shape)
    np.testing.assert_array_equal(affine_transform(X, 0.0, (0.0, 0.0)), X)
    np.testing.assert_array_equal(random_affine(X, 0, max_rotation=0, max_shift=0), X)


def test_integer_shift_moves_pixels_exactly():
    X = _images((2, 1, 6, 7))
    out = affine_transform(X, 0.0, (2, -1))  # 2 pixels down, 1 pixel left
    expected = np.zeros_like(X)
    expected[:, :, 2:, :-1] = X[:, :, :-2, 1:]
    np.testing.assert_array_equal(out, expected)
    # Per-image shifts: each image moves by its own amount.
    out = affine_transform(X, 0.0, np.array([[0, 1], [-3, 0]]))
    np.testing.assert_array_equal(out[0, :, :, 1:], X[0, :, :, :-1])
    np.testing.assert_array_equal(out[1, :, :-3], X[1, :, 3:])
    assert not out[0, :, :, 0].any() and not out[1, :, -3:].any()  # filled with 0


@pytest.mark.parametrize("size", [4, 5])
def test_rotation_by_90_degrees_is_rot90(size):
    """Positive angles turn the picture counter-clockwise as plt.imshow shows it, like
    np.rot90."""
    # asymmetric pictures
    X = np.arange(2 * size * size, dtype=np.float64).reshape(2, size, size)
    np.testing.assert_allclose(
        affine_transform(X, 90.0), np.rot90(X, k=1, axes=(1, 2)), atol=1e-9
    )
    np.testing.assert_allclose(
        affine_transform(X, -90.0), np.rot90(X, k=-1, axes=(1, 2)), atol=1e-9
    )
    np.testing.assert_allclose(
        affine_transform(X, 180.0), np.rot90(X, k=2, axes=(1, 2)), atol=1e-9
    )


def test_half_pixel_shift_interpolates_bilinearly():
    X = np.array([[[0.0, 2.0, 4.0], [6.0, 8.0, 10.0]]])
    # each pixel reads half-way to its left neighbour
    out = affine_transform(X, 0.0, (0.0, 0.5))
    np.testing.assert_allclose(out, [[[0.0, 1.0, 3.0], [3.0, 7.0, 9.0]]])
    # bilinear_sample reads between four pixels with the product weights.
    value = bilinear_sample(X[:, None], np.array([[[0.5]]]), np.array([[[0.25]]]))
    np.testing.assert_allclose(value, [[[[0.5 * (0.5 + 6.5)]]]])


@pytest.mark.parametrize(
    "function",
    [
        random_affine,
        elastic_distortion,
        augment_batch,
        functools.partial(augment_batch, max_scale=0.1, elastic_alpha=34),
    ],
)
def test_shape_dtype_and_reproducibility(function):
    for shape, dtype in [((5, 1, 28, 28), np.float32), ((3, 10, 12), np.float64)]:
        X = _images(shape, dtype=dtype)
        out = function(X, np.random.default_rng(42))
        assert out.shape == X.shape and out.dtype == X.dtype
        # same seed, same output
        np.testing.assert_array_equal(out, function(X, np.random.default_rng(42)))
        assert not np.array_equal(out, function(X, np.random.default_rng(43)))
        assert not np.array_equal(out, X)
        # interpolation stays within the pixel range
        assert out.min() >= 0 and out.max() <= 1 + 1e-6


def test_each_image_gets_its_own_transformation():
    X = np.repeat(_images((1, 1, 8, 8)), 4, axis=0)
    out = random_affine(X, 0)
    assert len({out[i].tobytes() for i in range(4)}) == 4


def test_elastic_distortion_with_zero_strength_is_the_identity():
    X = _images((2, 1, 9, 9), dtype=np.float64)
    np.testing.assert_allclose(elastic_distortion(X, 0, alpha=0.0), X)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"\(N, H, W\) or \(N, C, H, W\)"):
        random_affine(np.zeros((28, 28), np.float32), 0)
    with pytest.raises(TypeError, match="floating-point"):
        random_affine(np.zeros((2, 28, 28), np.uint8), 0)
    with pytest.raises(ValueError, match="max_rotation"):
        random_affine(np.zeros((2, 28, 28), np.float32), 0, max_rotation=-1)
    with pytest.raises(ValueError, match="max_scale"):
        random_affine(np.zeros((2, 28, 28), np.float32), 0, max_scale=1.5)


def _tiny_model(seed=0):
    rng = np.random.default_rng(seed)
    return Sequential(
        [Flatten(), FullyConnectedLayer(36, 3, rng=rng)],
        learning_rate=0.5,
        lr_decay=0.5,
        seed=seed,
        input_shape=(1, 6, 6),
        num_classes=3,
    )


def test_train_with_augmentation_matches_train_without_augmentation():
    X = _images((40, 1, 6, 6))
    y = np.random.default_rng(1).integers(0, 3, 40)
    expected = _tiny_model().train(
        X, y, epochs=2, batch_size=16, validation_data=(X, y), verbose=0
    )
    history = train_with_augmentation(
        _tiny_model(),
        X,
        y,
        epochs=2,
        batch_size=16,
        augment=None,
        validation_data=(X, y),
        verbose=0,
    )
    assert history.keys() == expected.keys()
    for key in ("loss", "accuracy", "learning_rate", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(history[key], expected[key], rtol=1e-6)


def test_train_with_augmentation_learns_and_is_reproducible(capsys):
    # Classes: a bright blob in the left, middle or right of a 6x6 image; shifts keep
    # them recognisable.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    X = rng.random((90, 1, 6, 6)).astype(np.float32) * 0.1
    for i, label in enumerate(y):
        X[i, 0, 2:4, 2 * label : 2 * label + 2] += 1
    X_copy = X.copy()
    runs = [
        train_with_augmentation(
            _tiny_model(),
            X,
            y,
            epochs=3,
            batch_size=10,
            augment=functools.partial(augment_batch, max_shift=0.5),
            verbose=1,
        )
        for _ in range(2)
    ]
    assert runs[0]["loss"] == runs[1]["loss"]
    assert runs[0]["loss"][-1] < runs[0]["loss"][0]
    np.testing.assert_array_equal(X, X_copy)  # the training data are not changed
    assert "epoch 3/3" in capsys.readouterr().out
    with pytest.raises(TypeError, match="augment must be a function"):
        train_with_augmentation(_tiny_model(), X, y, epochs=1, augment="yes")
