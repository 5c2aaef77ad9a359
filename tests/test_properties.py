"""Properties over random geometries (hypothesis): output sizes, vectorized == loops, numerical gradients."""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from cnn import MaxPoolLayer, col2im, im2col, numerical_gradient_array, softmax
from conftest import GRAD_TOL, distinct_values, make_conv, maxpool_reference


def assert_matches_numerical_gradients(layer, X, seed):
    """Analytic dX and parameter gradients equal centred differences to rtol GRAD_TOL.

    Over thousands of random geometries some gradient elements are tiny (one small weight times one
    small dout, ~1e-9), where the centred difference's rounding noise (~1e-11) alone exceeds a purely
    relative 1e-6; an absolute floor of 1e-9 times the largest gradient absorbs that noise and nothing else
    (a wrong gradient is wrong by O(1) relative on most elements).
    """
    out = layer.forward(X)
    dout = np.random.default_rng(seed).standard_normal(out.shape)
    analytic = {"X": layer.gradient(dout)}
    analytic.update({name: g.copy() for name, g in layer.grads.items()})
    targets = {"X": X, **layer.params}
    for name, value in targets.items():
        numeric = numerical_gradient_array(lambda: layer.forward(X), value, dout)
        assert_allclose(analytic[name], numeric, rtol=GRAD_TOL, atol=1e-9 * max(1.0, np.abs(numeric).max()),
                        err_msg=name)


@st.composite
def conv_geometry(draw, max_size=7):
    """(N, C, H, W, F, K, stride, padding) with the kernel fitting the padded input."""
    N, C, F = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    H, W = draw(st.integers(1, max_size)), draw(st.integers(1, max_size))
    K, stride, padding = draw(st.integers(1, 5)), draw(st.integers(1, 3)), draw(st.integers(0, 2))
    assume(K <= H + 2 * padding and K <= W + 2 * padding)
    return N, C, H, W, F, K, stride, padding


@st.composite
def pool_geometry(draw):
    """(N, C, H, W, pool_size, stride) with the window fitting the input."""
    N, C = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    H, W = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    P, stride = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    assume(P <= H and P <= W)
    return N, C, H, W, P, stride


seeds = st.integers(0, 2 ** 32 - 1)


@settings(max_examples=40)
@given(conv_geometry(), seeds)
def test_conv_output_size_follows_the_formula(geometry, seed):
    """The output has (H + 2P - K) // S + 1 rows: exactly the number of kernel positions that fit."""
    N, C, H, W, F, K, s, p = geometry
    out = make_conv(F, C, K, s, p, seed=seed % 1000).forward(np.random.default_rng(seed).random((N, C, H, W)))
    positions_h = len(range(0, H + 2 * p - K + 1, s))
    positions_w = len(range(0, W + 2 * p - K + 1, s))
    assert out.shape == (N, F, (H + 2 * p - K) // s + 1, (W + 2 * p - K) // s + 1) == (N, F, positions_h, positions_w)


@settings(max_examples=30)
@given(conv_geometry(), seeds)
def test_conv_vectorized_equals_loops(geometry, seed):
    """Forward and backward of impl='vectorized' and impl='loops' agree for any geometry."""
    N, C, H, W, F, K, s, p = geometry
    rng = np.random.default_rng(seed)
    fast, slow = make_conv(F, C, K, s, p, seed=seed % 1000), make_conv(F, C, K, s, p, impl="loops", seed=seed % 1000)
    X = rng.standard_normal((N, C, H, W))
    out = fast.forward(X)
    assert_allclose(out, slow.forward(X), rtol=1e-11, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    assert_allclose(fast.gradient(dout), slow.gradient(dout), rtol=1e-11, atol=1e-12)
    assert_allclose(fast.grads["weights"], slow.grads["weights"], rtol=1e-11, atol=1e-12)
    assert_allclose(fast.grads["biases"], slow.grads["biases"], rtol=1e-11, atol=1e-12)


@settings(max_examples=30)
@given(conv_geometry(max_size=6), seeds)
def test_conv_gradients_pass_the_numerical_check(geometry, seed):
    """dX, dW and db agree with centred differences for any geometry."""
    N, C, H, W, F, K, s, p = geometry
    X = np.random.default_rng(seed).standard_normal((N, C, H, W))
    assert_matches_numerical_gradients(make_conv(F, C, K, s, p, seed=seed % 1000), X, seed)


@settings(max_examples=30)
@given(conv_geometry(), seeds)
def test_im2col_col2im_adjoint_for_any_geometry(geometry, seed):
    """<col2im(A), B> == <A, im2col(B)> for any geometry."""
    N, C, H, W, _, K, s, p = geometry
    rng = np.random.default_rng(seed)
    B = rng.standard_normal((N, C, H, W))
    cols = im2col(B, K, s, p)
    A = rng.standard_normal(cols.shape)
    lhs, rhs = np.sum(col2im(A, B.shape, K, s, p) * B), np.sum(A * cols)
    assert abs(lhs - rhs) <= 1e-10 * (1 + np.sum(np.abs(A * cols)))


@settings(max_examples=40)
@given(pool_geometry(), seeds)
def test_maxpool_size_and_vectorized_equals_loops(geometry, seed):
    """Pooling output size is (H - P) // S + 1; both impls equal the loop definition, ties included."""
    N, C, H, W, P, s = geometry
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 3, (N, C, H, W)).astype(np.float64)     # small integers: many ties
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


@settings(max_examples=40)
@given(st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=1, max_size=12), st.floats(-1e3, 1e3))
def test_softmax_is_a_distribution_invariant_to_shifts(logits, shift):
    """For any finite logits: probabilities in [0, 1] summing to 1, unchanged by adding a constant."""
    x = np.array([logits])
    p = softmax(x)
    assert np.all((p >= 0) & (p <= 1))
    assert abs(p.sum() - 1) < 1e-12
    assert_allclose(softmax(x + shift), p, rtol=1e-6, atol=1e-12)


def test_the_gradient_comparison_rejects_a_wrong_gradient(rng):
    """The comparison used above is not vacuous: a layer whose dX is doubled fails it."""
    class Doubled(MaxPoolLayer):
        def gradient(self, dout, input_grad=True):
            return 2 * super().gradient(dout, input_grad)

    with pytest.raises(AssertionError):
        assert_matches_numerical_gradients(Doubled(2, 1), distinct_values((1, 2, 4, 5), rng), seed=0)
