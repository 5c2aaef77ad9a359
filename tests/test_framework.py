"""The layers against an independent framework: JAX's convolution, pooling, dense algebra and log-softmax."""
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from numpy.testing import assert_allclose

import cnn
from cnn import FullyConnectedLayer, MaxPoolLayer
from conftest import CONV_CASES, POOL_CASES, case_id, distinct_values, make_conv

jax.config.update("jax_enable_x64", True)

RTOL, ATOL = 1e-10, 1e-12


def jax_conv(X, Wt, b, stride, padding):
    """NCHW / OIHW cross-correlation with JAX, plus a bias per output channel."""
    out = lax.conv_general_dilated(X, Wt, window_strides=(stride, stride),
                                   padding=[(padding, padding), (padding, padding)],
                                   dimension_numbers=("NCHW", "OIHW", "NCHW"))
    return out + b[None, :, None, None]


def jax_maxpool(X, P, s):
    """Max pooling with lax.reduce_window over (P, P) windows every s pixels, no padding."""
    return lax.reduce_window(X, -jnp.inf, lax.max, (1, 1, P, P), (1, 1, s, s), "VALID")


@partial(jax.jit, static_argnums=(4, 5))
def jax_conv_and_vjp(X, Wt, b, dout, stride, padding):
    """JAX's convolution output and its vector-Jacobian product with dout: (out, dX, dW, db), compiled once per shape."""
    out, vjp = jax.vjp(lambda x, w, c: jax_conv(x, w, c, stride, padding), X, Wt, b)
    return (out,) + vjp(dout)


@partial(jax.jit, static_argnums=(2, 3))
def jax_maxpool_and_vjp(X, dout, P, s):
    """JAX's max pooling output and its vector-Jacobian product with dout: (out, dX)."""
    out, vjp = jax.vjp(lambda x: jax_maxpool(x, P, s), X)
    return (out,) + vjp(dout)


