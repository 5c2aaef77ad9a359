"""Optimizers that update every layer's ``params`` from its ``grads``: SGD, momentum
(and Nesterov), Adam.

Explained in the chapter *Optimizers*. Each optimizer keeps its state (velocities,
moment estimates) per parameter array, keyed by the array's identity, and updates the
arrays in place.
"""

import numpy as np

from ._checks import check_positive_float
from .config import Configurable


class Optimizer(Configurable):
    """Base class: ``step(layers, learning_rate=None)`` updates every layer's ``params``
    from its ``grads``.

    Subclasses are found by name (:func:`make_optimizer`, ``load_model``) and rebuilt
    from their constructor arguments, as layers are.
    """

    registry = {}  # class name -> class, filled as each subclass is defined
    family = "optimizer"

    def step(self, layers, learning_rate=None):
        raise NotImplementedError


def make_optimizer(optimizer, learning_rate):
    """An optimizer from its name, any case ("sgd", "momentum", "adam"); an optimizer
    object or None is returned as is.

    ``Sequential`` passes each epoch's learning rate to the optimizer, so the
    optimizer's own ``learning_rate`` is only its default.
    """
    if optimizer is None or not isinstance(optimizer, str):
        return optimizer
    names = {name.lower(): cls for name, cls in Optimizer.registry.items()}
    if optimizer.lower() not in names:
        raise ValueError(
            f"optimizer must be one of {sorted(names)} or an optimizer object; got "
            f"{optimizer!r}"
        )
    return names[optimizer.lower()](learning_rate)


class SGD(Optimizer):
    """Plain stochastic gradient descent: ``p -= lr * g``."""

    def __init__(self, learning_rate=0.01):
        self.learning_rate = check_positive_float("SGD: learning_rate", learning_rate)

    def step(self, layers, learning_rate=None):
        lr = self.learning_rate if learning_rate is None else learning_rate
        for layer in layers:
            layer.update(lr)

    def __repr__(self):
        return f"SGD(learning_rate={self.learning_rate})"


class Momentum(SGD):
    """SGD with momentum: ``v = mu * v - lr * g``; ``p += v`` (or the Nesterov
    look-ahead form).

    Nesterov's variant applies ``p += mu * v - lr * g``: the step that the velocity is
    about to take, corrected by the gradient.
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, nesterov=False):
        super().__init__(learning_rate)
        self.momentum = check_positive_float(
            "Momentum: momentum", momentum, allow_zero=True
        )
        if self.momentum >= 1:
            raise ValueError(f"Momentum: momentum must be in [0, 1); got {momentum}")
        self.nesterov = bool(nesterov)
        self.velocity = {}

    def step(self, layers, learning_rate=None):
        lr = self.learning_rate if learning_rate is None else learning_rate
        mu = self.momentum
        for layer in layers:
            for name, p in layer.params.items():
                g = layer.grads[name]
                v = self.velocity.setdefault(id(p), np.zeros_like(p))
                v *= mu
                v -= lr * g
                if self.nesterov:
                    p += mu * v - lr * g
                else:
                    p += v

    def __repr__(self):
        return (
            f"Momentum(learning_rate={self.learning_rate}, momentum={self.momentum}, "
            f"nesterov={self.nesterov})"
        )


class Adam(SGD):
    """Adam (Kingma and Ba, 2015): per-parameter steps from bias-corrected first and
    second moments.

    ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g**2``,
    ``p -= lr * m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m / (1 - b1**t)``,
    ``v_hat = v / (1 - b2**t)``.
    """

    def __init__(self, learning_rate=0.001, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(learning_rate)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.t = 0
        self.m, self.v = {}, {}
        # arrays for the intermediate results, per parameter (not state)
        self._scratch = {}

    def step(self, layers, learning_rate=None):
        lr = self.learning_rate if learning_rate is None else learning_rate
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        # both bias corrections in one factor (a NumPy float64)
        scale = lr * np.sqrt(1 - b2**self.t) / (1 - b1**self.t)
        for layer in layers:
            for name, p in layer.params.items():
                g = layer.grads[name]
                m = self.m.setdefault(id(p), np.zeros_like(p))
                v = self.v.setdefault(id(p), np.zeros_like(p))
                a, b, c = self._scratch_for(p, scale)
                # The formulas above, in place, without allocating seven arrays per
                # parameter and step; the same numbers as written out with
                # temporaries (the step itself in float64, as `scale * m` computes it).
                m *= b1
                m += np.multiply(g, 1 - b1, out=a)
                v *= b2
                np.multiply(g, 1 - b2, out=a)
                v += np.multiply(a, g, out=a)
                np.sqrt(v, out=b)
                b += self.eps
                np.multiply(m, scale, out=c)
                np.divide(c, b, out=c)
                np.copyto(a, c, casting="same_kind")  # rounded to p's dtype
                p -= a

    def _scratch_for(self, p, scale):
        """Three arrays for the intermediate results of ``p``'s update: two like
        ``p``, one in the dtype of ``scale * p``."""
        scratch = self._scratch.get(id(p))
        if scratch is None or scratch[0].shape != p.shape:
            step_dtype = np.result_type(scale, p)
            scratch = self._scratch[id(p)] = (
                np.empty_like(p),
                np.empty_like(p),
                np.empty(p.shape, step_dtype),
            )
        return scratch

    def __repr__(self):
        return (
            f"Adam(learning_rate={self.learning_rate}, beta1={self.beta1}, "
            f"beta2={self.beta2})"
        )
