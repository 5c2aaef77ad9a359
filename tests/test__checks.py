"""cnn._checks, the argument checks every layer, loss and loop shares: bad input gets a
clear exception naming the argument and what was expected, before any state changes.
Here for every layer (or every entry point) at once; the refusals particular to one
layer or function are in the tests of its module."""

import re

import numpy as np
import pytest
from conftest import assert_unchanged, images, snapshot

import cnn
from cnn import (
    ConvLayer,
    Dropout,
    Flatten,
    FullyConnectedLayer,
    MaxPoolLayer,
    Momentum,
    ReLU,
    SimpleCNN,
    cross_entropy_loss,
    evaluate,
)

# ---------------------------------------------------------------- constructor arguments

BAD_INTEGERS = [
    # (constructor, keyword arguments, exception, message regex)
    (
        ConvLayer,
        dict(num_filters=2, filter_size=3, num_channels=1, stride=0),
        ValueError,
        r"stride must be an integer >= 1; got 0",
    ),
    (
        ConvLayer,
        dict(num_filters=2, filter_size=3, num_channels=1, stride=-1),
        ValueError,
        r"stride must be an integer >= 1; got -1",
    ),
    (
        ConvLayer,
        dict(num_filters=2, filter_size=3, num_channels=1, stride=1.5),
        TypeError,
        r"stride must be an integer >= 1; got 1\.5",
    ),
    (
        ConvLayer,
        dict(num_filters=2, filter_size=3, num_channels=1, stride=True),
        TypeError,
        r"stride must be an integer >= 1; got True",
    ),
    (
        ConvLayer,
        dict(num_filters=2, filter_size=3, num_channels=1, padding=-1),
        ValueError,
        r"padding must be an integer >= 0; got -1",
    ),
    (
        ConvLayer,
        dict(num_filters=2, filter_size=3, num_channels=1, padding=1.5),
        TypeError,
        r"padding must be an integer >= 0; got 1\.5",
    ),
    (
        ConvLayer,
        dict(num_filters=2, filter_size=3, num_channels=1, padding=True),
        TypeError,
        r"padding must be an integer >= 0; got True",
    ),
    (
        ConvLayer,
        dict(num_filters=2, filter_size=2.5, num_channels=1),
        TypeError,
        r"filter_size.*must be an integer >= 1; got 2\.5",
    ),
    (
        ConvLayer,
        dict(num_filters=2, filter_size="3", num_channels=1),
        TypeError,
        r"filter_size.*must be an integer >= 1; got '3'",
    ),
    (
        ConvLayer,
        dict(num_filters=2, filter_size=0, num_channels=1),
        ValueError,
        r"filter_size.*must be an integer >= 1; got 0",
    ),
    (
        ConvLayer,
        dict(num_filters=0, filter_size=3, num_channels=1),
        ValueError,
        r"num_filters must be an integer >= 1; got 0",
    ),
    (
        ConvLayer,
        dict(num_filters=2, filter_size=3, num_channels=1.0),
        TypeError,
        r"num_channels must be an integer >= 1; got 1\.0",
    ),
    (
        MaxPoolLayer,
        dict(pool_size=0),
        ValueError,
        r"pool_size must be an integer >= 1; got 0",
    ),
    (
        MaxPoolLayer,
        dict(pool_size=2.0),
        TypeError,
        r"pool_size must be an integer >= 1; got 2\.0",
    ),
    (
        MaxPoolLayer,
        dict(pool_size=True),
        TypeError,
        r"pool_size must be an integer >= 1; got True",
    ),
    (
        MaxPoolLayer,
        dict(stride=0),
        ValueError,
        r"stride must be an integer >= 1; got 0",
    ),
    (
        MaxPoolLayer,
        dict(stride=-1),
        ValueError,
        r"stride must be an integer >= 1; got -1",
    ),
    (
        MaxPoolLayer,
        dict(stride=1.5),
        TypeError,
        r"stride must be an integer >= 1; got 1\.5",
    ),
    (
        MaxPoolLayer,
        dict(stride=True),
        TypeError,
        r"stride must be an integer >= 1; got True",
    ),
    (
        FullyConnectedLayer,
        dict(input_size=0, output_size=10),
        ValueError,
        r"input_size must be an integer >= 1",
    ),
    (
        FullyConnectedLayer,
        dict(input_size=4, output_size=2, learning_rate=-0.1),
        ValueError,
        r"learning_rate must be >= 0; got -0\.1",
    ),
    (Dropout, dict(rate=1.0), ValueError, r"rate must be in \[0, 1\); got 1\.0"),
    (Dropout, dict(rate=-0.2), ValueError, r"rate must be >= 0; got -0\.2"),
    (SimpleCNN, dict(learning_rate=0), ValueError, r"learning_rate must be > 0; got 0"),
    (
        SimpleCNN,
        dict(learning_rate=float("nan")),
        TypeError,
        r"learning_rate must be a finite real number; got nan",
    ),
    (
        SimpleCNN,
        dict(lr_decay=1.5),
        ValueError,
        r"lr_decay must be in \(0, 1\]; got 1\.5",
    ),
    (
        Momentum,
        dict(momentum=1.0),
        ValueError,
        r"momentum must be in \[0, 1\); got 1\.0",
    ),
]


