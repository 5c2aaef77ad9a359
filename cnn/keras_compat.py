"""The same networks in Keras (JAX backend), with our weights copied in: for
side-by-side comparisons.

Keras is not a dependency of the package: install the ``framework`` extra
(``pip install cnn[framework]``). Explained in the chapter *SimpleCNN in Keras*.

The Keras layers use ``data_format="channels_first"``, so images stay (N, C, H, W) and
``Flatten`` orders features (C, H, W) as ours does; only the kernel layout differs: ours
(F, C, K, K), Keras (K, K, C, F).
"""

import functools
import os

import numpy as np

from .batchnorm import BatchNorm
from .conv import ConvLayer
from .layers import Dropout, Flatten, FullyConnectedLayer, MaxPoolLayer, ReLU

keras = None  # the keras module, once import_keras has run


def import_keras():
    """Import Keras with the JAX backend (the only backend installed here); raises if
    another is active."""
    global keras
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(
            f"Keras is using the {keras.backend.backend()!r} backend; set "
            "KERAS_BACKEND=jax before anything imports keras"
        )
    return keras


class KerasTwin:
    """How one of our layer classes maps onto Keras: the Keras layers it becomes, and
    its arrays both ways.

    ``build(layer, data_format)`` returns a list of Keras layers;
    ``weights(layer, flattened_from, data_format)`` our arrays in the order and layout
    of the Keras layer's ``set_weights`` (or None); ``grads(keras_grads)`` the Keras
    layer's trainable gradients, in its order, as our ``name -> array``.
    """

    def __init__(self, build, weights=None, grads=None):
        self.build, self.weights, self.grads = build, weights, grads


def _conv_layers(layer, data_format):
    padding = (
        [keras.layers.ZeroPadding2D(layer.padding, data_format=data_format)]
        if layer.padding
        else []
    )
    return padding + [
        keras.layers.Conv2D(
            layer.num_filters,
            layer.filter_size,
            strides=layer.stride,
            data_format=data_format,
        )
    ]


def _dense_weights(layer, flattened_from, data_format):
    w = layer.weights
    if flattened_from is not None and data_format == "channels_last":
        C, H, W = flattened_from  # rows ordered (C, H, W) -> (H, W, C)
        w = w.reshape(C, H, W, -1).transpose(1, 2, 0, 3).reshape(C * H * W, -1)
    return [w, layer.biases]


@functools.cache
def keras_twins():
    """The mapping of our layer classes onto Keras, built once, when Keras is first
    needed (keras is optional)."""
    return {
        ConvLayer: KerasTwin(
            _conv_layers,
            lambda layer, flat, fmt: [
                layer.weights.transpose(2, 3, 1, 0),  # (F, C, K, K) -> (K, K, C, F)
                layer.biases,
            ],
            lambda g: {
                "weights": np.asarray(g[0]).transpose(3, 2, 0, 1),
                "biases": np.asarray(g[1]),
            },
        ),
        ReLU: KerasTwin(lambda layer, fmt: [keras.layers.ReLU()]),
        MaxPoolLayer: KerasTwin(
            lambda layer, fmt: [
                keras.layers.MaxPooling2D(
                    layer.pool_size, layer.stride, data_format=fmt
                )
            ]
        ),
        # Keras flattens in memory order with its default data_format ("channels_first"
        # here would first move the channels last).
        Flatten: KerasTwin(lambda layer, fmt: [keras.layers.Flatten()]),
        FullyConnectedLayer: KerasTwin(
            lambda layer, fmt: [keras.layers.Dense(layer.output_size)],
            _dense_weights,
            lambda g: {"weights": np.asarray(g[0]), "biases": np.asarray(g[1])},
        ),
        Dropout: KerasTwin(lambda layer, fmt: [keras.layers.Dropout(layer.rate)]),
        # Keras' momentum is the weight of the old running value, as ours is.
        BatchNorm: KerasTwin(
            lambda layer, fmt: [
                keras.layers.BatchNormalization(
                    axis=1 if fmt == "channels_first" else -1,
                    momentum=layer.momentum,
                    epsilon=layer.eps,
                )
            ],
            lambda layer, flat, fmt: [
                layer.gamma,
                layer.beta,
                layer.running_mean,
                layer.running_var,
            ],
            lambda g: {"gamma": np.asarray(g[0]), "beta": np.asarray(g[1])},
        ),
    }


def _twin(layer):
    """The KerasTwin of ``layer``'s class (exactly its class: a subclass may compute
    something else)."""
    twins = keras_twins()
    if type(layer) not in twins:
        raise TypeError(
            f"to_keras: no Keras equivalent for {layer!r}; the layers with one are "
            f"{', '.join(cls.__name__ for cls in twins)}"
        )
    return twins[type(layer)]


def to_keras(model, data_format="channels_first"):
    """Build a Keras ``Sequential`` equivalent to our ``model`` and copy its current
    weights in.

    Supports ConvLayer, ReLU, MaxPoolLayer, Flatten, FullyConnectedLayer, Dropout and
    BatchNorm. The Keras model outputs logits (no softmax), like our last layer.

    Parameters
    ----------
    data_format : {"channels_first", "channels_last"}
        ``"channels_first"`` takes our (N, C, H, W) images as they are.
        ``"channels_last"`` builds the layout Keras uses by default (and runs fastest on
        a CPU): it takes (N, H, W, C) images, and the rows of the first dense layer are
        reordered to match its (H, W, C) flattening.
    """
    if data_format not in ("channels_first", "channels_last"):
        raise ValueError(
            "to_keras: data_format must be 'channels_first' or 'channels_last'; got "
            f"{data_format!r}"
        )
    import_keras()
    C, H, W = model.input_shape
    layers = [
        keras.Input(shape=(C, H, W) if data_format == "channels_first" else (H, W, C))
    ]
    for layer in model.layers:
        layers += _twin(layer).build(layer, data_format)
    kmodel = keras.Sequential(layers)
    copy_weights_to_keras(model, kmodel, data_format)
    return kmodel


