"""Whole networks: ``Sequential`` (any stack of layers), ``SimpleCNN`` (Part 8), training and ``evaluate`` (Part 10).

Explained in the chapters *Assembling SimpleCNN* and *Training and evaluation*.
"""
import contextlib
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from ._checks import check_array, check_int, check_labels, check_positive_float
from .conv import ConvLayer
from .fused import ConvMaxPool
from .layers import Flatten, FullyConnectedLayer, MaxPoolLayer, ReLU
from .losses import cross_entropy_from_logits, softmax, softmax_cross_entropy


#: A mean cross-entropy this large means the true class's logit sits about 1000 below another one:
#: no sensible training run gets there (a uniform guess over 10 classes costs ln 10 = 2.3), so
#: training stops and says it diverged.
DIVERGED_LOSS = 1000.0


class Sequential:
    """A stack of layers trained with softmax cross-entropy.

    Parameters
    ----------
    layers : list of layers
        Applied in order; the last one produces the logits (N, num_classes).
    learning_rate : float
        Step size at the first epoch: of plain SGD, or handed to ``optimizer`` (the model's schedule
        drives the optimizer, whose own ``learning_rate`` is then only its default).
    lr_decay : float in (0, 1], default 1.0
        The learning rate of epoch ``e`` (counting from 0) is ``learning_rate * lr_decay**e``.
    optimizer : cnn.optim optimizer or None
        Updates every layer's ``params`` from its ``grads``; None means plain SGD at the current learning rate.
    seed : int or None
        Seeds the shuffling of the training data (layers take their own seeds for their weights).
    input_shape : tuple (C, H, W)
        Shape of one input, used by :meth:`summary`.
    blas_threads : int or None, default 1
        Threads that the BLAS library may use while this model trains or predicts. The matrix products
        of a small network are too small to gain from a second thread, and when other programs keep the
        cores busy, BLAS threads waiting for each other slow a training step several-fold; None leaves
        BLAS as it is configured.
    """

    def __init__(self, layers, learning_rate=0.01, lr_decay=1.0, optimizer=None, seed=0,
                 input_shape=(1, 28, 28), num_classes=10, blas_threads=1):
        if not layers:
            raise ValueError("Sequential: layers must be a non-empty list of layers")
        self.layers = list(layers)
        self.learning_rate = check_positive_float("learning_rate", learning_rate)
        self.lr_decay = check_positive_float("lr_decay", lr_decay)
        if self.lr_decay > 1:
            raise ValueError(f"lr_decay must be in (0, 1]; got {lr_decay}")
        self.optimizer = optimizer
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.input_shape = tuple(input_shape)
        self.num_classes = check_int("num_classes", num_classes, 2)
        self.blas_threads = None if blas_threads is None else check_int("blas_threads", blas_threads, 1)
        self.current_learning_rate = self.learning_rate
        self._last_X = None
        self._last_steps = self.layers
        self._logits = None

    # ---------------------------------------------------------------- forward and backward

    def forward(self, X, training=True):
        """Class probabilities of shape (N, num_classes) for X of shape (N, C, H, W).

        With ``training=True`` (the default, as the activity's training loop expects) every layer keeps
        what its backward pass needs, and dropout is active; :meth:`predict` uses ``training=False``.
        The layers run in the listed order, so after ``forward`` each layer's cache is ready for a
        backward pass written by hand, layer by layer.
        """
        return softmax(self.logits(X, training))

    def logits(self, X, training=True, steps=None):
        """The logits (N, num_classes) of X (N, C, H, W): the scores that softmax turns into probabilities.

        ``steps`` are the layers to run, in order: ``self.layers`` by default, or
        :meth:`training_steps`, the faster steps that :meth:`train` and :meth:`predict` run (same
        logits). :meth:`backward` then goes back through the same steps.
        """
        X = check_array("forward: X", X, ndim=4, shape_doc="(N, C, H, W)")
        order = self.layers if steps is None else steps
        out = X
        for layer in order:
            out = layer.forward(out, training=training)
        if out.ndim != 2 or out.shape[1] != self.num_classes:
            raise ValueError(f"the last layer must output logits of shape (N, {self.num_classes}); got {out.shape}")
        self._last_X = X if training else None
        self._last_steps = order
        self._logits = out
        return out

    def backward(self, X, y):
        """Backpropagate the mean cross-entropy of the batch (X, y) and update every layer.

        Uses the caches of the last ``forward(X)``; if the last forward was on another batch, runs it first.

        Returns
        -------
        loss : float
            The batch's mean cross-entropy before the update.
        """
        if self._last_X is not X:
            self.forward(X, training=True)
        y = check_labels("backward: y", y, self.num_classes, n=len(self._last_X))
        loss, dout = softmax_cross_entropy(self._logits, y)
        if not loss < DIVERGED_LOSS:   # also catches NaN
            self._diverged(f"the loss reached {loss:.3g}")
        order = self._last_steps   # backward visits the layers in the reverse of the forward's order
        with np.errstate(over="ignore", invalid="ignore"):   # overflow is detected below, with a clear message
            for layer in reversed(order[1:]):
                dout = layer.gradient(dout)
            first = order[0]
            # Nothing upstream of the first layer needs its input gradient: skip computing it where possible.
            if isinstance(first, (ConvLayer, ConvMaxPool)):
                first.gradient(dout, input_grad=False)
            else:
                first.gradient(dout)
            self.step()
        if not all(np.isfinite(p).all() for layer in self.param_layers for p in layer.params.values()):
            self._diverged("a parameter became NaN or infinite")
        self._last_X = None   # the caches now belong to parameters that have changed
        return loss

    def training_steps(self):
        """The steps that :meth:`train` and :meth:`predict` run: the layers, with two changes that compute
        the same logits faster.

        1. A ReLU directly followed by a MaxPoolLayer runs after the pool. The two commute:
           ``max(0, max of a window) = max over the window of max(0, x)``, and the backward passes agree
           too (a window whose maximum is <= 0 passes no gradient either way). So the output and every
           gradient are exactly the same, and the ReLU touches ``pool_size**2`` times fewer numbers.
        2. A ConvLayer directly followed (after change 1) by a MaxPoolLayer whose windows tile its output
           (``stride == pool_size``) becomes one :class:`~cnn.fused.ConvMaxPool` step: the convolution
           computes its output grouped by position in the pooling window, so the pooling works on whole
           contiguous blocks. The logits are the same; the convolution's gradients differ only by rounding
           (its sums over pixels are taken in another order).

        :meth:`forward` runs the listed layers instead, so that a backward pass written by hand, layer by
        layer, finds each layer's cache where it expects it.
        """
        order = list(self.layers)
        for i in range(len(order) - 1):
            if isinstance(order[i], ReLU) and isinstance(order[i + 1], MaxPoolLayer):
                order[i], order[i + 1] = order[i + 1], order[i]
        fused = []
        for layer in order:
            if fused and ConvMaxPool.fits(fused[-1], layer):
                fused[-1] = ConvMaxPool(fused[-1], layer)
            else:
                fused.append(layer)
        return fused

    def _diverged(self, what):
        raise FloatingPointError(f"training diverged: {what}. Try a smaller learning rate "
                                 f"(the current one is {self.current_learning_rate:g})")

    def step(self):
        """Update every parameter from its gradient: the optimizer if there is one, else plain SGD."""
        if self.optimizer is not None:
            self.optimizer.step(self.param_layers, learning_rate=self.current_learning_rate)
        else:
            for layer in self.param_layers:
                layer.update(self.current_learning_rate)

    def astype(self, dtype):
        """Convert every parameter, and BatchNorm's running statistics, to ``dtype``; return the model.

        For example ``SimpleCNN().astype(np.float64)`` for a numerical gradient check, where float32
        rounding would swamp the finite differences. Each layer's ``params`` (and ``buffers``) and its
        attributes (``weights``, ``biases``, ...) keep naming the same arrays. Convert before training:
        an optimizer's state (momentum, Adam's moments) keeps its old dtype.
        """
        for layer in self.layers:
            for store in (layer.params, getattr(layer, "buffers", {})):
                for name, value in list(store.items()):
                    converted = value.astype(dtype)
                    store[name] = converted
                    setattr(layer, name, converted)
        return self

    @property
    def param_layers(self):
        """The layers that have trainable parameters, in order."""
        return [layer for layer in self.layers if layer.params]

    # ---------------------------------------------------------------- prediction

    def _blas_limits(self):
        """A context in which BLAS uses at most ``blas_threads`` threads (or is left alone)."""
        if self.blas_threads is None:
            return contextlib.nullcontext()
        return threadpool_limits(limits=self.blas_threads, user_api="blas")

    def predict_proba(self, X, batch_size=500):
        """Class probabilities (N, num_classes) in evaluation mode, computed in batches to bound memory."""
        X = check_array("predict_proba: X", X, ndim=4, shape_doc="(N, C, H, W)")
        batch_size = check_int("batch_size", batch_size, 1)
        with self._blas_limits():
            order = self.training_steps()
            return np.concatenate([softmax(self.logits(X[i : i + batch_size], False, order))
                                   for i in range(0, len(X), batch_size)])

    def predict(self, X, batch_size=500):
        """Predicted class labels of shape (N,) for X of shape (N, C, H, W)."""
        return self.predict_proba(X, batch_size).argmax(axis=1)

    # ---------------------------------------------------------------- training

    def train(self, X_train, y_train, epochs=10, batch_size=32, validation_data=None, verbose=1, shuffle=True,
              augment=None):
        """Train with mini-batches, shuffling every epoch (Part 10).

        Parameters
        ----------
        X_train : ndarray of shape (N, C, H, W)
        y_train : ndarray of shape (N,)
        epochs, batch_size : int
        validation_data : tuple (X_val, y_val) or None
            Evaluated at the end of every epoch.
        verbose : int
            0 silent; 1 one line per epoch (plus a live progress line in a terminal); 2 progress lines
            every 10% of an epoch even where the output is not a terminal.
        augment : callable or None
            ``augment(X_batch, rng) -> X_batch``, applied to every training batch before its forward pass
            with the model's generator (e.g. :func:`cnn.augment.augment_batch`); the data are not changed.

        Returns
        -------
        history : dict of lists, one entry per epoch
            ``loss`` and ``accuracy`` (running means over the epoch's batches), ``val_loss`` and
            ``val_accuracy`` if there is validation data, ``seconds`` and ``learning_rate``.
        """
        X_train = check_array("train: X_train", X_train, ndim=4, shape_doc="(N, C, H, W)")
        y_train = check_labels("train: y_train", y_train, self.num_classes, n=len(X_train))
        epochs = check_int("epochs", epochs, 1)
        batch_size = check_int("batch_size", batch_size, 1)
        if augment is not None and not callable(augment):
            raise TypeError(f"augment must be a function (X, rng) -> X, e.g. augment_batch, or None; got {augment!r}")
        if validation_data is not None:
            X_val, y_val = validation_data
            X_val = check_array("train: X_val", X_val, ndim=4, shape_doc="(N, C, H, W)")
            y_val = check_labels("train: y_val", y_val, self.num_classes, n=len(X_val))
            validation_data = (X_val, y_val)
        history = {"loss": [], "accuracy": [], "seconds": [], "learning_rate": []}
        if validation_data is not None:
            history.update(val_loss=[], val_accuracy=[])
        with self._blas_limits():
            return self._train(X_train, y_train, epochs, batch_size, validation_data, verbose, shuffle, history,
                               augment)

    def _train(self, X_train, y_train, epochs, batch_size, validation_data, verbose, shuffle, history, augment):
        X_val, y_val = validation_data if validation_data is not None else (None, None)
        N = len(X_train)
        num_batches = -(-N // batch_size)
        live = verbose >= 1 and sys.stdout.isatty()
        steps = self.training_steps()
        for epoch in range(epochs):
            self.current_learning_rate = self.learning_rate * self.lr_decay ** epoch
            order = self.rng.permutation(N) if shuffle else np.arange(N)
            start = time.perf_counter()
            total_loss = 0.0
            correct = 0
            for b in range(num_batches):
                idx = order[b * batch_size : (b + 1) * batch_size]
                Xb, yb = X_train[idx], y_train[idx]
                if augment is not None:
                    Xb = augment(Xb, self.rng)
                logits = self.logits(Xb, True, steps)   # the largest logit is the likeliest class
                correct += int((logits.argmax(axis=1) == yb).sum())
                total_loss += self.backward(Xb, yb) * len(idx)
                if (live and b % max(1, num_batches // 50) == 0) or (
                        verbose >= 2 and b % max(1, num_batches // 10) == 0 and b):
                    seen = min((b + 1) * batch_size, N)
                    line = (f"epoch {epoch + 1}/{epochs}  {seen:>6}/{N}  "
                            f"loss {total_loss / seen:.4f}  accuracy {correct / seen:.4f}")
                    print("\r" + line, end="", flush=True) if live else print(line, flush=True)
            seconds = time.perf_counter() - start
            history["loss"].append(total_loss / N)
            history["accuracy"].append(correct / N)
            history["seconds"].append(seconds)
            history["learning_rate"].append(self.current_learning_rate)
            line = (f"epoch {epoch + 1}/{epochs}  loss {total_loss / N:.4f}  "
                    f"accuracy {correct / N:.4f}  {seconds:.1f}s")
            if validation_data is not None:
                probs = self.predict_proba(X_val)
                val_loss = cross_entropy_from_logits(np.log(np.maximum(probs, np.finfo(probs.dtype).tiny)), y_val)
                val_acc = float((probs.argmax(axis=1) == y_val).mean())
                history["val_loss"].append(val_loss)
                history["val_accuracy"].append(val_acc)
                line += f"  val_loss {val_loss:.4f}  val_accuracy {val_acc:.4f}"
            if verbose:
                print(("\r" if live else "") + line + (" " * 10 if live else ""), flush=True)
        return history

    # ---------------------------------------------------------------- inspection

    def summary(self):
        """Rows ``(layer, output shape, number of parameters)`` for one input of shape ``input_shape``."""
        rows = []
        shape = self.input_shape
        for layer in self.layers:
            shape = layer.output_shape(shape)
            rows.append((repr(layer), shape, layer.num_params()))
        return rows

    def num_params(self):
        return sum(layer.num_params() for layer in self.layers)

    def __repr__(self):
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"{type(self).__name__}([\n  {inner}\n])"


class SimpleCNN(Sequential):
    """The activity's network (Part 8): Conv(8 filters, 3x3, padding 1) -> ReLU -> MaxPool 2x2 -> Flatten
    -> FC(1568 -> 10) -> softmax, for (N, 1, 28, 28) images.

    Parameters
    ----------
    learning_rate : float, default 0.2
        Plain SGD step size at the first epoch. With He-initialised weights and the mean loss over a
        batch of 32, this is large enough to reach 98% test accuracy in ten epochs.
    lr_decay : float, default 0.8
        Each epoch's learning rate is the previous one times ``lr_decay``.
    seed : int, default 0
        Seeds the initial weights and the shuffling: the same seed gives the same weights and history.
    optimizer : optional
        An optimizer from :mod:`cnn.optim` instead of plain SGD.
    impl : {"vectorized", "loops"}
        Which implementation of the convolution and pooling layers to use.
    """

    def __init__(self, learning_rate=0.2, lr_decay=0.8, seed=0, optimizer=None, impl="vectorized"):
        rng = np.random.default_rng(seed)
        layers = [
            ConvLayer(num_filters=8, filter_size=3, num_channels=1, padding=1, rng=rng, impl=impl),
            ReLU(),
            MaxPoolLayer(pool_size=2, stride=2, impl=impl),
            Flatten(),
            FullyConnectedLayer(8 * 14 * 14, 10, learning_rate=learning_rate, rng=rng),
        ]
        super().__init__(layers, learning_rate=learning_rate, lr_decay=lr_decay, optimizer=optimizer,
                         seed=seed, input_shape=(1, 28, 28), num_classes=10)


def evaluate(model, X, y):
    """Accuracy of ``model`` on (X, y): the fraction of images whose predicted class is the label.

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