@pytest.mark.parametrize(
    "make, kwargs, error, message",
    BAD_INTEGERS,
    ids=[f"{c.__name__}-{k}" for c, k, _, _ in BAD_INTEGERS],
)
def test_bad_constructor_arguments_are_refused_by_name(make, kwargs, error, message):
    """Stride, padding, sizes, rates: 0, -1, 1.5, True or '3' where an integer
    (or range) is expected."""
    with pytest.raises(error, match=message):
        make(**kwargs)


def test_numpy_integers_are_accepted_as_sizes():
    """np.int64 sizes are integers too (only bool is refused)."""
    layer = ConvLayer(
        np.int64(2), np.int64(3), np.int64(1), stride=np.int64(2), padding=np.int32(1)
    )
    assert layer.forward(np.zeros((1, 1, 5, 5), dtype=np.float32)).shape == (1, 2, 3, 3)


# ----------------------------------------------------------- input arrays (check_array)


LAYER_FORWARDS = {
    "ConvLayer": (lambda: ConvLayer(2, 3, 1, padding=1, rng=0), (2, 1, 5, 5)),
    "MaxPoolLayer": (lambda: MaxPoolLayer(2, 2), (2, 1, 4, 4)),
    "ReLU": (ReLU, (2, 3)),
    "Flatten": (Flatten, (2, 1, 2, 2)),
    "FullyConnectedLayer": (lambda: FullyConnectedLayer(3, 2, rng=0), (2, 3)),
    "Dropout": (lambda: Dropout(0.5, rng=0), (2, 3)),
}


@pytest.mark.parametrize("name", sorted(LAYER_FORWARDS))
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_input_is_refused(name, bad):
    """Every layer refuses NaN and infinite inputs, saying how many there are."""
    make, shape = LAYER_FORWARDS[name]
    X = np.ones(shape, dtype=np.float32)
    X.flat[1] = bad
    with pytest.raises(
        ValueError,
        match=rf"{name}\.forward: X contains 1 NaN or infinite value\(s\); "
        r"expected only finite numbers",
    ):
        make().forward(X)


def test_inside_a_model_layers_do_not_scan_again_but_the_model_does(rng):
    """A model checks its images for NaN once, at its edge; inside it (inside_model)
    the layers skip that scan, and the context is left as it was, so a layer called
    directly afterwards refuses NaN again."""
    from cnn._checks import inside_model

    X = np.ones((2, 3), dtype=np.float32)
    X[0, 1] = np.nan
    with inside_model():
        with inside_model():
            pass
        assert np.isnan(ReLU().forward(X)).any()  # not scanned here
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        ReLU().forward(X)
    model = cnn.SimpleCNN()
    images = rng.random((2, 1, 28, 28)).astype(np.float32)
    images[1, 0, 3, 4] = np.inf
    with pytest.raises(ValueError, match=r"predict: X contains 1 NaN or infinite"):
        model.predict(images)
    with pytest.raises(ValueError, match=r"forward: X contains 1 NaN or infinite"):
        model.forward(images)
    with pytest.raises(ValueError, match=r"train: X_train contains 1 NaN or infinite"):
        model.train(images, np.array([1, 2]), epochs=1, verbose=0)


@pytest.mark.parametrize("name", sorted(LAYER_FORWARDS))
def test_uint8_images_given_to_a_layer_are_refused(name):
    """Integer (uint8) images are refused with the conversion to use:
    astype('float32') / 255."""
    make, shape = LAYER_FORWARDS[name]
    with pytest.raises(
        TypeError,
        match=rf"{name}\.forward: X must be a floating-point array.*got dtype uint8.*"
        r"astype\('float32'\) / 255",
    ):
        make().forward(np.ones(shape, dtype=np.uint8))


@pytest.mark.parametrize("name", sorted(LAYER_FORWARDS))
def test_empty_batch_is_refused(name):
    """A batch of 0 images is refused, naming the shape."""
    make, shape = LAYER_FORWARDS[name]
    with pytest.raises(
        ValueError, match=rf"{name}\.forward: X must not be empty; got shape \(0,"
    ):
        make().forward(np.ones((0,) + shape[1:], dtype=np.float32))


# ---------------------------------------------------------------- labels (check_labels)


