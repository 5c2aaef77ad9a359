"""ConvMaxPool: a convolution and the max pooling after it, run as one step, as training
runs them.

Explained in the chapter *Performance*.

Max pooling with non-overlapping ``P x P`` windows after a convolution (``K x K``
filters, stride ``s``) needs, for each window, the ``P*P`` convolution outputs inside
it. Together they read an ``A x A`` patch of the input, ``A = K + s*(P - 1)`` (4 x 4 for
SimpleCNN's 3x3 filters and 2x2 windows), and the patches of neighbouring windows lie
``s*P`` pixels apart. So the pair is one convolution with ``A x A`` filters and stride
``s*P`` that computes ``F*P*P`` outputs per window: for each filter ``f`` and each
position ``(di, dj)`` in the window, the filter placed at offset ``(s*di, s*dj)`` in an
``A x A`` block of zeros (:func:`expand_filters`). Max pooling is then the element-wise
maximum over the ``P*P`` groups of outputs, which the matrix product delivers as ``P*P``
contiguous blocks: no strided views.

Against the two layers, im2col copies ``C*A*A`` numbers per window instead of
``C*K*K*P*P`` (16 instead of 36 for SimpleCNN), and the pooling walks whole blocks. The
price is the zeros in the expanded filters, ``(A / K)**2`` times the multiply-adds:
cheap where, as in a first layer, memory traffic and not arithmetic sets the pace.

:class:`ConvMaxPool` runs a :class:`~cnn.conv.ConvLayer` and a
:class:`~cnn.layers.MaxPoolLayer` whose windows tile the image (``stride == pool_size``)
this way, with the layers' own weights and gradients; it is a layer itself, which
:func:`cnn.steps.training_steps` puts in place of the pair. Its pooled values are the
two layers' (the expanded filters only add zeros to the same sums; we measured them
equal bit for bit in float32), ties go to the same winner, and the gradients agree up to
the rounding of sums taken in another order.
"""

import numpy as np

from ._checks import check_dout, require_forward
from .conv import ConvLayer, col2im, columns_with_ones, matmul_in_blocks
from .layer import Layer
from .layers import MaxPoolLayer, max_with_winner, route_to_winner


def expand_filters(weights, stride, P):
    """The filter bank of a convolution fused with ``P x P`` max pooling.

    Parameters
    ----------
    weights : ndarray of shape (F, C, K, K)
    stride : int, the convolution's stride ``s``
    P : int, the side of the pooling windows (and their stride)

    Returns
    -------
    expanded : ndarray of shape (F * P * P, C, A, A), ``A = K + s*(P - 1)``
        Filter ``(f * P + di) * P + dj`` is ``weights[f]`` at offset ``(s*di, s*dj)`` in
        zeros. Applied with stride ``s*P``, its output at window ``(i, j)`` is the
        convolution's output pixel ``(P*i + di, P*j + dj)``.
    """
    F, C, K, _ = weights.shape
    A = K + stride * (P - 1)
    expanded = np.zeros((F, P, P, C, A, A), dtype=weights.dtype)
    for di in range(P):
        for dj in range(P):
            expanded[
                :,
                di,
                dj,
                :,
                stride * di : stride * di + K,
                stride * dj : stride * dj + K,
            ] = weights
    return expanded.reshape(F * P * P, C, A, A)


