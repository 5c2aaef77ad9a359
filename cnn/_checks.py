"""Argument checks shared by every layer: each failure says what was given and what was
expected.

The checks run before any state changes, so a layer that refuses an input is left
exactly as it was.
"""

import contextlib
import numbers
import threading

import numpy as np

_state = threading.local()


@contextlib.contextmanager
def inside_model():
    """A context in which :func:`check_array` skips its scan for NaN and infinite
    values.

    ``Sequential`` enters it after checking its input images, so the layers of a
    network do not scan every intermediate array again: finite images and finite
    parameters give finite activations unless something overflows, and training checks
    the loss and every parameter after each step. A layer called directly, outside a
    model, still scans its input. Shapes and dtypes are checked everywhere.
    """
    previous = getattr(_state, "inside", False)
    _state.inside = True
    try:
        yield
    finally:
        _state.inside = previous


def check_int(name, value, minimum):
    """Return ``value`` as an ``int`` if it is an integer ``>= minimum``, else raise
    ``ValueError``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be an integer >= {minimum}; got {value!r} "
            f"({type(value).__name__})"
        )
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value}")
    return int(value)


def check_positive_float(name, value, allow_zero=False):
    """Return ``value`` as a float if it is a finite real number > 0 (or >= 0 with
    ``allow_zero``)."""
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, numbers.Real)
        or not np.isfinite(value)
    ):
        raise TypeError(f"{name} must be a finite real number; got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}; got {value}")
    return float(value)


def check_array(
    name, x, ndim=None, shape_doc="", floating=True, finite=True, allow_empty=False
):
    """Check that ``x`` is a numeric ndarray of ``ndim`` dimensions with only finite
    values.

    Parameters
    ----------
    name : str
        The argument's name, used in the error message.
    x : array_like
        The value to check; lists are converted with ``np.asarray``.
    ndim : int, optional
        The number of dimensions expected.
    shape_doc : str
        How the expected shape is written in the docs, e.g. ``"(N, C, H, W)"``.
    floating : bool
        Require a floating-point dtype (layers compute gradients, so integers would
        truncate).
    finite : bool
        Refuse NaN and infinite values (not scanned inside a model, see
        :func:`inside_model`).
    allow_empty : bool
        Accept arrays with a zero-length axis.
    """
    x = np.asarray(x)
    # 'b' bool, 'i'/'u' integers, 'f' floating, 'c' complex
    # (cheaper than np.issubdtype)
    kind = x.dtype.kind
    expected = f" of shape {shape_doc}" if shape_doc else ""
    if kind not in "biufc":
        raise TypeError(
            f"{name} must be a numeric array{expected}; got dtype {x.dtype}"
        )
    if ndim is not None and x.ndim != ndim:
        raise ValueError(
            f"{name} must be a {ndim}-D array{expected}; got {x.ndim}-D array of shape "
            f"{x.shape}"
        )
    if floating and kind != "f":
        raise TypeError(
            f"{name} must be a floating-point array{expected}; got dtype {x.dtype}. "
            f"Convert it first, e.g. x.astype('float32') / 255.0 for image bytes"
        )
    if not allow_empty and x.size == 0:
        raise ValueError(f"{name} must not be empty; got shape {x.shape}")
    if (
        finite
        and kind in "fc"
        and not getattr(_state, "inside", False)
        and not np.isfinite(x).all()
    ):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise ValueError(
            f"{name} contains {bad} NaN or infinite value(s); expected only finite "
            "numbers"
        )
    return x


def check_labels(name, y, num_classes, n=None):
    """Check that ``y`` is a 1-D array of integer class labels in ``[0, num_classes)``,
    of length ``n``."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D array of class indices of shape (N,); got shape "
            f"{y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        if (
            np.issubdtype(y.dtype, np.floating)
            and y.size
            and np.all(np.isfinite(y))
            and np.all(y == np.round(y))
        ):
            y = y.astype(np.int64)
        else:
            raise TypeError(
                f"{name} must hold integer class indices; got dtype {y.dtype}"
            )
    if n is not None and len(y) != n:
        raise ValueError(
            f"{name} has {len(y)} labels but there are {n} inputs; expected one label "
            "per input"
        )
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"{name} must hold class indices in [0, {num_classes - 1}]; got values "
            f"from {y.min()} to {y.max()}"
        )
    return y


def check_dout(layer, dout, expected_shape):
    """Check an upstream gradient against the shape of the output it belongs to."""
    dout = np.asarray(dout)
    if dout.shape != tuple(expected_shape):
        raise ValueError(
            f"{layer}.backward: dout must have the shape of the last forward output "
            f"{tuple(expected_shape)}; got {dout.shape}"
        )
    return dout


def require_forward(layer, cache):
    """Raise a clear error when backward is called before forward."""
    if cache is None:
        raise RuntimeError(
            f"{layer}.backward called before forward: run forward(X) on a batch first"
        )
