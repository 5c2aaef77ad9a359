"""cnn.conv_maxpool: ConvMaxPool, a convolution and the max pooling after it as one
step, against the two layers run in turn, numerical gradients and JAX."""

from functools import partial

import jax
import numpy as np
import pytest
from conftest import (
    ATOL,
    RTOL,
    case_id,
    distinct_values,
    jax_conv,
    jax_maxpool,
    make_conv,
)
from numpy.testing import assert_allclose, assert_array_equal

import cnn
from cnn import ConvLayer, MaxPoolLayer, ReLU
from cnn.conv_maxpool import ConvMaxPool, expand_filters, fold_filters
from cnn.gradcheck import check_layer

# (N, C, H, W, F, K, stride, padding, pool): SimpleCNN's step; odd output sizes whose
# last row or column belongs to no window; stride and padding 2 with 3x3 windows; a 1x1
# "pool"; one window only.
FUSED_CASES = [
    (2, 1, 28, 28, 8, 3, 1, 1, 2),
    (3, 2, 7, 5, 3, 3, 1, 1, 2),
    (2, 3, 9, 11, 2, 3, 2, 2, 3),
    (1, 2, 6, 6, 2, 1, 1, 0, 1),
    (2, 2, 8, 7, 4, 2, 2, 0, 2),
    (2, 1, 5, 6, 2, 5, 1, 2, 5),
]


def two_layers(case, dtype=np.float64):
    N, C, H, W, F, K, s, p, P = case
    return make_conv(F, C, K, s, p, dtype=dtype), MaxPoolLayer(P, P)


@pytest.mark.parametrize("case", FUSED_CASES, ids=case_id)
def test_expanded_filters_at_stride_s_times_p_compute_every_output_of_every_window(
    rng, case
):
    """Expanded filter (f, di, dj), applied with stride s*P, gives output pixel
    (P*i + di, P*j + dj) of the convolution at window (i, j): for every window that
    fits, and only those."""
    N, C, H, W, F, K, s, p, P = case
    conv = make_conv(F, C, K, s, p)
    X = rng.standard_normal((N, C, H, W))
    plain = conv.forward(X)  # (N, F, OH, OW)
    expanded = expand_filters(conv.weights, s, P)
    A = K + s * (P - 1)
    assert expanded.shape == (F * P * P, C, A, A)
    big = ConvLayer(F * P * P, A, C, stride=s * P, padding=p, dtype=np.float64)
    big.weights[...] = expanded
    big.biases[...] = np.repeat(conv.biases, P * P)
    out = big.forward(X)  # (N, F*P*P, OH2, OW2)
    OH2, OW2 = plain.shape[2] // P, plain.shape[3] // P
    assert out.shape == (N, F * P * P, OH2, OW2)
    for di in range(P):
        for dj in range(P):
            assert_allclose(
                out.reshape(N, F, P, P, OH2, OW2)[:, :, di, dj],
                plain[:, :, di : P * OH2 : P, dj : P * OW2 : P],
                rtol=1e-12,
                atol=1e-12,
            )


@pytest.mark.parametrize("case", FUSED_CASES, ids=case_id)
def test_fold_filters_is_the_adjoint_of_expand_filters(rng, case):
    """<expand(W), G> = <W, fold(G)> for every W and G: fold_filters is the transpose of
    the linear map expand_filters, which is what makes it the right backward pass."""
    N, C, H, W, F, K, s, p, P = case
    A = K + s * (P - 1)
    weights = rng.standard_normal((F, C, K, K))
    G = rng.standard_normal((F * P * P, C, A, A))
    folded = fold_filters(G, s, P, K)
    assert folded.shape == weights.shape
    assert_allclose(
        np.sum(expand_filters(weights, s, P) * G), np.sum(weights * folded), rtol=1e-12
    )


@pytest.mark.parametrize("case", FUSED_CASES, ids=case_id)
def test_conv_max_pool_equals_the_two_layers(rng, case):
    """Forward and backward: the two layers' output, dX, dW and db
    (float64: to 1e-12)."""
    N, C, H, W, F, K, s, p, P = case
    conv, pool = two_layers(case)
    fused = ConvMaxPool(conv, pool)
    X = rng.standard_normal((N, C, H, W))
    expected = pool.forward(conv.forward(X))
    out = fused.forward(X)
    assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    dX_ref = conv.gradient(pool.gradient(dout))
    grads_ref = {name: g.copy() for name, g in conv.grads.items()}
    dX = fused.gradient(dout)
    assert dX.shape == X.shape
    assert_allclose(dX, dX_ref, rtol=1e-12, atol=1e-12)
    for name in ("weights", "biases"):
        assert fused.grads[name].shape == grads_ref[name].shape
        assert_allclose(fused.grads[name], grads_ref[name], rtol=1e-12, atol=1e-12)
    # same parameter gradients, no dX
    assert fused.gradient(dout, input_grad=False) is None
    for name in ("weights", "biases"):
        assert_allclose(conv.grads[name], grads_ref[name], rtol=1e-12, atol=1e-12)


