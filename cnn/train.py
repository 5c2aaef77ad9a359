"""Training and evaluation (Part 10): the loop over epochs and mini-batches, one
training step, ``evaluate``.

Explained in the chapter *Training and evaluation*. ``SimpleCNN.train`` (any
``Sequential``'s ``train``) calls :func:`train`.
"""

import contextlib
import sys
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from . import parallel
from ._checks import check_array, check_int, check_labels
from .losses import cross_entropy_from_logits, softmax_cross_entropy
from .threads import slice_threads, workers

#: A mean cross-entropy this large means the true class's logit sits about 1000 below
#: another one: no sensible training run gets there (a uniform guess over 10 classes
#: costs ln 10 = 2.3), so training stops and says it diverged.
DIVERGED_LOSS = 1000.0


def train(
    model,
    X_train,
    y_train,
    epochs=10,
    batch_size=32,
    validation_data=None,
    verbose=1,
    shuffle=True,
    augment=None,
    processes=1,
):
    """Train ``model`` with mini-batches, shuffling every epoch (Part 10).

    Parameters
    ----------
    model : Sequential
        Its ``learning_rate`` and ``lr_decay`` set each epoch's learning rate, its
        ``rng`` the shuffling.
    X_train : ndarray of shape (N, C, H, W)
    y_train : ndarray of shape (N,)
    epochs, batch_size : int
    validation_data : tuple (X_val, y_val) or None
        Evaluated at the end of every epoch.
    verbose : int
        0 silent; 1 one line per epoch (plus a live progress line in a terminal);
        2 progress lines every 10% of an epoch even where the output is not a terminal.
    shuffle : bool
        False takes the batches in the data's order (for experiments that must see the
        same batches).
    augment : callable or None
        ``augment(X_batch, rng) -> X_batch``, applied to every training batch before its
        forward pass with the model's generator
        (e.g. :func:`cnn.augment.augment_batch`); the data are not changed.
    processes : int, default 1
        Processes that compute each batch together, each its share of the images on
        one core (:mod:`cnn.parallel`): the same training up to float rounding, in
        about ``1/processes`` of the time on a machine with that many free cores. Every
        layer must allow it (``data_parallel``), and every batch needs at least
        ``processes`` images.

    Returns
    -------
    history : dict of lists, one entry per epoch
        ``loss`` and ``accuracy`` (running means over the epoch's batches), ``val_loss``
        and ``val_accuracy`` if there is validation data, ``seconds`` and
        ``learning_rate``.
    """
    X_train = check_array("train: X_train", X_train, ndim=4, shape_doc="(N, C, H, W)")
    y_train = check_labels("train: y_train", y_train, model.num_classes, n=len(X_train))
    epochs = check_int("epochs", epochs, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    if augment is not None and not callable(augment):
        raise TypeError(
            "augment must be a function (X, rng) -> X, e.g. augment_batch, or None; "
            f"got {augment!r}"
        )
    if validation_data is not None:
        X_val, y_val = validation_data
        X_val = check_array("train: X_val", X_val, ndim=4, shape_doc="(N, C, H, W)")
        y_val = check_labels("train: y_val", y_val, model.num_classes, n=len(X_val))
        validation_data = (X_val, y_val)

    processes = check_int("processes", processes, 1)
    N = len(X_train)
    if processes > 1:
        _check_parallel(model, N, batch_size, processes)
    progress = Progress(verbose, epochs, N, -(-N // batch_size))

    def work(peers):
        _attach(model, peers)
        try:
            return _train_epochs(
                model,
                X_train,
                y_train,
                epochs,
                batch_size,
                validation_data,
                shuffle,
                augment,
                progress,
                peers,
            )
        finally:
            _attach(model, None)

    if processes == 1:
        return work(None)
    # the most numbers summed at once: every gradient, and the loss
    size = 1 + sum(
        p.size for layer in model.param_layers for p in layer.params.values()
    )
    return parallel.run(processes, size, work)


def _train_epochs(
    model,
    X_train,
    y_train,
    epochs,
    batch_size,
    validation,
    shuffle,
    augment,
    progress,
    peers,
):
    """The epochs of :func:`train` in one process: the only one (``peers`` None), or
    one of the processes of :mod:`cnn.parallel`, which compute their rows of every
    batch. Returns the history (None in the forked processes, which keep none)."""
    leader = peers is None or peers.rank == 0
    history = {"loss": [], "accuracy": [], "seconds": [], "learning_rate": []}
    if validation is not None:
        history.update(val_loss=[], val_accuracy=[])
    N = len(X_train)
    num_batches = -(-N // batch_size)
    steps = model.training_steps()  # the same logits as model.layers, faster
    for epoch in range(epochs):
        model.current_learning_rate = model.learning_rate * model.lr_decay**epoch
        order = model.rng.permutation(N) if shuffle else np.arange(N)
        start = time.perf_counter()
        total_loss, correct, counted = 0.0, 0, 0
        with _compute_limits(model, peers):
            for b in range(num_batches):
                idx = order[b * batch_size : (b + 1) * batch_size]
                Xb, yb = _batch(X_train, y_train, idx, augment, model.rng, peers)
                loss, logits = train_step(model, Xb, yb, steps, peers)
                total_loss += loss * len(idx)
                # The largest logit is the likeliest class.
                correct += int((logits.argmax(axis=1) == yb).sum())
                counted += len(yb)
                if leader:
                    progress.batch(
                        epoch,
                        b,
                        min((b + 1) * batch_size, N),
                        total_loss,
                        correct / counted,
                    )
        if peers is not None:  # the correct answers of all the processes
            correct = int(peers.allsum(np.array([correct], np.float64))[0][0])
        if leader:
            history["seconds"].append(time.perf_counter() - start)
            history["loss"].append(total_loss / N)
            history["accuracy"].append(correct / N)
            history["learning_rate"].append(model.current_learning_rate)
            if validation is not None:
                X_val, y_val = validation
                logits = model.predict_logits(X_val)
                history["val_loss"].append(cross_entropy_from_logits(logits, y_val))
                history["val_accuracy"].append(
                    float((logits.argmax(axis=1) == y_val).mean())
                )
            progress.epoch(epoch, history)
    return history if leader else None


def _batch(X_train, y_train, idx, augment, rng, peers):
    """The mini-batch of the images ``idx``, transformed by ``augment(X, rng)`` if it
    is given; with ``peers``, this process's rows of it."""
    mine = slice(None) if peers is None else peers.share(len(idx))
    if augment is None:
        return X_train[idx[mine]], y_train[idx[mine]]
    # X_train[idx] is a copy: the training data are not changed. With peers, every
    # process transforms the whole batch, so that their generators stay equal.
    return augment(X_train[idx], rng)[mine], y_train[idx[mine]]


def _check_parallel(model, N, batch_size, processes):
    """Refuse what ``train(..., processes=P)`` cannot split: a layer that does not say
    it can be, or a batch with fewer images than processes."""
    for layer in model.layers:
        if not getattr(layer, "data_parallel", False):
            raise ValueError(
                f"train: processes={processes} splits every batch between processes, "
                f"and layer {layer!r} does not say it can be split: set "
                f"{type(layer).__name__}.data_parallel = True if each image's output "
                "depends on that image alone (see cnn.parallel)"
            )
    smallest = min(batch_size, N % batch_size or batch_size, N)
    if smallest < processes:
        raise ValueError(
            f"train: processes={processes} needs at least {processes} images in every "
            f"batch, and with {N} images in batches of {batch_size} one batch has "
            f"{smallest}; choose a batch size that leaves none that small"
        )


def _attach(model, peers):
    """Give every layer ``peers`` (:class:`cnn.parallel.Peers`, or None), which the
    layers that mix the images of a batch (batch normalisation, dropout) use."""
    for layer in model.layers:
        if getattr(layer, "data_parallel", False):
            layer.peers = peers


def _compute_limits(model, peers):
    """The threads a training step may use: ``model.threads`` in one process
    (:func:`blas_limits`), one in each of several (they share the cores)."""
    if peers is None:
        return blas_limits(model)
    stack = contextlib.ExitStack()
    stack.enter_context(threadpool_limits(limits=1, user_api="blas"))
    stack.enter_context(slice_threads(1))
    return stack


def train_step(model, X, y, steps=None, peers=None):
    """One step of gradient descent on the batch (X, y): forward, loss, backward,
    update.

    ``steps`` are what the forward and backward passes run: ``model.layers`` by default,
    or the faster ``model.training_steps()`` (the same logits). Returns the batch's mean
    cross-entropy before the update and its logits (N, num_classes). Raises
    FloatingPointError if training has diverged.

    With ``peers`` (:class:`cnn.parallel.Peers`), X and y are this process's rows of a
    batch that several processes compute together: the loss returned and the gradients
    applied are the whole batch's, the logits this process's rows'.
    """
    logits = model.logits(X, training=True, steps=steps)
    # the loss and its gradient with respect to the logits
    loss, dlogits = softmax_cross_entropy(logits, y)
    if peers is not None:
        # in the whole batch's mean, each image weighs 1 / (the whole batch)
        share = len(y) / peers.batch
        loss *= share
        dlogits *= dlogits.dtype.type(share)
    # overflow is detected below, with a clear message
    with np.errstate(over="ignore", invalid="ignore"):
        # every layer's grads, walking the steps backwards
        model.gradient(dlogits, steps)
        if peers is not None:
            loss = peers.sum_gradients(model.param_layers, loss)
        if not loss < DIVERGED_LOSS:  # also catches NaN
            _diverged(model, f"the loss reached {loss:.3g}")
        # then, and only then, every parameter is updated
        model.step()
    if not all(
        np.isfinite(p).all()
        for layer in model.param_layers
        for p in layer.params.values()
    ):
        _diverged(model, "a parameter became NaN or infinite")
    return loss, logits


def _diverged(model, what):
    raise FloatingPointError(
        f"training diverged: {what}. Try a smaller learning rate "
        f"(the current one is {model.current_learning_rate:g})"
    )


def evaluate(model, X, y):
    """Accuracy of ``model`` on (X, y): the fraction of images whose predicted class is
    the label.

    Parameters
    ----------
    model : a model with ``predict(X)``
    X : ndarray of shape (N, C, H, W)
    y : ndarray of shape (N,)

    Returns
    -------
    accuracy : float in [0, 1]
    """
    X = check_array("evaluate: X", X, ndim=4, shape_doc="(N, C, H, W)")
    y = check_labels("evaluate: y", y, getattr(model, "num_classes", 10), n=len(X))
    return float(np.mean(model.predict(X) == y))


def blas_limits(model):
    """A context in which at most ``model.threads`` threads compute (None leaves BLAS
    alone), and never more than are allowed already: a limit set around the training
    (one BLAS thread in each of :func:`cnn.book.over_seeds`'s worker processes, which
    share the cores) holds.

    BLAS runs on one thread, and the convolutions' batch slices side by side in up to
    ``model.threads`` threads (:mod:`cnn.threads`; with one, one after another). The
    matrix products of a small network are too small to gain from a second BLAS thread,
    and when other programs keep the cores busy, threads waiting for each other slow a
    step several-fold.
    """
    if model.threads is None:
        return contextlib.nullcontext()
    current = [
        pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"
    ]
    # inside another model's training BLAS has one thread and the slices the rest
    limit = min(model.threads, max([workers(), *current]))
    stack = contextlib.ExitStack()
    stack.enter_context(threadpool_limits(limits=1, user_api="blas"))
    stack.enter_context(slice_threads(limit))
    return stack


class Progress:
    """The lines that :func:`train` prints: one per epoch, and progress within an epoch
    (``verbose`` 1 in a terminal, where a live line overwrites itself, or 2 anywhere,
    every 10% of an epoch)."""

    def __init__(self, verbose, epochs, N, num_batches):
        self.verbose, self.epochs, self.N, self.num_batches = (
            verbose,
            epochs,
            N,
            num_batches,
        )
        self.live = verbose >= 1 and sys.stdout.isatty()

    def batch(self, epoch, b, seen, total_loss, accuracy):
        live_now = self.live and b % max(1, self.num_batches // 50) == 0
        if live_now or (
            self.verbose >= 2 and b and b % max(1, self.num_batches // 10) == 0
        ):
            line = (
                f"epoch {epoch + 1}/{self.epochs}  {seen:>6}/{self.N}  "
                f"loss {total_loss / seen:.4f}  accuracy {accuracy:.4f}"
            )
            print("\r" + line, end="", flush=True) if self.live else print(
                line, flush=True
            )

    def epoch(self, epoch, history):
        if not self.verbose:
            return
        line = (
            f"epoch {epoch + 1}/{self.epochs}  loss {history['loss'][-1]:.4f}  "
            f"accuracy {history['accuracy'][-1]:.4f}  {history['seconds'][-1]:.1f}s"
        )
        if "val_loss" in history:
            line += (
                f"  val_loss {history['val_loss'][-1]:.4f}  "
                f"val_accuracy {history['val_accuracy'][-1]:.4f}"
            )
        print(
            ("\r" if self.live else "") + line + (" " * 10 if self.live else ""),
            flush=True,
        )
