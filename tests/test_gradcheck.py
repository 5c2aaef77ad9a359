"""Every backward pass against centred-difference gradients in float64 (the activity's debugging tip)."""
import numpy as np
import pytest

import cnn
from cnn import ConvLayer, Dropout, Flatten, FullyConnectedLayer, MaxPoolLayer, ReLU, check_layer, check_model
from conftest import CONV_CASES, GRAD_TOL, POOL_CASES, away_from_zero, case_id, distinct_values, make_conv


def assert_gradients_match(errors, tol=GRAD_TOL):
    """Every relative error returned by check_layer/check_model is below tol."""
    assert errors, "nothing was checked"
    bad = {name: err for name, err in errors.items() if not err < tol}
    assert not bad, f"relative errors above {tol}: {bad} (all: {errors})"


# ---------------------------------------------------------------------------- the checker itself


def test_numerical_gradient_of_a_known_function(rng):
    """numerical_gradient of sum(x**3) is 3 x**2 to about 1e-9, and x is restored afterwards."""
    x = rng.standard_normal((3, 4))
    before = x.copy()
    grad = cnn.numerical_gradient(lambda: float(np.sum(x ** 3)), x)
    assert cnn.rel_error(grad, 3 * x ** 2) < 1e-8
    np.testing.assert_array_equal(x, before)


def test_rel_error_values():
    """rel_error is max |a-b| / (|a|+|b|): 0 for equal arrays, 1/3 for a factor of 2, 1 for opposite signs."""
    a = np.array([1.0, -2.0, 0.0])
    assert cnn.rel_error(a, a) == 0.0
    assert cnn.rel_error(a, 2 * a) == pytest.approx(1 / 3)
    assert cnn.rel_error(a, -a) == pytest.approx(1.0)


class DoubledGradientConv(ConvLayer):
    """A deliberately wrong layer: its input gradient is twice the true one."""

    def gradient(self, dout, input_grad=True):
        return 2 * super().gradient(dout, input_grad)


class TransposedKernelConv(ConvLayer):
    """A deliberately wrong layer: it backpropagates through the transposed kernel."""

    def gradient(self, dout, input_grad=True):
        original = self.weights.copy()
        self.weights[...] = original.transpose(0, 1, 3, 2)
        try:
            return super().gradient(dout, input_grad)
        finally:
            self.weights[...] = original


@pytest.mark.parametrize("wrong_layer", [DoubledGradientConv, TransposedKernelConv])
def test_gradient_check_catches_wrong_backward(rng, wrong_layer):
    """The check is not vacuous: a gradient off by 2 or a transposed kernel gives a relative error >> GRAD_TOL."""
    layer = wrong_layer(2, 3, 2, padding=1, rng=0, dtype=np.float64)
    errors = check_layer(layer, rng.standard_normal((2, 2, 5, 4)))
    assert errors["X"] > 1e3 * GRAD_TOL


# ---------------------------------------------------------------------------- layers


@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_conv_vectorized_gradients(rng, case):
    """ConvLayer (im2col): dX, dW, db agree with numerical gradients for every geometry."""
    N, C, H, W, F, K, s, p = case
    assert_gradients_match(check_layer(make_conv(F, C, K, s, p), rng.standard_normal((N, C, H, W))))


@pytest.mark.parametrize("case", CONV_CASES[:6], ids=case_id)
def test_conv_loops_gradients(rng, case):
    """ConvLayer(impl='loops'): dX, dW, db agree with numerical gradients (smaller batch: the loops are slow)."""
    _, C, H, W, F, K, s, p = case
    layer = make_conv(min(F, 2), C, K, s, p, impl="loops")
    assert_gradients_match(check_layer(layer, rng.standard_normal((1, C, H, W))))


@pytest.mark.parametrize("case", POOL_CASES, ids=case_id)
def test_maxpool_gradients(rng, case):
    """MaxPoolLayer (non-overlapping, overlapping, gapped) on tie-free inputs agrees with numerical gradients."""
    N, C, H, W, P, s = case
    assert_gradients_match(check_layer(MaxPoolLayer(P, s), distinct_values((N, C, H, W), rng)))


def test_maxpool_loops_impl_gradients(rng):
    """MaxPoolLayer(impl='loops') with overlapping windows agrees with numerical gradients."""
    assert_gradients_match(check_layer(MaxPoolLayer(3, 2, impl="loops"), distinct_values((2, 2, 7, 6), rng)))


