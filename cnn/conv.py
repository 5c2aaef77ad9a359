"""Convolution: the plain loops of Part 1, the vectorised im2col version, and
``ConvLayer`` (Parts 2 and 9).

Explained in the chapters *Convolution*, *The convolution layer* and *Backpropagation
through convolution*.

Shape letters: ``N`` images, ``C`` input channels, ``H, W`` input height and width,
``F`` filters, ``K`` filter size, ``OH, OW`` output height and width, with::

    OH = (H + 2 * padding - K) // stride + 1

Every function here computes *cross-correlation* (the kernel is not flipped), as every
deep-learning framework does and as the activity's "dot product at each position"
describes.
"""

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import conv_shifts, threads
from ._checks import (
    check_array,
    check_dout,
    check_int,
    require_forward,
)
from .layer import Layer


def output_size(size, kernel, stride=1, padding=0):
    """Length of a convolution or pooling output along one axis:
    ``(size + 2*padding - kernel) // stride + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


def shifted_views(X, K, stride, OH, OW):
    """The ``K*K`` strided views of X (..., H, W) that a ``K x K`` window sliding by
    ``stride`` sees.

    View ``ki * K + kj`` has shape (..., OH, OW) and holds, at output position
    ``(i, j)``, the pixel ``(i*stride + ki, j*stride + kj)``: the same tap of every
    window at once. Max pooling takes the maximum over these views; :func:`col2im` adds
    each tap's gradient back onto its view.
    """
    return [
        X[
            ...,
            ki : ki + stride * (OH - 1) + 1 : stride,
            kj : kj + stride * (OW - 1) + 1 : stride,
        ]
        for ki in range(K)
        for kj in range(K)
    ]


def _check_geometry(where, H, W, KH, KW, stride, padding):
    stride = check_int(f"{where}: stride", stride, 1)
    padding = check_int(f"{where}: padding", padding, 0)
    if KH > H + 2 * padding or KW > W + 2 * padding:
        raise ValueError(
            f"{where}: the {KH}x{KW} kernel is larger than the padded input "
            f"{H + 2 * padding}x{W + 2 * padding} (input {H}x{W}, padding {padding}); "
            "use a smaller kernel or more padding"
        )
    return stride, padding


def convolve2d(image, kernel, stride=1, padding=0):
    """Convolve one image with one kernel, with plain loops (Part 1 of the activity).

    Parameters
    ----------
    image : ndarray of shape (H, W)
    kernel : ndarray of shape (KH, KW)
    stride : int >= 1
        Step between neighbouring positions of the kernel.
    padding : int >= 0
        Zeros added on every side of the image.

    Returns
    -------
    output : ndarray of shape (OH, OW)
        ``OH = (H + 2*padding - KH) // stride + 1`` and likewise ``OW``;
        ``output[i, j] =
        sum(padded[i*stride : i*stride+KH, j*stride : j*stride+KW] * kernel)``.

    Examples
    --------
    >>> image = np.arange(9.0).reshape(3, 3)
    >>> convolve2d(image, np.ones((2, 2)))
    array([[ 8., 12.],
           [20., 24.]])
    """
    image = check_array(
        "convolve2d: image", image, ndim=2, shape_doc="(H, W)", floating=False
    )
    kernel = check_array(
        "convolve2d: kernel", kernel, ndim=2, shape_doc="(KH, KW)", floating=False
    )
    H, W = image.shape
    KH, KW = kernel.shape
    stride, padding = _check_geometry("convolve2d", H, W, KH, KW, stride, padding)

    # 1. Pad with zeros so the kernel can also be centred on border pixels.
    if padding > 0:
        image = np.pad(image, padding)
    # 2. Output size: how many kernel positions fit along each axis.
    OH = output_size(H, KH, stride, padding)
    OW = output_size(W, KW, stride, padding)
    # 3. Slide the kernel; each output pixel is the dot product of the kernel and the
    #    patch under it.
    output = np.zeros((OH, OW), dtype=np.result_type(image, kernel, np.float32))
    for i in range(OH):
        for j in range(OW):
            patch = image[i * stride : i * stride + KH, j * stride : j * stride + KW]
            output[i, j] = np.sum(patch * kernel)
    return output


# --------------------------------------------------------------------------------------
# The layer's reference implementation: loops over images, filters and channels, built
# on convolve2d.
# --------------------------------------------------------------------------------------


def conv_forward_loops(X, weights, biases, stride=1, padding=0):
    """Forward pass of a convolution layer with loops over ``convolve2d`` (the teaching
    reference).

    Parameters
    ----------
    X : ndarray of shape (N, C, H, W)
    weights : ndarray of shape (F, C, K, K)
    biases : ndarray of shape (F,)

    Returns
    -------
    out : ndarray of shape (N, F, OH, OW)
        ``out[n, f] = biases[f] + sum over c of convolve2d(X[n, c], weights[f, c])``.
    """
    N, C, H, W = X.shape
    F, _, KH, KW = weights.shape
    out = np.zeros(
        (
            N,
            F,
            output_size(H, KH, stride, padding),
            output_size(W, KW, stride, padding),
        ),
        dtype=np.result_type(X, weights),
    )
    for n in range(N):
        for f in range(F):
            for c in range(C):
                out[n, f] += convolve2d(X[n, c], weights[f, c], stride, padding)
            out[n, f] += biases[f]
    return out


def conv_backward_loops(X, weights, dout, stride=1, padding=0):
    """Backward pass of a convolution layer with explicit loops (the teaching reference
    for Part 9).

    Each output pixel ``out[n, f, i, j]`` was the dot product of ``weights[f]`` with one
    input patch, so its upstream gradient ``dout[n, f, i, j]`` flows back to that patch
    (scaled by the weights) and to the weights (scaled by the patch).

    Returns
    -------
    dX : ndarray of shape (N, C, H, W)
    dW : ndarray of shape (F, C, K, K)
    db : ndarray of shape (F,)
    """
    N, C, H, W = X.shape
    F, _, KH, KW = weights.shape
    _, _, OH, OW = dout.shape
    Xp = np.pad(X, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    dXp = np.zeros_like(Xp)
    dW = np.zeros_like(weights)
    for n in range(N):
        for f in range(F):
            for i in range(OH):
                for j in range(OW):
                    rows = slice(i * stride, i * stride + KH)
                    cols = slice(j * stride, j * stride + KW)
                    dW[f] += dout[n, f, i, j] * Xp[n, :, rows, cols]
                    dXp[n, :, rows, cols] += dout[n, f, i, j] * weights[f]
    db = dout.sum(axis=(0, 2, 3))
    dX = dXp[:, :, padding : padding + H, padding : padding + W]
    return dX, dW, db


# --------------------------------------------------------------------------------------
# The vectorised implementation: im2col on a strided view, then one matrix product.
# --------------------------------------------------------------------------------------


def im2col(X, K, stride=1, padding=0, out=None, padded=None):
    """Unfold a batch so that a convolution becomes one matrix product.

    Row ``(c, ki, kj)`` of the result holds what kernel tap ``(c, ki, kj)`` sees at
    every output pixel of every image: the channel ``c`` shifted by ``(ki, kj)`` and
    sampled every ``stride`` pixels. Stacking the ``C*K*K`` shifted copies turns the
    convolution into ``W.reshape(F, -1) @ cols``.

    Parameters
    ----------
    X : ndarray of shape (N, C, H, W)
    out : ndarray of shape (C * K * K, N * OH * OW), optional
        Where to write the result (a layer reuses one buffer from batch to batch).
    padded : ndarray of shape (N, C, H + 2*padding, W + 2*padding), optional
        A buffer whose border is zero, to pad into without allocating.

    Returns
    -------
    cols : ndarray of shape (C * K * K, N * OH * OW)
        Column ``(n * OH + i) * OW + j`` is the patch under output pixel ``(i, j)`` of
        image ``n``, in the ``(C, K, K)`` order of a filter.
    """
    N, C, H, W = X.shape
    if padding:
        if padded is None:
            padded = np.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=X.dtype)
        # the border stays zero
        padded[:, :, padding : padding + H, padding : padding + W] = X
        X = padded
    OH, OW = output_size(H, K, stride, padding), output_size(W, K, stride, padding)
    # A read-only strided view of shape (C, K, K, N, OH, OW): element
    # (c, ki, kj, n, i, j) is pixel (i*stride + ki, j*stride + kj) of channel c of
    # image n. No pixel is copied yet. (NumPy's sliding_window_view gives the same
    # windows; building the view directly costs less Python, which counts for small
    # slices.)
    sN, sC, sH, sW = X.strides
    taps = as_strided(
        X,
        (C, K, K, N, OH, OW),
        (sC, sH, sW, sN, sH * stride, sW * stride),
        writeable=False,
    )
    # The one copy. Putting (C, K, K) first keeps each image row (OW pixels) contiguous
    # in the copy, which is several times faster than the (N*OH*OW, C*K*K) layout with
    # its 3-pixel inner rows.
    if out is None:
        return taps.reshape(C * K * K, N * OH * OW)
    target = out.view()
    target.shape = (C, K, K, N, OH, OW)  # raises rather than copy if `out` is a view
    np.copyto(target, taps)
    return out


def col2im(dcols, X_shape, K, stride=1, padding=0):
    """The adjoint of :func:`im2col`: add each tap's gradient back onto the pixels it
    saw.

    Parameters
    ----------
    dcols : ndarray of shape (C * K * K, N * OH * OW)
    X_shape : tuple (N, C, H, W)

    Returns
    -------
    dX : ndarray of shape (N, C, H, W)
        Pixels that belong to several patches (overlapping windows) receive the sum of
        their gradients.
    """
    return np.ascontiguousarray(
        _col2im_channels_first(dcols, X_shape, K, stride, padding).transpose(1, 0, 2, 3)
    )


def _col2im_channels_first(dcols, X_shape, K, stride, padding):
    """:func:`col2im`, laid out (C, N, H, W) as the product left it (a view)."""
    N, C, H, W = X_shape
    OH, OW = output_size(H, K, stride, padding), output_size(W, K, stride, padding)
    d = dcols.reshape(C, K * K, N, OH, OW)
    dXp = np.zeros((C, N, H + 2 * padding, W + 2 * padding), dtype=dcols.dtype)
    # K*K strided additions, each covering every channel and image at once.
    for k, view in enumerate(shifted_views(dXp, K, stride, OH, OW)):
        view += d[:, k]
    return dXp[:, :, padding : padding + H, padding : padding + W]


def flipped_filters(weights):
    """The filters of the input gradient: ``(C, F*K*K)``, row ``c`` holding
    ``weights[f, c]`` rotated by 180 degrees for every ``f``, in the ``(F, K, K)`` order
    of :func:`im2col`'s rows."""
    F, C, K, _ = weights.shape
    return weights[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).reshape(C, F * K * K)


