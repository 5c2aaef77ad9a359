"""Saving and loading trained models: one NumPy ``.npz`` file, no pickle.

The file holds

* ``architecture``: a 0-d unicode array with JSON text: the format name and version, the model's
  settings (learning rate, decay, seed, input shape, number of classes, optimizer name and settings)
  and, for every layer, its type and constructor arguments, read from the layer's attributes;
* ``layers.<i>.<name>``: every parameter array (``weights``, ``biases``, ``gamma``, ``beta``) and every
  buffer (a BatchNorm's ``running_mean`` and ``running_var``) of layer ``i``.

Because nothing is pickled, loading runs no code from the file (``np.load(..., allow_pickle=False)``),
and the file can be inspected with NumPy alone. The optimizer's state (momentum, Adam's moments) and
the random generators' states are not saved: a loaded model predicts exactly as the saved one, and
further training starts with fresh optimizer state.
"""
import json
import os
from pathlib import Path

import numpy as np

from .batchnorm import BatchNorm
from .conv import ConvLayer
from .layers import Dropout, Flatten, FullyConnectedLayer, MaxPoolLayer, ReLU
from .model import Sequential
from .optim import SGD, Adam, Momentum

FORMAT_NAME = "cnn-model"
FORMAT_VERSION = 1

#: Layer type -> (class, names of the attributes that are its constructor arguments).
LAYER_TYPES = {
    "ConvLayer": (ConvLayer, ("num_filters", "filter_size", "num_channels", "stride", "padding")),
    "MaxPoolLayer": (MaxPoolLayer, ("pool_size", "stride")),
    "FullyConnectedLayer": (FullyConnectedLayer, ("input_size", "output_size", "learning_rate")),
    "Dropout": (Dropout, ("rate",)),
    "ReLU": (ReLU, ()),
    "Flatten": (Flatten, ()),
    "BatchNorm": (BatchNorm, ("num_features", "momentum", "eps")),
}

#: Optimizer type -> (class, names of the attributes that are its constructor arguments).
OPTIMIZER_TYPES = {
    "SGD": (SGD, ("learning_rate",)),
    "Momentum": (Momentum, ("learning_rate", "momentum", "nesterov")),
    "Adam": (Adam, ("learning_rate", "beta1", "beta2", "eps")),
}


class ModelFileError(ValueError):
    """A file cannot be loaded as a model: missing, unreadable, not a model, or of another format version."""


def _describe(obj, types, what):
    """``{"type": ..., "args": {...}}`` for a layer or an optimizer, from its attributes."""
    name = type(obj).__name__
    if name not in types or type(obj) is not types[name][0]:
        raise TypeError(f"save_model: cannot save {what} {obj!r}: supported types are {sorted(types)}")
    _, arg_names = types[name]
    return {"type": name, "args": {arg: _plain(getattr(obj, arg)) for arg in arg_names}}


def _plain(value):
    """A NumPy scalar as the Python number JSON can write; anything else unchanged."""
    return value.item() if isinstance(value, np.generic) else value


def _arrays(layer):
    """The arrays of a layer to save: its parameters and, for BatchNorm, its running statistics."""
    return {**layer.params, **getattr(layer, "buffers", {})}


