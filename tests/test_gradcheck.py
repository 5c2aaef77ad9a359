"""cnn.gradcheck: centred differences, the relative error, and gradient checks that are
not vacuous (a wrong backward pass fails them). Each layer's and network's own gradient
checks are in the tests of its module."""

import numpy as np
import pytest
from conftest import GRAD_TOL, assert_matches_numerical_gradients, distinct_values

import cnn
from cnn import ConvLayer, MaxPoolLayer, check_layer


def test_numerical_gradient_of_a_known_function(rng):
    """numerical_gradient of sum(x**3) is 3 x**2 to about 1e-9, and x is restored
    afterwards."""
    x = rng.standard_normal((3, 4))
    before = x.copy()
    grad = cnn.numerical_gradient(lambda: float(np.sum(x**3)), x)
    assert cnn.rel_error(grad, 3 * x**2) < 1e-8
    np.testing.assert_array_equal(x, before)


def test_rel_error_values():
    """rel_error is max |a-b| / (|a|+|b|): 0 for equal arrays, 1/3 for a factor of 2,
    1 for opposite signs."""
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
    """The check is not vacuous: a gradient off by 2 or a transposed kernel gives a
    relative error >> GRAD_TOL."""
    layer = wrong_layer(2, 3, 2, padding=1, rng=0, dtype=np.float64)
    errors = check_layer(layer, rng.standard_normal((2, 2, 5, 4)))
    assert errors["X"] > 1e3 * GRAD_TOL


def test_the_gradient_comparison_rejects_a_wrong_gradient(rng):
    """The comparison the property tests use (conftest) is not vacuous: a layer whose dX
    is doubled fails it."""

    class Doubled(MaxPoolLayer):
        def gradient(self, dout, input_grad=True):
            return 2 * super().gradient(dout, input_grad)

    with pytest.raises(AssertionError):
        assert_matches_numerical_gradients(
            Doubled(2, 1), distinct_values((1, 2, 4, 5), rng), seed=0
        )