def conv_input_gradient(
    dout, weights, X_shape, stride=1, padding=0, workspace=None, out=None
):
    """The gradient of a convolution's input: ``dX`` (N, C, H, W) from ``dout``
    (N, F, OH, OW).

    With stride 1 this is itself a convolution: the *full* correlation of ``dout``,
    padded by ``K - 1 - padding``, with the flipped filters (the chapter
    *Backpropagation through convolution* derives it). So it can be computed like a
    forward pass, as a gather: :func:`im2col` of the padded ``dout`` and one product.
    That copies ``F*K*K`` rows where the scatter, ``col2im(W.T @ dout)``, adds ``C*K*K``
    rows back onto the image, each addition reading and writing it: the gather ran 1.1
    to 1.3 times faster for deep_cnn's layers with as many filters as input channels
    (``F == C``) and slower with twice as many. So the gather is used for stride 1 and
    ``F <= C``; the scatter otherwise (and for a padding wider than ``K - 1``).

    ``workspace``, a dict, keeps the padded ``dout`` and its columns from batch to batch
    (None allocates). The result is an (N, C, H, W) view of a (C, N, H, W) array, laid
    out like the layer's output; ``out``, a (C, N*H*W) array, receives it instead.
    """
    N, C, H, W = X_shape
    F, _, K, _ = weights.shape
    full = K - 1 - padding
    if out is None:
        out = np.empty((C, N * H * W), dtype=np.result_type(dout, weights))
    if stride != 1 or full < 0 or F > C:
        # (F, N*OH*OW), free for our layout
        dout_F = dout.transpose(1, 0, 2, 3).reshape(F, -1)
        dcols = matmul_in_blocks(weights.reshape(F, -1).T, dout_F)
        target = out.view()
        target.shape = (C, N, H, W)
        target[...] = _col2im_channels_first(dcols, X_shape, K, stride, padding)
    else:
        OH, OW = dout.shape[2:]
        if workspace is None:
            workspace = {}
        padded = (
            _buffer(
                workspace,
                "dout_padded",
                (N, F, OH + 2 * full, OW + 2 * full),
                dout.dtype,
                grow_axis=0,
            )
            if full
            else None
        )
        dcols = _buffer(
            workspace, "dout_cols", (F * K * K, N * H * W), dout.dtype, grow_axis=1
        )
        im2col(dout, K, 1, full, out=dcols, padded=padded)  # (F*K*K, N*H*W)
        matmul_in_blocks(flipped_filters(weights), dcols, out=out)  # (C, N*H*W)
    return out.reshape(C, N, H, W).transpose(1, 0, 2, 3)


