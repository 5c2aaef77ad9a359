"""A convolution and the max pooling after it, run as one step: how training runs them.

Explained in the chapter *Performance*.

Run as two layers, max pooling reads the convolution's output through ``P*P`` strided views (for a
2x2 pool: every other pixel of every other row), and each element-wise step over such a view walks
thousands of short rows. But the convolution is free to compute its output pixels in any order: they
are the columns of one matrix product. :func:`im2col_by_window` orders the columns by their position
``(di, dj)`` inside the pooling window first, so the product ``W @ cols`` comes out as ``P*P``
contiguous blocks, block ``k = di*P + dj`` holding pixel ``(di, dj)`` of every window; max pooling is
then an element-wise maximum over whole blocks, and its backward pass writes whole blocks too.

:class:`ConvMaxPool` does this for a :class:`~cnn.conv.ConvLayer` followed by a
:class:`~cnn.layers.MaxPoolLayer` whose windows neither overlap nor leave gaps (``stride == pool_size``).
It computes what the two layers compute one after the other (the same pooled values, the same winners
on ties, the gradients up to the rounding of sums taken in another order), and uses the layers' own
weights and gradients, so ``Sequential`` can run it in place of the pair without anything else noticing.
"""
import numpy as np

from ._checks import check_dout, require_forward
from .conv import ConvLayer, matmul_in_blocks, patch_windows
from .layers import MaxPoolLayer, max_with_winner, route_to_winner


def im2col_by_window(X, K, stride, padding, P, out=None, padded=None):
    """im2col with its columns ordered by the position in a ``P x P`` pooling window of the output.

    Parameters
    ----------
    X : ndarray of shape (N, C, H, W)
    K, stride, padding : int
        The convolution's filter size, stride and padding, giving an (OH, OW) output.
    P : int
        The side of the (non-overlapping) pooling windows; ``OH2 = OH // P``, ``OW2 = OW // P``.
        Output pixels in the last ``OH % P`` rows and ``OW % P`` columns belong to no window and are left out.
    out, padded : optional buffers, as in :func:`cnn.conv.im2col`

    Returns
    -------
    cols : ndarray of shape (C * K * K, P * P * N * OH2 * OW2)
        Column ``((di * P + dj) * N + n) * OH2 * OW2 + i * OW2 + j`` is the patch under output pixel
        ``(P*i + di, P*j + dj)`` of image ``n``, in the ``(C, K, K)`` order of a filter.
    """
    windows = patch_windows(X, K, stride, padding, padded)           # (N, C, OH, OW, K, K)
    N, C, OH, OW = windows.shape[:4]
    OH2, OW2 = OH // P, OW // P
    # Split each output axis into (window, position in the window); both are plain views.
    windows = windows[:, :, : OH2 * P, : OW2 * P].reshape(N, C, OH2, P, OW2, P, K, K)
    taps = windows.transpose(1, 6, 7, 3, 5, 0, 2, 4)                   # (C, K, K, di, dj, N, OH2, OW2)
    if out is None:
        return taps.reshape(C * K * K, -1)
    np.copyto(out.reshape(taps.shape), taps)
    return out


