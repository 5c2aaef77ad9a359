"""The layers around the convolution: ReLU, Flatten, MaxPoolLayer, FullyConnectedLayer
(Parts 3 to 6), and Dropout.

Each is a :class:`~cnn.layer.Layer`: ``forward(X, training=True)`` and
``gradient(dout, input_grad=True)`` side by side, and, for the dense layer, ``params``
and ``grads``. The activity's ``backward`` methods (``ReLU.backward(dout)``,
``FullyConnectedLayer.backward(X, dout)``, ...) come from the protocol.
"""

import math

import numpy as np

from ._checks import (
    check_array,
    check_dout,
    check_int,
    check_positive_float,
    require_forward,
)
from .conv import output_size, shifted_views
from .layer import Layer


class ReLU(Layer):
    """Rectified linear unit, ``f(x) = max(0, x)``, applied element by element
    (Part 4)."""

    data_parallel = True  # image by image

    def __init__(self):
        super().__init__()
        self._out = None

    def forward(self, X, training=True):
        """X of any shape -> ``max(0, X)`` of the same shape and dtype."""
        X = check_array("ReLU.forward: X", X)
        out = np.maximum(X, 0)
        # out > 0 exactly where X > 0: no separate mask to keep
        self._out = out if training else None
        return out

    def gradient(self, dout, input_grad=True):
        """The gradient passes where the input was positive and is 0 elsewhere."""
        require_forward("ReLU", self._out)
        dout = check_dout("ReLU", dout, self._out.shape)
        return dout * (self._out > 0)


class Flatten(Layer):
    """Reshape (N, C, H, W) to (N, C*H*W), the bridge from feature maps to a dense layer
    (Part 5)."""

    data_parallel = True  # image by image

    def __init__(self):
        super().__init__()
        self._input_shape = None

    def forward(self, X, training=True):
        X = check_array("Flatten.forward: X", X, shape_doc="(N, ...)")
        if X.ndim < 2:
            raise ValueError(
                "Flatten.forward: X must have a batch axis and at least one more, "
                f"e.g. (N, C, H, W); got shape {X.shape}"
            )
        self._input_shape = X.shape
        return X.reshape(X.shape[0], -1)

    def gradient(self, dout, input_grad=True):
        """Reshape the gradient (N, C*H*W) back to the input's shape (N, C, H, W)."""
        require_forward("Flatten", self._input_shape)
        N = self._input_shape[0]
        dout = check_dout("Flatten", dout, (N, math.prod(self._input_shape[1:])))
        return dout.reshape(self._input_shape)

    def output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)


def max_with_winner(views):
    """Element-wise maximum of equal-shape arrays, and which of them holds it.

    Parameters
    ----------
    views : list of ndarrays of one shape
        For max pooling, the ``P*P`` positions of the windows (each of shape
        (N, C, OH, OW)).

    Returns
    -------
    out : ndarray, the maximum over ``views``
    winner : ndarray of small integers, the index ``k`` of the first view
        holding the maximum

    The first maximum wins ties, so each window passes its gradient on exactly once.
    The index of the first view equal to the maximum is the number of views before it
    that are not: a running "no view so far was the maximum" mask, added up.
    """
    out = views[0].copy()
    for view in views[1:]:
        np.maximum(out, view, out=out)
    dtype = np.uint8 if len(views) <= 256 else np.int64
    not_yet = views[0] != out
    winner = not_yet.astype(dtype)
    for view in views[1:-1]:
        not_yet &= view != out
        winner += not_yet
    return out, winner


def route_to_winner(dout, winner, dviews, overlapping=False):
    """The backward pass of :func:`max_with_winner`:
    ``dviews[k] = dout where winner == k, else 0``.

    With ``overlapping=True`` the views share elements (pooling windows that overlap),
    so each adds its gradient to what is there; otherwise each element is written once
    and nothing needs zeroing first.
    """
    for k, dview in enumerate(dviews):
        if overlapping:
            dview += dout * (winner == k)
        else:
            np.multiply(dout, winner == k, out=dview)


