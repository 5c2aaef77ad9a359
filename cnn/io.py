"""Saving and loading trained models: one NumPy ``.npz`` file, no pickle.

The file holds

* ``architecture``: a 0-d unicode array with JSON text: the format name and version, the
  model's settings (learning rate, decay, seed, input shape, number of classes,
  optimizer name and settings) and, for every layer, its class name and constructor
  arguments (:meth:`cnn.layer.Layer.config`);
* ``layers.<i>.<name>``: every parameter array (``weights``, ``biases``, ``gamma``,
  ``beta``) and every buffer (a BatchNorm's ``running_mean`` and ``running_var``) of
  layer ``i``.

Because nothing is pickled, loading runs no code from the file
(``np.load(..., allow_pickle=False)``), and the file can be inspected with NumPy alone.
A layer is rebuilt by looking its class name up among the layer classes defined in the
loading process (:class:`cnn.layer.Layer` registers each one when it is defined), so a
layer written in a notebook loads wherever its class has been defined again; no module
named in a file is ever imported. The optimizer's state (momentum, Adam's moments) and
the random generators' states are not saved: a loaded model predicts exactly as the
saved one, and further training starts with fresh optimizer state.
"""

import inspect
import json
import os
from pathlib import Path

import numpy as np

from .config import plain
from .layer import Layer
from .model import Sequential
from .optim import Optimizer

