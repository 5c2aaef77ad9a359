"""cnn.layers: ReLU, Flatten, MaxPoolLayer, FullyConnectedLayer and Dropout against
their definitions (Parts 3 to 6), over random geometries (hypothesis), against numerical
gradients and JAX; their refusals of bad input."""

from functools import partial

import jax
import numpy as np
import pytest
from conftest import (
    ATOL,
    POOL_CASES,
    RTOL,
    assert_gradients_match,
    assert_matches_numerical_gradients,
    away_from_zero,
    case_id,
    distinct_values,
    jax_maxpool,
    maxpool_reference,
    seeds,
)
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from cnn import Dropout, Flatten, FullyConnectedLayer, MaxPoolLayer, ReLU, check_layer

# --------------------------------------------------------------------------------- ReLU


def test_relu_forward_is_max_zero_x():
    """ReLU keeps positive values and replaces the others, including -0.0 and 0, by
    0."""
    X = np.array([[-2.0, -0.0, 0.0, 1e-30, 3.5]])
    assert_array_equal(ReLU().forward(X), [[0.0, 0.0, 0.0, 1e-30, 3.5]])


def test_relu_backward_passes_gradient_only_where_input_was_positive(rng):
    """dX = dout where X > 0 and 0 elsewhere (also 0 at exactly X == 0)."""
    X = rng.standard_normal((2, 3, 4, 5))
    X[0, 0, 0, :2] = 0.0
    relu = ReLU()
    relu.forward(X)
    dout = rng.standard_normal(X.shape)
    assert_array_equal(relu.backward(dout), np.where(X > 0, dout, 0.0))


@pytest.mark.parametrize("shape", [(1, 1, 3, 5), (3, 2, 4, 3), (2, 7)])
def test_relu_gradients(rng, shape):
    """ReLU on inputs away from its kink agrees with numerical gradients."""
    assert_gradients_match(check_layer(ReLU(), away_from_zero(shape, rng)))


# ------------------------------------------------------------------------------ Flatten


def test_flatten_is_c_order_reshape_and_backward_restores_shape(rng):
    """Flatten maps (N, C, H, W) to (N, C*H*W) in C order, and backward is the inverse
    reshape."""
    X = rng.standard_normal((3, 2, 4, 5))
    flat = Flatten()
    out = flat.forward(X)
    assert out.shape == (3, 40)
    assert_array_equal(out[1], X[1].ravel())
    dout = rng.standard_normal(out.shape)
    dX = flat.backward(dout)
    assert dX.shape == X.shape
    assert_array_equal(dX[2, 1], dout[2, 20:40].reshape(4, 5))


@pytest.mark.parametrize("shape", [(1, 1, 2, 3), (3, 2, 5, 4)])
def test_flatten_gradients(rng, shape):
    """Flatten's backward reshape agrees with numerical gradients."""
    assert_gradients_match(check_layer(Flatten(), rng.standard_normal(shape)))


def test_flatten_needs_a_batch_axis():
    """Flatten of a 1-D array asks for (N, ...)."""
    with pytest.raises(ValueError, match=r"Flatten\.forward: X must have a batch axis"):
        Flatten().forward(np.zeros(5))


# ------------------------------------------------------------------------- MaxPoolLayer


