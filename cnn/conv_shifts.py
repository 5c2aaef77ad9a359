"""Convolution on a padded grid: as ``K*K`` shifted matrix products with no im2col copy
(``algorithm="shifts"``), or as im2col's one product with columns copied from the grid
in long runs (``algorithm="grid"``, at the end of this module).

Explained in the chapter *Performance*. These are the other vectorised algorithms of
:class:`cnn.conv.ConvLayer`; on one thread the layer chooses the shifts for stride 1
when the padding adds few pixels (:func:`use_shifts`), and the grid's columns for the
other stride-1 layers with several channels (:func:`use_grid`).

The idea. Lay a slice of ``n`` zero-padded images out channel by channel, each channel
flattened into one row of numbers (:func:`grid_geometry`: rows of width ``Wg``, one
image after another). Moving a window by ``(ki, kj)`` pixels then moves it by
``ki * Wg + kj`` places along that row, for every image at once. So the contribution of
filter tap ``(ki, kj)`` to every output pixel is one matrix product,
``weights[:, :, ki, kj] @ row_view`` ((F, C) times (C, L)), where ``row_view`` is the
flattened grid seen from that offset: a view, not a copy. Summing the ``K*K`` products
gives the convolution at every position of the grid; the output pixels are some of the
positions (the rest straddle a border and are dropped).

im2col copies every input pixel ``K*K`` times into a matrix and multiplies once; this
copies nothing and multiplies ``K*K`` times, each product with only ``C`` terms per
sum. It pays when the channels are few and the maps large, as in deep_cnn's second
layer (16 channels of 28x28), and loses when the grid is much larger than the output
or the products are short. The literature calls such schemes kn2row / kn2col
(Vasudevan, Anderson and Gregg, 2017).

The backward pass uses the same two moves: the weights' gradient of tap ``(ki, kj)``
is ``dout_grid @ row_view.T`` ((F, L) times (L, C)), and the input's gradient is the
full correlation of the padded ``dout`` with the flipped filters, computed like a
forward pass.
"""

import numpy as np


def use_shifts(C, H, W, K, stride, padding, max_growth=None):
    """Whether :class:`cnn.conv.ConvLayer` uses the shifted products for this geometry:
    stride 1, more than one input channel (with one, each product has one term per
    sum), a padding the input gradient's full correlation can use (at most ``K - 1``),
    and a grid (:func:`grid_geometry`) at most ``max_growth`` (default
    :data:`MAX_GRID_GROWTH`) times the output's pixels."""
    if stride != 1 or C < 2 or padding > K - 1:
        return False
    OH, OW = H + 2 * padding - K + 1, W + 2 * padding - K + 1
    growth = (H + padding) * (W + padding) / (OH * OW)  # see grid_geometry
    return growth <= (MAX_GRID_GROWTH if max_growth is None else max_growth)


#: The shifted products are used when the grid holds at most this many times the
#: output's pixels: measured on deep_cnn's layers (chapter *Performance*), they were
#: 1.5 times as fast as im2col at 28x28 with padding 1 (a grid 1.07 times the output)
#: and 10-20% slower at 14x14 (1.15 times).
MAX_GRID_GROWTH = 1.1

#: Bytes of the buffers one slice of images uses (input grid, output grid and one
#: product, each channel by grid pixel, in float32): small enough for a core's cache.
#: deep_cnn's second layer (16 channels, 29x29 grid, 161 kB per image) gets slices of
#: four images; half or twice that ran 1.1 to 1.4 times slower.
SLICE_BYTES = 3 << 18


def tap_matrices(weights):
    """``weights`` (F, C, K, K) as ``K*K`` matrices (F, C), tap ``ki * K + kj`` first:
    shape (K*K, F, C)."""
    F, C, K, _ = weights.shape
    return np.ascontiguousarray(weights.transpose(2, 3, 0, 1)).reshape(K * K, F, C)


def flipped_tap_matrices(weights):
    """The taps of the input gradient's correlation: tap ``(ki, kj)`` is
    ``weights[:, :, K-1-ki, K-1-kj].T``; shape (K*K, C, F)."""
    F, C, K, _ = weights.shape
    flipped = weights[:, :, ::-1, ::-1].transpose(2, 3, 1, 0)
    return np.ascontiguousarray(flipped).reshape(K * K, C, F)


