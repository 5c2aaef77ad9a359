"""Batch normalisation (bonus challenge 6): normalise each feature over the batch, then
scale and shift.

For a batch of vectors X (N, D) the statistics are taken per feature over the N
examples; for a batch of feature maps X (N, C, H, W) they are taken per channel over N,
H and W (every pixel of a channel is an example of the same feature, as the convolution
shares its filter across pixels)::

    mu = mean(X),  var = mean((X - mu)**2)             over the batch axes
    x_hat = (X - mu) / sqrt(var + eps)
    out = gamma * x_hat + beta

In evaluation (``forward(X, training=False)``) the layer uses running averages of ``mu``
and ``var`` collected during training instead of the statistics of the batch, so a
prediction does not depend on the other images in the batch.
"""

import numpy as np

from ._checks import (
    check_array,
    check_dout,
    check_int,
    check_positive_float,
    require_forward,
)
from .layer import Layer


class BatchNorm(Layer):
    """Batch normalisation for (N, D) vectors or (N, C, H, W) feature maps (Ioffe and
    Szegedy, 2015).

    Parameters
    ----------
    num_features : int
        ``D`` for (N, D) inputs, ``C`` for (N, C, H, W) inputs.
    momentum : float in [0, 1), default 0.9
        Weight of the old value in the running averages:
        ``running = momentum * running + (1 - momentum) * batch_statistic``.
    eps : float > 0, default 1e-5
        Added to the variance before the square root, so a constant feature does not
        divide by zero.
    dtype : numpy dtype, default float32

    Attributes
    ----------
    gamma, beta : ndarray of shape (num_features,)
        The learned scale (initially 1) and shift (initially 0); ``params`` holds these
        live arrays.
    running_mean, running_var : ndarray of shape (num_features,)
        Running averages of the batch mean and of the (biased) batch variance, used in
        evaluation; ``buffers`` holds these live arrays (state that is saved but not
        trained).
    """

    # The batch's statistics mix its images: with peers they are summed over the
    # processes (twice forward, once backward).
    data_parallel = True

    def __init__(self, num_features, momentum=0.9, eps=1e-5, dtype=np.float32):
        super().__init__()
        self.num_features = check_int("BatchNorm: num_features", num_features, 1)
        self.momentum = check_positive_float(
            "BatchNorm: momentum", momentum, allow_zero=True
        )
        if self.momentum >= 1:
            raise ValueError(f"BatchNorm: momentum must be in [0, 1); got {momentum}")
        self.eps = check_positive_float("BatchNorm: eps", eps)
        D = self.num_features
        self.gamma = np.ones(D, dtype=dtype)
        self.beta = np.zeros(D, dtype=dtype)
        self.running_mean = np.zeros(D, dtype=dtype)
        self.running_var = np.ones(D, dtype=dtype)
        self.params = {"gamma": self.gamma, "beta": self.beta}
        self.buffers = {
            "running_mean": self.running_mean,
            "running_var": self.running_var,
        }
        self._cache = None

    def __repr__(self):
        return (
            f"BatchNorm(num_features={self.num_features}, momentum={self.momentum}, "
            f"eps={self.eps})"
        )

    def _check(self, where, X):
        """Check X; return it and the shape that broadcasts a (D,) vector against it."""
        X = check_array(f"BatchNorm.{where}: X", X, shape_doc="(N, D) or (N, C, H, W)")
        if X.ndim not in (2, 4) or X.shape[1] != self.num_features:
            raise ValueError(
                f"BatchNorm.{where}: X must have shape (N, {self.num_features}) or "
                f"(N, {self.num_features}, H, W); got shape {X.shape}"
            )
        return X, (1, self.num_features) + (1,) * (X.ndim - 2)

    @staticmethod
    def _feature_sum(a, b=None):
        """Per-feature sum of ``a`` (or of ``a * b``) over the batch axes, shape (D,).

        ``einsum`` sums (N, D) over N, or (N, C, H, W) over N, H and W, without the
        temporary array ``a * b`` and several times faster than
        ``(a * b).sum(axis=(0, 2, 3))``.
        """
        axes = "nc" if a.ndim == 2 else "nchw"
        return (
            np.einsum(f"{axes}->c", a)
            if b is None
            else np.einsum(f"{axes},{axes}->c", a, b)
        )

    def _batch_sum(self, sums):
        """``sums`` over the whole batch: added over the processes that share it in a
        data-parallel training (:mod:`cnn.parallel`), else as they are."""
        return sums if self.peers is None else self.peers.allsum(sums)[0]

    def forward(self, X, training=True):
        """Normalise X (N, D) or (N, C, H, W); the output has the same shape.

        With ``training=True`` the batch's own statistics are used (and folded into the
        running averages); with ``training=False`` the running averages are used and
        nothing is cached.
        """
        X, shape = self._check("forward", X)
        gamma, beta = self.gamma.reshape(shape), self.beta.reshape(shape)
        if not training:
            self._cache = None
            inv_std = 1.0 / np.sqrt(self.running_var + self.eps)
            scale = gamma * inv_std.reshape(shape)  # out = (X - mean) * scale + beta
            return X * scale + (beta - self.running_mean.reshape(shape) * scale)

        M = X.size // self.num_features  # values per feature in this batch
        peers = self.peers
        if peers is not None:  # X holds this process's rows of the batch
            M = M // len(X) * peers.batch
        if M < 2:
            raise ValueError(
                "BatchNorm.forward: training needs more than one value per feature to "
                f"compute a variance; got X of shape {X.shape}. Use a larger batch, or "
                "training=False"
            )
        mu = self._batch_sum(self._feature_sum(X)) / M
        x_hat = X - mu.reshape(shape)  # centred; normalised in place below
        var = self._batch_sum(self._feature_sum(x_hat, x_hat)) / M
        inv_std = 1.0 / np.sqrt(var + self.eps)
        x_hat *= inv_std.reshape(shape)
        self._cache = (x_hat, inv_std, M)

        m = self.momentum  # running averages, updated in place
        self.running_mean *= m
        self.running_mean += (1 - m) * mu
        self.running_var *= m
        self.running_var += (1 - m) * var
        out = x_hat * gamma  # in place: no extra temporaries
        out += beta
        return out

    def gradient(self, dout, input_grad=True):
        """Set ``grads["gamma"]`` and ``grads["beta"]`` (each (D,)) and return dX,
        shaped like X.

        With ``M`` values per feature and sums taken over the batch axes, the gradient
        through the batch statistics has the compact form::

            dbeta = sum(dout),  dgamma = sum(dout * x_hat)
            dX = gamma * inv_std / M * (M * dout - dbeta - x_hat * dgamma)
        """
        require_forward("BatchNorm", self._cache)
        x_hat, inv_std, M = self._cache
        dout = check_dout("BatchNorm", dout, x_hat.shape)
        shape = (1, self.num_features) + (1,) * (x_hat.ndim - 2)
        dbeta = self._feature_sum(dout)
        dgamma = self._feature_sum(dout, x_hat)
        # With peers, this process's part: the step sums the gradients at its end.
        self.set_grads(gamma=dgamma, beta=dbeta)
        if self.peers is not None:
            dbeta, dgamma = self.peers.allsum(dbeta, dgamma)
        # The formula above, evaluated in place in one array:
        # dX = (dout - (dbeta + x_hat dgamma) / M) gamma inv_std
        dX = x_hat * (dgamma / M).reshape(shape)
        dX += (dbeta / M).reshape(shape)
        np.subtract(dout, dX, out=dX)
        dX *= (self.gamma * inv_std).reshape(shape)
        return dX