@pytest.mark.parametrize("shape", [(1, 1, 3, 5), (3, 2, 4, 3), (2, 7)])
def test_relu_gradients(rng, shape):
    """ReLU on inputs away from its kink agrees with numerical gradients."""
    assert_gradients_match(check_layer(ReLU(), away_from_zero(shape, rng)))


@pytest.mark.parametrize("shape", [(1, 1, 2, 3), (3, 2, 5, 4)])
def test_flatten_gradients(rng, shape):
    """Flatten's backward reshape agrees with numerical gradients."""
    assert_gradients_match(check_layer(Flatten(), rng.standard_normal(shape)))


@pytest.mark.parametrize("N, n_in, n_out", [(1, 1, 1), (3, 5, 2), (2, 7, 10)])
def test_fully_connected_gradients(rng, N, n_in, n_out):
    """FullyConnectedLayer: dX, dW, db agree with numerical gradients."""
    fc = FullyConnectedLayer(n_in, n_out, rng=1, dtype=np.float64)
    fc.biases[...] = rng.standard_normal(n_out)
    assert_gradients_match(check_layer(fc, rng.standard_normal((N, n_in))))


class ReseededDropout(Dropout):
    """Dropout that restarts its generator before every forward, so every call draws the same mask."""

    def __init__(self, rate, seed):
        super().__init__(rate, rng=seed)
        self.seed = seed

    def forward(self, X, training=True):
        self.rng = np.random.default_rng(self.seed)
        return super().forward(X, training)


@pytest.mark.parametrize("rate", [0.25, 0.5, 0.8])
def test_dropout_gradients_with_a_fixed_mask(rng, rate):
    """Dropout with a fixed mask (same seed for every forward) agrees with numerical gradients."""
    layer = ReseededDropout(rate, seed=11)
    X = rng.standard_normal((3, 2, 4, 5))
    first = layer.forward(X)
    assert 0 < np.count_nonzero(first == 0) < X.size          # the mask is not trivial
    np.testing.assert_array_equal(layer.forward(X), first)    # ... and the same at every call
    assert_gradients_match(check_layer(layer, X))


# ---------------------------------------------------------------------------- the whole network


def test_simplecnn_gradients_in_float64(rng):
    """The whole SimpleCNN (converted to float64, random biases) agrees with numerical gradients of the loss."""
    model = cnn.SimpleCNN(seed=4).astype(np.float64)
    for layer in model.param_layers:
        layer.biases[...] = 0.1 * rng.standard_normal(layer.biases.shape)
    assert all(layer.weights.dtype == np.float64 and layer.params["weights"] is layer.weights
               for layer in model.param_layers)
    X = rng.standard_normal((2, 1, 28, 28))
    errors = check_model(model, X, np.array([3, 7]))
    assert set(errors) == {"0.weights", "0.biases", "4.weights", "4.biases"}
    assert_gradients_match(errors)


def test_model_backward_grads_match_numerical_gradients(rng):
    """Sequential.backward fills grads that agree with numerical gradients of the batch loss at the old weights."""
    layers = [make_conv(3, 2, 3, stride=2, padding=1), ReLU(), MaxPoolLayer(2, 1), Flatten(),
              FullyConnectedLayer(3 * 3 * 4, 4, rng=2, dtype=np.float64)]
    model = cnn.Sequential(layers, learning_rate=1e-9, input_shape=(2, 7, 9), num_classes=4)
    X, y = rng.standard_normal((3, 2, 7, 9)), np.array([0, 3, 1])
    reference = check_model(model, X, y, max_checks=40)   # analytic gradients via layer.gradient, at these weights
    assert_gradients_match(reference)
    saved = {(i, k): v.copy() for i, layer in enumerate(layers) for k, v in layer.params.items()}

    def loss():
        out = X
        for layer in layers:
            out = layer.forward(out)
        return cnn.cross_entropy_from_logits(out, y)

    numeric = {key: cnn.numerical_gradient(loss, layers[key[0]].params[key[1]]) for key in saved}
    model.backward(X, y)
    for (i, name), grad in numeric.items():
        assert cnn.rel_error(layers[i].grads[name], grad) < GRAD_TOL, (i, name)
