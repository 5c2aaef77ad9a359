"""Convolution as ``K*K`` shifted matrix products on the padded grid: no im2col copy.

Explained in the chapter *Performance*. This is the other vectorised algorithm of
:class:`cnn.conv.ConvLayer` (``algorithm="shifts"``); the layer chooses it for stride 1
when the padding adds few pixels (:func:`use_shifts`) and one thread runs the slices.

The idea. Lay a slice of ``n`` padded images out channel by channel,
``Xp`` of shape (C, n, Hp, Wp), and flatten each channel into one row of
``n * Hp * Wp`` numbers. Moving a window by ``(ki, kj)`` pixels then moves it by
``ki * Wp + kj`` places along that row, for every image at once. So the contribution of
filter tap ``(ki, kj)`` to every output pixel is one matrix product,
``weights[:, :, ki, kj] @ row_view`` ((F, C) times (C, L)), where ``row_view`` is the
flattened grid seen from that offset: a view, not a copy. Summing the ``K*K`` products
gives the convolution at every position of the grid, and the output pixels are the
positions ``(i, j)`` with ``i < OH`` and ``j < OW`` of each image (the rest mixes
neighbouring rows or images and is dropped).

im2col copies every input pixel ``K*K`` times into a matrix and multiplies once; this
copies nothing and multiplies ``K*K`` times, each product with only ``C`` terms per
sum. It pays when the channels are few and the maps large, as in deep_cnn's second
layer (16 channels of 28x28), and loses when the padded grid is much larger than the
output (14x14 maps: a border of one pixel adds 31% to the grid). The literature calls
such schemes kn2row / kn2col (Vasudevan, Anderson and Gregg, 2017).

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
    and a padded grid at most ``max_growth`` (default :data:`MAX_GRID_GROWTH`) times
    the output's pixels."""
    if stride != 1 or C < 2 or padding > K - 1:
        return False
    OH, OW = H + 2 * padding - K + 1, W + 2 * padding - K + 1
    growth = (H + 2 * padding) * (W + 2 * padding) / (OH * OW)
    return growth <= (MAX_GRID_GROWTH if max_growth is None else max_growth)


#: The shifted products are used when the padded grid holds at most this many times the
#: output's pixels: measured on deep_cnn's layers (chapter *Performance*), they were
#: faster than im2col at 28x28 with padding 1 (a grid 1.15 times the output) and slower
#: at 14x14 (1.31 times).
MAX_GRID_GROWTH = 1.2

#: Bytes of the buffers one slice of images uses (input grid, output grid and one
#: product, each channel by grid pixel, in float32): small enough for a core's cache.
#: deep_cnn's second layer (16 channels, 30x30 grid, 173 kB per image) gets slices of
#: four images; eight ran 1.4 times slower.
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


def shifted_products(taps, rows, Wg, K, out, workspace):
    """The valid correlation on a flattened grid: ``out[:, :L] = sum over (ki, kj) of
    taps[ki*K + kj] @ rows[:, ki*Wg + kj : ki*Wg + kj + L]``.

    Parameters
    ----------
    taps : ndarray of shape (K*K, M, R)
    rows : ndarray of shape (R, G)
        ``R`` channels, each a flattened grid of rows of width ``Wg``.
    out : ndarray of shape (M, G)
        Receives the sums in its first ``L = G - (K-1)*Wg - (K-1)`` columns.
    """
    G = rows.shape[1]
    L = G - (K - 1) * Wg - (K - 1)
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
    """``X`` (n, C, H, W), zero-padded and laid out channel by channel in a kept
    buffer: shape (C, n * Hp * Wp)."""
    n, C, H, W = X.shape
    p = padding
    padded = grid(workspace, name, (C, n, H + 2 * p, W + 2 * p), X.dtype)
    padded[:, :, p : p + H, p : p + W] = X.transpose(1, 0, 2, 3)
    return padded.reshape(C, -1)


def forward_slice(X, taps, biases, padding, out, workspace):
    """The convolution of one slice ``X`` (n, C, H, W), stride 1, written with its
    biases into ``out`` (F, n, OH, OW) (a view into the layer's output)."""
    n, C, H, W = X.shape
    F, _, OH, OW = out.shape
    K = H + 2 * padding - OH + 1
    Hp, Wp = H + 2 * padding, W + 2 * padding
    rows = padded_rows(X, padding, workspace)
    result = grid(workspace, "result", (F, n * Hp * Wp), out.dtype)
    shifted_products(taps, rows, Wp, K, result, workspace)
    from_grid(result, Hp, Wp, out, biases)


def from_grid(result, Hg, Wg, out, biases=None):
    """Copy the valid positions of a grid ``result`` (M, n * Hg * Wg) into ``out``
    (M, n, OH, OW), adding ``biases`` (M,) on the way if given."""
    OH, OW = out.shape[2:]
    valid = result.reshape(out.shape[0], out.shape[1], Hg, Wg)[:, :, :OH, :OW]
    if biases is None:
        np.copyto(out, valid)
    else:
        np.add(valid, biases[:, None, None, None], out=out)


def to_grid(dout, Hg, Wg, workspace):
    """``dout`` (n, F, OH, OW) at the top-left positions of a kept zero grid
    (F, n, Hg, Wg), flattened: (F, n * Hg * Wg)."""
    n, F, OH, OW = dout.shape
    dgrid = grid(workspace, "dout_grid", (F, n, Hg, Wg), dout.dtype)
    dgrid[:, :, :OH, :OW] = dout.transpose(1, 0, 2, 3)
    return dgrid.reshape(F, -1)


def tap_gradients(drows, rows, Wg, K):
    """The weights' gradient, tap by tap: ``drows`` (F, G), the upstream gradient on the
    grid (zero where there is no output), against the shifted views of ``rows`` (C, G);
    shape (K*K, F, C)."""
    L = drows.shape[1] - (K - 1) * Wg - (K - 1)
    d_taps = np.empty((K * K, drows.shape[0], rows.shape[0]), dtype=drows.dtype)
    for k in range(K * K):
        # tap (ki, kj) saw rows[:, start : start + L] at the L grid positions
        start = (k // K) * Wg + k % K
        np.matmul(drows[:, :L], rows[:, start : start + L].T, out=d_taps[k])
    return d_taps


def backward_slice(X, dout, taps_flipped, padding, dX, workspace):
    """The gradients of one slice: returns the weights' gradient as (K*K, F, C) taps,
    and writes the input's gradient (C, n, H, W) into ``dX`` unless it is None.

    ``X`` is (n, C, H, W) and ``dout`` (n, F, OH, OW); stride 1.
    """
    n, C, H, W = X.shape
    F, OH, OW = dout.shape[1:]
    K = H + 2 * padding - OH + 1
    Hp, Wp = H + 2 * padding, W + 2 * padding
    rows = padded_rows(X, padding, workspace)
    # dout on the forward pass's grid, zero at the positions that are not outputs
    d_taps = tap_gradients(to_grid(dout, Hp, Wp, workspace), rows, Wp, K)
    if dX is not None:
        # the full correlation: dout padded by K - 1 - padding, flipped filters
        full = K - 1 - padding
        drows = padded_rows(dout, full, workspace, "dout_padded")
        Hf, Wf = OH + 2 * full, OW + 2 * full
        result = grid(workspace, "dx_result", (C, drows.shape[1]), dout.dtype)
        shifted_products(taps_flipped, drows, Wf, K, result, workspace)
        from_grid(result, Hf, Wf, dX)
    return d_taps