def grid(workspace, name, shape, dtype):
    """A zero-filled buffer of exactly this shape kept in ``workspace`` (a dict). Only
    its interior is ever written, so its border stays zero from batch to batch."""
    key = (name, shape, np.dtype(dtype).str)
    buffer = workspace.get(key)
    if buffer is None:
        buffer = workspace[key] = np.zeros(shape, dtype=dtype)
    return buffer


def grid_geometry(n, H, W, padding, K):
    """The layout of a slice of ``n`` images (H, W) on the grid, as a tuple
    ``(Hb, Wg, G, L)``.

    Each image row is followed by ``padding`` zeros, which serve as the right border of
    that row and the left border of the next (a window reaching left of column 0 reads
    the end of the row above); likewise ``padding`` zero rows follow each image, and
    ``padding`` zero rows and ``padding`` zeros lead the grid. So a row is
    ``Wg = W + padding`` long, an image takes ``Hb = H + padding`` rows, and the
    grid, flattened, ``G = padding + (padding + n * Hb) * Wg`` numbers. Output pixel
    ``(i, j)`` of image ``m`` is grid position ``(m * Hb + i) * Wg + j``, and its
    window's tap ``(ki, kj)`` is ``ki * Wg + kj`` places further on; ``L`` is one past
    the last output position.
    """
    OH, OW = H + 2 * padding - K + 1, W + 2 * padding - K + 1
    Hb, Wg = H + padding, W + padding
    G = padding + (padding + n * Hb) * Wg
    L = ((n - 1) * Hb + OH - 1) * Wg + OW
    return Hb, Wg, G, L