FORMAT_NAME = "cnn-model"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A file cannot be loaded as a model: missing, unreadable, not a model, or of
    another format version."""


def _describe(obj, family, what):
    """``{"type": ..., "args": {...}}`` for a layer or an optimizer: its class name and
    constructor arguments."""
    name = type(obj).__name__
    if not isinstance(obj, family):
        raise TypeError(
            f"save_model: cannot save {what} {obj!r}: it is not a cnn.{family.__name__}"
        )
    if family.registry.get(name) is not type(obj):
        raise TypeError(
            f"save_model: cannot save {what} {obj!r}: another class named {name!r} has "
            "been defined since, and loading would build that one"
        )
    args = obj.config()
    for arg, value in args.items():
        if not _is_plain(value):
            raise TypeError(
                f"save_model: cannot save {what} {obj!r}: its constructor argument "
                f"{arg}={value!r} is not a plain value (a number, string, bool, None, "
                f"or a list of them); keep it as such, or give {name} a config() "
                "method that returns plain values"
            )
    return {"type": name, "args": args}


def _is_plain(value):
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def _arrays(layer):
    """The arrays of a layer to save: its parameters and its buffers (BatchNorm's
    running statistics)."""
    return {**layer.params, **layer.buffers}


def save_model(model, path):
    """Save a :class:`cnn.model.Sequential` (or SimpleCNN, or a network from
    :mod:`cnn.networks`) to ``path``.

    Parameters
    ----------
    model : Sequential
    path : str or path-like
        The file to write, used exactly as given (conventionally ending in ``.npz``).
        The file is written to a temporary name first and then renamed, so an
        interrupted save leaves no half file.

    Raises
    ------
    TypeError
        If a layer or the optimizer is of a type this module cannot describe.
    """
    layers, arrays = [], {}
    for i, layer in enumerate(model.layers):
        spec = _describe(layer, Layer, f"layer {i}")
        params = _arrays(layer)
        if params:
            spec["dtype"] = str(next(iter(params.values())).dtype)
        layers.append(spec)
        for name, value in params.items():
            arrays[f"layers.{i}.{name}"] = value
    optimizer = (
        None
        if model.optimizer is None
        else _describe(model.optimizer, Optimizer, "optimizer")
    )
    architecture = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "class": type(model).__name__,
        "model": {
            "learning_rate": model.learning_rate,
            "lr_decay": model.lr_decay,
            "seed": plain(model.seed),
            "input_shape": plain(tuple(model.input_shape)),
            "num_classes": model.num_classes,
            # how it runs: with one thread or two a convolution may pick another
            # algorithm, equal only to rounding (cnn.conv.ConvLayer's `algorithm`)
            "threads": model.threads,
        },
        "optimizer": optimizer,
        "layers": layers,
    }
    try:
        text = json.dumps(architecture, indent=1)
    except TypeError as err:  # e.g. a seed that is a Generator rather than an int
        raise TypeError(
            "save_model: the model's settings must be plain numbers to be saved "
            f"({err})"
        ) from None
    path = Path(os.fspath(path))
    temporary = path.with_name(path.name + ".part")
    try:
        with open(temporary, "wb") as f:  # a file object: np.savez adds no ".npz"
            np.savez(f, architecture=np.array(text), **arrays)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _read(path):
    """The architecture dict and the arrays of a model file, or ModelFileError naming
    the file."""
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    not_readable = (
        f"{path}: not a readable model file (expected a .npz written by save_model"
    )
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise ModelFileError(
            f"{path}: a single NumPy array (.npy), not a saved model (.npz)"
        )
    if not magic.startswith(b"PK"):  # every .npz is a zip archive
        raise ModelFileError(f"{not_readable}; this file is not a zip archive)")
    try:
        data = np.load(path, allow_pickle=False)
        with data:
            arrays = {name: data[name] for name in data.files}
    except Exception as err:
        # BadZipFile, EOFError, ValueError on a truncated or damaged archive
        raise ModelFileError(f"{not_readable}; {type(err).__name__}: {err})") from None
    text = arrays.pop("architecture", None)
    if text is None or text.shape != () or text.dtype.kind != "U":
        raise ModelFileError(
            f"{path}: not a saved model: it has no 'architecture' text "
            f"(arrays found: {sorted(arrays) or 'none'})"
        )
    try:
        architecture = json.loads(text.item())
    except json.JSONDecodeError as err:
        raise ModelFileError(
            f"{path}: the model's architecture is not valid JSON ({err})"
        ) from None
    if not isinstance(architecture, dict) or architecture.get("format") != FORMAT_NAME:
        raise ModelFileError(
            f"{path}: not a saved model (no format {FORMAT_NAME!r} in its architecture)"
        )
    if architecture.get("version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format version {architecture.get('version')!r} is not "
            f"supported; this version of cnn reads version {FORMAT_VERSION}"
        )
    return architecture, arrays


def _build_layer(i, spec, arrays):
    """Construct layer ``i`` from its spec and copy its saved arrays into its live
    arrays."""
    # ValueError naming the known layer classes if it is not defined here
    cls = Layer.lookup(spec.get("type"))
    kwargs = dict(spec.get("args", {}))
    if "dtype" in spec and "dtype" in inspect.signature(cls.__init__).parameters:
        kwargs["dtype"] = np.dtype(spec["dtype"])
    layer = cls(**kwargs)
    for name, value in _arrays(layer).items():
        key = f"layers.{i}.{name}"
        if key not in arrays:
            raise ValueError(f"array {key!r} of {layer!r} is missing")
        if arrays[key].shape != value.shape:
            raise ValueError(
                f"array {key!r} has shape {arrays[key].shape}; {layer!r} needs "
                f"{value.shape}"
            )
        value[...] = arrays.pop(key)  # in place: params stay the live arrays
    return layer


def load_model(path):
    """Load a model written by :func:`save_model`.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    model : Sequential
        The same layers with the same parameters (so identical predictions) and the same
        settings. A saved SimpleCNN or network from :mod:`cnn.networks` comes back as a
        ``Sequential`` of the same layers; its original class name is in
        ``model.saved_class``.

    Raises
    ------
    ModelFileError
        If the file is missing, not a readable ``.npz``, not a saved model, of an
        unsupported format version, or inconsistent (unknown layer types, missing or
        misshapen arrays). The message names the file.
    """
    path = Path(os.fspath(path))
    architecture, arrays = _read(path)
    try:
        layers = [
            _build_layer(i, spec, arrays)
            for i, spec in enumerate(architecture["layers"])
        ]
        if arrays:
            raise ValueError(f"arrays {sorted(arrays)} belong to no layer")
        optimizer = architecture.get("optimizer")
        if optimizer is not None:
            optimizer = Optimizer.lookup(optimizer.get("type"))(**optimizer["args"])
        model = Sequential(layers, optimizer=optimizer, **architecture["model"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        detail = f"missing entry {err}" if isinstance(err, KeyError) else str(err)
        raise ModelFileError(f"{path}: inconsistent model file: {detail}") from None
    model.saved_class = architecture.get("class", "Sequential")
    return model