class MaxPoolLayer(Layer):
    """Max pooling over ``pool_size x pool_size`` windows taken every ``stride`` pixels
    (Part 3).

    Forward: (N, C, H, W) -> (N, C, OH, OW) with ``OH = (H - pool_size) // stride + 1``.
    Backward: each window's gradient goes to the position of its maximum (the first one,
    on ties); where windows overlap (``stride < pool_size``) a pixel collects the
    gradients of all windows it wins.
    """

    data_parallel = True  # image by image

    #: Not saved: the implementation (the loops and the vectorised code agree).
    not_saved = (*Layer.not_saved, "impl")

    def __init__(self, pool_size=2, stride=2, impl="vectorized"):
        super().__init__()
        self.pool_size = check_int("MaxPoolLayer: pool_size", pool_size, 1)
        self.stride = check_int("MaxPoolLayer: stride", stride, 1)
        if impl not in ("vectorized", "loops"):
            raise ValueError(
                f"MaxPoolLayer: impl must be 'vectorized' or 'loops'; got {impl!r}"
            )
        self.impl = impl
        self._cache = None

    def __repr__(self):
        return f"MaxPoolLayer(pool_size={self.pool_size}, stride={self.stride})"

    def output_shape(self, input_shape):
        C, H, W = input_shape
        P, s = self.pool_size, self.stride
        return (C, output_size(H, P, s), output_size(W, P, s))

    def forward(self, X, training=True):
        X = check_array("MaxPoolLayer.forward: X", X, ndim=4, shape_doc="(N, C, H, W)")
        N, C, H, W = X.shape
        P, s = self.pool_size, self.stride
        if P > H or P > W:
            raise ValueError(
                f"MaxPoolLayer.forward: the {P}x{P} pool window is larger than "
                f"the {H}x{W} input"
            )
        _, OH, OW = self.output_shape((C, H, W))
        if self.impl == "loops":
            out = np.empty((N, C, OH, OW), dtype=X.dtype)
            winner = np.empty((N, C, OH, OW), dtype=np.intp)
            for n in range(N):
                for c in range(C):
                    for i in range(OH):
                        for j in range(OW):
                            window = X[n, c, i * s : i * s + P, j * s : j * s + P]
                            # flat index of the first maximum
                            winner[n, c, i, j] = np.argmax(window)
                            out[n, c, i, j] = window.flat[winner[n, c, i, j]]
        else:
            # Instead of nested loops over pixels: P*P element-wise steps over whole
            # strided views.
            out, winner = max_with_winner(shifted_views(X, P, s, OH, OW))
        self._cache = (X, winner) if training else None
        return out

    def gradient(self, dout, input_grad=True):
        """Route dout (N, C, OH, OW) to each window's maximum; return dX
        (N, C, H, W)."""
        require_forward("MaxPoolLayer", self._cache)
        X, winner = self._cache
        dout = check_dout("MaxPoolLayer", dout, winner.shape)
        _, _, OH, OW = winner.shape
        # empty_like/zeros_like keep X's memory layout, so the layers below receive
        # gradients laid out like their own outputs. Windows that neither overlap nor
        # leave gaps (stride == pool_size) write every covered pixel below, so only the
        # uncovered border (odd sizes) needs zeros.
        P, s = self.pool_size, self.stride
        dtype = np.result_type(dout, X)
        if s == P:
            dX = np.empty_like(X, dtype=dtype)
            dX[:, :, OH * P :] = 0
            dX[:, :, :, OW * P :] = 0
        else:
            dX = np.zeros_like(X, dtype=dtype)
        route_to_winner(
            dout, winner, shifted_views(dX, P, s, OH, OW), overlapping=s < P
        )
        return dX