def fold_filters(d_expanded, stride, P, K):
    """The adjoint of :func:`expand_filters`: the gradient of the (F, C, K, K) weights
    from that of the (F*P*P, C, A, A) expanded bank. Each weight appears in ``P*P``
    expanded filters, so it collects the sum of their gradients at its ``P*P``
    offsets."""
    FPP, C, A, _ = d_expanded.shape
    d_expanded = d_expanded.reshape(FPP // (P * P), P, P, C, A, A)
    dW = np.zeros((FPP // (P * P), C, K, K), dtype=d_expanded.dtype)
    for di in range(P):
        for dj in range(P):
            dW += d_expanded[
                :,
                di,
                dj,
                :,
                stride * di : stride * di + K,
                stride * dj : stride * dj + K,
            ]
    return dW


class ConvMaxPool(Layer):
    """``conv`` then ``pool`` in one step: one strided convolution with expanded
    filters, then a maximum over contiguous blocks.

    Parameters
    ----------
    conv : ConvLayer (``impl="vectorized"``)
    pool : MaxPoolLayer with ``stride == pool_size`` (``impl="vectorized"``)

    ``forward(X)`` maps (N, C, H, W) to the pooled (N, F, OH2, OW2); ``gradient(dout)``
    sets ``conv.grads`` and returns dX (N, C, H, W). Its ``params`` and ``grads`` are
    the convolution's (the pooling has none), so an optimizer stepping this layer trains
    ``conv``. The layers' own caches are not touched.
    """

    data_parallel = True  # image by image

    def __init__(self, conv, pool):
        super().__init__()
        if not self.fits(conv, pool):
            raise ValueError(
                "ConvMaxPool needs a vectorized ConvLayer and a vectorized "
                f"MaxPoolLayer with stride == pool_size; got {conv!r} and {pool!r}"
            )
        self.conv, self.pool = conv, pool
        self.params = conv.params  # the same dict: the live arrays of the convolution
        self._cache = None
        self._workspace = {}

    @staticmethod
    def fits(conv, pool):
        """True if ``conv`` followed by ``pool`` can run as one :class:`ConvMaxPool`
        step."""
        return (
            type(conv) is ConvLayer
            and type(pool) is MaxPoolLayer  # a subclass may compute otherwise
            and conv.impl == "vectorized"
            and pool.impl == "vectorized"
            and pool.stride == pool.pool_size
        )

    def output_shape(self, input_shape):
        return self.pool.output_shape(self.conv.output_shape(input_shape))

    def __repr__(self):
        return f"ConvMaxPool({self.conv!r}, {self.pool!r})"

    def forward(self, X, training=True):
        """The pooled (N, F, OH2, OW2) output of ``pool(conv(X))`` for X of shape
        (N, C, H, W)."""
        conv, P = self.conv, self.pool.pool_size
        X, F, OH, OW = conv.check_input(X, "ConvMaxPool.forward")
        if P > OH or P > OW:
            raise ValueError(
                f"ConvMaxPool.forward: the {P}x{P} pool window is larger than the "
                f"{OH}x{OW} output of the convolution"
            )
        N = X.shape[0]
        K, s, p = conv.filter_size, conv.stride, conv.padding
        # one A x A patch per pooling window
        A, OH2, OW2 = K + s * (P - 1), OH // P, OW // P
        # (C*A*A + 1, N*OH2*OW2)
        cols = columns_with_ones(X, A, s * P, p, self._workspace if training else None)
        # Rows (f, di, dj): each filter at each position in the window, each with the
        # filter's bias.
        weights = np.concatenate(
            [
                expand_filters(conv.weights, s, P).reshape(F * P * P, -1),
                np.repeat(conv.biases, P * P)[:, None],
            ],
            axis=1,
        )
        # (F, P*P, N*OH2*OW2)
        out = matmul_in_blocks(weights, cols).reshape(F, P * P, -1)
        # Max pooling: the element-wise maximum of the P*P blocks out[:, k], each a
        # contiguous slab with the same window in the same place.
        pooled, winner = max_with_winner([out[:, k] for k in range(P * P)])
        self._cache = (X, cols, weights, winner, (N, F, OH2, OW2)) if training else None
        return pooled.reshape(F, N, OH2, OW2).transpose(1, 0, 2, 3)

    def gradient(self, dout, input_grad=True):
        """Set ``conv.grads`` from dout (N, F, OH2, OW2); return dX (N, C, H, W), or
        None with ``input_grad=False``."""
        require_forward("ConvMaxPool", self._cache)
        X, cols, weights, winner, out_shape = self._cache
        conv, P = self.conv, self.pool.pool_size
        K, s, p = conv.filter_size, conv.stride, conv.padding
        F = out_shape[1]
        dout = check_dout("ConvMaxPool", dout, out_shape)
        # free when dout is laid out like the output
        d = dout.transpose(1, 0, 2, 3).reshape(F, -1)
        # Max pooling's backward pass, block by block: each window's gradient goes to
        # its winner.
        dblocks = np.empty((F, P * P, d.shape[1]), dtype=np.result_type(d, cols))
        route_to_winner(d, winner, [dblocks[:, k] for k in range(P * P)])
        dblocks = dblocks.reshape(F * P * P, -1)  # the gradient of the product's output
        # (F*P*P, C*A*A + 1)
        d_weights = matmul_in_blocks(dblocks, cols, transpose_b=True)
        C, A = X.shape[1], K + s * (P - 1)
        conv.set_grads(
            weights=fold_filters(
                d_weights[:, :-1].reshape(F * P * P, C, A, A), s, P, K
            ),
            biases=d_weights[:, -1].reshape(F, P * P).sum(axis=1),
        )
        self.grads = conv.grads
        if not input_grad:
            return None
        dcols = matmul_in_blocks(weights[:, :-1].T, dblocks)  # (C*A*A, N*OH2*OW2)
        return col2im(dcols, X.shape, A, s * P, p)