def save_model(model, path):
    """Save a :class:`cnn.model.Sequential` (or SimpleCNN, or a network from :mod:`cnn.networks`) to ``path``.

    Parameters
    ----------
    model : Sequential
    path : str or path-like
        The file to write, used exactly as given (conventionally ending in ``.npz``). The file is
        written to a temporary name first and then renamed, so an interrupted save leaves no half file.

    Raises
    ------
    TypeError
        If a layer or the optimizer is of a type this module cannot describe.
    """
    layers, arrays = [], {}
    for i, layer in enumerate(model.layers):
        spec = _describe(layer, LAYER_TYPES, "layer")
        params = _arrays(layer)
        if params:
            spec["dtype"] = str(next(iter(params.values())).dtype)
        layers.append(spec)
        for name, value in params.items():
            arrays[f"layers.{i}.{name}"] = value
    optimizer = None if model.optimizer is None else _describe(model.optimizer, OPTIMIZER_TYPES, "optimizer")
    architecture = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "class": type(model).__name__,
        "model": {"learning_rate": model.learning_rate, "lr_decay": model.lr_decay, "seed": _plain(model.seed),
                  "input_shape": [_plain(n) for n in model.input_shape], "num_classes": model.num_classes},
        "optimizer": optimizer,
        "layers": layers,
    }
    try:
        text = json.dumps(architecture, indent=1)
    except TypeError as err:   # e.g. a seed that is a Generator rather than an int
        raise TypeError(f"save_model: the model's settings must be plain numbers to be saved ({err})") from None
    path = Path(os.fspath(path))
    temporary = path.with_name(path.name + ".part")
    try:
        with open(temporary, "wb") as f:                       # a file object: np.savez adds no ".npz"
            np.savez(f, architecture=np.array(text), **arrays)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _read(path):
    """The architecture dict and the arrays of a model file, or ModelFileError naming the file."""
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    not_readable = f"{path}: not a readable model file (expected a .npz written by save_model"
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise ModelFileError(f"{path}: a single NumPy array (.npy), not a saved model (.npz)")
    if not magic.startswith(b"PK"):                           # every .npz is a zip archive
        raise ModelFileError(f"{not_readable}; this file is not a zip archive)")
    try:
        data = np.load(path, allow_pickle=False)
        with data:
            arrays = {name: data[name] for name in data.files}
    except Exception as err:  # BadZipFile, EOFError, ValueError on a truncated or damaged archive
        raise ModelFileError(f"{not_readable}; {type(err).__name__}: {err})") from None
    text = arrays.pop("architecture", None)
    if text is None or text.shape != () or text.dtype.kind != "U":
        raise ModelFileError(f"{path}: not a saved model: it has no 'architecture' text "
                             f"(arrays found: {sorted(arrays) or 'none'})")
    try:
        architecture = json.loads(text.item())
    except json.JSONDecodeError as err:
        raise ModelFileError(f"{path}: the model's architecture is not valid JSON ({err})") from None
    if not isinstance(architecture, dict) or architecture.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path}: not a saved model (no format {FORMAT_NAME!r} in its architecture)")
    if architecture.get("version") != FORMAT_VERSION:
        raise ModelFileError(f"{path}: model format version {architecture.get('version')!r} is not supported; "
                             f"this version of cnn reads version {FORMAT_VERSION}")
    return architecture, arrays


def _build_layer(i, spec, arrays):
    """Construct layer ``i`` from its spec and copy its saved arrays into its live arrays."""
    if spec.get("type") not in LAYER_TYPES:
        raise ValueError(f"layer {i} has unknown type {spec.get('type')!r}; known types are {sorted(LAYER_TYPES)}")
    cls, _ = LAYER_TYPES[spec["type"]]
    kwargs = dict(spec.get("args", {}))
    if "dtype" in spec:
        kwargs["dtype"] = np.dtype(spec["dtype"])
    layer = cls(**kwargs)
    for name, value in _arrays(layer).items():
        key = f"layers.{i}.{name}"
        if key not in arrays:
            raise ValueError(f"array {key!r} of {layer!r} is missing")
        if arrays[key].shape != value.shape:
            raise ValueError(f"array {key!r} has shape {arrays[key].shape}; {layer!r} needs {value.shape}")
        value[...] = arrays.pop(key)                            # in place: params stay the live arrays
    return layer


def load_model(path):
    """Load a model written by :func:`save_model`.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    model : Sequential
        The same layers with the same parameters (so identical predictions) and the same settings.
        A saved SimpleCNN or network from :mod:`cnn.networks` comes back as a ``Sequential`` of the
        same layers; its original class name is in ``model.saved_class``.

    Raises
    ------
    ModelFileError
        If the file is missing, not a readable ``.npz``, not a saved model, of an unsupported format
        version, or inconsistent (unknown layer types, missing or misshapen arrays). The message names
        the file.
    """
    path = Path(os.fspath(path))
    architecture, arrays = _read(path)
    try:
        layers = [_build_layer(i, spec, arrays) for i, spec in enumerate(architecture["layers"])]
        if arrays:
            raise ValueError(f"arrays {sorted(arrays)} belong to no layer")
        optimizer = architecture.get("optimizer")
        if optimizer is not None:
            if optimizer.get("type") not in OPTIMIZER_TYPES:
                raise ValueError(f"unknown optimizer type {optimizer.get('type')!r}")
            optimizer = OPTIMIZER_TYPES[optimizer["type"]][0](**optimizer["args"])
        model = Sequential(layers, optimizer=optimizer, **architecture["model"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        detail = f"missing entry {err}" if isinstance(err, KeyError) else str(err)
        raise ModelFileError(f"{path}: inconsistent model file: {detail}") from None
    model.saved_class = architecture.get("class", "Sequential")
    return model
