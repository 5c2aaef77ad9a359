"""cnn.train: the training loop (reproducibility, learning, the learning-rate schedule,
history, validation, printing), its refusals of bad input, divergence, and evaluate
(Parts 8 and 10)."""

import numpy as np
import pytest
from conftest import all_params, images
from numpy.testing import assert_allclose, assert_array_equal
from threadpoolctl import threadpool_info, threadpool_limits

import cnn
from cnn import (
    SGD,
    Flatten,
    FullyConnectedLayer,
    Sequential,
    SimpleCNN,
    deep_cnn,
    evaluate,
)
from cnn.train import blas_limits

# ----------------------------------------------------------------------------- training


def test_same_seed_gives_identical_training(small_mnist):
    """Same seed, same data: identical history (loss, accuracy, learning rate) and
    identical final weights."""
    (X, y), _ = small_mnist
    runs = []
    for _ in range(2):
        model = SimpleCNN(seed=5)
        history = model.train(X[:300], y[:300], epochs=2, batch_size=32, verbose=0)
        runs.append((model, history))
    (m1, h1), (m2, h2) = runs
    for key in ("loss", "accuracy", "learning_rate"):
        assert h1[key] == h2[key], key
    for a, b in zip(all_params(m1), all_params(m2), strict=True):
        assert_array_equal(a, b)
    # training did change them
    assert not np.array_equal(all_params(m1)[0], all_params(SimpleCNN(seed=5))[0])


def test_short_training_reduces_loss_and_beats_chance(trained, small_mnist):
    """3 epochs on 500 images: the loss falls every epoch and held-out accuracy is far
    above chance (10%)."""
    model, history = trained
    _, (X_test, y_test) = small_mnist
    assert len(history["loss"]) == 3
    assert history["loss"][0] > history["loss"][1] > history["loss"][2]
    assert history["loss"][-1] < 0.7 * history["loss"][0]
    assert history["accuracy"][-1] > 0.7
    assert evaluate(model, X_test, y_test) > 0.6