def _keras_param_layers(kmodel):
    return [layer for layer in kmodel.layers if layer.weights]


def copy_weights_to_keras(model, kmodel, data_format="channels_first"):
    """Copy our parameters (and BatchNorm's running statistics) into the Keras model
    built by :func:`to_keras`."""
    shape = model.input_shape
    flattened_from = None  # (C, H, W) of the last Flatten's input, for channels_last
    ours = []
    for layer in model.layers:
        if isinstance(layer, Flatten):
            flattened_from = shape
        if layer.params:
            ours.append((layer, flattened_from))
            # only the first dense layer after a Flatten sees its ordering
            flattened_from = None
        shape = layer.output_shape(shape)
    for (layer, flat), theirs in zip(ours, _keras_param_layers(kmodel), strict=True):
        theirs.set_weights(_twin(layer).weights(layer, flat, data_format))


def keras_grads(kmodel, X, y, model, training=False):
    """Gradients of the mean cross-entropy of the Keras model, in our names and layouts.

    ``kmodel`` was built by ``to_keras(model)`` (channels first). With ``training=True``
    batch normalisation uses the batch's statistics, as our
    ``model.logits(X, training=True)`` does (and dropout drops at random: compare models
    without it). Returns a list with one dict (name -> array, like ``layer.grads``) per
    parameter layer of ``model``, in order, and the loss.
    """
    import jax
    import jax.numpy as jnp

    import_keras()
    trainable = [v.value for v in kmodel.trainable_variables]
    non_trainable = [v.value for v in kmodel.non_trainable_variables]

    def loss_fn(trainable):
        logits, _ = kmodel.stateless_call(
            trainable, non_trainable, jnp.asarray(X), training=training
        )
        return keras.losses.sparse_categorical_crossentropy(
            jnp.asarray(y), logits, from_logits=True
        ).mean()

    loss, grads = jax.value_and_grad(loss_fn)(trainable)
    out, start = [], 0
    for layer, theirs in zip(
        model.param_layers, _keras_param_layers(kmodel), strict=True
    ):
        # Dense and Conv2D: kernel, bias; BatchNormalization: gamma, beta
        count = len(theirs.trainable_weights)
        out.append(_twin(layer).grads(grads[start : start + count]))
        start += count
    return out, float(loss)


def train_keras(
    model, X_train, y_train, X_test, y_test, epochs=5, batch_size=32, verbose=0
):
    """Train ``to_keras(model)`` the way ``model.train`` trains: plain SGD on the mean
    cross-entropy, our model's learning rate multiplied by its ``lr_decay`` after every
    epoch, batches of ``batch_size`` shuffled every epoch.

    Returns a history dict like ours: ``accuracy``, ``val_accuracy``, ``seconds`` per
    epoch.
    """
    import time

    import_keras()
    kmodel = to_keras(model)
    steps = -(-len(X_train) // batch_size)
    schedule = keras.optimizers.schedules.ExponentialDecay(
        model.learning_rate,
        decay_steps=steps,
        decay_rate=model.lr_decay,
        staircase=True,
    )
    kmodel.compile(
        optimizer=keras.optimizers.SGD(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = {"accuracy": [], "val_accuracy": [], "seconds": []}
    for _ in range(epochs):
        start = time.perf_counter()
        h = kmodel.fit(
            X_train,
            y_train,
            epochs=1,
            batch_size=batch_size,
            shuffle=True,
            verbose=verbose,
        )
        history["seconds"].append(time.perf_counter() - start)
        history["accuracy"].append(float(h.history["accuracy"][0]))
        logits = kmodel.predict(X_test, batch_size=1000, verbose=0)
        history["val_accuracy"].append(
            float(np.mean(np.argmax(logits, axis=1) == y_test))
        )
    return history


def _main(argv=None):
    """``python -m cnn.keras_compat ours|keras --epochs E --limit N``: train
    SimpleCNN(seed) in one system, in a process of its own, and print its history as
    JSON (used by the book's comparison chapter)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(
        prog="python -m cnn.keras_compat", description=_main.__doc__
    )
    parser.add_argument("system", choices=["ours", "keras"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--limit", type=int, default=60000, help="number of training images"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from .data import load_mnist_prepared
    from .networks import SimpleCNN

    (X_train, y_train), (X_test, y_test) = load_mnist_prepared()
    X_train, y_train = X_train[: args.limit], y_train[: args.limit]
    model = SimpleCNN(seed=args.seed)
    if args.system == "keras":
        # Keras shuffles the batches itself: seeded, a run repeats
        import_keras().utils.set_random_seed(args.seed)
        history = train_keras(
            model, X_train, y_train, X_test, y_test, args.epochs, args.batch_size
        )
    else:
        history = model.train(
            X_train,
            y_train,
            epochs=args.epochs,
            batch_size=args.batch_size,
            validation_data=(X_test, y_test),
            verbose=0,
        )
        history = {key: history[key] for key in ("accuracy", "val_accuracy", "seconds")}
    print(json.dumps(history))


if __name__ == "__main__":
    _main()
