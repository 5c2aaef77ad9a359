"""The same networks in Keras (JAX backend), with our weights copied in: for side-by-side comparisons.

Keras is not a dependency of the package: install the ``framework`` extra (``pip install cnn[framework]``).
Explained in the chapter *SimpleCNN in Keras*.

The Keras layers use ``data_format="channels_first"``, so images stay (N, C, H, W) and ``Flatten``
orders features (C, H, W) as ours does; only the kernel layout differs: ours (F, C, K, K), Keras (K, K, C, F).
"""
import os

import numpy as np

from .batchnorm import BatchNorm
from .conv import ConvLayer
from .layers import Dropout, Flatten, FullyConnectedLayer, MaxPoolLayer, ReLU


def import_keras():
    """Import Keras with the JAX backend (the only backend installed here); raises if another is active."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(f"Keras is using the {keras.backend.backend()!r} backend; set KERAS_BACKEND=jax "
                           "before anything imports keras")
    return keras


def to_keras(model, data_format="channels_first"):
    """Build a Keras ``Sequential`` equivalent to our ``model`` and copy its current weights in.

    Supports ConvLayer, ReLU, MaxPoolLayer, Flatten, FullyConnectedLayer, Dropout and BatchNorm. The
    Keras model outputs logits (no softmax), like our last layer.

    Parameters
    ----------
    data_format : {"channels_first", "channels_last"}
        ``"channels_first"`` takes our (N, C, H, W) images as they are. ``"channels_last"`` builds the
        layout Keras uses by default (and runs fastest on a CPU): it takes (N, H, W, C) images, and the
        rows of the first dense layer are reordered to match its (H, W, C) flattening.
    """
    if data_format not in ("channels_first", "channels_last"):
        raise ValueError(f"to_keras: data_format must be 'channels_first' or 'channels_last'; got {data_format!r}")
    keras = import_keras()
    C, H, W = model.input_shape
    shape = (C, H, W) if data_format == "channels_first" else (H, W, C)
    layers = [keras.Input(shape=shape)]
    channel_axis = 1 if data_format == "channels_first" else -1
    for layer in model.layers:
        if isinstance(layer, ConvLayer):
            p = layer.padding
            if p:
                layers.append(keras.layers.ZeroPadding2D(p, data_format=data_format))
            layers.append(keras.layers.Conv2D(layer.num_filters, layer.filter_size, strides=layer.stride,
                                              data_format=data_format))
        elif isinstance(layer, ReLU):
            layers.append(keras.layers.ReLU())
        elif isinstance(layer, MaxPoolLayer):
            layers.append(keras.layers.MaxPooling2D(layer.pool_size, layer.stride, data_format=data_format))
        elif isinstance(layer, Flatten):
            # Keras flattens in memory order with its default data_format ("channels_first" here would
            # first move the channels last).
            layers.append(keras.layers.Flatten())
        elif isinstance(layer, FullyConnectedLayer):
            layers.append(keras.layers.Dense(layer.output_size))
        elif isinstance(layer, Dropout):
            layers.append(keras.layers.Dropout(layer.rate))
        elif isinstance(layer, BatchNorm):
            # Keras' momentum is the weight of the old running value, as ours is.
            layers.append(keras.layers.BatchNormalization(axis=channel_axis, momentum=layer.momentum,
                                                          epsilon=layer.eps))
        else:
            raise TypeError(f"to_keras: no Keras equivalent for {layer!r}")
    kmodel = keras.Sequential(layers)
    copy_weights_to_keras(model, kmodel, data_format)
    return kmodel


def _keras_param_layers(kmodel):
    return [layer for layer in kmodel.layers if layer.weights]


def copy_weights_to_keras(model, kmodel, data_format="channels_first"):
    """Copy our parameters into the Keras model built by :func:`to_keras`."""
    shape = model.input_shape
    flattened_from = None   # (C, H, W) of the last Flatten's input, for channels_last
    ours_layers = []
    for layer in model.layers:
        if isinstance(layer, Flatten):
            flattened_from = shape
        if layer.params:
            ours_layers.append((layer, flattened_from))
            if isinstance(layer, FullyConnectedLayer):
                flattened_from = None
        shape = layer.output_shape(shape)
    for (ours, flat), theirs in zip(ours_layers, _keras_param_layers(kmodel), strict=True):
        if isinstance(ours, BatchNorm):
            theirs.set_weights([ours.gamma, ours.beta, ours.running_mean, ours.running_var])
            continue
        w = ours.params["weights"]
        if w.ndim == 4:
            w = w.transpose(2, 3, 1, 0)   # (F, C, K, K) -> (K, K, C, F)
        elif flat is not None and data_format == "channels_last":
            C, H, W = flat               # rows ordered (C, H, W) -> (H, W, C)
            w = w.reshape(C, H, W, -1).transpose(1, 2, 0, 3).reshape(C * H * W, -1)
        theirs.set_weights([w, ours.params["biases"]])


def keras_grads(kmodel, X, y):
    """Gradients of the mean cross-entropy of the Keras model, in our layouts.

    Returns a list with one dict ``{"weights": ..., "biases": ...}`` per parameter layer, and the loss.
    """
    import jax
    import jax.numpy as jnp

    keras = import_keras()
    trainable = [v.value for v in kmodel.trainable_variables]
    non_trainable = [v.value for v in kmodel.non_trainable_variables]

    def loss_fn(trainable):
        logits, _ = kmodel.stateless_call(trainable, non_trainable, jnp.asarray(X), training=False)
        return keras.losses.sparse_categorical_crossentropy(jnp.asarray(y), logits, from_logits=True).mean()

    loss, grads = jax.value_and_grad(loss_fn)(trainable)
    out = []
    for w, b in zip(grads[0::2], grads[1::2]):
        w = np.asarray(w)
        out.append({"weights": w.transpose(3, 2, 0, 1) if w.ndim == 4 else w, "biases": np.asarray(b)})
    return out, float(loss)


def train_keras(model, X_train, y_train, X_test, y_test, epochs=5, batch_size=32, verbose=0):
    """Train ``to_keras(model)`` the way ``model.train`` trains: plain SGD on the mean cross-entropy,
    our model's learning rate multiplied by its ``lr_decay`` after every epoch, batches of
    ``batch_size`` shuffled every epoch.

    Returns a history dict like ours: ``accuracy``, ``val_accuracy``, ``seconds`` per epoch.
    """
    import time

    keras = import_keras()
    kmodel = to_keras(model)
    steps = -(-len(X_train) // batch_size)
    schedule = keras.optimizers.schedules.ExponentialDecay(model.learning_rate, decay_steps=steps,
                                                           decay_rate=model.lr_decay, staircase=True)
    kmodel.compile(optimizer=keras.optimizers.SGD(schedule),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    history = {"accuracy": [], "val_accuracy": [], "seconds": []}
    for _ in range(epochs):
        start = time.perf_counter()
        h = kmodel.fit(X_train, y_train, epochs=1, batch_size=batch_size, shuffle=True, verbose=verbose)
        history["seconds"].append(time.perf_counter() - start)
        history["accuracy"].append(float(h.history["accuracy"][0]))
        logits = kmodel.predict(X_test, batch_size=1000, verbose=0)
        history["val_accuracy"].append(float(np.mean(np.argmax(logits, axis=1) == y_test)))
    return history


def _main(argv=None):
    """``python -m cnn.keras_compat ours|keras --epochs E --limit N``: train SimpleCNN(seed) in one system,
    in a process of its own, and print its history as JSON (used by the book's comparison chapter)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m cnn.keras_compat", description=_main.__doc__)
    parser.add_argument("system", choices=["ours", "keras"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, default=60000, help="number of training images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from .data import load_mnist_prepared
    from .networks import SimpleCNN

    (X_train, y_train), (X_test, y_test) = load_mnist_prepared()
    X_train, y_train = X_train[: args.limit], y_train[: args.limit]
    model = SimpleCNN(seed=args.seed)
    if args.system == "keras":
        import_keras().utils.set_random_seed(args.seed)  # Keras shuffles the batches itself: seeded, a run repeats
        history = train_keras(model, X_train, y_train, X_test, y_test, args.epochs, args.batch_size)
    else:
        history = model.train(X_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                              validation_data=(X_test, y_test), verbose=0)
        history = {key: history[key] for key in ("accuracy", "val_accuracy", "seconds")}
    print(json.dumps(history))


if __name__ == "__main__":
    _main()