# the argument's name in train/evaluate/backward, and in cross_entropy_loss
LABEL = r"(: y|: y_train|: labels)"
BAD_LABELS = [
    (
        np.array([0.5, 1, 2, 3]),
        TypeError,
        LABEL + r" must hold integer class indices; got dtype float64",
    ),
    (
        np.array(["0", "1", "2", "3"]),
        TypeError,
        LABEL + r" must hold integer class indices; got dtype <U1",
    ),
    (
        np.array([0, 1, 10, 3]),
        ValueError,
        LABEL + r" must hold class indices in \[0, 9\]; got values from 0 to 10",
    ),
    (
        np.array([0, -1, 2, 3]),
        ValueError,
        LABEL + r" must hold class indices in \[0, 9\]; got values from -1 to 3",
    ),
    (
        np.eye(10)[[0, 1, 2, 3]],
        ValueError,
        LABEL + r" must be a 1-D array of class indices of shape \(N,\); got shape "
        r"\(4, 10\)",
    ),
    (
        np.array([0, 1, 2]),
        ValueError,
        r"y.* has 3 labels but there are 4 inputs; expected one label per input",
    ),
]


@pytest.mark.parametrize(
    "labels, error, message",
    BAD_LABELS,
    ids=["fractional", "strings", "too-large", "negative", "one-hot", "too-few"],
)
@pytest.mark.parametrize(
    "call", ["train", "evaluate", "backward", "cross_entropy_loss"]
)
def test_bad_labels_are_refused(call, labels, error, message):
    """Labels that are not integers in [0, 10), not 1-D, or not one per image are
    refused with what was expected."""
    model = SimpleCNN()
    X = images(4)
    calls = {
        "train": lambda: model.train(X, labels, epochs=1, verbose=0),
        "evaluate": lambda: evaluate(model, X, labels),
        "backward": lambda: model.backward(X, labels),
        "cross_entropy_loss": lambda: cross_entropy_loss(np.full((4, 10), 0.1), labels),
    }
    before = [snapshot(layer) for layer in model.param_layers]
    with pytest.raises(error, match=message):
        calls[call]()
    for layer, saved in zip(model.param_layers, before, strict=True):
        assert_unchanged(layer, saved)


def test_whole_float_labels_are_accepted():
    """Float labels holding whole numbers (e.g. 3.0) are accepted as class indices."""
    assert cross_entropy_loss(
        np.full((2, 10), 0.1), np.array([3.0, 7.0])
    ) == pytest.approx(np.log(10))


# ----------------------------------------------- backward (require_forward, check_dout)


BACKWARD_LAYERS = {
    "ConvLayer": lambda: ConvLayer(2, 3, 1, padding=1, rng=0),
    "MaxPoolLayer": lambda: MaxPoolLayer(2, 2),
    "ReLU": ReLU,
    "Flatten": Flatten,
    "FullyConnectedLayer": lambda: FullyConnectedLayer(3, 2, rng=0),
    "Dropout": lambda: Dropout(0.5, rng=0),
}


@pytest.mark.parametrize("name", sorted(BACKWARD_LAYERS))
def test_backward_before_forward(name):
    """backward (or gradient) before any forward says to run forward first."""
    layer = BACKWARD_LAYERS[name]()
    call = layer.gradient if name == "FullyConnectedLayer" else layer.backward
    with pytest.raises(
        RuntimeError, match=rf"{name}\.backward called before forward: run forward\(X\)"
    ):
        call(np.ones((2, 2)))


# Flatten's backward needs no cache
@pytest.mark.parametrize("name", sorted(set(LAYER_FORWARDS) - {"Flatten"}))
def test_backward_after_an_evaluation_forward_is_refused(name):
    """forward(X, training=False) keeps no cache, so a following backward is refused,
    not silently wrong."""
    make, shape = LAYER_FORWARDS[name]
    layer = make()
    out = layer.forward(np.ones(shape, dtype=np.float32), training=False)
    call = layer.gradient if name == "FullyConnectedLayer" else layer.backward
    with pytest.raises(RuntimeError, match=r"called before forward"):
        call(np.ones_like(out))


@pytest.mark.parametrize("name", sorted(LAYER_FORWARDS))
def test_dout_of_the_wrong_shape(name):
    """A dout that does not have the shape of the last output names both shapes."""
    make, shape = LAYER_FORWARDS[name]
    layer = make()
    out = layer.forward(np.ones(shape, dtype=np.float32))
    call = layer.gradient if name == "FullyConnectedLayer" else layer.backward
    bad = np.ones(out.shape[:-1] + (out.shape[-1] + 1,), dtype=np.float32)
    with pytest.raises(
        ValueError,
        match=rf"{name}\.backward: dout must have the shape of the last forward output "
        rf"{re.escape(str(tuple(out.shape)))}; got",
    ):
        call(bad)
