"""BatchNorm: numerical gradients, running statistics in evaluation, a JAX reference,
and Sequential."""

import numpy as np
import pytest

from cnn.batchnorm import BatchNorm
from cnn.conv import ConvLayer
from cnn.gradcheck import check_layer, check_model
from cnn.layers import Flatten, FullyConnectedLayer, ReLU
from cnn.model import Sequential
from cnn.optim import Adam


def _layer(D, seed=1):
    """A float64 BatchNorm with non-trivial gamma and beta."""
    bn = BatchNorm(D, dtype=np.float64)
    rng = np.random.default_rng(seed)
    bn.gamma[...] = rng.uniform(0.5, 2.0, D)
    bn.beta[...] = rng.standard_normal(D)
    return bn


@pytest.mark.parametrize(
    "shape", [(6, 4), (3, 2, 4, 5)], ids=["2-D (N, D)", "4-D (N, C, H, W)"]
)
def test_numerical_gradients(shape):
    # another seed than check_layer's dout
    X = np.random.default_rng(7).standard_normal(shape) * 3 + 1
    errors = check_layer(_layer(shape[1]), X, seed=0)
    assert max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("shape", [(64, 3), (16, 3, 5, 5)])
def test_training_output_is_normalised_per_feature(shape):
    X = np.random.default_rng(0).standard_normal(shape) * 5 + 3
    out = BatchNorm(3, dtype=np.float64).forward(X)
    axes = (0,) if len(shape) == 2 else (0, 2, 3)
    np.testing.assert_allclose(out.mean(axis=axes), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=axes), 1, atol=1e-4)  # var / (var + eps)


def test_evaluation_uses_running_statistics():
    rng = np.random.default_rng(0)
    bn = _layer(3)
    mean, std = np.array([1.0, -2.0, 5.0]), np.array([0.5, 2.0, 3.0])
    for _ in range(200):  # momentum 0.9: converges to the data's statistics
        bn.forward(
            rng.standard_normal((256, 3, 4, 4)) * std[None, :, None, None]
            + mean[None, :, None, None]
        )
    np.testing.assert_allclose(bn.running_mean, mean, atol=0.05)
    np.testing.assert_allclose(bn.running_var, std**2, rtol=0.05)

    X = rng.standard_normal((2, 3, 4, 4))
    before = bn.running_mean.copy()
    out = bn.forward(X, training=False)
    expected = (X - bn.running_mean[None, :, None, None]) / np.sqrt(
        bn.running_var[None, :, None, None] + bn.eps
    ) * bn.gamma[None, :, None, None] + bn.beta[None, :, None, None]
    np.testing.assert_allclose(out, expected)
    # evaluation does not change them
    np.testing.assert_array_equal(bn.running_mean, before)
    # Each image's output is independent of the rest of the batch in evaluation, not in
    # training.
    np.testing.assert_allclose(bn.forward(X[:1], training=False), out[:1])
    with pytest.raises(RuntimeError, match="before forward"):
        bn.gradient(np.ones_like(X))  # nothing was cached for a backward pass


def test_running_statistics_update_formula():
    bn = BatchNorm(2, momentum=0.8, dtype=np.float64)
    X = np.array([[1.0, 10.0], [3.0, 14.0]])
    bn.forward(X)
    np.testing.assert_allclose(bn.running_mean, 0.8 * 0 + 0.2 * np.array([2.0, 12.0]))
    # biased variance
    np.testing.assert_allclose(bn.running_var, 0.8 * 1 + 0.2 * np.array([1.0, 4.0]))


