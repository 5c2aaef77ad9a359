"""The same networks in Keras (JAX backend), with our weights copied in: for side-by-side comparisons.

Keras is not a dependency of the package: install the ``framework`` extra (``pip install cnn[framework]``).
Explained in the chapter *SimpleCNN in Keras*.

The Keras layers use ``data_format="channels_first"``, so images stay (N, C, H, W) and ``Flatten``
orders features (C, H, W) as ours does; only the kernel layout differs: ours (F, C, K, K), Keras (K, K, C, F).
"""
import os

import numpy as np

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


def to_keras(model):
    """Build a Keras ``Sequential`` equivalent to our ``model`` and copy its current weights in.

    Supports ConvLayer, ReLU, MaxPoolLayer, Flatten, FullyConnectedLayer and Dropout. The Keras model
    outputs logits (no softmax), like our last layer.
    """
    keras = import_keras()
    layers = [keras.Input(shape=model.input_shape)]
    for layer in model.layers:
        if isinstance(layer, ConvLayer):
            p = layer.padding
            if p:
                layers.append(keras.layers.ZeroPadding2D(p, data_format="channels_first"))
            layers.append(keras.layers.Conv2D(layer.num_filters, layer.filter_size, strides=layer.stride,
                                              data_format="channels_first"))
        elif isinstance(layer, ReLU):
            layers.append(keras.layers.ReLU())
        elif isinstance(layer, MaxPoolLayer):
            layers.append(keras.layers.MaxPooling2D(layer.pool_size, layer.stride, data_format="channels_first"))
        elif isinstance(layer, Flatten):
            # Keras flattens (N, C, H, W) in memory order, (C, H, W), as ours does, only with its default
            # data_format: with "channels_first" it would first move the channels last.
            layers.append(keras.layers.Flatten())
        elif isinstance(layer, FullyConnectedLayer):
            layers.append(keras.layers.Dense(layer.output_size))
        elif isinstance(layer, Dropout):
            layers.append(keras.layers.Dropout(layer.rate))
        else:
            raise TypeError(f"to_keras: no Keras equivalent for {layer!r}")
    kmodel = keras.Sequential(layers)
    copy_weights_to_keras(model, kmodel)
    return kmodel


def _keras_param_layers(kmodel):
    return [layer for layer in kmodel.layers if layer.weights]


def copy_weights_to_keras(model, kmodel):
    """Copy our parameters into the Keras model built by :func:`to_keras`."""
    for ours, theirs in zip(model.param_layers, _keras_param_layers(kmodel), strict=True):
        w = ours.params["weights"]
        if w.ndim == 4:
            w = w.transpose(2, 3, 1, 0)   # (F, C, K, K) -> (K, K, C, F)
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
    from .model import SimpleCNN

    (X_train, y_train), (X_test, y_test) = load_mnist_prepared()
    X_train, y_train = X_train[: args.limit], y_train[: args.limit]
    model = SimpleCNN(seed=args.seed)
    if args.system == "keras":
        history = train_keras(model, X_train, y_train, X_test, y_test, args.epochs, args.batch_size)
    else:
        history = model.train(X_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                              validation_data=(X_test, y_test), verbose=0)
        history = {key: history[key] for key in ("accuracy", "val_accuracy", "seconds")}
    print(json.dumps(history))


if __name__ == "__main__":
    _main()