class ConvMaxPool:
    """``conv`` then ``pool``, computed as one step from columns ordered by window position.

    Parameters
    ----------
    conv : ConvLayer (``impl="vectorized"``)
    pool : MaxPoolLayer with ``stride == pool_size`` (``impl="vectorized"``)

    ``forward(X)`` maps (N, C, H, W) to the pooled (N, F, OH2, OW2); ``gradient(dout)`` sets
    ``conv.grads`` and returns dX (N, C, H, W). The layers' own caches are not touched.
    """

    def __init__(self, conv, pool):
        if not self.fits(conv, pool):
            raise ValueError(f"ConvMaxPool needs a vectorized ConvLayer and a vectorized MaxPoolLayer with "
                             f"stride == pool_size; got {conv!r} and {pool!r}")
        self.conv, self.pool = conv, pool
        self._cache = None

    @staticmethod
    def fits(conv, pool):
        """True if ``conv`` followed by ``pool`` can run as one :class:`ConvMaxPool` step."""
        return (isinstance(conv, ConvLayer) and isinstance(pool, MaxPoolLayer)
                and conv.impl == "vectorized" and pool.impl == "vectorized" and pool.stride == pool.pool_size)

    @property
    def params(self):
        """The convolution's parameters (the pooling has none)."""
        return self.conv.params

    @property
    def grads(self):
        """The convolution's gradients, set by :meth:`gradient`."""
        return self.conv.grads

    def __repr__(self):
        return f"ConvMaxPool({self.conv!r}, {self.pool!r})"

    def forward(self, X, training=True):
        """The pooled (N, F, OH2, OW2) output of ``pool(conv(X))`` for X of shape (N, C, H, W)."""
        conv, P = self.conv, self.pool.pool_size
        X, F, OH, OW = conv._check_input("ConvMaxPool.forward", X)
        if P > OH or P > OW:
            raise ValueError(f"ConvMaxPool.forward: the {P}x{P} pool window is larger than the "
                             f"{OH}x{OW} output of the convolution")
        N, C, H, W = X.shape
        K, s, p = conv.filter_size, conv.stride, conv.padding
        OH2, OW2 = OH // P, OW // P
        shape = (C * K * K + 1, P * P * N * OH2 * OW2)
        if training:   # the same buffers from batch to batch, as in ConvLayer.forward
            padded = conv._workspace("padded", (N, C, H + 2 * p, W + 2 * p), X.dtype) if p else None
            cols = conv._workspace("cols_by_window", shape, X.dtype, last_row=1)
        else:
            padded, cols = None, np.empty(shape, dtype=X.dtype)
            cols[-1] = 1                                                    # the bias trick's row of ones
        im2col_by_window(X, K, s, p, P, out=cols[:-1], padded=padded)
        out = matmul_in_blocks(conv._weights_and_biases(), cols).reshape(F, P * P, -1)   # (F, P*P, N*OH2*OW2)
        # Max pooling: the element-wise maximum of the P*P blocks, each a contiguous (F, N*OH2*OW2) slab.
        pooled, winner = max_with_winner([out[:, k] for k in range(P * P)])
        self._cache = (X, cols, winner, (N, F, OH2, OW2)) if training else None
        return pooled.reshape(F, N, OH2, OW2).transpose(1, 0, 2, 3)

    def gradient(self, dout, input_grad=True):
        """Set ``conv.grads`` from dout (N, F, OH2, OW2); return dX (N, C, H, W), or None with ``input_grad=False``."""
        require_forward("ConvMaxPool", self._cache)
        X, cols, winner, out_shape = self._cache
        conv, P = self.conv, self.pool.pool_size
        N, F, OH2, OW2 = out_shape
        M = N * OH2 * OW2
        dout = check_dout("ConvMaxPool", dout, out_shape)
        d = dout.transpose(1, 0, 2, 3).reshape(F, M)          # free when dout is laid out like the output
        # Max pooling's backward pass, block by block: each window's gradient goes to its winner.
        dblocks = np.empty((F, P * P, M), dtype=np.result_type(d, cols))
        route_to_winner(d, winner, [dblocks[:, k] for k in range(P * P)])
        dblocks = dblocks.reshape(F, -1)                      # the output gradient in cols' column order
        conv._set_grads(dblocks, cols)
        if not input_grad:
            return None
        # The input gradient needs the plain column order of im2col: put each block back in place,
        # with zeros on output pixels that belong to no window.
        _, OH, OW = conv.output_shape(X.shape[1:])
        dconv = np.zeros((F, N, OH, OW), dtype=dblocks.dtype)
        np.copyto(dconv[:, :, : OH2 * P, : OW2 * P].reshape(F, N, OH2, P, OW2, P),
                  dblocks.reshape(F, P, P, N, OH2, OW2).transpose(0, 3, 4, 1, 5, 2))
        return conv._input_gradient(dconv.reshape(F, -1), X.shape)