#: :func:`matmul_in_blocks` cuts a product into blocks of ``MATMUL_BLOCK_OUTPUT // M``
#: columns (so that each block of the (M, columns) result holds 32,768 numbers, 128 KB
#: in float32), and only when the small matrix has at most ``MATMUL_BLOCK_MAX_SMALL``
#: entries.
MATMUL_BLOCK_OUTPUT = 32768
MATMUL_BLOCK_MAX_SMALL = 1024


def matmul_in_blocks(A, B, transpose_b=False, out=None):
    """``A @ B`` (or ``A @ B.T``), computed over blocks of columns of B when it pays.

    The products of a convolution layer are long and thin:
    ``(F, C*K*K) @ (C*K*K, N*OH*OW)`` has a few rows and tens of thousands of columns.
    When the small matrix (``F x C*K*K``, here ``A.shape[0] x B.shape[0]``) is tiny, as
    in a first layer with one input channel, the BLAS library we measured ran the
    product two to four times faster in pieces of a few thousand columns than in one
    call; for larger small matrices one call was as fast or faster (the performance
    chapter measures both). The best piece was the one whose share of the result holds
    about 32,768 numbers: 4,096 columns for SimpleCNN's 8 filters, 1,024 for the 32
    expanded filters of its fused step (:mod:`cnn.conv_maxpool`); twice as wide was up
    to twice as slow there. The result is the same up to the rounding of float sums.

    Parameters
    ----------
    A : ndarray of shape (M, P) if ``transpose_b`` else (M, K)
    B : ndarray of shape (K, P)

    out : ndarray of shape (M, P), optional
        Where to write ``A @ B`` (not with ``transpose_b``).

    Returns
    -------
    ndarray of shape (M, K) if ``transpose_b`` (``A @ B.T``, summed over the blocks)
        else (M, P)
    """
    if out is not None and transpose_b:
        raise ValueError("matmul_in_blocks: out is only for A @ B, not A @ B.T")
    P = B.shape[1]
    block = max(1, MATMUL_BLOCK_OUTPUT // A.shape[0])
    if A.shape[0] * B.shape[0] > MATMUL_BLOCK_MAX_SMALL or P <= block:
        # For A @ B.T with a long shared axis, (B @ A.T).T ran 1.3 to 1.6 times faster
        # with the BLAS we measured (the same numbers; the result is a transposed view).
        return (B @ A.T).T if transpose_b else np.matmul(A, B, out=out)
    if transpose_b:
        out = np.zeros((A.shape[0], B.shape[0]), dtype=np.result_type(A, B))
        for start in range(0, P, block):
            columns = slice(start, start + block)
            out += A[:, columns] @ B[:, columns].T
        return out
    if out is None:
        out = np.empty((A.shape[0], P), dtype=np.result_type(A, B))
    for start in range(0, P, block):
        columns = slice(start, start + block)
        np.matmul(A, B[:, columns], out=out[:, columns])
    return out


def columns_with_ones(X, K, stride, padding, workspace=None):
    """``im2col(X, K, stride, padding)`` above a row of ones: shape
    (C*K*K + 1, N*OH*OW).

    The row of ones is the bias trick's: multiplied by a matrix whose last column holds
    the biases, it adds them. ``workspace`` is a dict in which a layer keeps the result
    and the padded batch from batch to batch (None allocates fresh arrays): a training
    step then allocates neither, and the row of ones is written only once, when its
    buffer is made, because im2col never touches it.
    """
    N, C, H, W = X.shape
    shape = (
        C * K * K + 1,
        N * output_size(H, K, stride, padding) * output_size(W, K, stride, padding),
    )
    if workspace is None:
        padded, cols = None, np.empty(shape, dtype=X.dtype)
        cols[-1] = 1
    else:
        padded = (
            _buffer(
                workspace,
                "padded",
                (N, C, H + 2 * padding, W + 2 * padding),
                X.dtype,
                grow_axis=0,
            )
            if padding
            else None
        )
        cols = _buffer(workspace, "cols", shape, X.dtype, last_row=1, grow_axis=1)
    im2col(X, K, stride, padding, out=cols[:-1], padded=padded)
    return cols


def _buffer(workspace, name, shape, dtype, last_row=None, grow_axis=None):
    """``workspace[name]`` if it has this shape and dtype, else a new zero-filled one
    (its last row set to ``last_row`` if given), kept there.

    With ``grow_axis``, a kept buffer that is longer along that axis also serves: its
    leading part is returned (a view), so that a batch's last, smaller slice does not
    replace the buffer of the full slices.
    """
    buffer = workspace.get(name)
    fits = (
        buffer is not None
        and buffer.dtype == dtype
        and buffer.ndim == len(shape)
        and all(
            have == want or (axis == grow_axis and have > want)
            for axis, (have, want) in enumerate(zip(buffer.shape, shape, strict=True))
        )
    )
    if not fits:
        buffer = workspace[name] = np.zeros(shape, dtype=dtype)
        if last_row is not None:
            buffer[-1] = last_row
    if grow_axis is None:
        return buffer
    return buffer[(slice(None),) * grow_axis + (slice(0, shape[grow_axis]),)]


#: A convolution layer works through its batch in slices of images whose im2col matrix
#: holds about this many bytes, so that each slice's columns are built and multiplied
#: while they are still in the processor's cache (2 MB per core on the machine the book
#: was written on), rather than written out to memory and read back: deep_cnn's second
#: layer has a 29 MB matrix at batch 64. The chapter *Performance* measures the choice.
SLICE_BYTES = 1 << 21


def batch_slices(N, bytes_per_image, budget=None, at_least=1):
    """``slice`` objects that cut a batch of ``N`` images into consecutive runs whose
    im2col matrices hold at most ``budget`` (default :data:`SLICE_BYTES`) bytes.

    As few runs as the budget allows, but at least ``at_least`` (one per thread, so
    that every thread has work) and at most ``N``; their sizes differ by at most one
    image, so that threads get equal shares (64 images at 227 kB each make eight runs
    of eight, not seven of nine and one of one).
    """
    per = max(1, (SLICE_BYTES if budget is None else budget) // bytes_per_image)
    count = min(N, max(at_least, -(-N // per)))
    bounds = [N * i // count for i in range(count + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(count)]


class ConvLayer(Layer):
    """A 2-D convolution layer: ``F`` filters of shape ``(C, K, K)`` slid over a batch
    of images.

    Parameters
    ----------
    num_filters : int
        ``F``, the number of filters (output channels).
    filter_size : int
        ``K``, the side of each square filter.
    num_channels : int
        ``C``, the number of input channels.
    stride : int, default 1
    padding : int, default 0
    weight_scale : float or None, default None
        Standard deviation of the initial weights. ``None`` uses He initialisation,
        ``sqrt(2 / (C * K * K))``, which keeps activations at a steady scale through
        ReLU layers; the activity's ``0.01`` trains too slowly to reach 98% in ten
        epochs.
    rng : numpy.random.Generator or int or None
        Source of the initial weights (a seed gives reproducible weights).
    dtype : numpy dtype, default float32
        ``float32`` for training speed, ``float64`` for gradient checks.
    impl : {"vectorized", "loops"}
        ``"loops"`` runs :func:`conv_forward_loops` and :func:`conv_backward_loops`
        instead (slow, for teaching).
    algorithm : {"auto", "im2col", "shifts", "grid"}
        The vectorised implementation's algorithm: one product with the im2col
        columns; ``K*K`` products with shifted views of the padded batch and no copy
        (:mod:`cnn.conv_shifts`, stride 1 only); or one product with those views copied
        into columns, im2col on the grid (stride 1 only). ``"auto"`` picks what was
        measured fastest: on one thread, the shifts for a suitable geometry
        (:func:`cnn.conv_shifts.use_shifts`), else the grid where it applies
        (:func:`cnn.conv_shifts.use_grid`), else im2col; on two threads, im2col. The
        results agree to float rounding.

    Attributes
    ----------
    weights : ndarray of shape (F, C, K, K)
    biases : ndarray of shape (F,)
    params, grads : dict
        The live parameter arrays and, after each backward, their gradients.
    """

    #: Not saved: the initial weights' scale (a loaded layer's weights come from the
    #: file) and the implementation (the loops and the vectorised code agree).
    data_parallel = True  # image by image
    not_saved = (*Layer.not_saved, "weight_scale", "impl", "algorithm")

    def __init__(
        self,
        num_filters,
        filter_size,
        num_channels,
        stride=1,
        padding=0,
        weight_scale=None,
        rng=None,
        dtype=np.float32,
        impl="vectorized",
        algorithm="auto",
    ):
        super().__init__()
        self.num_filters = check_int("ConvLayer: num_filters", num_filters, 1)
        self.filter_size = check_int(
            "ConvLayer: filter_size (the side of a square filter)", filter_size, 1
        )
        self.num_channels = check_int("ConvLayer: num_channels", num_channels, 1)
        self.stride = check_int("ConvLayer: stride", stride, 1)
        self.padding = check_int("ConvLayer: padding", padding, 0)
        if impl not in ("vectorized", "loops"):
            raise ValueError(
                f"ConvLayer: impl must be 'vectorized' or 'loops'; got {impl!r}"
            )
        self.impl = impl
        self.algorithm = algorithm
        self._check_algorithm()
        F, C, K = self.num_filters, self.num_channels, self.filter_size
        scale = np.sqrt(2.0 / (C * K * K)) if weight_scale is None else weight_scale
        rng = np.random.default_rng(rng)
        self.weights = (rng.standard_normal((F, C, K, K)) * scale).astype(dtype)
        self.biases = np.zeros(F, dtype=dtype)
        self.params = {"weights": self.weights, "biases": self.biases}
        self._cache = None
        # buffers kept from batch to batch (see columns_with_ones), one set per thread
        self._workspace = {}

    def __repr__(self):
        return (
            f"ConvLayer(num_filters={self.num_filters}, "
            f"filter_size={self.filter_size}, num_channels={self.num_channels}, "
            f"stride={self.stride}, padding={self.padding})"
        )

    def output_shape(self, input_shape):
        """Shape ``(F, OH, OW)`` of one output for one input of shape ``(C, H, W)``."""
        _, H, W = input_shape
        K, s, p = self.filter_size, self.stride, self.padding
        return (self.num_filters, output_size(H, K, s, p), output_size(W, K, s, p))

    def forward(self, X, training=True):
        """Convolve a batch.

        Parameters
        ----------
        X : ndarray of shape (N, C, H, W)
        training : bool
            When False, nothing is kept for a backward pass (saves memory at
            evaluation).

        Returns
        -------
        out : ndarray of shape (N, F, OH, OW)
        """
        X, F, OH, OW = self.check_input(X, "ConvLayer.forward")
        N = X.shape[0]
        K, s, p = self.filter_size, self.stride, self.padding

        if self.impl == "loops":
            out = conv_forward_loops(X, self.weights, self.biases, s, p)
            self._cache = X if training else None
            return out
        algorithm = self._algorithm_for(X.shape)
        if algorithm != "im2col":
            out = (
                self._forward_shifts if algorithm == "shifts" else self._forward_grid
            )(X, F, OH, OW)
            self._cache = X if training else None
            return out
        # The bias trick: one extra row of ones at the bottom of `cols` and the biases
        # as one extra column of the weights, so that the matrix product adds the biases
        # (and, in the backward pass, the same product also sums the gradient of the
        # biases).
        weights = self._weights_and_biases()  # (F, C*K*K + 1)
        out = np.empty((F, N * OH * OW), dtype=np.result_type(X, weights))

        def one_slice(item):
            part, columns = item
            # (C*K*K + 1, n*OH*OW) for the n images of this slice, still in the cache
            cols = columns_with_ones(X[part], K, s, p, threads.local(self._workspace))
            matmul_in_blocks(weights, cols, out=out[:, columns])

        threads.map_slices(one_slice, self._slices(X.shape, OH * OW))
        # Only the input is kept: the backward pass builds each slice's columns again,
        # which costs less than writing them all out to memory and reading them back.
        self._cache = X if training else None
        # The product is laid out (F, N, OH, OW); return it as an (N, F, OH, OW) view
        # without copying. NumPy's element-wise operations follow the memory order, so
        # the layers after this one (and the gradients they send back) keep this layout,
        # and `dout_F` below is then a free reshape.
        return out.reshape(F, N, OH, OW).transpose(1, 0, 2, 3)

    def _check_algorithm(self):
        """Refuse an unknown ``algorithm``, or the shifts where they cannot compute this
        layer (checked again at each pass: the attribute may have been changed)."""
        if self.algorithm not in ("auto", "im2col", "shifts", "grid"):
            raise ValueError(
                "ConvLayer: algorithm must be 'auto', 'im2col', 'shifts' or 'grid'; "
                f"got {self.algorithm!r}"
            )
        on_grid = self.algorithm in ("shifts", "grid")
        if on_grid and self.stride != 1:
            raise ValueError(
                f"ConvLayer: algorithm={self.algorithm!r} needs stride 1 (the shifted "
                f"views move by one pixel); got stride={self.stride}. Use 'auto' or "
                "'im2col'"
            )
        if on_grid and self.padding > self.filter_size - 1:
            raise ValueError(
                f"ConvLayer: algorithm={self.algorithm!r} needs padding <= "
                f"filter_size - 1; got padding={self.padding} with "
                f"filter_size={self.filter_size}. Use 'auto' or 'im2col'"
            )

    def _algorithm_for(self, X_shape):
        """The algorithm this batch runs: the one asked for, or with ``"auto"``, when
        one thread runs the slices, the shifted products for a geometry that suits them
        (:func:`conv_shifts.use_shifts`), else the grid's columns where they apply
        (:func:`conv_shifts.use_grid`), else im2col; in two threads, im2col. There the
        shifts' many short products and additions gained nothing over one thread
        (deep_cnn's second layer: 5.0 ms forward either way), while im2col's long ones
        did (6.7 to 4.6 ms); the grid's columns were no faster than im2col in two
        threads, two copies at once sharing one memory bus."""
        self._check_algorithm()
        if self.algorithm != "auto":
            return self.algorithm
        C, H, W = X_shape[1:]
        K, s, p = self.filter_size, self.stride, self.padding
        if threads.workers() > 1:
            return "im2col"
        if conv_shifts.use_shifts(C, H, W, K, s, p):
            return "shifts"
        return "grid" if conv_shifts.use_grid(C, K, s, p) else "im2col"

    def _shift_slices(self, X_shape):
        """:func:`batch_slices` for the shifted products, whose buffers per image hold
        the padded input, the output grid and one product."""
        N, C, H, W = X_shape
        F, p = self.num_filters, self.padding
        grid_bytes = (H + p) * (W + p) * self.weights.itemsize  # per channel
        return batch_slices(
            N,
            (C + 2 * F) * grid_bytes,
            budget=conv_shifts.SLICE_BYTES,
            at_least=threads.workers(),
        )

    def _grid_slices(self, X_shape):
        """:func:`batch_slices` for the grid's columns, whose (C*K*K + 1, n * grid)
        matrix is the largest buffer, as im2col's is."""
        N, C, H, W = X_shape
        K, p = self.filter_size, self.padding
        grid_bytes = (H + p) * (W + p) * self.weights.itemsize  # per channel
        return batch_slices(N, (C * K * K + 1) * grid_bytes, at_least=threads.workers())

    def _forward_in_slices(self, X, F, OH, OW, slices, forward_slice):
        """The output of ``forward_slice(X_part, out_part, workspace)`` run on each
        slice of the batch (in :func:`threads.map_slices`), each writing its images'
        output ``out_part`` (F, n, OH, OW); returned as (N, F, OH, OW), laid out
        (F, N, OH, OW) like the im2col product's output."""
        N = X.shape[0]
        out = np.empty((F, N * OH * OW), dtype=np.result_type(X, self.weights))

        def one_slice(part):
            target = out[:, part.start * OH * OW : part.stop * OH * OW]
            target = target.reshape(F, part.stop - part.start, OH, OW)
            forward_slice(X[part], target, threads.local(self._workspace))

        threads.map_slices(one_slice, slices)
        return out.reshape(F, N, OH, OW).transpose(1, 0, 2, 3)

    def _gradient_in_slices(self, X, dout, input_grad, slices, backward_slice):
        """``backward_slice(X_part, dout_part, dX_part, workspace)`` run on each slice,
        each writing its images' input gradient ``dX_part`` (C, n, H, W) (None without
        ``input_grad``) and returning its share of the weights' gradient. Returns the
        sum of those shares and dX (N, C, H, W) laid out (C, N, H, W), or None."""
        N, C, H, W = X.shape
        dX = np.empty((C, N * H * W), dtype=dout.dtype) if input_grad else None

        def one_slice(part):
            target = None
            if input_grad:
                target = dX[:, part.start * H * W : part.stop * H * W]
                target = target.reshape(C, part.stop - part.start, H, W)
            return backward_slice(
                X[part], dout[part], target, threads.local(self._workspace)
            )

        d_weights = np.sum(threads.map_slices(one_slice, slices), axis=0)
        if not input_grad:
            return d_weights, None
        return d_weights, dX.reshape(C, N, H, W).transpose(1, 0, 2, 3)

    def _forward_shifts(self, X, F, OH, OW):
        taps = conv_shifts.tap_matrices(self.weights)  # (K*K, F, C)

        def forward_slice(X_part, out_part, workspace):
            conv_shifts.forward_slice(
                X_part, taps, self.biases, self.padding, out_part, workspace
            )

        return self._forward_in_slices(
            X, F, OH, OW, self._shift_slices(X.shape), forward_slice
        )

    def _gradient_shifts(self, X, dout, input_grad):
        F, C, K = self.num_filters, self.num_channels, self.filter_size
        flipped = conv_shifts.flipped_tap_matrices(self.weights) if input_grad else None

        def backward_slice(X_part, dout_part, dX_part, workspace):
            return conv_shifts.backward_slice(
                X_part, dout_part, flipped, self.padding, dX_part, workspace
            )

        # the weight gradients as (K*K, F, C) taps
        d_taps, dX = self._gradient_in_slices(
            X, dout, input_grad, self._shift_slices(X.shape), backward_slice
        )
        self.set_grads(
            weights=np.ascontiguousarray(
                d_taps.reshape(K, K, F, C).transpose(2, 3, 0, 1)
            ),
            biases=dout.transpose(1, 0, 2, 3).reshape(F, -1).sum(axis=1),
        )
        return dX

    def _forward_grid(self, X, F, OH, OW):
        weights = self._weights_and_biases()  # (F, C*K*K + 1), the bias trick

        def forward_slice(X_part, out_part, workspace):
            conv_shifts.grid_forward_slice(
                X_part, weights, self.filter_size, self.padding, out_part, workspace
            )

        return self._forward_in_slices(
            X, F, OH, OW, self._grid_slices(X.shape), forward_slice
        )

    def _gradient_grid(self, X, dout, input_grad):
        flipped = flipped_filters(self.weights) if input_grad else None

        def backward_slice(X_part, dout_part, dX_part, workspace):
            return conv_shifts.grid_backward_slice(
                X_part,
                dout_part,
                self.weights,
                flipped,
                self.padding,
                dX_part,
                workspace,
            )

        # the (F, C*K*K + 1) gradients of the weights and (last column) the biases
        d_weights_and_biases, dX = self._gradient_in_slices(
            X, dout, input_grad, self._grid_slices(X.shape), backward_slice
        )
        self.set_grads(
            weights=d_weights_and_biases[:, :-1].reshape(self.weights.shape),
            biases=d_weights_and_biases[:, -1],
        )
        return dX

    def _slices(self, X_shape, pixels):
        """Pairs (images, columns): a :func:`batch_slices` slice of the batch and the
        slice of the product's columns (``pixels`` per image) that it fills."""
        N, C = X_shape[:2]
        K = self.filter_size
        return [
            (part, slice(part.start * pixels, part.stop * pixels))
            for part in batch_slices(
                N,
                (C * K * K + 1) * pixels * self.weights.itemsize,
                at_least=threads.workers(),
            )
        ]

    def check_input(self, X, where="ConvLayer.forward"):
        """Check X (N, C, H, W) against the layer; return X and the output's
        ``F, OH, OW``."""
        X = check_array(f"{where}: X", X, ndim=4, shape_doc="(N, C, H, W)")
        N, C, H, W = X.shape
        if C != self.num_channels:
            raise ValueError(
                f"{where}: X has {C} channels (shape {X.shape}) but the layer expects "
                f"num_channels={self.num_channels}, "
                f"i.e. X of shape (N, {self.num_channels}, H, W)"
            )
        K = self.filter_size
        _check_geometry(where, H, W, K, K, self.stride, self.padding)
        return (X,) + self.output_shape((C, H, W))

    def _weights_and_biases(self):
        """The (F, C*K*K + 1) matrix of the bias trick: each filter as a row, its bias
        appended."""
        return np.concatenate(
            [self.weights.reshape(self.num_filters, -1), self.biases[:, None]], axis=1
        )

    def gradient(self, dout, input_grad=True):
        """Gradients of the loss for a given ``dout`` of shape (N, F, OH, OW), without
        updating.

        Sets ``self.grads["weights"]`` (F, C, K, K) and ``self.grads["biases"]`` (F,),
        and returns ``dX`` of shape (N, C, H, W), or None with ``input_grad=False`` (a
        network's first layer has no use for it, and skipping it saves a third of the
        layer's backward time).
        """
        require_forward("ConvLayer", self._cache)
        X = self._cache
        N, C, H, W = X.shape
        F, K = self.num_filters, self.filter_size
        dout = check_dout("ConvLayer", dout, (N,) + self.output_shape((C, H, W)))
        s, p = self.stride, self.padding

        if self.impl == "loops":
            dX, dW, db = conv_backward_loops(X, self.weights, dout, s, p)
            self.set_grads(weights=dW, biases=db)
            return dX if input_grad else None
        algorithm = self._algorithm_for(X.shape)
        if algorithm == "shifts":
            return self._gradient_shifts(X, dout, input_grad)
        if algorithm == "grid":
            return self._gradient_grid(X, dout, input_grad)
        dout_F = dout.transpose(1, 0, 2, 3).reshape(F, -1)  # (F, N*OH*OW)
        dX = np.empty((C, N * H * W), dtype=dout.dtype) if input_grad else None

        def one_slice(item):
            part, columns = item
            workspace = threads.local(self._workspace)
            # The slice's columns again, as the forward pass built them.
            cols = columns_with_ones(X[part], K, s, p, workspace)
            if input_grad:
                conv_input_gradient(
                    dout[part],
                    self.weights,
                    (part.stop - part.start, C, H, W),
                    s,
                    p,
                    workspace,
                    out=dX[:, part.start * H * W : part.stop * H * W],
                )
            # Each filter's gradient is the sum over pixels of patch * dout; the row of
            # ones in `cols` makes the last column the sum of dout itself, the gradient
            # of the bias: (F, C*K*K + 1) for this slice.
            return matmul_in_blocks(dout_F[:, columns], cols, transpose_b=True)

        # the slices' (F, C*K*K + 1) gradients, summed
        d_weights_and_biases = np.sum(
            threads.map_slices(
                one_slice, self._slices(X.shape, dout.shape[2] * dout.shape[3])
            ),
            axis=0,
        )
        self.set_grads(
            weights=d_weights_and_biases[:, :-1].reshape(self.weights.shape),
            biases=d_weights_and_biases[:, -1],
        )
        if not input_grad:
            return None
        return dX.reshape(C, N, H, W).transpose(1, 0, 2, 3)