@pytest.mark.parametrize("case", POOL_CASES, ids=case_id)
@pytest.mark.parametrize("impl", ["vectorized", "loops"])
def test_maxpool_forward_matches_loop_definition(rng, case, impl):
    """MaxPoolLayer.forward (both impls) equals the max over each window, incl.
    overlapping windows."""
    N, C, H, W, P, s = case
    X = rng.standard_normal((N, C, H, W))
    out = MaxPoolLayer(P, s, impl=impl).forward(X)
    assert out.shape == (N, C, (H - P) // s + 1, (W - P) // s + 1)
    assert_array_equal(out, maxpool_reference(X, P, s))


@pytest.mark.parametrize("case", POOL_CASES, ids=case_id)
def test_maxpool_vectorized_matches_loops_impl(rng, case):
    """impl='vectorized' and impl='loops' give identical outputs and gradients."""
    N, C, H, W, P, s = case
    X = rng.integers(0, 3, (N, C, H, W)).astype(np.float64)  # many ties
    fast, slow = MaxPoolLayer(P, s), MaxPoolLayer(P, s, impl="loops")
    out = fast.forward(X)
    assert_array_equal(out, slow.forward(X))
    dout = rng.standard_normal(out.shape)
    assert_array_equal(fast.backward(dout), slow.backward(dout))


@pytest.mark.parametrize("case", POOL_CASES, ids=case_id)
def test_maxpool_backward_routes_to_the_maximum(rng, case):
    """Without ties, each window's gradient lands on its maximum; overlapping windows
    add up."""
    N, C, H, W, P, s = case
    X = distinct_values((N, C, H, W), rng)
    layer = MaxPoolLayer(P, s)
    out = layer.forward(X)
    dout = rng.standard_normal(out.shape)
    _, expected = maxpool_reference(X, P, s, dout)
    assert_allclose(layer.backward(dout), expected, rtol=1e-14, atol=0)


@pytest.mark.parametrize("case", POOL_CASES, ids=case_id)
def test_maxpool_ties_send_gradient_to_exactly_one_position_the_first_max(rng, case):
    """With ties (integer inputs in {0,1,2}), each window passes its gradient once, to
    its first maximum."""
    N, C, H, W, P, s = case
    X = rng.integers(0, 3, (N, C, H, W)).astype(np.float64)
    layer = MaxPoolLayer(P, s)
    out = layer.forward(X)
    dout = rng.standard_normal(out.shape)
    dX = layer.backward(dout)
    _, expected = maxpool_reference(X, P, s, dout)
    assert_allclose(dX, expected, rtol=1e-14, atol=0)
    # nothing duplicated, nothing lost
    assert dX.sum() == pytest.approx(dout.sum(), rel=1e-12)


def test_maxpool_all_equal_window_picks_top_left():
    """A constant 2x2 window gives its whole gradient to its top-left pixel."""
    layer = MaxPoolLayer(2, 2)
    layer.forward(np.ones((1, 1, 2, 4)))
    dX = layer.backward(np.array([[[[3.0, 5.0]]]]))
    assert_array_equal(dX, [[[[3.0, 0.0, 5.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]])


def test_maxpool_overlapping_tie_counts_each_window_once():
    """pool 2, stride 1 on a constant row: each window picks its own first pixel, so the
    gradients do not pile up."""
    layer = MaxPoolLayer(2, 1)
    layer.forward(np.zeros((1, 1, 2, 4)))
    dX = layer.backward(np.ones((1, 1, 1, 3)))
    assert_array_equal(dX, [[[[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]])


def test_maxpool_overlapping_shared_maximum_collects_both_windows():
    """pool 3, stride 1: a single global maximum inside two windows receives both
    windows' gradients."""
    X = np.zeros((1, 1, 3, 4))
    X[0, 0, 1, 2] = 9.0
    layer = MaxPoolLayer(3, 1)
    assert_array_equal(layer.forward(X), [[[[9.0, 9.0]]]])
    dX = layer.backward(np.array([[[[2.0, 0.5]]]]))
    expected = np.zeros((1, 1, 3, 4))
    expected[0, 0, 1, 2] = 2.5
    assert_array_equal(dX, expected)


@st.composite
def pool_geometry(draw):
    """(N, C, H, W, pool_size, stride) with the window fitting the input."""
    N, C = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    H, W = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    P, stride = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    assume(P <= H and P <= W)
    return N, C, H, W, P, stride


@settings(max_examples=40)
@given(pool_geometry(), seeds)
def test_maxpool_size_and_vectorized_equals_loops(geometry, seed):
    """Pooling output size is (H - P) // S + 1; both impls equal the loop definition,
    ties included."""
    N, C, H, W, P, s = geometry
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 3, (N, C, H, W)).astype(np.float64)  # small integers: many ties
    fast, slow = MaxPoolLayer(P, s), MaxPoolLayer(P, s, impl="loops")
    out = fast.forward(X)
    assert out.shape == (N, C, (H - P) // s + 1, (W - P) // s + 1)
    dout = rng.standard_normal(out.shape)
    ref_out, ref_dX = maxpool_reference(X, P, s, dout)
    assert_allclose(out, ref_out, rtol=0, atol=0)
    assert_allclose(slow.forward(X), ref_out, rtol=0, atol=0)
    assert_allclose(fast.backward(dout), ref_dX, rtol=1e-14, atol=1e-15)
    assert_allclose(slow.backward(dout), ref_dX, rtol=1e-14, atol=1e-15)


@settings(max_examples=30)
@given(pool_geometry(), seeds)
def test_maxpool_gradients_pass_the_numerical_check(geometry, seed):
    """On tie-free inputs, MaxPoolLayer's backward agrees with centred differences."""
    N, C, H, W, P, s = geometry
    X = distinct_values((N, C, H, W), np.random.default_rng(seed))
    assert_matches_numerical_gradients(MaxPoolLayer(P, s), X, seed)


@pytest.mark.parametrize("case", POOL_CASES, ids=case_id)
def test_maxpool_gradients(rng, case):
    """MaxPoolLayer (non-overlapping, overlapping, gapped) on tie-free inputs agrees
    with numerical gradients."""
    N, C, H, W, P, s = case
    assert_gradients_match(
        check_layer(MaxPoolLayer(P, s), distinct_values((N, C, H, W), rng))
    )


def test_maxpool_loops_impl_gradients(rng):
    """MaxPoolLayer(impl='loops') with overlapping windows agrees with numerical
    gradients."""
    assert_gradients_match(
        check_layer(
            MaxPoolLayer(3, 2, impl="loops"), distinct_values((2, 2, 7, 6), rng)
        )
    )


@partial(jax.jit, static_argnums=(2, 3))
def jax_maxpool_and_vjp(X, dout, P, s):
    """JAX's max pooling output and its vector-Jacobian product with dout: (out, dX)."""
    out, vjp = jax.vjp(lambda x: jax_maxpool(x, P, s), X)
    return (out,) + vjp(dout)


@pytest.mark.parametrize("impl", ["vectorized", "loops"])
@pytest.mark.parametrize("case", POOL_CASES, ids=case_id)
def test_maxpool_forward_and_vjp_match_jax(rng, case, impl):
    """MaxPoolLayer output and dX equal lax.reduce_window max and its VJP
    (tie-free inputs)."""
    N, C, H, W, P, s = case
    X = distinct_values((N, C, H, W), rng)
    layer = MaxPoolLayer(P, s, impl=impl)
    out = layer.forward(X)
    dout = rng.standard_normal(out.shape)
    expected, dX_ref = jax_maxpool_and_vjp(X, dout, P, s)
    assert_allclose(out, expected, rtol=0, atol=0)
    assert_allclose(layer.backward(dout), dX_ref, rtol=RTOL, atol=ATOL)


def test_maxpool_window_larger_than_input():
    """A 3x3 pool on a 2x5 input names both sizes."""
    with pytest.raises(
        ValueError, match=r"3x3 pool window is larger than the 2x5 input"
    ):
        MaxPoolLayer(3, 1).forward(np.zeros((1, 1, 2, 5)))


def test_maxpool_wrong_number_of_dimensions():
    """MaxPoolLayer.forward wants (N, C, H, W)."""
    with pytest.raises(
        ValueError,
        match=r"MaxPoolLayer\.forward: X must be a 4-D array of shape \(N, C, H, W\)",
    ):
        MaxPoolLayer().forward(np.zeros((4, 4)))


# ------------------------------------------------------------------ FullyConnectedLayer


def test_fully_connected_forward_is_x_w_plus_b(rng):
    """forward(X) == X @ weights + biases, shapes (N, in) -> (N, out)."""
    fc = FullyConnectedLayer(7, 3, rng=0, dtype=np.float64)
    fc.biases[...] = rng.standard_normal(3)
    X = rng.standard_normal((5, 7))
    out = fc.forward(X)
    assert out.shape == (5, 3)
    assert_allclose(out, X @ fc.weights + fc.biases, rtol=1e-14)


def test_fully_connected_backward_updates_by_its_own_learning_rate(rng):
    """backward(X, dout) returns dout @ W.T and sets W_new == W_old - lr * X.T @ dout,
    b_new == b_old - lr * sum(dout)."""
    lr = 0.037
    fc = FullyConnectedLayer(6, 4, learning_rate=lr, rng=3, dtype=np.float64)
    W_old, b_old = fc.weights.copy(), fc.biases.copy()
    X, dout = rng.standard_normal((5, 6)), rng.standard_normal((5, 4))
    dX = fc.backward(X, dout)
    assert_allclose(dX, dout @ W_old.T, rtol=1e-13)
    assert_allclose(fc.weights, W_old - lr * X.T @ dout, rtol=1e-13, atol=1e-15)
    assert_allclose(fc.biases, b_old - lr * dout.sum(axis=0), rtol=1e-13, atol=1e-15)
    assert fc.params["weights"] is fc.weights  # updated in place


def test_fully_connected_grads_are_gradients_before_the_update(rng):
    """After backward, grads hold X.T @ dout and sum(dout): the gradient at the old
    weights."""
    fc = FullyConnectedLayer(6, 4, learning_rate=0.5, rng=3, dtype=np.float64)
    X, dout = rng.standard_normal((5, 6)), rng.standard_normal((5, 4))
    fc.backward(X, dout)
    assert_allclose(fc.grads["weights"], X.T @ dout, rtol=1e-13)
    assert_allclose(fc.grads["biases"], dout.sum(axis=0), rtol=1e-13)


def test_fully_connected_default_initialisation():
    """weights (in, out) with std sqrt(1/in), biases zero, float32 by default."""
    fc = FullyConnectedLayer(1568, 10, rng=0)
    assert fc.weights.shape == (1568, 10) and fc.biases.shape == (10,)
    assert fc.weights.dtype == np.float32
    assert np.std(fc.weights) == pytest.approx(np.sqrt(1 / 1568), rel=0.05)
    assert_array_equal(fc.biases, 0.0)


@pytest.mark.parametrize("N, n_in, n_out", [(1, 1, 1), (3, 5, 2), (2, 7, 10)])
def test_fully_connected_gradients(rng, N, n_in, n_out):
    """FullyConnectedLayer: dX, dW, db agree with numerical gradients."""
    fc = FullyConnectedLayer(n_in, n_out, rng=1, dtype=np.float64)
    fc.biases[...] = rng.standard_normal(n_out)
    assert_gradients_match(check_layer(fc, rng.standard_normal((N, n_in))))


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


def test_fully_connected_wrong_feature_count():
    """Unflattened or wrongly sized input to the dense layer names the feature counts
    and the remedy."""
    fc = FullyConnectedLayer(1568, 10)
    with pytest.raises(
        ValueError, match=r"X must be a 2-D array of shape \(N, 1568\); got 4-D"
    ):
        fc.forward(np.zeros((2, 8, 14, 14), dtype=np.float32))
    with pytest.raises(
        ValueError, match=r"X has 1000 features.*expects input_size=1568"
    ):
        fc.forward(np.zeros((2, 1000), dtype=np.float32))


# ------------------------------------------------------------------------------ Dropout


def test_dropout_zeroes_about_rate_and_scales_survivors(rng):
    """In training, about `rate` of the activations are zeroed and the others multiplied
    by 1 / (1 - rate)."""
    X = rng.uniform(1.0, 2.0, (200, 500))
    out = Dropout(0.3, rng=0).forward(X)
    dropped = out == 0
    assert dropped.mean() == pytest.approx(0.3, abs=0.01)
    assert_allclose(out[~dropped], X[~dropped] / 0.7, rtol=1e-6)
    # inverted dropout keeps the expectation
    assert out.mean() == pytest.approx(X.mean(), rel=0.01)


def test_dropout_is_identity_in_evaluation_and_at_rate_zero(rng):
    """training=False (or rate=0) returns X unchanged."""
    X = rng.standard_normal((4, 6))
    assert_array_equal(Dropout(0.5, rng=0).forward(X, training=False), X)
    assert_array_equal(Dropout(0.0, rng=0).forward(X), X)


def test_dropout_backward_uses_the_forward_mask(rng):
    """backward(dout) multiplies by the very mask of the last forward: zero where
    dropped, 1/(1-rate) elsewhere."""
    X = rng.uniform(1.0, 2.0, (6, 7))
    drop = Dropout(0.5, rng=1)
    out = drop.forward(X)
    dout = rng.standard_normal(X.shape)
    assert_allclose(drop.backward(dout), dout * out / X, rtol=1e-12)


def test_dropout_same_seed_same_mask(rng):
    """Two Dropout layers seeded alike drop the same activations."""
    X = rng.standard_normal((5, 9))
    assert_array_equal(Dropout(0.4, rng=7).forward(X), Dropout(0.4, rng=7).forward(X))


class ReseededDropout(Dropout):
    """Dropout that restarts its generator before every forward, so every call draws the
    same mask."""

    def __init__(self, rate, seed):
        super().__init__(rate, rng=seed)
        self.seed = seed

    def forward(self, X, training=True):
        self.rng = np.random.default_rng(self.seed)
        return super().forward(X, training)


@pytest.mark.parametrize("rate", [0.25, 0.5, 0.8])
def test_dropout_gradients_with_a_fixed_mask(rng, rate):
    """Dropout with a fixed mask (same seed for every forward) agrees with numerical
    gradients."""
    layer = ReseededDropout(rate, seed=11)
    X = rng.standard_normal((3, 2, 4, 5))
    first = layer.forward(X)
    assert 0 < np.count_nonzero(first == 0) < X.size  # the mask is not trivial
    # ... and the same at every call
    np.testing.assert_array_equal(layer.forward(X), first)
    assert_gradients_match(check_layer(layer, X))
