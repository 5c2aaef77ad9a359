"""Softmax and cross-entropy (Part 7), and the gradient that starts backpropagation.

The activity's ``softmax`` and ``cross_entropy_loss`` (of probabilities) are for the
chapters; training uses :func:`softmax_cross_entropy`, the loss and its gradient from
the logits in one call, and every loss the package reports is computed from logits
(:func:`cross_entropy_from_logits`).

Explained in the chapter *Softmax and cross-entropy*.
"""

import numpy as np

from ._checks import check_array, check_labels


def softmax(x):
    """Numerically stable softmax over the last axis.

    Subtracting each row's maximum before ``exp`` changes nothing mathematically (the
    factor ``exp(-max)`` cancels) but keeps every exponent <= 0, so nothing overflows:
    logits of 1e4 work.

    Parameters
    ----------
    x : ndarray of shape (..., num_classes)
        Logits.

    Returns
    -------
    probs : ndarray of the same shape and floating dtype
        Non-negative, summing to 1 along the last axis.
    """
    x = check_array("softmax: x", x, shape_doc="(N, num_classes)")
    if x.ndim == 0:
        raise ValueError(
            "softmax: x must have at least one axis (the classes); got a scalar"
        )
    shifted = x - x.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(x):
    """``log(softmax(x))`` computed without forming the probabilities: exact even where
    they underflow."""
    x = check_array("log_softmax: x", x, shape_doc="(N, num_classes)")
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def cross_entropy_loss(predictions, labels):
    """Mean negative log-probability of the true class:
    ``-mean(log(predictions[n, labels[n]]))``.

    Parameters
    ----------
    predictions : ndarray of shape (N, num_classes)
        Softmax probabilities.
    labels : ndarray of shape (N,)
        Integer class indices in ``[0, num_classes)``.

    Returns
    -------
    loss : float
        Finite even when a probability has underflowed to 0: such probabilities are
        clipped to the smallest positive normal number of their dtype (a loss of
        about 87 in float32, 708 in float64).
    """
    predictions = check_array(
        "cross_entropy_loss: predictions",
        predictions,
        ndim=2,
        shape_doc="(N, num_classes)",
    )
    if predictions.min() < 0 or predictions.max() > 1:
        raise ValueError(
            "cross_entropy_loss: predictions must be probabilities in [0, 1] (apply "
            f"softmax to logits first); got values from {predictions.min():g} to "
            f"{predictions.max():g}"
        )
    sums = predictions.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-3):
        worst = int(np.argmax(np.abs(sums - 1.0)))
        raise ValueError(
            "cross_entropy_loss: predictions must be probabilities, each row summing "
            f"to 1 (apply softmax to logits first); row {worst} sums to {sums[worst]:g}"
        )
    N, num_classes = predictions.shape
    labels = check_labels("cross_entropy_loss: labels", labels, num_classes, n=N)
    p = predictions[np.arange(N), labels]
    return float(-np.mean(np.log(np.maximum(p, np.finfo(predictions.dtype).tiny))))


def cross_entropy_from_logits(logits, labels):
    """Cross-entropy computed from logits with :func:`log_softmax`; exact where
    probabilities underflow."""
    logits = check_array(
        "cross_entropy_from_logits: logits",
        logits,
        ndim=2,
        shape_doc="(N, num_classes)",
    )
    N, num_classes = logits.shape
    labels = check_labels("cross_entropy_from_logits: labels", labels, num_classes, n=N)
    return float(-np.mean(log_softmax(logits)[np.arange(N), labels]))


def softmax_cross_entropy_gradient(probs, labels):
    """Gradient of the mean cross-entropy with respect to the logits:
    ``(probs - one_hot(labels)) / N``.

    The softmax Jacobian and the derivative of ``-log`` cancel to this simple form,
    which is why the model starts backpropagation at the logits rather than at the
    probabilities.

    Parameters
    ----------
    probs : ndarray of shape (N, num_classes)
    labels : ndarray of shape (N,)

    Returns
    -------
    dlogits : ndarray of shape (N, num_classes)
    """
    N, num_classes = probs.shape
    labels = check_labels(
        "softmax_cross_entropy_gradient: labels", labels, num_classes, n=N
    )
    dlogits = probs.copy()
    dlogits[np.arange(N), labels] -= 1
    return dlogits / probs.dtype.type(N)


def softmax_cross_entropy(logits, labels):
    """The mean cross-entropy of ``logits`` and its gradient with respect to them,
    computed together.

    What a training step needs: the same loss as :func:`cross_entropy_from_logits` and
    the same gradient as ``softmax_cross_entropy_gradient(softmax(logits), labels)``, in
    one call.

    Parameters
    ----------
    logits : ndarray of shape (N, num_classes)
    labels : ndarray of shape (N,)

    Returns
    -------
    loss : float
        ``-mean(log_softmax(logits)[n, labels[n]])``, exact even where a probability
        underflows.
    dlogits : ndarray of shape (N, num_classes)
        ``(softmax(logits) - one_hot(labels)) / N``.
    """
    logits = check_array(
        "softmax_cross_entropy: logits", logits, ndim=2, shape_doc="(N, num_classes)"
    )
    N, num_classes = logits.shape
    labels = check_labels("softmax_cross_entropy: labels", labels, num_classes, n=N)
    rows = np.arange(N)
    # log_softmax and softmax from one exponential: both start from the same shifted
    # logits, and the probabilities are exp(shifted) / its row sums.
    shifted = logits - logits.max(axis=1, keepdims=True)
    dlogits = np.exp(shifted)
    sums = dlogits.sum(axis=1, keepdims=True)
    loss = float(-np.mean(shifted[rows, labels] - np.log(sums[:, 0])))
    dlogits /= sums
    dlogits[rows, labels] -= 1
    dlogits /= logits.dtype.type(N)
    return loss, dlogits