class FullyConnectedLayer(Layer):
    """Dense layer ``out = X @ weights + biases`` (Part 6).

    Parameters
    ----------
    input_size, output_size : int
    learning_rate : float, default 0.01
        Step size that ``backward`` uses for its SGD update.
    weight_scale : float or None
        Standard deviation of the initial weights; ``None`` uses
        ``sqrt(1 / input_size)``.
    rng : numpy.random.Generator or int or None
    dtype : numpy dtype, default float32

    Attributes
    ----------
    weights : ndarray of shape (input_size, output_size)
    biases : ndarray of shape (output_size,)
    """

    data_parallel = True  # image by image

    #: Not saved: the initial weights' scale (a loaded layer's weights come from the
    #: file).
    not_saved = (*Layer.not_saved, "weight_scale")

    def __init__(
        self,
        input_size,
        output_size,
        learning_rate=0.01,
        weight_scale=None,
        rng=None,
        dtype=np.float32,
    ):
        super().__init__()
        self.input_size = check_int("FullyConnectedLayer: input_size", input_size, 1)
        self.output_size = check_int("FullyConnectedLayer: output_size", output_size, 1)
        self.learning_rate = check_positive_float(
            "FullyConnectedLayer: learning_rate", learning_rate, allow_zero=True
        )
        scale = np.sqrt(1.0 / input_size) if weight_scale is None else weight_scale
        rng = np.random.default_rng(rng)
        self.weights = (rng.standard_normal((input_size, output_size)) * scale).astype(
            dtype
        )
        self.biases = np.zeros(output_size, dtype=dtype)
        self.params = {"weights": self.weights, "biases": self.biases}
        self._X = None

    def __repr__(self):
        return (
            f"FullyConnectedLayer(input_size={self.input_size}, "
            f"output_size={self.output_size})"
        )

    def output_shape(self, input_shape):
        return (self.output_size,)

    def _check_X(self, where, X):
        X = check_array(
            f"FullyConnectedLayer.{where}: X",
            X,
            ndim=2,
            shape_doc=f"(N, {self.input_size})",
        )
        if X.shape[1] != self.input_size:
            raise ValueError(
                f"FullyConnectedLayer.{where}: X has {X.shape[1]} features "
                f"(shape {X.shape}) but the layer expects "
                f"input_size={self.input_size}; flatten (N, C, H, W) inputs first"
            )
        return X

    def forward(self, X, training=True):
        """X (N, input_size) -> X @ weights + biases, shape (N, output_size)."""
        X = self._check_X("forward", X)
        self._X = X if training else None
        return X @ self.weights + self.biases

    def gradient(self, dout, input_grad=True):
        """Set ``self.grads`` from dout (N, output_size) and return dX (N, input_size);
        no update."""
        require_forward("FullyConnectedLayer", self._X)
        X = self._X
        dout = check_dout("FullyConnectedLayer", dout, (X.shape[0], self.output_size))
        self.set_grads(weights=X.T @ dout, biases=dout.sum(axis=0))
        return dout @ self.weights.T if input_grad else None

    def backward(self, X, dout):
        """Backpropagate through the layer and take an SGD step with
        ``self.learning_rate``.

        The activity's form of :meth:`Layer.backward`: the input of the forward pass is
        given again (as in the activity's XOR network), and the step size is the layer's
        own.

        Parameters
        ----------
        X : ndarray of shape (N, input_size)
        dout : ndarray of shape (N, output_size)

        Returns
        -------
        dX : ndarray of shape (N, input_size)
        """
        self._X = self._check_X("backward", X)
        return super().backward(dout, self.learning_rate)


class Dropout(Layer):
    """Inverted dropout: in training, zero each activation with probability ``rate`` and
    scale the survivors by ``1 / (1 - rate)`` so the expected value is unchanged; in
    evaluation, do nothing.

    Parameters
    ----------
    rate : float in [0, 1)
    rng : numpy.random.Generator or int or None
    """

    data_parallel = True  # each process keeps its rows of the batch's mask

    def __init__(self, rate=0.5, rng=None):
        rate = check_positive_float("Dropout: rate", rate, allow_zero=True)
        if rate >= 1:
            raise ValueError(f"Dropout: rate must be in [0, 1); got {rate}")
        super().__init__()
        self.rate = rate
        self.rng = np.random.default_rng(rng)
        self._mask = None

    def __repr__(self):
        return f"Dropout(rate={self.rate})"

    def forward(self, X, training=True):
        X = check_array("Dropout.forward: X", X)
        if not training or self.rate == 0:
            self._mask = np.ones((), dtype=X.dtype) if training else None
            return X
        keep = 1.0 - self.rate
        peers = self.peers
        # With peers, the whole batch's mask and this process's rows of it: the
        # generators of all processes stay equal.
        shape = X.shape if peers is None else (peers.batch, *X.shape[1:])
        keep_mask = self.rng.random(shape, dtype=np.float32) < keep
        if peers is not None:
            keep_mask = keep_mask[peers.rows]
        self._mask = keep_mask.astype(X.dtype) / X.dtype.type(keep)
        return X * self._mask

    def gradient(self, dout, input_grad=True):
        """Pass the gradient where the activation was kept, scaled as it was."""
        require_forward("Dropout", self._mask)
        if self._mask.ndim:
            dout = check_dout("Dropout", dout, self._mask.shape)
        return dout * self._mask