@pytest.mark.parametrize("impl", ["vectorized", "loops"])
@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_conv_forward_and_vjp_match_jax(rng, case, impl):
    """ConvLayer output, dX, dW and db equal JAX's conv_general_dilated and its vector-Jacobian product."""
    N, C, H, W, F, K, s, p = case
    layer = make_conv(F, C, K, s, p, impl=impl)
    X = rng.standard_normal((N, C, H, W))
    out = layer.forward(X)
    dout = rng.standard_normal(out.shape)
    expected, dX_ref, dW_ref, db_ref = jax_conv_and_vjp(X, layer.weights, layer.biases, dout, s, p)
    assert out.shape == expected.shape
    assert_allclose(out, expected, rtol=RTOL, atol=ATOL)
    assert_allclose(layer.gradient(dout), dX_ref, rtol=RTOL, atol=ATOL)
    assert_allclose(layer.grads["weights"], dW_ref, rtol=RTOL, atol=ATOL)
    assert_allclose(layer.grads["biases"], db_ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("impl", ["vectorized", "loops"])
def test_conv_gradient_without_input_grad_returns_none_and_same_param_grads(rng, impl):
    """gradient(dout, input_grad=False) returns None and the same dW, db as with input_grad=True (= JAX's)."""
    N, C, H, W, F, K, s, p = 2, 3, 7, 6, 2, 3, 2, 1
    layer = make_conv(F, C, K, s, p, impl=impl)
    X = rng.standard_normal((N, C, H, W))
    out = layer.forward(X)
    dout = rng.standard_normal(out.shape)
    _, _, dW_ref, db_ref = jax_conv_and_vjp(X, layer.weights, layer.biases, dout, s, p)
    assert layer.gradient(dout, input_grad=False) is None
    assert_allclose(layer.grads["weights"], dW_ref, rtol=RTOL, atol=ATOL)
    assert_allclose(layer.grads["biases"], db_ref, rtol=RTOL, atol=ATOL)


def test_conv_with_jax_grad_of_a_scalar_loss(rng):
    """jax.grad of sum(conv(X) ** 2) equals the layer's backward fed with dout = 2 * conv(X)."""
    layer = make_conv(3, 2, 3, stride=2, padding=2)
    X = rng.standard_normal((2, 2, 9, 6))
    out = layer.forward(X)
    gX, gW = jax.grad(lambda x, w: jnp.sum(jax_conv(x, w, layer.biases, 2, 2) ** 2), argnums=(0, 1))(X, layer.weights)
    assert_allclose(layer.gradient(2 * out), gX, rtol=RTOL, atol=ATOL)
    assert_allclose(layer.grads["weights"], gW, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("impl", ["vectorized", "loops"])
@pytest.mark.parametrize("case", POOL_CASES, ids=case_id)
def test_maxpool_forward_and_vjp_match_jax(rng, case, impl):
    """MaxPoolLayer output and dX equal lax.reduce_window max and its VJP (tie-free inputs)."""
    N, C, H, W, P, s = case
    X = distinct_values((N, C, H, W), rng)
    layer = MaxPoolLayer(P, s, impl=impl)
    out = layer.forward(X)
    dout = rng.standard_normal(out.shape)
    expected, dX_ref = jax_maxpool_and_vjp(X, dout, P, s)
    assert_allclose(out, expected, rtol=0, atol=0)
    assert_allclose(layer.backward(dout), dX_ref, rtol=RTOL, atol=ATOL)


@partial(jax.jit, static_argnums=(4, 5, 6))
def jax_conv_pool_and_vjp(X, Wt, b, dout, stride, padding, P):
    """JAX's max pooling of a convolution and its vector-Jacobian product: (out, dX, dW, db)."""
    out, vjp = jax.vjp(lambda x, w, c: jax_maxpool(jax_conv(x, w, c, stride, padding), P, P), X, Wt, b)
    return (out,) + vjp(dout)


@pytest.mark.parametrize("case", [(2, 1, 8, 8, 3, 3, 1, 1, 2), (3, 2, 7, 5, 3, 3, 1, 1, 2),
                                  (2, 3, 9, 11, 2, 3, 2, 2, 3), (2, 2, 8, 7, 4, 2, 2, 0, 2)], ids=case_id)
def test_conv_max_pool_step_matches_jax(rng, case):
    """ConvMaxPool (the fused step of training) against JAX's reduce_window(conv_general_dilated) and its VJP."""
    N, C, H, W, F, K, s, p, P = case
    fused = cnn.ConvMaxPool(make_conv(F, C, K, s, p), MaxPoolLayer(P, P))
    X = distinct_values((N, C, H, W), rng)
    out = fused.forward(X)
    dout = rng.standard_normal(out.shape)
    expected, dX_ref, dW_ref, db_ref = jax_conv_pool_and_vjp(X, fused.conv.weights, fused.conv.biases, dout, s, p, P)
    assert_allclose(out, expected, rtol=RTOL, atol=ATOL)
    assert_allclose(fused.gradient(dout), dX_ref, rtol=RTOL, atol=ATOL)
    assert_allclose(fused.grads["weights"], dW_ref, rtol=RTOL, atol=ATOL)
    assert_allclose(fused.grads["biases"], db_ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("N, n_in, n_out", [(1, 3, 2), (4, 7, 5), (3, 1568, 10)])
def test_fully_connected_matches_jax(rng, N, n_in, n_out):
    """FullyConnectedLayer forward, dX, dW, db equal JAX's x @ W + b and its VJP."""
    fc = FullyConnectedLayer(n_in, n_out, rng=0, dtype=np.float64)
    fc.biases[...] = rng.standard_normal(n_out)
    X = rng.standard_normal((N, n_in))
    expected, vjp = jax.vjp(lambda x, w, b: x @ w + b, X, fc.weights, fc.biases)
    assert_allclose(fc.forward(X), expected, rtol=RTOL, atol=ATOL)
    dout = rng.standard_normal((N, n_out))
    dX_ref, dW_ref, db_ref = vjp(dout)
    assert_allclose(fc.gradient(dout), dX_ref, rtol=RTOL, atol=ATOL)
    assert_allclose(fc.grads["weights"], dW_ref, rtol=RTOL, atol=ATOL)
    assert_allclose(fc.grads["biases"], db_ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("N, classes", [(1, 2), (5, 10), (7, 3)])
def test_softmax_cross_entropy_match_jax(rng, N, classes):
    """softmax, log_softmax, the loss and its gradient equal jax.nn.softmax, log_softmax and jax.grad."""
    logits = 3 * rng.standard_normal((N, classes))
    y = rng.integers(0, classes, N)

    @jax.jit
    def reference(z):
        def loss(z):
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], axis=1))
        return jax.nn.softmax(z), jax.nn.log_softmax(z), loss(z), jax.grad(loss)(z)

    probs, log_probs, loss, grad = reference(logits)
    assert_allclose(cnn.softmax(logits), probs, rtol=1e-13)
    assert_allclose(cnn.log_softmax(logits), log_probs, rtol=1e-13, atol=1e-15)
    assert cnn.cross_entropy_from_logits(logits, y) == pytest.approx(float(loss), rel=1e-13)
    assert cnn.cross_entropy_loss(cnn.softmax(logits), y) == pytest.approx(float(loss), rel=1e-12)
    assert_allclose(cnn.softmax_cross_entropy_gradient(cnn.softmax(logits), y), grad, rtol=1e-12, atol=1e-15)


def test_simplecnn_forward_matches_a_jax_network(rng):
    """SimpleCNN's probabilities equal the same network written with JAX primitives and the same weights."""
    model = cnn.SimpleCNN(seed=2)
    conv, fc = model.layers[0], model.layers[4]
    conv.biases[...] = 0.1 * rng.standard_normal(8)
    X = rng.random((3, 1, 28, 28)).astype(np.float32)
    h = jnp.maximum(jax_conv(X.astype(np.float64), conv.weights.astype(np.float64),
                             conv.biases.astype(np.float64), 1, 1), 0)
    logits = jax_maxpool(h, 2, 2).reshape(3, -1) @ fc.weights.astype(np.float64) + fc.biases
    assert_allclose(model.forward(X), jax.nn.softmax(logits), rtol=1e-4, atol=1e-6)   # float32 model


def test_conv_and_pool_match_keras_layers(rng):
    """Keras' Conv2D (channels_first, padding='same') and MaxPooling2D agree with ConvLayer and MaxPoolLayer."""
    import keras   # imported here: it takes seconds, and conftest has chosen its JAX backend
    X = rng.standard_normal((2, 3, 8, 6)).astype(np.float32)
    layer = make_conv(4, 3, 3, stride=1, padding=1, dtype=np.float32)
    conv = keras.layers.Conv2D(4, 3, padding="same", data_format="channels_first")
    conv.build((None, 3, 8, 6))
    conv.set_weights([layer.weights.transpose(2, 3, 1, 0), layer.biases])   # (K, K, C, F) in Keras
    out = layer.forward(X)
    assert_allclose(out, np.asarray(conv(X)), rtol=1e-5, atol=1e-5)
    pool = keras.layers.MaxPooling2D(pool_size=3, strides=2, data_format="channels_first")
    assert_allclose(MaxPoolLayer(3, 2).forward(out), np.asarray(pool(out)), rtol=0, atol=0)
