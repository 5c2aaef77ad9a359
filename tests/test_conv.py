"""cnn.conv: convolve2d, im2col and col2im, the loop versions and ConvLayer against
their definitions, over random geometries (hypothesis), against numerical gradients, JAX
and Keras; and their refusals of bad input."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    ATOL,
    CONV_CASES,
    RTOL,
    SHIFT_CASES,
    assert_gradients_match,
    assert_matches_numerical_gradients,
    assert_unchanged,
    case_id,
    conv_reference,
    jax_conv,
    make_conv,
    seeds,
    snapshot,
)
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

import cnn
from cnn import (
    ConvLayer,
    MaxPoolLayer,
    check_layer,
    col2im,
    conv_backward_loops,
    conv_forward_loops,
    convolve2d,
    im2col,
    output_size,
)

IMAGE_1_TO_9 = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
KERNEL_1_TO_4 = np.array([[1.0, 2.0], [3.0, 4.0]])


# --------------------------------------------------------------------------- convolve2d


def test_convolve2d_hand_worked_3x3_image_2x2_kernel():
    """A 3x3 image and a 2x2 kernel, worked by hand: each output is the dot product of
    kernel and patch."""
    # [[1*1+2*2+4*3+5*4, 2*1+3*2+5*3+6*4], [4*1+5*2+7*3+8*4, 5*1+6*2+8*3+9*4]]
    expected = np.array([[37.0, 47.0], [67.0, 77.0]])
    assert_array_equal(convolve2d(IMAGE_1_TO_9, KERNEL_1_TO_4), expected)


def test_convolve2d_hand_worked_padding_and_stride():
    """padding=1, stride=2 on the 3x3 image: the padded corners, worked by hand."""
    # padded 5x5; windows at rows/cols 0-1 and 2-3:
    # [[0,0],[0,1]].k = 4;  [[0,0],[2,3]].k = 6+12 = 18;  [[0,4],[0,7]].k = 8+28 = 36;
    # [[5,6],[8,9]].k = 77
    expected = np.array([[4.0, 18.0], [36.0, 77.0]])
    assert_array_equal(
        convolve2d(IMAGE_1_TO_9, KERNEL_1_TO_4, stride=2, padding=1), expected
    )


def test_convolve2d_is_cross_correlation_not_flipped():
    """The kernel is not flipped or transposed: a one-hot kernel picks the pixel at its
    own offset."""
    image = np.arange(20.0).reshape(4, 5)
    kernel = np.zeros((2, 3))
    kernel[0, 2] = 1.0  # tap at row offset 0, column offset 2
    assert_array_equal(convolve2d(image, kernel), image[0:3, 2:5])


def test_convolve2d_activity_edge_kernel_example():
    """The activity's example: a 5x5 image and the 3x3 integer edge kernel give a 3x3
    map of row differences."""
    image = np.random.default_rng(0).random((5, 5))
    edge = np.array([[-1, -1, -1], [0, 0, 0], [1, 1, 1]])
    result = convolve2d(image, edge)
    assert result.shape == (3, 3)
    # each output: the window's bottom row minus its top row
    expected = np.array(
        [
            [
                image[i + 2, j : j + 3].sum() - image[i, j : j + 3].sum()
                for j in range(3)
            ]
            for i in range(3)
        ]
    )
    assert_allclose(result, expected, rtol=1e-12)


@pytest.mark.parametrize(
    "H, W, KH, KW, stride, padding",
    [
        (5, 5, 3, 3, 1, 0),
        (6, 4, 2, 3, 1, 1),
        (7, 9, 3, 2, 2, 0),
        (8, 5, 5, 5, 3, 2),
        (4, 7, 1, 1, 2, 1),
        (5, 6, 4, 2, 3, 2),
    ],
)
def test_convolve2d_matches_direct_formula(rng, H, W, KH, KW, stride, padding):
    """output[i, j] = sum_ab padded[i*s + a, j*s + b] * kernel[a, b], summed term by
    term."""
    image, kernel = rng.standard_normal((H, W)), rng.standard_normal((KH, KW))
    padded = np.zeros((H + 2 * padding, W + 2 * padding))
    padded[padding : padding + H, padding : padding + W] = image
    OH, OW = (H + 2 * padding - KH) // stride + 1, (W + 2 * padding - KW) // stride + 1
    expected = np.zeros((OH, OW))
    for i in range(OH):
        for j in range(OW):
            for a in range(KH):
                for b in range(KW):
                    expected[i, j] += (
                        padded[i * stride + a, j * stride + b] * kernel[a, b]
                    )
    assert_allclose(
        convolve2d(image, kernel, stride, padding), expected, rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize(
    "size, kernel, stride, padding, expected",
    [
        (28, 3, 1, 1, 28),
        (28, 3, 1, 0, 26),
        (28, 2, 2, 0, 14),
        (7, 3, 2, 0, 3),
        (8, 3, 2, 0, 3),
        (5, 5, 1, 2, 5),
        (6, 2, 3, 1, 3),
        (4, 3, 2, 0, 1),
    ],
)
def test_output_size_formula(size, kernel, stride, padding, expected):
    """output_size is (size + 2*padding - kernel) // stride + 1, checked on values
    counted by hand."""
    assert output_size(size, kernel, stride, padding) == expected


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            dict(stride=0),
            ValueError,
            r"convolve2d: stride must be an integer >= 1; got 0",
        ),
        (
            dict(stride=True),
            TypeError,
            r"convolve2d: stride must be an integer >= 1; got True",
        ),
        (
            dict(padding=-1),
            ValueError,
            r"convolve2d: padding must be an integer >= 0; got -1",
        ),
        (
            dict(padding=0.5),
            TypeError,
            r"convolve2d: padding must be an integer >= 0; got 0\.5",
        ),
    ],
)
def test_convolve2d_bad_stride_or_padding(kwargs, error, message):
    """convolve2d checks its stride and padding like the layer does."""
    with pytest.raises(error, match=message):
        convolve2d(np.ones((4, 4)), np.ones((2, 2)), **kwargs)


def test_convolve2d_kernel_larger_than_padded_input():
    """convolve2d refuses a 4x2 kernel on a 3x3 image (padded 3x3)."""
    with pytest.raises(
        ValueError,
        match=r"convolve2d: the 4x2 kernel is larger than the padded input 3x3",
    ):
        convolve2d(np.ones((3, 3)), np.ones((4, 2)))


# ------------------------------------------------------------- the layer's forward pass


@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_conv_forward_loops_matches_definition(rng, case):
    """conv_forward_loops equals the seven-loop definition
    out[n,f,i,j] = b[f] + sum_{c,a,d} x * w."""
    N, C, H, W, F, K, s, p = case
    X, Wt, b = (
        rng.standard_normal((N, C, H, W)),
        rng.standard_normal((F, C, K, K)),
        rng.standard_normal(F),
    )
    assert_allclose(
        conv_forward_loops(X, Wt, b, s, p),
        conv_reference(X, Wt, b, s, p),
        rtol=1e-12,
        atol=1e-12,
    )


@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_vectorized_forward_matches_loops(rng, case):
    """ConvLayer.forward (im2col) equals conv_forward_loops for every geometry."""
    N, C, H, W, F, K, s, p = case
    layer = make_conv(F, C, K, s, p)
    X = rng.standard_normal((N, C, H, W))
    out = layer.forward(X)
    assert out.shape == (N, F, output_size(H, K, s, p), output_size(W, K, s, p))
    assert_allclose(
        out,
        conv_forward_loops(X, layer.weights, layer.biases, s, p),
        rtol=1e-12,
        atol=1e-12,
    )


@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_vectorized_layer_matches_loops_layer(rng, case):
    """impl='vectorized' and impl='loops' with the same seed give the same output, dX,
    dW and db."""
    N, C, H, W, F, K, s, p = case
    fast, slow = (
        make_conv(F, C, K, s, p, impl="vectorized"),
        make_conv(F, C, K, s, p, impl="loops"),
    )
    assert_array_equal(fast.weights, slow.weights)
    X = rng.standard_normal((N, C, H, W))
    out_fast, out_slow = fast.forward(X), slow.forward(X)
    assert_allclose(out_fast, out_slow, rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out_fast.shape)
    assert_allclose(fast.gradient(dout), slow.gradient(dout), rtol=1e-11, atol=1e-12)
    for name in ("weights", "biases"):
        assert_allclose(fast.grads[name], slow.grads[name], rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_conv_backward_loops_is_the_transpose_of_forward(rng, case):
    """conv_backward_loops applies the transposed linear maps:
    <conv(X', W), dout> == <X', dX> and <conv(X, W'), dout> == <W', dW> for random
    probes X', W' (db = sum of dout)."""
    N, C, H, W, F, K, s, p = case
    X, Wt = rng.standard_normal((N, C, H, W)), rng.standard_normal((F, C, K, K))
    zeros = np.zeros(F)
    dout = rng.standard_normal((N, F, output_size(H, K, s, p), output_size(W, K, s, p)))
    dX, dW, db = conv_backward_loops(X, Wt, dout, s, p)
    for _ in range(3):
        X_probe, W_probe = rng.standard_normal(X.shape), rng.standard_normal(Wt.shape)
        assert np.sum(conv_reference(X_probe, Wt, zeros, s, p) * dout) == pytest.approx(
            np.sum(X_probe * dX), rel=1e-10
        )
        assert np.sum(conv_reference(X, W_probe, zeros, s, p) * dout) == pytest.approx(
            np.sum(W_probe * dW), rel=1e-10
        )
    assert_allclose(db, dout.sum(axis=(0, 2, 3)), rtol=1e-12)


def test_forward_float32_by_default_and_float64_on_request():
    """Weights are float32 by default (training speed) and float64 with
    dtype=np.float64; outputs follow."""
    X32 = np.ones((1, 2, 5, 5), dtype=np.float32)
    layer = ConvLayer(3, 3, 2, rng=0)
    assert layer.weights.dtype == np.float32 and layer.biases.dtype == np.float32
    assert layer.forward(X32).dtype == np.float32
    layer64 = ConvLayer(3, 3, 2, rng=0, dtype=np.float64)
    assert layer64.weights.dtype == np.float64
    assert layer64.forward(X32.astype(np.float64)).dtype == np.float64


def test_initial_weights_shapes_he_scale_and_zero_biases():
    """weights (F, C, K, K) drawn with std sqrt(2 / (C K K)) (He), biases (F,) zero,
    params are the live arrays."""
    layer = ConvLayer(
        num_filters=400, filter_size=3, num_channels=2, rng=1, dtype=np.float64
    )
    assert layer.weights.shape == (400, 2, 3, 3) and layer.biases.shape == (400,)
    assert np.std(layer.weights) == pytest.approx(np.sqrt(2 / 18), rel=0.03)
    assert_array_equal(layer.biases, 0.0)
    assert (
        layer.params["weights"] is layer.weights
        and layer.params["biases"] is layer.biases
    )
    small = ConvLayer(4, 3, 1, weight_scale=0.01, rng=1, dtype=np.float64)
    assert np.std(small.weights) < 0.03


def test_forward_does_not_modify_its_input(rng):
    """forward leaves X untouched (padding is done on a copy)."""
    X = rng.standard_normal((2, 1, 5, 6))
    before = X.copy()
    make_conv(2, 1, 3, stride=2, padding=2).forward(X)
    assert_array_equal(X, before)


def test_simplecnn_geometry_keeps_28x28():
    """8 filters 3x3 with padding 1 keep a 28x28 image 28x28."""
    layer = ConvLayer(8, 3, 1, padding=1, rng=0)
    assert layer.forward(np.zeros((2, 1, 28, 28), dtype=np.float32)).shape == (
        2,
        8,
        28,
        28,
    )
    assert layer.output_shape((1, 28, 28)) == (8, 28, 28)


# -------------------------------------------------------------------- im2col and col2im


@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_im2col_col2im_are_adjoint(rng, case):
    """<col2im(A), B> == <A, im2col(B)> for random A, B: col2im is exactly the transpose
    of im2col."""
    N, C, H, W, _, K, s, p = case
    B = rng.standard_normal((N, C, H, W))
    cols = im2col(B, K, s, p)
    OH, OW = output_size(H, K, s, p), output_size(W, K, s, p)
    assert cols.shape == (C * K * K, N * OH * OW)
    A = rng.standard_normal(cols.shape)
    assert np.sum(col2im(A, B.shape, K, s, p) * B) == pytest.approx(
        np.sum(A * cols), rel=1e-11
    )


@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_im2col_column_is_the_patch_under_each_output_pixel(rng, case):
    """Column (n*OH + i)*OW + j of im2col is the padded patch at (i*s, j*s) of image n,
    in (C, K, K) order."""
    N, C, H, W, _, K, s, p = case
    X = rng.standard_normal((N, C, H, W))
    Xp = np.pad(X, ((0, 0), (0, 0), (p, p), (p, p)))
    cols = im2col(X, K, s, p)
    OH, OW = output_size(H, K, s, p), output_size(W, K, s, p)
    for n in range(N):
        for i in range(OH):
            for j in range(OW):
                patch = Xp[n, :, i * s : i * s + K, j * s : j * s + K].ravel()
                assert_array_equal(cols[:, (n * OH + i) * OW + j], patch)


def test_col2im_sums_overlapping_patches():
    """col2im of all-ones columns counts, for each pixel, how many windows cover it
    (3x3 kernel, stride 1)."""
    X_shape = (1, 1, 4, 4)
    counts = col2im(np.ones((9, 4)), X_shape, 3, 1, 0)[0, 0]
    expected = np.array(
        [[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]], dtype=float
    )
    assert_array_equal(counts, expected)


def test_package_exports_the_activity_api():
    """The activity's public names are importable from cnn."""
    for name in (
        "convolve2d",
        "ConvLayer",
        "MaxPoolLayer",
        "ReLU",
        "Flatten",
        "FullyConnectedLayer",
        "softmax",
        "cross_entropy_loss",
        "SimpleCNN",
        "evaluate",
        "load_mnist",
    ):
        assert callable(getattr(cnn, name)), name


@pytest.mark.parametrize(
    "M, K, P, blocks",
    [
        (8, 10, 25088, 7),
        (32, 17, 6300, 7),
        (64, 3, 1500, 3),
        (3, 4, 4097, 1),
        (40, 30, 9000, 1),
        (1, 1, 5, 1),
    ],
)
def test_matmul_in_blocks_equals_one_matrix_product(rng, M, K, P, blocks, monkeypatch):
    """In blocks (of 32768 // M columns, for small M x K, the last block partial) or in
    one call, A @ B and A @ B.T equal NumPy's product (float64, so to rounding only)."""
    A, B, D = (
        rng.standard_normal((M, K)),
        rng.standard_normal((K, P)),
        rng.standard_normal((M, P)),
    )
    calls = []
    matmul = np.matmul
    monkeypatch.setattr(
        cnn.conv.np,
        "matmul",
        lambda *args, **kw: calls.append(1) or matmul(*args, **kw),
    )
    assert_allclose(cnn.conv.matmul_in_blocks(A, B), A @ B, rtol=1e-12, atol=1e-12)
    # one call per block
    assert len(calls) == blocks
    out = np.full((M, P), np.nan)
    assert cnn.conv.matmul_in_blocks(A, B, out=out) is out
    assert_allclose(out, A @ B, rtol=1e-12, atol=1e-12)
    assert_allclose(
        cnn.conv.matmul_in_blocks(D, B, transpose_b=True),
        D @ B.T,
        rtol=1e-12,
        atol=1e-10,
    )


def test_reused_buffers_follow_the_batch_size(rng):
    """The layer's reused buffers (padded input, cols with its row of ones) give the
    right answer when the batch size changes from call to call, also after a forward in
    evaluation mode."""
    layer = make_conv(4, 2, 3, 1, 1)
    for n, training in [(3, True), (5, True), (3, True), (2, False), (3, True)]:
        X = rng.standard_normal((n, 2, 6, 7))
        out = layer.forward(X, training=training)
        assert_allclose(
            out,
            conv_forward_loops(X, layer.weights, layer.biases, 1, 1),
            rtol=1e-12,
            atol=1e-12,
        )
    dout = rng.standard_normal(out.shape)
    layer.gradient(dout)
    _, dW, db = conv_backward_loops(X, layer.weights, dout, 1, 1)
    assert_allclose(layer.grads["weights"], dW, rtol=1e-11, atol=1e-12)
    assert_allclose(layer.grads["biases"], db, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    "F, C, K, stride, padding",
    [
        (4, 3, 3, 1, 1),
        (2, 3, 3, 1, 1),
        (5, 2, 2, 2, 0),
        (3, 3, 3, 1, 2),
        (3, 2, 1, 1, 0),
    ],
)
def test_layer_in_slices_of_the_batch_equals_the_loops(
    rng, monkeypatch, workers, F, C, K, stride, padding
):
    """With a slice budget of a few images, so that a batch of 7 is cut into uneven
    slices (2, 2 and 3 images), forward and every gradient equal the loop version,
    one slice at a time and two side by side in threads (cnn.threads); and the
    slices really are several."""
    X = rng.standard_normal((7, C, 9, 8))
    layer = ConvLayer(F, K, C, stride, padding, rng=0, dtype=np.float64)
    OH, OW = layer.output_shape(X.shape[1:])[1:]
    per_image = (C * K * K + 1) * OH * OW * 8
    monkeypatch.setattr(cnn.conv, "SLICE_BYTES", 3 * per_image)
    assert [p.stop - p.start for p in cnn.conv.batch_slices(7, per_image)] == [2, 2, 3]
    assert_passes_equal_the_loops(layer, X, rng, workers)


def assert_passes_equal_the_loops(layer, X, rng, workers):
    """The layer's forward pass, and its backward pass for a random dout, computed with
    the slices on `workers` threads, equal conv_forward_loops and conv_backward_loops;
    returns dout and the loops' dW."""
    s, p = layer.stride, layer.padding
    with cnn.threads.slice_threads(workers):
        out = layer.forward(X)
        dout = rng.standard_normal(out.shape)
        dX = layer.gradient(dout)
    assert_allclose(
        out,
        conv_forward_loops(X, layer.weights, layer.biases, s, p),
        rtol=1e-12,
        atol=1e-12,
    )
    dX_loops, dW, db = conv_backward_loops(X, layer.weights, dout, s, p)
    assert_allclose(dX, dX_loops, rtol=1e-11, atol=1e-12)
    assert_allclose(layer.grads["weights"], dW, rtol=1e-11, atol=1e-12)
    assert_allclose(layer.grads["biases"], db, rtol=1e-11, atol=1e-12)
    return dout, dW


def test_batch_slices_cover_the_batch_once_in_equal_runs():
    """batch_slices cuts N images into consecutive runs that fit the budget (at least
    one image each, even if one image is over it), as few as the budget allows but at
    least `at_least`, their sizes at most one image apart."""
    for N, per_image, budget, at_least in [
        (64, 455_000, 1 << 21, 1),
        (64, 227_000, 1 << 21, 2),
        (64, 31_000, 1 << 21, 2),
        (5, 10, 1000, 1),
        (3, 99, 10, 1),
        (2, 10, 1000, 4),
    ]:
        parts = cnn.conv.batch_slices(N, per_image, budget, at_least)
        sizes = [p.stop - p.start for p in parts]
        assert [i for p in parts for i in range(p.start, p.stop)] == list(range(N))
        assert all(n * per_image <= budget or n == 1 for n in sizes)
        assert max(sizes) - min(sizes) <= 1
        assert len(parts) == min(N, max(at_least, -(-N // max(1, budget // per_image))))
    assert [p.stop - p.start for p in cnn.conv.batch_slices(64, 455_000, 1 << 21)] == (
        [4] * 16
    )
    # deep_cnn's last convolution: eight runs of eight, not seven of nine and a one
    assert [p.stop - p.start for p in cnn.conv.batch_slices(64, 227_000, 1 << 21)] == (
        [8] * 8
    )
    # its first: two runs, one per thread, though one would fit the budget
    assert len(cnn.conv.batch_slices(64, 31_000, 1 << 21, at_least=2)) == 2


# ------------------------------------------------------- random geometries (hypothesis)


@st.composite
def conv_geometry(draw, max_size=7):
    """(N, C, H, W, F, K, stride, padding) with the kernel fitting the padded input."""
    N, C, F = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    H, W = draw(st.integers(1, max_size)), draw(st.integers(1, max_size))
    K, stride, padding = (
        draw(st.integers(1, 5)),
        draw(st.integers(1, 3)),
        draw(st.integers(0, 2)),
    )
    assume(K <= H + 2 * padding and K <= W + 2 * padding)
    return N, C, H, W, F, K, stride, padding


@settings(max_examples=40)
@given(conv_geometry(), seeds)
def test_conv_output_size_follows_the_formula(geometry, seed):
    """The output has (H + 2P - K) // S + 1 rows: exactly the number of kernel positions
    that fit."""
    N, C, H, W, F, K, s, p = geometry
    out = make_conv(F, C, K, s, p, seed=seed % 1000).forward(
        np.random.default_rng(seed).random((N, C, H, W))
    )
    positions_h = len(range(0, H + 2 * p - K + 1, s))
    positions_w = len(range(0, W + 2 * p - K + 1, s))
    assert (
        out.shape
        == (N, F, (H + 2 * p - K) // s + 1, (W + 2 * p - K) // s + 1)
        == (N, F, positions_h, positions_w)
    )


@settings(max_examples=30)
@given(conv_geometry(), seeds)
def test_conv_vectorized_equals_loops(geometry, seed):
    """Forward and backward of impl='vectorized' and impl='loops' agree for any
    geometry."""
    N, C, H, W, F, K, s, p = geometry
    rng = np.random.default_rng(seed)
    fast, slow = (
        make_conv(F, C, K, s, p, seed=seed % 1000),
        make_conv(F, C, K, s, p, impl="loops", seed=seed % 1000),
    )
    X = rng.standard_normal((N, C, H, W))
    out = fast.forward(X)
    assert_allclose(out, slow.forward(X), rtol=1e-11, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    assert_allclose(fast.gradient(dout), slow.gradient(dout), rtol=1e-11, atol=1e-12)
    assert_allclose(
        fast.grads["weights"], slow.grads["weights"], rtol=1e-11, atol=1e-12
    )
    assert_allclose(fast.grads["biases"], slow.grads["biases"], rtol=1e-11, atol=1e-12)


@settings(max_examples=30)
@given(conv_geometry(max_size=6), seeds)
def test_conv_gradients_pass_the_numerical_check(geometry, seed):
    """dX, dW and db agree with centred differences for any geometry."""
    N, C, H, W, F, K, s, p = geometry
    X = np.random.default_rng(seed).standard_normal((N, C, H, W))
    assert_matches_numerical_gradients(
        make_conv(F, C, K, s, p, seed=seed % 1000), X, seed
    )


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


# ------------------------------------------------------------------ numerical gradients


@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_conv_vectorized_gradients(rng, case):
    """ConvLayer (im2col): dX, dW, db agree with numerical gradients for every
    geometry."""
    N, C, H, W, F, K, s, p = case
    assert_gradients_match(
        check_layer(make_conv(F, C, K, s, p), rng.standard_normal((N, C, H, W)))
    )


@pytest.mark.parametrize("case", CONV_CASES[:6], ids=case_id)
def test_conv_loops_gradients(rng, case):
    """ConvLayer(impl='loops'): dX, dW, db agree with numerical gradients (smaller
    batch: the loops are slow)."""
    _, C, H, W, F, K, s, p = case
    layer = make_conv(min(F, 2), C, K, s, p, impl="loops")
    assert_gradients_match(check_layer(layer, rng.standard_normal((1, C, H, W))))


# ---------------------------------------------------------------- against JAX and Keras


@partial(jax.jit, static_argnums=(4, 5))
def jax_conv_and_vjp(X, Wt, b, dout, stride, padding):
    """JAX's convolution output and its vector-Jacobian product with dout:
    (out, dX, dW, db), compiled once per shape."""
    out, vjp = jax.vjp(lambda x, w, c: jax_conv(x, w, c, stride, padding), X, Wt, b)
    return (out,) + vjp(dout)


@pytest.mark.parametrize("impl", ["vectorized", "loops"])
@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_conv_forward_and_vjp_match_jax(rng, case, impl):
    """ConvLayer output, dX, dW and db equal JAX's conv_general_dilated and its
    vector-Jacobian product."""
    N, C, H, W, F, K, s, p = case
    layer = make_conv(F, C, K, s, p, impl=impl)
    X = rng.standard_normal((N, C, H, W))
    out = layer.forward(X)
    dout = rng.standard_normal(out.shape)
    expected, dX_ref, dW_ref, db_ref = jax_conv_and_vjp(
        X, layer.weights, layer.biases, dout, s, p
    )
    assert out.shape == expected.shape
    assert_allclose(out, expected, rtol=RTOL, atol=ATOL)
    assert_allclose(layer.gradient(dout), dX_ref, rtol=RTOL, atol=ATOL)
    assert_allclose(layer.grads["weights"], dW_ref, rtol=RTOL, atol=ATOL)
    assert_allclose(layer.grads["biases"], db_ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("impl", ["vectorized", "loops"])
def test_conv_gradient_without_input_grad_returns_none_and_same_param_grads(rng, impl):
    """gradient(dout, input_grad=False) returns None and the same dW, db as with
    input_grad=True (= JAX's)."""
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
    """jax.grad of sum(conv(X) ** 2) equals the layer's backward fed with
    dout = 2 * conv(X)."""
    layer = make_conv(3, 2, 3, stride=2, padding=2)
    X = rng.standard_normal((2, 2, 9, 6))
    out = layer.forward(X)
    gX, gW = jax.grad(
        lambda x, w: jnp.sum(jax_conv(x, w, layer.biases, 2, 2) ** 2), argnums=(0, 1)
    )(X, layer.weights)
    assert_allclose(layer.gradient(2 * out), gX, rtol=RTOL, atol=ATOL)
    assert_allclose(layer.grads["weights"], gW, rtol=RTOL, atol=ATOL)


def test_conv_and_pool_match_keras_layers(rng):
    """Keras' Conv2D (channels_first, padding='same') and MaxPooling2D agree with
    ConvLayer and MaxPoolLayer."""
    # imported here: it takes seconds, and conftest has chosen its JAX backend
    import keras

    X = rng.standard_normal((2, 3, 8, 6)).astype(np.float32)
    layer = make_conv(4, 3, 3, stride=1, padding=1, dtype=np.float32)
    conv = keras.layers.Conv2D(4, 3, padding="same", data_format="channels_first")
    conv.build((None, 3, 8, 6))
    # (K, K, C, F) in Keras
    conv.set_weights([layer.weights.transpose(2, 3, 1, 0), layer.biases])
    out = layer.forward(X)
    assert_allclose(out, np.asarray(conv(X)), rtol=1e-5, atol=1e-5)
    pool = keras.layers.MaxPooling2D(
        pool_size=3, strides=2, data_format="channels_first"
    )
    assert_allclose(
        MaxPoolLayer(3, 2).forward(out), np.asarray(pool(out)), rtol=0, atol=0
    )


# ---------------------------------------------------------------------------- bad input


def test_conv_wrong_number_of_dimensions():
    """A 3-D batch (forgotten channel axis) names X, the 4-D shape expected, and what
    was given."""
    with pytest.raises(
        ValueError,
        match=r"ConvLayer\.forward: X must be a 4-D array of shape \(N, C, H, W\); "
        r"got 3-D array of shape \(2, 28, 28\)",
    ):
        ConvLayer(8, 3, 1).forward(np.zeros((2, 28, 28), dtype=np.float32))


def test_conv_channel_count_mismatch():
    """3-channel input to a 1-channel layer names both counts."""
    with pytest.raises(ValueError, match=r"X has 3 channels.*expects num_channels=1"):
        ConvLayer(8, 3, 1).forward(np.zeros((2, 3, 8, 8), dtype=np.float32))


def test_conv_kernel_larger_than_padded_input():
    """A 5x5 kernel on a 3x3 input with padding 0 names the kernel, the padded size and
    the remedy."""
    with pytest.raises(
        ValueError,
        match=r"5x5 kernel is larger than the padded input 3x3 .*padding 0.*"
        r"smaller kernel or more padding",
    ):
        ConvLayer(1, 5, 1).forward(np.zeros((1, 1, 3, 3)))


def test_refused_too_small_input_leaves_the_cache_intact(rng):
    """A 4x4 input to a 5x5-kernel layer is refused, and the cache of the last good
    forward still works."""
    layer, twin = (ConvLayer(2, 5, 1, rng=0, dtype=np.float64) for _ in range(2))
    X = rng.standard_normal((1, 1, 6, 7))
    dout = rng.standard_normal(layer.forward(X).shape)
    twin.forward(X)
    with pytest.raises(
        ValueError, match=r"5x5 kernel is larger than the padded input 4x4"
    ):
        layer.forward(np.ones((1, 1, 4, 4)))
    assert_array_equal(layer.gradient(dout), twin.gradient(dout))


def test_refused_forward_leaves_conv_weights_and_cache_intact(rng):
    """After refused forwards (NaN, wrong channels, 3-D, empty, uint8), the weights are
    unchanged and backward still uses the cache of the last good forward."""
    layer, twin = (
        ConvLayer(3, 3, 2, padding=1, rng=0, dtype=np.float64),
        ConvLayer(3, 3, 2, padding=1, rng=0, dtype=np.float64),
    )
    X = rng.standard_normal((2, 2, 5, 6))
    out = layer.forward(X)
    twin.forward(X)
    before = snapshot(layer)
    nan = X.copy()
    nan[0, 0, 0, 0] = np.nan
    for bad in (
        nan,
        np.ones((2, 3, 5, 6)),
        np.ones((2, 5, 6)),
        np.ones((0, 2, 5, 6)),
        np.ones((2, 2, 5, 6), dtype=np.uint8),
    ):
        with pytest.raises((ValueError, TypeError)):
            layer.forward(bad)
    assert_unchanged(layer, before)
    dout = rng.standard_normal(out.shape)
    assert_array_equal(layer.gradient(dout), twin.gradient(dout))
    assert_array_equal(layer.grads["weights"], twin.grads["weights"])


def test_refused_backward_leaves_weights_grads_and_cache_intact(rng):
    """A dout of the wrong shape changes nothing: weights, grads and cache stay as they
    were."""
    layer, twin = (
        ConvLayer(3, 3, 2, padding=1, rng=0, dtype=np.float64) for _ in range(2)
    )
    X = rng.standard_normal((2, 2, 5, 6))
    dout = rng.standard_normal(layer.forward(X).shape)
    twin.forward(X)
    layer.gradient(dout)
    grads = {k: v.copy() for k, v in layer.grads.items()}
    before = snapshot(layer)
    with pytest.raises(ValueError, match=r"dout must have the shape"):
        layer.backward(dout[:, :2])
    assert_unchanged(layer, before)
    for name, value in grads.items():
        assert_array_equal(layer.grads[name], value)
    dout2 = rng.standard_normal(dout.shape)
    assert_array_equal(layer.gradient(dout2), twin.gradient(dout2))


@pytest.mark.parametrize(
    "K, padding",
    [(1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2), (3, 3), (5, 2)],
)
def test_input_gradient_gather_equals_the_col2im_scatter(K, padding):
    """For stride 1 the input gradient is a full correlation with the flipped filters
    (a gather); it equals col2im of W.T @ dout (the scatter) for every padding,
    including those wider than K - 1 (which fall back)."""
    from cnn.conv import col2im, conv_input_gradient

    rng = np.random.default_rng(K * 10 + padding)
    N, C, H, W, F = 2, 4, 6, 7, 3  # F <= C: the gather
    weights = rng.standard_normal((F, C, K, K))
    OH, OW = H + 2 * padding - K + 1, W + 2 * padding - K + 1
    dout = rng.standard_normal((N, F, OH, OW))
    scatter = col2im(
        weights.reshape(F, -1).T @ dout.transpose(1, 0, 2, 3).reshape(F, -1),
        (N, C, H, W),
        K,
        1,
        padding,
    )
    for workspace in (None, {}):
        np.testing.assert_allclose(
            conv_input_gradient(dout, weights, (N, C, H, W), 1, padding, workspace),
            scatter,
            rtol=1e-12,
            atol=1e-12,
        )


# ------------------------------------------------- the shifted products (conv_shifts)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("case", SHIFT_CASES, ids=case_id)
def test_shifted_products_equal_the_loops_in_uneven_slices(
    rng, monkeypatch, case, workers
):
    """algorithm='shifts': forward, dX, dW and db equal the loop version, with a slice
    budget that cuts a batch of 7 into three uneven slices (one thread, and two side by
    side), and twice in a row (the kept buffers' zero borders stay zero)."""
    _, C, H, W, F, K, s, p = case
    layer = make_conv(F, C, K, s, p, algorithm="shifts")
    per_image = (C + 2 * F) * (H + p) * (W + p) * 8
    monkeypatch.setattr(cnn.conv_shifts, "SLICE_BYTES", 3 * per_image)
    assert [part.stop - part.start for part in layer._shift_slices((7, C, H, W))] == [
        2,
        2,
        3,
    ]
    for _ in range(2):
        X = rng.standard_normal((7, C, H, W))
        dout, dW = assert_passes_equal_the_loops(layer, X, rng, workers)
        assert layer.grads["weights"].flags.c_contiguous
    assert layer.gradient(dout, input_grad=False) is None
    assert_allclose(layer.grads["weights"], dW, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("case", SHIFT_CASES, ids=case_id)
def test_grid_columns_equal_the_loops_in_uneven_slices(rng, monkeypatch, case, workers):
    """algorithm='grid': forward, dX (the gather where F <= C, the scatter where F > C),
    dW and db equal the loop version, with a slice budget that cuts a batch of 7 into
    three uneven slices (one thread, and two side by side), twice in a row (the kept
    buffers' zero borders stay zero)."""
    _, C, H, W, F, K, s, p = case
    layer = make_conv(F, C, K, s, p, algorithm="grid")
    per_image = (C * K * K + 1) * (H + p) * (W + p) * 8
    monkeypatch.setattr(cnn.conv, "SLICE_BYTES", 3 * per_image)
    slices = layer._grid_slices((7, C, H, W))
    assert [part.stop - part.start for part in slices] == [2, 2, 3]
    for _ in range(2):
        X = rng.standard_normal((7, C, H, W))
        dout, dW = assert_passes_equal_the_loops(layer, X, rng, workers)
    assert layer.gradient(dout, input_grad=False) is None
    assert_allclose(layer.grads["weights"], dW, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("algorithm", ["shifts", "grid"])
@pytest.mark.parametrize("case", SHIFT_CASES, ids=case_id)
def test_grid_algorithms_match_jax_and_numerical_gradients(rng, case, algorithm):
    """algorithm='shifts' and 'grid': output and vector-Jacobian product equal JAX's,
    and dX, dW, db agree with centred differences."""
    N, C, H, W, F, K, s, p = case
    layer = make_conv(F, C, K, s, p, algorithm=algorithm)
    X = rng.standard_normal((N, C, H, W))
    out = layer.forward(X)
    dout = rng.standard_normal(out.shape)
    expected, dX_ref, dW_ref, db_ref = jax_conv_and_vjp(
        X, layer.weights, layer.biases, dout, s, p
    )
    assert_allclose(out, expected, rtol=RTOL, atol=ATOL)
    assert_allclose(layer.gradient(dout), dX_ref, rtol=RTOL, atol=ATOL)
    assert_allclose(layer.grads["weights"], dW_ref, rtol=RTOL, atol=ATOL)
    assert_allclose(layer.grads["biases"], db_ref, rtol=RTOL, atol=ATOL)
    assert_gradients_match(check_layer(layer, X))


@st.composite
def stride_one_geometry(draw, max_size=7):
    """(N, C, H, W, F, K, 1, padding) with padding <= K - 1 and the kernel fitting."""
    N, C, H, W, F, K, _, _ = draw(conv_geometry(max_size))
    padding = draw(st.integers(0, K - 1))
    assume(K <= H + 2 * padding and K <= W + 2 * padding)
    return N, C, H, W, F, K, 1, padding


@pytest.mark.parametrize("algorithm", ["shifts", "grid"])
@settings(max_examples=30)
@given(stride_one_geometry(), seeds)
def test_grid_algorithms_equal_im2col_for_any_geometry(algorithm, geometry, seed):
    """The vectorised algorithms agree with im2col, forward and backward, for any
    stride-1 geometry."""
    N, C, H, W, F, K, s, p = geometry
    rng = np.random.default_rng(seed)
    other, cols = (
        make_conv(F, C, K, s, p, seed=seed % 1000, algorithm=name)
        for name in (algorithm, "im2col")
    )
    X = rng.standard_normal((N, C, H, W))
    out = other.forward(X)
    assert_allclose(out, cols.forward(X), rtol=1e-11, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    assert_allclose(other.gradient(dout), cols.gradient(dout), rtol=1e-11, atol=1e-12)
    for name in ("weights", "biases"):
        assert_allclose(other.grads[name], cols.grads[name], rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize(
    "algorithm, C, F, size",
    [("shifts", 16, 16, 28), ("grid", 16, 32, 14), ("grid", 32, 32, 14)],
)
def test_grid_algorithms_in_float32_agree_with_im2col(rng, algorithm, C, F, size):
    """At deep_cnn's layers (padding 1), in float32, the algorithm that runs them on one
    thread agrees with im2col to float32 rounding; the grid's forward pass sums the same
    columns in the same order, so it is the same to the bit."""
    other, cols = (
        make_conv(F, C, 3, 1, 1, dtype=np.float32, algorithm=name)
        for name in (algorithm, "im2col")
    )
    X = rng.standard_normal((9, C, size, size)).astype(np.float32)
    out = other.forward(X)
    assert out.dtype == np.float32
    if algorithm == "grid":
        assert_array_equal(out, cols.forward(X))
    assert_allclose(out, cols.forward(X), rtol=1e-4, atol=1e-5)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    assert_allclose(other.gradient(dout), cols.gradient(dout), rtol=1e-4, atol=1e-5)
    scale = np.abs(cols.grads["weights"]).max()
    assert_allclose(other.grads["weights"], cols.grads["weights"], atol=1e-5 * scale)


def test_auto_uses_each_algorithm_where_it_was_measured_faster(rng, monkeypatch):
    """algorithm='auto', on one thread: the shifted products for stride 1, several
    channels and a grid at most 1.1 times the output; the grid's columns for the other
    stride-1 layers with several channels; im2col for one channel, stride 2 or a padding
    wider than K - 1. On two threads: im2col."""
    use = cnn.conv_shifts.use_shifts
    assert use(16, 28, 28, 3, 1, 1)  # deep_cnn's second layer: grid 29*29/28**2
    assert not use(32, 14, 14, 3, 1, 1)  # its 14x14 layers: 15*15/14**2
    assert not use(1, 28, 28, 3, 1, 1)  # one channel
    assert not use(16, 28, 28, 3, 2, 1)  # stride 2
    assert not use(16, 28, 28, 3, 1, 3)  # padding wider than K - 1
    assert use(16, 14, 14, 3, 1, 1, max_growth=1.2)
    ran = []
    for name in ("forward_slice", "grid_forward_slice"):
        original = getattr(cnn.conv_shifts, name)

        def spy(*args, name=name, original=original):
            ran.append(name)
            return original(*args)

        monkeypatch.setattr(cnn.conv_shifts, name, spy)

    def runs(X, workers=1, **kwargs):
        ran.clear()
        with cnn.threads.slice_threads(workers):
            ConvLayer(4, 3, X.shape[1], rng=0, **{"padding": 1, **kwargs}).forward(X)
        return set(ran)

    X = rng.standard_normal((2, 16, 28, 28)).astype(np.float32)
    assert runs(X) == {"forward_slice"}
    assert runs(X[:, :, :14, :14]) == {"grid_forward_slice"}
    assert runs(X[:, :1]) == set()  # one channel: im2col
    assert runs(X, stride=2) == set()
    assert runs(X, padding=3) == set()
    assert runs(X, workers=2) == set()
    assert runs(X[:, :, :14, :14], workers=2) == set()
    assert runs(X, algorithm="im2col") == set()
    assert runs(X, workers=2, algorithm="shifts") == {"forward_slice"}
    assert runs(X, algorithm="grid") == {"grid_forward_slice"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"algorithm": "winograd"},
            "algorithm must be 'auto', 'im2col', 'shifts' or 'grid'; got 'winograd'",
        ),
        (
            {"algorithm": "shifts", "stride": 2},
            r"algorithm='shifts' needs stride 1 .* got stride=2",
        ),
        (
            {"algorithm": "grid", "stride": 2},
            r"algorithm='grid' needs stride 1 .* got stride=2",
        ),
        (
            {"algorithm": "shifts", "padding": 3},
            "algorithm='shifts' needs padding <= filter_size - 1; got padding=3 with "
            "filter_size=3",
        ),
    ],
)
def test_conv_refuses_an_unknown_or_unsuited_algorithm(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConvLayer(2, 3, 2, **kwargs)


def test_conv_refuses_an_algorithm_set_afterwards_that_cannot_compute_it(rng):
    """The checks hold at each pass too: an attribute changed after construction
    cannot run the shifts on a stride-2 layer (a silent wrong answer) or name an
    unknown algorithm."""
    X = rng.standard_normal((2, 2, 9, 9))
    layer = ConvLayer(2, 3, 2, stride=2, padding=1, rng=0)
    out = layer.forward(X)
    layer.algorithm = "shifts"
    with pytest.raises(ValueError, match="algorithm='shifts' needs stride 1"):
        layer.forward(X)
    with pytest.raises(ValueError, match="algorithm='shifts' needs stride 1"):
        layer.gradient(np.ones_like(out))
    layer.algorithm = "direct"
    with pytest.raises(ValueError, match="got 'direct'"):
        layer.forward(X)