def test_history_learning_rate_follows_the_decay():
    """Epoch e trains at learning_rate * lr_decay**e, recorded in the history."""
    rng = np.random.default_rng(0)
    X, y = rng.random((8, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 8)
    history = SimpleCNN(learning_rate=0.1, lr_decay=0.5).train(
        X, y, epochs=3, batch_size=4, verbose=0
    )
    assert_allclose(history["learning_rate"], [0.1, 0.05, 0.025], rtol=1e-15)
    assert len(history["seconds"]) == 3


def test_model_drives_the_optimizer_with_its_learning_rate_schedule(rng):
    """Sequential passes each epoch's learning_rate * lr_decay**e to the optimizer:
    optimizer=SGD(99) trains exactly like the built-in plain SGD."""
    X, y = rng.standard_normal((6, 1, 2, 2)), np.array([0, 1, 2, 0, 1, 2])

    def model(optimizer):
        return Sequential(
            [Flatten(), FullyConnectedLayer(4, 3, rng=0, dtype=np.float64)],
            learning_rate=0.1,
            lr_decay=0.5,
            optimizer=optimizer,
            input_shape=(1, 2, 2),
            num_classes=3,
        )

    with_sgd, plain = model(SGD(99.0)), model(None)
    h1 = with_sgd.train(X, y, epochs=3, batch_size=6, verbose=0)
    h2 = plain.train(X, y, epochs=3, batch_size=6, verbose=0)
    assert h1["learning_rate"] == h2["learning_rate"] == [0.1, 0.05, 0.025]
    assert_array_equal(with_sgd.layers[1].weights, plain.layers[1].weights)
    assert h1["loss"] == h2["loss"]


def test_train_with_validation_data_records_val_metrics(small_mnist):
    """validation_data adds val_loss and val_accuracy per epoch; val_accuracy equals
    evaluate on it."""
    (X, y), (X_val, y_val) = small_mnist
    model = SimpleCNN(seed=1)
    history = model.train(
        X[:64],
        y[:64],
        epochs=1,
        batch_size=32,
        validation_data=(X_val[:50], y_val[:50]),
        verbose=0,
    )
    assert len(history["val_loss"]) == len(history["val_accuracy"]) == 1
    assert history["val_accuracy"][0] == evaluate(model, X_val[:50], y_val[:50])
    expected = cnn.cross_entropy_loss(model.predict_proba(X_val[:50]), y_val[:50])
    assert history["val_loss"][0] == pytest.approx(expected, rel=1e-5)


def test_train_is_silent_with_verbose_zero(capsys):
    """verbose=0 prints nothing."""
    rng = np.random.default_rng(0)
    SimpleCNN().train(
        rng.random((4, 1, 28, 28)).astype(np.float32), np.arange(4), epochs=1, verbose=0
    )
    assert capsys.readouterr().out == ""


# ------------------------------------------------------------- bad input and divergence


def test_model_refuses_uint8_nan_and_3d_images(mnist):
    """SimpleCNN.train, predict and evaluate give the same clear errors for raw
    images."""
    model = SimpleCNN()
    (raw, labels), _ = mnist
    with pytest.raises(
        TypeError, match=r"train: X_train must be a floating-point array.*uint8"
    ):
        model.train(raw[:8].reshape(-1, 1, 28, 28), labels[:8], verbose=0)
    with pytest.raises(
        ValueError, match=r"X must be a 4-D array of shape \(N, C, H, W\); got 3-D"
    ):
        model.predict(raw[:8].astype(np.float32))
    X = images(4)
    X[2, 0, 3, 3] = np.nan
    with pytest.raises(ValueError, match=r"evaluate: X contains 1 NaN"):
        evaluate(model, X, np.arange(4))


def test_x_and_y_of_different_lengths_in_training():
    """train with 6 images and 5 labels names both counts."""
    with pytest.raises(
        ValueError, match=r"y_train has 5 labels but there are 6 inputs"
    ):
        SimpleCNN().train(images(6), np.arange(5), verbose=0)


def test_empty_training_set_and_bad_epochs_or_batch_size():
    """train refuses an empty set, epochs=0 and batch_size=0 by name."""
    model = SimpleCNN()
    with pytest.raises(ValueError, match=r"train: X_train must not be empty"):
        model.train(images(0), np.arange(0), verbose=0)
    with pytest.raises(ValueError, match=r"epochs must be an integer >= 1; got 0"):
        model.train(images(2), np.arange(2), epochs=0, verbose=0)
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1; got 0"):
        model.train(images(2), np.arange(2), batch_size=0, verbose=0)


def test_refused_training_leaves_the_model_as_it_was():
    """A refused train call (bad labels) changes nothing: training afterwards equals a
    fresh model's training."""
    X, y = images(8), np.arange(8)
    model, fresh = SimpleCNN(seed=1), SimpleCNN(seed=1)
    with pytest.raises(ValueError):
        model.train(X, np.arange(7), verbose=0)
    h1 = model.train(X, y, epochs=1, batch_size=4, verbose=0)
    h2 = fresh.train(X, y, epochs=1, batch_size=4, verbose=0)
    assert h1["loss"] == h2["loss"]
    for a, b in zip(model.param_layers, fresh.param_layers, strict=True):
        assert_array_equal(a.weights, b.weights)


def test_diverging_training_raises_floating_point_error(mnist):
    """Training with learning_rate=1e6 on a few images diverges and must stop with
    FloatingPointError that suggests a smaller learning rate (not run on with losses of
    1e5 and more)."""
    (X, y), _ = mnist
    X = cnn.prepare_images(X[:16])
    model = SimpleCNN(learning_rate=1e6, lr_decay=1.0)
    with pytest.raises(FloatingPointError, match=r"smaller learning rate"):
        model.train(X, y[:16], epochs=3, batch_size=4, verbose=0)


# --------------------------------------------------------------------------- evaluation


def test_evaluate_is_the_fraction_of_correct_predictions(trained, small_mnist):
    """evaluate returns a Python float in [0, 1] equal to mean(predict(X) == y)."""
    model, _ = trained
    _, (X_test, y_test) = small_mnist
    accuracy = evaluate(model, X_test[:200], y_test[:200])
    assert type(accuracy) is float
    assert 0.0 <= accuracy <= 1.0
    assert accuracy == np.mean(model.predict(X_test[:200]) == y_test[:200])


def test_evaluate_hand_worked_counts():
    """A model that predicts 1, 2, 3, 4 scores 2/4 against labels 1, 2, 0, 0."""

    class Fixed:
        num_classes = 10

        def predict(self, X):
            return np.array([1, 2, 3, 4])

    assert (
        evaluate(
            Fixed(), np.zeros((4, 1, 28, 28), dtype=np.float32), np.array([1, 2, 0, 0])
        )
        == 0.5
    )


def _blas_threads():
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


class _Model:
    def __init__(self, threads):
        self.threads = threads


def test_blas_limits_caps_the_threads_and_never_raises_an_outer_limit():
    """blas_limits(model) lets at most the model's threads compute (two: the
    convolutions' batch slices in two threads, each on one BLAS thread), and a limit set
    around it (one BLAS thread per worker in cnn.book.over_seeds) holds: a model that
    asks for two threads gets one there, and a one-thread model inside a two-thread
    one's context runs its slices one after another."""
    available = max(_blas_threads())
    with blas_limits(_Model(1)):
        assert _blas_threads() and max(_blas_threads()) == 1
        assert cnn.threads.workers() == 1
    with blas_limits(_Model(2)):
        assert max(_blas_threads()) == 1
        assert cnn.threads.workers() == min(2, available)
        with blas_limits(_Model(2)):  # e.g. the validation inside a training
            assert cnn.threads.workers() == min(2, available)
        with blas_limits(_Model(1)):  # a one-thread model evaluated meanwhile
            assert cnn.threads.workers() == 1
        assert cnn.threads.workers() == min(2, available)
    with threadpool_limits(limits=1, user_api="blas"):
        with blas_limits(_Model(2)):
            assert max(_blas_threads()) == 1
            assert cnn.threads.workers() == 1
    with blas_limits(_Model(None)):
        assert max(_blas_threads()) == available
    assert max(_blas_threads()) == available  # restored
    assert cnn.threads.workers() == 1


def test_deep_cnn_trains_on_two_threads_and_simple_cnn_on_one():
    assert deep_cnn().threads == 2
    assert deep_cnn(threads=1).threads == 1
    assert SimpleCNN().threads == 1