def test_conv_max_pool_breaks_ties_like_the_pooling_layer(rng):
    """On blank image regions every window holds equal values: the first one (row-major)
    wins, as in MaxPoolLayer, so each window passes its gradient to exactly one pixel.
    Float32, as in training."""
    conv, pool = two_layers(FUSED_CASES[0], dtype=np.float32)
    fused = ConvMaxPool(conv, pool)
    X = rng.random((2, 1, 28, 28)).astype(np.float32)
    X[:, :, :14] = 0.0
    out = fused.forward(X)
    assert_array_equal(out, pool.forward(conv.forward(X)))
    dout = np.ones(out.shape, dtype=np.float32)
    conv.forward(X)
    pool.forward(conv.forward(X))
    dconv = pool.gradient(dout)
    conv.gradient(dconv, input_grad=False)
    fused.gradient(dout, input_grad=False)
    assert_allclose(fused.grads["weights"], conv.grads["weights"], rtol=1e-5)
    assert_allclose(fused.grads["biases"], conv.grads["biases"], rtol=1e-5)
    # each 2x2 window passes its unit gradient once: db counts the windows
    # (2 images x 14 x 14 each)
    assert_allclose(fused.grads["biases"], np.full(8, 2 * 14 * 14), rtol=1e-6)


@pytest.mark.parametrize("case", FUSED_CASES[1:4], ids=case_id)
def test_conv_max_pool_numerical_gradients(rng, case):
    """dX, dW and db against centred differences (float64, distinct values: no ties to
    straddle)."""
    N, C, H, W, F, K, s, p, P = case
    fused = ConvMaxPool(*two_layers(case))
    errors = check_layer(fused, distinct_values((N, C, H, W), rng))
    assert set(errors) == {"X", "weights", "biases"}
    assert max(errors.values()) < 1e-6, errors


@partial(jax.jit, static_argnums=(4, 5, 6))
def jax_conv_pool_and_vjp(X, Wt, b, dout, stride, padding, P):
    """JAX's max pooling of a convolution and its vector-Jacobian product:
    (out, dX, dW, db)."""
    out, vjp = jax.vjp(
        lambda x, w, c: jax_maxpool(jax_conv(x, w, c, stride, padding), P, P), X, Wt, b
    )
    return (out,) + vjp(dout)


@pytest.mark.parametrize(
    "case",
    [
        (2, 1, 8, 8, 3, 3, 1, 1, 2),
        (3, 2, 7, 5, 3, 3, 1, 1, 2),
        (2, 3, 9, 11, 2, 3, 2, 2, 3),
        (2, 2, 8, 7, 4, 2, 2, 0, 2),
    ],
    ids=case_id,
)
def test_conv_max_pool_step_matches_jax(rng, case):
    """ConvMaxPool (the fused step of training) against JAX's
    reduce_window(conv_general_dilated) and its VJP."""
    N, C, H, W, F, K, s, p, P = case
    fused = cnn.ConvMaxPool(make_conv(F, C, K, s, p), MaxPoolLayer(P, P))
    X = distinct_values((N, C, H, W), rng)
    out = fused.forward(X)
    dout = rng.standard_normal(out.shape)
    expected, dX_ref, dW_ref, db_ref = jax_conv_pool_and_vjp(
        X, fused.conv.weights, fused.conv.biases, dout, s, p, P
    )
    assert_allclose(out, expected, rtol=RTOL, atol=ATOL)
    assert_allclose(fused.gradient(dout), dX_ref, rtol=RTOL, atol=ATOL)
    assert_allclose(fused.grads["weights"], dW_ref, rtol=RTOL, atol=ATOL)
    assert_allclose(fused.grads["biases"], db_ref, rtol=RTOL, atol=ATOL)


def test_conv_max_pool_refuses_what_it_cannot_fuse_and_bad_input(rng):
    conv = ConvLayer(2, 3, 1, padding=1, rng=0)
    with pytest.raises(ValueError, match="stride == pool_size"):
        ConvMaxPool(conv, MaxPoolLayer(3, 1))
    with pytest.raises(ValueError, match="stride == pool_size"):
        ConvMaxPool(ReLU(), MaxPoolLayer())
    fused = ConvMaxPool(conv, MaxPoolLayer(2, 2))
    with pytest.raises(RuntimeError, match="before forward"):
        fused.gradient(np.zeros((1, 2, 3, 3), np.float32))
    with pytest.raises(ValueError, match="channels"):
        fused.forward(np.zeros((1, 3, 6, 6), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        fused.forward(np.full((1, 1, 6, 6), np.nan, np.float32))
    with pytest.raises(ValueError, match="pool window is larger"):
        ConvMaxPool(ConvLayer(2, 3, 1, rng=0), MaxPoolLayer(4, 4)).forward(
            np.zeros((1, 1, 5, 5), np.float32)
        )
    out = fused.forward(rng.random((1, 1, 6, 6)).astype(np.float32))
    assert out.shape == (1, 2, 3, 3)
    with pytest.raises(ValueError, match=r"dout must have the shape .*\(1, 2, 3, 3\)"):
        fused.gradient(np.zeros((1, 2, 6, 6), np.float32))
    fused.forward(rng.random((1, 1, 6, 6)).astype(np.float32), training=False)
    with pytest.raises(RuntimeError, match="before forward"):
        fused.gradient(np.zeros((1, 2, 3, 3), np.float32))