def shifted_products(taps, rows, Wg, K, L, out, workspace):
    """The correlation on a flattened grid: ``out[:, :L] = sum over (ki, kj) of
    taps[ki*K + kj] @ rows[:, ki*Wg + kj : ki*Wg + kj + L]``.

    Parameters
    ----------
    taps : ndarray of shape (K*K, M, R)
    rows : ndarray of shape (R, G)
        ``R`` channels, each a flattened grid of rows of width ``Wg``.
    out : ndarray of shape (M, at least L)
    """
    total = out[:, :L]
    np.matmul(taps[0], rows[:, :L], out=total)
    # NumPy's matmul cannot add into its output, so each further tap goes through one
    # buffer of the same shape.
    term = grid(workspace, "term", total.shape, out.dtype)
    for k in range(1, K * K):
        start = (k // K) * Wg + k % K
        np.matmul(taps[k], rows[:, start : start + L], out=term)
        total += term
    return out


def padded_rows(X, padding, workspace, name="padded"):
    """``X`` (n, C, H, W) on the grid of :func:`grid_geometry`, channel by channel, in
    a kept buffer: shape (C, G)."""
    n, C, H, W = X.shape
    p = padding
    Hb, Wg, G, _ = grid_geometry(n, H, W, p, 1)
    rows = grid(workspace, name, (C, G), X.dtype)
    start = p + p * Wg
    images = rows[:, start : start + n * Hb * Wg].reshape(C, n, Hb, Wg)
    images[:, :, :H, :W] = X.transpose(1, 0, 2, 3)
    return rows


def from_grid(result, Hb, Wg, out, biases=None):
    """Copy the output positions of a grid ``result`` (M, at least n * Hb * Wg) into
    ``out`` (M, n, OH, OW), adding ``biases`` (M,) on the way if given."""
    M, n, OH, OW = out.shape
    valid = result[:, : n * Hb * Wg].reshape(M, n, Hb, Wg)[:, :, :OH, :OW]
    if biases is None:
        np.copyto(out, valid)
    else:
        np.add(valid, biases[:, None, None, None], out=out)


def to_grid(dout, Hb, Wg, workspace):
    """``dout`` (n, F, OH, OW) at the output positions of a kept zero grid, flattened:
    (F, n * Hb * Wg)."""
    n, F, OH, OW = dout.shape
    dgrid = grid(workspace, "dout_grid", (F, n, Hb, Wg), dout.dtype)
    dgrid[:, :, :OH, :OW] = dout.transpose(1, 0, 2, 3)
    return dgrid.reshape(F, -1)


def tap_gradients(drows, rows, Wg, K, L):
    """The weights' gradient, tap by tap: ``drows`` (F, at least L), the upstream
    gradient at the grid's output positions (zero elsewhere), against the shifted views
    of ``rows`` (C, G); shape (K*K, F, C)."""
    d_taps = np.empty((K * K, drows.shape[0], rows.shape[0]), dtype=drows.dtype)
    for k in range(K * K):
        # tap (ki, kj) saw rows[:, start : start + L] at the L grid positions
        start = (k // K) * Wg + k % K
        np.matmul(drows[:, :L], rows[:, start : start + L].T, out=d_taps[k])
    return d_taps


def forward_slice(X, taps, biases, padding, out, workspace):
    """The convolution of one slice ``X`` (n, C, H, W), stride 1, written with its
    biases into ``out`` (F, n, OH, OW) (a view into the layer's output)."""
    n, C, H, W = X.shape
    F, _, OH, _ = out.shape
    K = H + 2 * padding - OH + 1
    Hb, Wg, _, L = grid_geometry(n, H, W, padding, K)
    rows = padded_rows(X, padding, workspace)
    result = grid(workspace, "result", (F, n * Hb * Wg), out.dtype)
    shifted_products(taps, rows, Wg, K, L, result, workspace)
    from_grid(result, Hb, Wg, out, biases)


def backward_slice(X, dout, taps_flipped, padding, dX, workspace):
    """The gradients of one slice: returns the weights' gradient as (K*K, F, C) taps,
    and writes the input's gradient (C, n, H, W) into ``dX`` unless it is None.

    ``X`` is (n, C, H, W) and ``dout`` (n, F, OH, OW); stride 1.
    """
    n, C, H, W = X.shape
    F, OH, OW = dout.shape[1:]
    K = H + 2 * padding - OH + 1
    Hb, Wg, _, L = grid_geometry(n, H, W, padding, K)
    rows = padded_rows(X, padding, workspace)
    # dout at the forward pass's output positions, zero elsewhere
    d_taps = tap_gradients(to_grid(dout, Hb, Wg, workspace), rows, Wg, K, L)
    if dX is not None:
        # the full correlation: dout padded by K - 1 - padding, flipped filters
        full = K - 1 - padding
        Hbf, Wgf, _, Lf = grid_geometry(n, OH, OW, full, K)
        drows = padded_rows(dout, full, workspace, "dout_padded")
        result = grid(workspace, "dx_result", (C, n * Hbf * Wgf), dout.dtype)
        shifted_products(taps_flipped, drows, Wgf, K, Lf, result, workspace)
        from_grid(result, Hbf, Wgf, dX)
    return d_taps


# ---------------------------------------------------------------- the grid's columns
# algorithm="grid": im2col on the grid. The K*K shifted views above are copied one under
# another into one tall matrix, and the convolution is one product, as with im2col. But
# each row of that matrix is a view's row, one contiguous run of L numbers, where
# im2col's rows are gathered from runs of OW numbers (14 at deep_cnn's 14x14 layers):
# the same numbers are copied, in a few long copies instead of many short ones. The
# product covers the grid's positions, so it does (growth - 1) more work than im2col's.


def use_grid(C, K, stride, padding):
    """Whether :class:`cnn.conv.ConvLayer` with ``algorithm="auto"`` uses the grid's
    columns where it does not use the shifted products: stride 1, a padding the grid
    can hold (at most ``K - 1``), and more than one channel (with one, im2col's
    product in blocks was faster: deep_cnn's first layer)."""
    return stride == 1 and padding <= K - 1 and C >= 2


def grid_columns(rows, K, Wg, L, out):
    """The ``K*K`` shifted views of ``rows`` (R, G), stacked into ``out`` (at least
    ``R*K*K`` rows and ``L`` columns): row ``r*K*K + ki*K + kj`` of ``out`` is
    ``rows[r, ki*Wg + kj : ki*Wg + kj + L]``, in the ``(R, K, K)`` order of a filter, as
    in :func:`cnn.conv.im2col`. Each copy is ``R`` contiguous runs of ``L`` numbers."""
    R = rows.shape[0]
    stacked = out[: R * K * K].reshape(R, K * K, out.shape[1])
    for k in range(K * K):
        start = (k // K) * Wg + k % K
        stacked[:, k, :L] = rows[:, start : start + L]
    return out


def add_grid_columns(dcols, K, Wg, L, out):
    """The adjoint of :func:`grid_columns`: add row ``r*K*K + k`` of ``dcols``
    (R*K*K, L) onto ``out[r]`` (R, G) at the offset of tap ``k``."""
    R = out.shape[0]
    stacked = dcols.reshape(R, K * K, L)
    for k in range(K * K):
        start = (k // K) * Wg + k % K
        out[:, start : start + L] += stacked[:, k]
    return out


def columns_product(A, cols, L, out):
    """``out[:, :L] = A @ cols[:, :L]``: the product over the grid's first ``L``
    positions (the rest are never output positions)."""
    np.matmul(A, cols[:, :L], out=out[:, :L])
    return out


def columns_gradient(dgrid, cols, L):
    """``dgrid[:, :L] @ cols[:, :L].T`` (M, rows of ``cols``), computed as
    ``(cols @ dgrid.T).T``, which ran faster with the BLAS we measured (as in
    :func:`cnn.conv.matmul_in_blocks`)."""
    return (cols[:, :L] @ dgrid[:, :L].T).T


def _ones_below(workspace, name, rows, columns, dtype):
    """A kept (rows + 1, columns) buffer whose last row is ones (the bias trick's)."""
    cols = grid(workspace, name, (rows + 1, columns), dtype)
    cols[-1] = 1
    return cols


def grid_forward_slice(X, weights_and_biases, K, padding, out, workspace):
    """The convolution of one slice ``X`` (n, C, H, W), stride 1, with the grid's
    columns: ``weights_and_biases`` (F, C*K*K + 1) holds the filters as rows and the
    biases as a last column (the bias trick); writes ``out`` (F, n, OH, OW)."""
    n, C, H, W = X.shape
    Hb, Wg, _, L = grid_geometry(n, H, W, padding, K)
    rows = padded_rows(X, padding, workspace)
    cols = _ones_below(workspace, "grid_cols", C * K * K, n * Hb * Wg, X.dtype)
    grid_columns(rows, K, Wg, L, cols)
    result = grid(workspace, "result", (out.shape[0], n * Hb * Wg), out.dtype)
    columns_product(weights_and_biases, cols, L, result)
    from_grid(result, Hb, Wg, out)


def grid_backward_slice(X, dout, weights, flipped, padding, dX, workspace):
    """The gradients of one slice with the grid's columns: returns the (F, C*K*K + 1)
    gradient of the weights (as rows) and of the biases (last column), and writes the
    input's gradient (C, n, H, W) into ``dX`` unless it is None.

    ``weights`` is (F, C, K, K), ``flipped`` their flipped filters (C, F*K*K)
    (:func:`cnn.conv.flipped_filters`).

    The input's gradient is a gather, the full correlation of the padded ``dout`` with
    the flipped filters (:func:`cnn.conv.conv_input_gradient`), when there are no more
    filters than channels; with more filters, a scatter, which copies fewer rows:
    ``W.T @ dout`` on the grid, each tap's rows added back at its offset.
    """
    n, C, H, W = X.shape
    F, OH, OW = dout.shape[1:]
    K = H + 2 * padding - OH + 1
    Hb, Wg, G, L = grid_geometry(n, H, W, padding, K)
    rows = padded_rows(X, padding, workspace)
    cols = _ones_below(workspace, "grid_cols", C * K * K, n * Hb * Wg, X.dtype)
    grid_columns(rows, K, Wg, L, cols)
    # dout at the output positions, zero elsewhere: the other positions add nothing
    dgrid = to_grid(dout, Hb, Wg, workspace)
    d_weights = columns_gradient(dgrid, cols, L)
    if dX is None:
        return d_weights
    if F <= C:
        full = K - 1 - padding
        Hbf, Wgf, _, Lf = grid_geometry(n, OH, OW, full, K)
        drows = padded_rows(dout, full, workspace, "dout_padded")
        dcols = grid(workspace, "dout_cols", (F * K * K, n * Hbf * Wgf), dout.dtype)
        grid_columns(drows, K, Wgf, Lf, dcols)
        result = grid(workspace, "dx_result", (C, n * Hbf * Wgf), dout.dtype)
        columns_product(flipped, dcols, Lf, result)
        from_grid(result, Hbf, Wgf, dX)
    else:
        dcols = grid(workspace, "dx_cols", (C * K * K, L), dout.dtype)
        columns_product(weights.reshape(F, -1).T, dgrid, L, dcols)
        drows = grid(workspace, "dx_grid", (C, G), dout.dtype)
        drows[...] = 0
        add_grid_columns(dcols, K, Wg, L, drows)
        start = padding + padding * Wg  # the images' first row, as in padded_rows
        images = drows[:, start : start + n * Hb * Wg].reshape(C, n, Hb, Wg)
        dX[...] = images[:, :, :H, :W]
    return d_weights