@pytest.mark.parametrize("shape", [(8, 5), (4, 3, 6, 6)])
def test_matches_jax(shape):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    axes = (0,) if len(shape) == 2 else (0, 2, 3)
    bshape = (1, shape[1]) + (1,) * (len(shape) - 2)

    def reference(X, gamma, beta, eps=1e-5):
        mu = jnp.mean(X, axis=axes, keepdims=True)
        var = jnp.mean((X - mu) ** 2, axis=axes, keepdims=True)
        return (X - mu) / jnp.sqrt(var + eps) * gamma.reshape(bshape) + beta.reshape(
            bshape
        )

    @jax.jit  # one compilation is quicker than running the operations one by one
    def forward_and_vjp(X, gamma, beta, dout):
        out, vjp = jax.vjp(reference, X, gamma, beta)
        return (out,) + vjp(dout)

    rng = np.random.default_rng(3)
    X = rng.standard_normal(shape) * 2 - 1
    dout = rng.standard_normal(shape)
    bn = _layer(shape[1])
    out = bn.forward(X)
    dX = bn.gradient(dout)
    ref_out, ref_dX, ref_dgamma, ref_dbeta = forward_and_vjp(
        X, bn.gamma.copy(), bn.beta.copy(), dout
    )
    np.testing.assert_allclose(out, np.asarray(ref_out), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dX, np.asarray(ref_dX), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(bn.grads["gamma"], np.asarray(ref_dgamma), rtol=1e-10)
    np.testing.assert_allclose(bn.grads["beta"], np.asarray(ref_dbeta), rtol=1e-10)


def test_float32_stays_float32_and_update_is_in_place():
    bn = BatchNorm(4)
    X = np.random.default_rng(0).standard_normal((8, 4, 3, 3)).astype(np.float32)
    out = bn.forward(X)
    dX = bn.gradient(np.ones_like(out))
    assert out.dtype == dX.dtype == bn.grads["gamma"].dtype == np.float32
    gamma, beta = bn.params["gamma"], bn.params["beta"]
    bn.grads = {"gamma": np.ones(4, np.float32), "beta": np.ones(4, np.float32)}
    bn.update(0.5)
    # live arrays
    assert (
        bn.params["gamma"] is gamma and bn.gamma is gamma and bn.params["beta"] is beta
    )
    np.testing.assert_allclose(gamma, 0.5)
    np.testing.assert_allclose(beta, -0.5)
    assert bn.num_params() == 8 and bn.output_shape((4, 3, 3)) == (4, 3, 3)
    assert repr(bn) == "BatchNorm(num_features=4, momentum=0.9, eps=1e-05)"


def test_bad_input_gives_clear_errors():
    bn = BatchNorm(3)
    with pytest.raises(
        ValueError, match=r"\(N, 3\) or \(N, 3, H, W\); got shape \(2, 4\)"
    ):
        bn.forward(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="more than one value per feature"):
        bn.forward(np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match=r"2-D|3-D|shape"):
        bn.forward(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="momentum must be in"):
        BatchNorm(3, momentum=1.0)
    with pytest.raises(TypeError, match="num_features"):
        BatchNorm(2.5)


def test_in_a_sequential_model():
    """BatchNorm after a convolution and after a dense layer: exact gradients and
    training with Adam."""
    rng = np.random.default_rng(0)
    layers = [
        ConvLayer(2, 3, 1, padding=1, rng=rng, dtype=np.float64),
        BatchNorm(2, dtype=np.float64),
        ReLU(),
        Flatten(),
        FullyConnectedLayer(2 * 5 * 5, 6, rng=rng, dtype=np.float64),
        BatchNorm(6, dtype=np.float64),
        ReLU(),
        FullyConnectedLayer(6, 3, rng=rng, dtype=np.float64),
    ]
    model = Sequential(
        layers,
        learning_rate=0.01,
        optimizer=Adam(),
        input_shape=(1, 5, 5),
        num_classes=3,
    )
    X = rng.standard_normal((6, 1, 5, 5))
    y = rng.integers(0, 3, 6)
    errors = check_model(model, X, y, max_checks=10)
    # The biases of layers 0 and 4 have no effect (the BatchNorm after them subtracts
    # the mean): their gradients are 0 up to rounding, where relative errors mean
    # nothing.
    for i in (0, 4):
        assert np.abs(model.layers[i].grads["biases"]).max() < 1e-12
        del errors[f"{i}.biases"]
    assert max(errors.values()) < 1e-6, errors
    losses = [model.backward(X, y) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]
    assert model.predict(X).shape == (6,)
