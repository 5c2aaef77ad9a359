"""``Sequential``: a network as a stack of layers, from a batch of images to logits and
back.

Explained in the chapter *Assembling SimpleCNN*; SimpleCNN and the other networks are in
:mod:`cnn.networks`, the training loop in :mod:`cnn.train`.
"""

import numpy as np

from ._checks import (
    check_array,
    check_int,
    check_labels,
    check_positive_float,
    inside_model,
)
from .layer import Layer
from .losses import softmax
from .steps import training_steps
from .train import blas_limits, train, train_step


class Sequential:
    """A stack of layers: the logits of a batch, the gradients from the gradient of the
    loss, the parameters and a summary. It trains with softmax cross-entropy
    (:mod:`cnn.train`).

    Parameters
    ----------
    layers : list of layers
        Applied in order; the last one produces the logits (N, num_classes).
    learning_rate : float
        Step size at the first epoch: of plain SGD, or handed to ``optimizer`` (the
        model's schedule drives the optimizer, whose own ``learning_rate`` is then only
        its default).
    lr_decay : float in (0, 1], default 1.0
        The learning rate of epoch ``e`` (counting from 0) is
        ``learning_rate * lr_decay**e``.
    optimizer : cnn.optim optimizer or None
        Updates every layer's ``params`` from its ``grads``; None means plain SGD at the
        current learning rate.
    seed : int or None
        Seeds the shuffling of the training data (layers take their own seeds for their
        weights).
    input_shape : tuple (C, H, W)
        Shape of one input, used by :meth:`summary`.
    threads : int or None, default 1
        Threads that may compute while this model trains or predicts
        (:func:`cnn.train.blas_limits`): with one, BLAS runs on one thread; with more,
        the convolutions compute slices of the batch side by side (:mod:`cnn.threads`),
        each on one BLAS thread. A small network's products are too small to gain from
        a second thread, and when other programs keep the cores busy, threads waiting
        for each other slow a training step several-fold; None leaves BLAS as it is
        configured.
    """

    def __init__(
        self,
        layers,
        learning_rate=0.01,
        lr_decay=1.0,
        optimizer=None,
        seed=0,
        input_shape=(1, 28, 28),
        num_classes=10,
        threads=1,
    ):
        if not layers:
            raise ValueError("Sequential: layers must be a non-empty list of layers")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(
                    f"Sequential: layer {i} ({layer!r}) is not a cnn.Layer; "
                    "a layer subclasses cnn.Layer and defines "
                    "forward(X, training=True) and gradient(dout, input_grad=True)"
                )
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
        self.threads = None if threads is None else check_int("threads", threads, 1)
        self.current_learning_rate = self.learning_rate

    # ---------------------------------------------------------- forward and backward

    def forward(self, X, training=True):
        """Class probabilities of shape (N, num_classes) for X of shape (N, C, H, W).

        With ``training=True`` (the default, as the activity's training loop expects)
        every layer keeps what its backward pass needs, and dropout is active;
        :meth:`predict` uses ``training=False``.
        """
        return softmax(self.logits(X, training))

    def logits(self, X, training=True, steps=None):
        """The logits (N, num_classes) of X (N, C, H, W): the scores that softmax turns
        into probabilities.

        ``steps`` are the layers to run, in order: ``self.layers`` by default, or the
        faster :meth:`training_steps` (the same logits) that training and prediction
        run. Each step keeps what its gradient needs, so :meth:`gradient` must then be
        given the same steps.
        """
        X = check_array("forward: X", X, ndim=4, shape_doc="(N, C, H, W)")
        out = X
        # The images are checked; the layers need not scan every activation again.
        with inside_model():
            for layer in self.layers if steps is None else steps:
                out = layer.forward(out, training=training)
        if out.ndim != 2 or out.shape[1] != self.num_classes:
            raise ValueError(
                f"the last layer must output logits of shape (N, {self.num_classes}); "
                f"got {out.shape}"
            )
        return out

    def gradient(self, dlogits, steps=None, input_grad=False):
        """Backpropagate ``dlogits`` (N, num_classes), the loss gradient of the last
        :meth:`logits`, through the same ``steps`` in reverse order; every layer fills
        its ``grads``. No parameter changes.

        Returns the gradient of the images (N, C, H, W) with ``input_grad=True``; by
        default it is not computed (nothing upstream of the first layer needs it, and it
        is a third of a convolution's work).
        """
        order = self.layers if steps is None else steps
        dout = dlogits
        with inside_model():
            for i in range(len(order) - 1, -1, -1):
                dout = order[i].gradient(dout, input_grad=input_grad or i > 0)
        return dout

    def backward(self, X, y):
        """The activity's backward pass for the batch (X, y): the gradient of the mean
        cross-entropy, backpropagated through every layer in reverse order, then one
        update of every parameter.

        It runs its own forward pass first (so it never depends on what was last passed
        to :meth:`forward`) and returns the batch's mean cross-entropy before the
        update. A loop that calls ``forward(X)`` and then ``backward(X, y)`` therefore
        runs two forward passes per batch; one step as :meth:`train` runs it is
        :func:`cnn.train.train_step`.
        """
        X = check_array("backward: X", X, ndim=4, shape_doc="(N, C, H, W)")
        y = check_labels("backward: y", y, self.num_classes, n=len(X))
        loss, _ = train_step(self, X, y)
        return loss

    def training_steps(self):
        """The steps that :meth:`train` and :meth:`predict` run:
        :func:`cnn.steps.training_steps` of the layers (the same logits, faster).
        :meth:`forward` runs the listed layers, so that a backward pass written by hand,
        layer by layer, finds each layer's cache where it expects it."""
        return training_steps(self.layers)

    def step(self):
        """Update every parameter from its gradient: the optimizer if there is one, else
        plain SGD."""
        if self.optimizer is not None:
            self.optimizer.step(
                self.param_layers, learning_rate=self.current_learning_rate
            )
        else:
            for layer in self.param_layers:
                layer.update(self.current_learning_rate)

    def astype(self, dtype):
        """Convert every parameter, and BatchNorm's running statistics, to ``dtype``;
        return the model.

        For example ``SimpleCNN().astype(np.float64)`` for a numerical gradient check,
        where float32 rounding would swamp the finite differences. Each layer's
        ``params`` and ``buffers`` and its attributes (``weights``, ``biases``, ...)
        keep naming the same arrays. Convert before training: an optimizer's state
        (momentum, Adam's moments) keeps its old dtype.
        """
        for layer in self.layers:
            for store in (layer.params, layer.buffers):
                for name, value in list(store.items()):
                    converted = value.astype(dtype)
                    store[name] = converted
                    if getattr(layer, name, None) is value:
                        setattr(layer, name, converted)
        return self

    @property
    def param_layers(self):
        """The layers that have trainable parameters, in order."""
        return [layer for layer in self.layers if layer.params]

    # ---------------------------------------------------------- prediction and training

    #: Images per batch in prediction. Small batches keep each layer's im2col matrix
    #: small (deep_cnn's second layer: 29 MB for 64 images, 226 MB for 500, allocated
    #: afresh for every batch): on 5,000 test images deep_cnn took 2.2 s in batches of
    #: 64 against 5.4 s in batches of 500 (SimpleCNN 0.08 s against 0.09 s).
    PREDICT_BATCH = 64

    def predict_logits(self, X, batch_size=PREDICT_BATCH):
        """Logits (N, num_classes) in evaluation mode, computed in batches (which also
        bounds the memory)."""
        X = check_array("predict: X", X, ndim=4, shape_doc="(N, C, H, W)")
        batch_size = check_int("batch_size", batch_size, 1)
        with blas_limits(self):
            steps = self.training_steps()
            return np.concatenate(
                [
                    self.logits(X[i : i + batch_size], False, steps)
                    for i in range(0, len(X), batch_size)
                ]
            )

    def predict_proba(self, X, batch_size=PREDICT_BATCH):
        """Class probabilities (N, num_classes) in evaluation mode, computed in batches
        to bound memory."""
        return softmax(self.predict_logits(X, batch_size))

    def predict(self, X, batch_size=PREDICT_BATCH):
        """Predicted class labels of shape (N,) for X of shape (N, C, H, W)."""
        return self.predict_logits(X, batch_size).argmax(axis=1)

    def train(
        self,
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
        """Train with mini-batches, shuffling every epoch (Part 10):
        :func:`cnn.train.train` of this model, whose parameters document the arguments.
        Returns the history, a dict of lists, one entry per epoch: ``loss``,
        ``accuracy``, ``seconds``, ``learning_rate`` (and ``val_loss``,
        ``val_accuracy``)."""
        return train(
            self,
            X_train,
            y_train,
            epochs=epochs,
            batch_size=batch_size,
            validation_data=validation_data,
            verbose=verbose,
            shuffle=shuffle,
            augment=augment,
            processes=processes,
        )

    # ---------------------------------------------------------- inspection

    def summary(self):
        """Rows ``(layer, output shape, number of parameters)`` for one input of shape
        ``input_shape``."""
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
