"""cnn.model: Sequential, the stack of layers: forward, the activity's backward (against
the chain rule by hand and numerical gradients), prediction and astype
(Parts 8 and 10)."""

import numpy as np
import pytest
from conftest import GRAD_TOL, all_params, assert_gradients_match, images, make_conv
from numpy.testing import assert_allclose, assert_array_equal

import cnn
from cnn import (
    Dropout,
    Flatten,
    FullyConnectedLayer,
    MaxPoolLayer,
    ReLU,
    Sequential,
    SimpleCNN,
    check_model,
)

# ----------------------------------------------------------------- forward and backward


def test_forward_runs_the_listed_order_so_a_hand_written_backward_works(rng):
    """After model.forward, walking reversed(model.layers) by hand
    (as the activity does) works."""
    model = SimpleCNN(seed=0)
    X, y = rng.random((3, 1, 28, 28)).astype(np.float32), np.array([1, 2, 3])
    dout = cnn.softmax_cross_entropy_gradient(model.forward(X), y)
    for layer in reversed(model.layers):
        dout = layer.gradient(dout)
    assert dout.shape == X.shape


def test_backward_without_forward_runs_forward_and_returns_the_loss(rng):
    """model.backward(X, y) with no prior forward returns the batch loss at the old
    weights and updates."""
    X, y = rng.random((6, 1, 28, 28)).astype(np.float32), np.array([0, 1, 2, 3, 4, 5])
    model, twin = SimpleCNN(seed=2), SimpleCNN(seed=2)
    expected = cnn.cross_entropy_loss(twin.forward(X), y)
    before = all_params(model)
    loss = model.backward(X, y)
    assert isinstance(loss, float)
    assert loss == pytest.approx(expected, rel=1e-5)
    assert all(
        not np.array_equal(a, b) for a, b in zip(before, all_params(model), strict=True)
    )


def test_model_grads_are_the_gradients_before_the_update(rng):
    """After model.backward, each layer's grads are the gradients at the old weights,
    and p_new = p_old - lr * g."""
    X, y = rng.random((4, 1, 28, 28)).astype(np.float32), np.array([7, 1, 0, 9])
    model, twin = SimpleCNN(seed=6), SimpleCNN(seed=6)
    # the reference: chain rule by hand
    dout = cnn.softmax_cross_entropy_gradient(twin.forward(X), y)
    for layer in reversed(twin.layers):
        dout = layer.gradient(dout)
    model.backward(X, y)
    lr = model.current_learning_rate
    for layer, ref in zip(model.param_layers, twin.param_layers, strict=True):
        for name in ("weights", "biases"):
            assert_allclose(layer.grads[name], ref.grads[name], rtol=1e-5, atol=1e-8)
            assert_allclose(
                layer.params[name],
                ref.params[name] - lr * layer.grads[name],
                rtol=1e-6,
                atol=1e-8,
            )


def test_model_backward_grads_match_numerical_gradients(rng):
    """Sequential.backward fills grads that agree with numerical gradients of the batch
    loss at the old weights."""
    layers = [
        make_conv(3, 2, 3, stride=2, padding=1),
        ReLU(),
        MaxPoolLayer(2, 1),
        Flatten(),
        FullyConnectedLayer(3 * 3 * 4, 4, rng=2, dtype=np.float64),
    ]
    model = cnn.Sequential(
        layers, learning_rate=1e-9, input_shape=(2, 7, 9), num_classes=4
    )
    X, y = rng.standard_normal((3, 2, 7, 9)), np.array([0, 3, 1])
    # analytic gradients via layer.gradient, at these weights
    reference = check_model(model, X, y, max_checks=40)
    assert_gradients_match(reference)
    saved = {
        (i, k): v.copy()
        for i, layer in enumerate(layers)
        for k, v in layer.params.items()
    }

    def loss():
        out = X
        for layer in layers:
            out = layer.forward(out)
        return cnn.cross_entropy_from_logits(out, y)

    numeric = {
        key: cnn.numerical_gradient(loss, layers[key[0]].params[key[1]])
        for key in saved
    }
    model.backward(X, y)
    for (i, name), grad in numeric.items():
        assert cnn.rel_error(layers[i].grads[name], grad) < GRAD_TOL, (i, name)


def test_refused_model_backward_then_good_backward(rng):
    """forward(X); refused backward(X, bad y); backward(X, y) gives the same loss and
    weights as without the refusal."""
    X, y = images(4), np.array([1, 2, 3, 4])
    model, twin = SimpleCNN(seed=2), SimpleCNN(seed=2)
    model.forward(X)
    twin.forward(X)
    with pytest.raises(ValueError, match=r"class indices in \[0, 9\]"):
        model.backward(X, np.array([1, 2, 3, 99]))
    assert model.backward(X, y) == twin.backward(X, y)
    for a, b in zip(model.param_layers, twin.param_layers, strict=True):
        assert_array_equal(a.weights, b.weights)


# --------------------------------------------------------------------------- prediction


def test_prediction_does_not_depend_on_batch_size(trained, small_mnist):
    """predict with batch_size 7 and 500 give the same labels and (to rounding) the same
    probabilities."""
    model, _ = trained
    _, (X_test, _) = small_mnist
    X = X_test[:500]
    assert_array_equal(model.predict(X, batch_size=7), model.predict(X, batch_size=500))
    assert_allclose(
        model.predict_proba(X, batch_size=7),
        model.predict_proba(X, batch_size=500),
        rtol=1e-4,
        atol=1e-5,
    )


def test_prediction_does_not_change_the_model(trained, small_mnist):
    """predict is pure: the weights stay the same and repeated calls agree."""
    model, _ = trained
    _, (X_test, _) = small_mnist
    before = all_params(model)
    first = model.predict_proba(X_test[:50])
    assert_array_equal(model.predict_proba(X_test[:50]), first)
    for a, b in zip(before, all_params(model), strict=True):
        assert_array_equal(a, b)


def test_predict_switches_dropout_off(rng):
    """A network with Dropout predicts deterministically (evaluation mode), while
    training forward passes differ."""
    model = Sequential(
        [Flatten(), Dropout(0.5, rng=0), FullyConnectedLayer(16, 3, rng=0)],
        input_shape=(1, 4, 4),
        num_classes=3,
    )
    X = rng.random((5, 1, 4, 4)).astype(np.float32)
    assert_array_equal(model.predict_proba(X), model.predict_proba(X))
    assert not np.array_equal(model.forward(X), model.forward(X))


# -------------------------------------------------------------------------------- dtype


def test_astype_converts_params_and_buffers_and_keeps_them_live(rng):
    """astype(float64) converts every parameter and BatchNorm statistic; params and
    attributes stay the same arrays (so an update through one is seen by the other);
    predictions barely change."""
    model = cnn.networks.deep_cnn(seed=0)
    X = rng.random((4, 1, 28, 28)).astype(np.float32)
    before = model.predict_proba(X)
    assert model.astype(np.float64) is model
    for layer in model.layers:
        for store in (layer.params, getattr(layer, "buffers", {})):
            for name, value in store.items():
                assert value.dtype == np.float64 and getattr(layer, name) is value
    assert model.predict_proba(X.astype(np.float64)).dtype == np.float64
    assert_allclose(model.predict_proba(X.astype(np.float64)), before, atol=1e-5)
    model.layers[0].params["weights"][...] = 0
    assert not model.layers[0].weights.any()
