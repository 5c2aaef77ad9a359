"""Numerical gradient checking: centred differences and relative error (the activity's
debugging tip).

Explained in the chapters *Backpropagation through convolution* and *Debugging*.
"""

import numpy as np


def rel_error(a, b):
    """Largest relative error ``|a - b| / max(1e-8, |a| + |b|)`` over all elements."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} and {b.shape}")
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


def numerical_gradient(f, x, h=1e-5, indices=None):
    """Gradient of the scalar function ``f()`` with respect to the array ``x``, by
    centred differences.

    ``x`` is changed in place, one element at a time, and restored: ``f`` must read it
    (for example, ``x`` is a layer's weight array and ``f`` runs the layer). Use
    float64: in float32 the rounding error of ``f`` swamps the difference.

    indices : iterable of index tuples, optional
        Only these elements (the others stay 0); all of them by default.

    Returns
    -------
    grad : ndarray of x's shape
        ``(f(x + h e_i) - f(x - h e_i)) / (2 h)`` for every element ``i``.
    """
    grad = np.zeros(x.shape, dtype=np.float64)
    for i in np.ndindex(x.shape) if indices is None else indices:
        old = x[i]
        x[i] = old + h
        plus = f()
        x[i] = old - h
        minus = f()
        x[i] = old
        grad[i] = (plus - minus) / (2 * h)
    return grad


def numerical_gradient_array(f, x, dout, h=1e-5):
    """Numerical gradient of ``sum(f() * dout)`` with respect to ``x``: what a layer's
    backward computes."""
    return numerical_gradient(lambda: float(np.sum(f() * dout)), x, h)


def check_layer(layer, X, seed=0, h=1e-5):
    """Compare a layer's backward pass with numerical gradients on input X
    (use float64).

    A random upstream gradient ``dout`` defines the scalar ``sum(forward(X) * dout)``;
    its numerical gradients with respect to X and to every parameter are compared with
    ``layer.gradient(dout)``. It also checks the protocol of :class:`cnn.Layer`:
    ``gradient`` fills ``grads`` with exactly the names and shapes of ``params`` and
    changes no parameter.

    Returns
    -------
    errors : dict
        Relative error for ``"X"`` and for each parameter name.
    """
    rng = np.random.default_rng(seed)
    X = np.array(X, dtype=np.float64)
    out = layer.forward(X)
    dout = rng.standard_normal(out.shape)
    before = {name: value.copy() for name, value in layer.params.items()}
    analytic_dX = layer.gradient(dout)
    _check_protocol(layer, before)
    analytic = {name: np.array(g) for name, g in layer.grads.items()}

    def f():
        return layer.forward(X)

    errors = {"X": rel_error(analytic_dX, numerical_gradient_array(f, X, dout, h))}
    for name, value in layer.params.items():
        errors[name] = rel_error(
            analytic[name], numerical_gradient_array(f, value, dout, h)
        )
    return errors


def _check_protocol(layer, params_before):
    """What ``gradient`` must do besides computing the right numbers (see
    :class:`cnn.Layer`)."""
    name = type(layer).__name__
    if set(layer.grads) != set(layer.params):
        raise AssertionError(
            f"{name}.gradient must fill grads with one gradient per parameter: params "
            f"has {sorted(layer.params)}, grads has {sorted(layer.grads)}"
        )
    for key, value in layer.params.items():
        if np.shape(layer.grads[key]) != value.shape:
            raise AssertionError(
                f"{name}: grads[{key!r}] has shape {np.shape(layer.grads[key])}, but "
                f"the parameter has shape {value.shape}"
            )
        if not np.array_equal(value, params_before[key]):
            raise AssertionError(
                f"{name}.gradient changed the parameter {key!r}: it must only compute "
                "gradients (an optimizer updates the parameters)"
            )


def check_model(model, X, y, h=1e-5, max_checks=100, seed=0):
    """Compare the whole model's gradients of the mean cross-entropy with numerical ones
    (use float64).

    At most ``max_checks`` elements of each parameter array, chosen at random, are
    checked numerically (a dense layer has thousands of weights and each costs two
    forward passes).

    Returns the relative error for each parameter, keyed ``"<layer index>.<name>"``.
    """
    from .losses import cross_entropy_from_logits, softmax_cross_entropy

    rng = np.random.default_rng(seed)
    _, dlogits = softmax_cross_entropy(model.logits(X), y)
    model.gradient(dlogits)
    analytic = {
        (i, name): np.array(g)
        for i, layer in enumerate(model.layers)
        for name, g in layer.grads.items()
    }
    errors = {}
    for (i, name), grad in analytic.items():
        flat = rng.choice(grad.size, size=min(max_checks, grad.size), replace=False)
        idx = [np.unravel_index(k, grad.shape) for k in flat]
        numeric = numerical_gradient(
            lambda: cross_entropy_from_logits(model.logits(X), y),
            model.layers[i].params[name],
            h,
            indices=idx,
        )
        errors[f"{i}.{name}"] = rel_error(
            np.array([grad[k] for k in idx]), np.array([numeric[k] for k in idx])
        )
    return errors
