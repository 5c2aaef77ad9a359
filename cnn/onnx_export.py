"""ONNX export: a trained network as a standard ONNX graph, for any ONNX runtime.

ONNX is the field's exchange format for trained networks: a graph of standard operators
(``Conv``, ``Relu``, ``Gemm``, ...) with the weights stored in the file. ONNX Runtime
runs it in Python, C++, C#, Java, on phones, and in a web browser (ONNX Runtime Web).

:func:`export_onnx` walks ``model.layers`` and writes each layer as the ONNX operator
that computes the same thing in evaluation mode (``forward(X, training=False)``):

===================  ===============================================================
our layer            ONNX operators (opset :data:`OPSET`)
===================  ===============================================================
ConvLayer            ``Conv`` (weights (F, C, K, K) as they are, strides, pads)
BatchNorm            ``BatchNormalization`` with the running mean and variance and
                     ``eps`` (inference mode), on (N, C, H, W) or (N, D) inputs
ReLU                 ``Relu``
MaxPoolLayer         ``MaxPool`` (kernel and strides; no padding, sizes rounded down)
ConvMaxPool          ``Conv`` then ``MaxPool`` (the two layers it runs)
Flatten              ``Flatten(axis=1)``: (N, C, H, W) -> (N, C*H*W) in C order,
                     exactly ``X.reshape(N, -1)``
FullyConnectedLayer  ``Gemm``: ``X @ weights + biases``, weights (in, out) as they are
Dropout              nothing (it is the identity in evaluation)
===================  ===============================================================

and ends with ``Softmax(axis=1)``. The graph takes ``images``, float32 of shape
(N, C, H, W) with a symbolic batch size ``N``, and gives two outputs: ``probabilities``
(N, num_classes), what :meth:`~cnn.model.Sequential.predict_proba` returns, and
``logits`` (N, num_classes), what :meth:`~cnn.model.Sequential.predict_logits` returns.

The ``onnx`` package is needed only here, and imported only when :func:`export_onnx`
runs (``import cnn`` works without it): ``pip install "cnn[onnx]"`` installs it with
ONNX Runtime. On the command line: ``python -m cnn export model.npz model.onnx``.
"""

import os

import numpy as np

from .batchnorm import BatchNorm
from .conv import ConvLayer
from .conv_maxpool import ConvMaxPool
from .layers import Dropout, Flatten, FullyConnectedLayer, MaxPoolLayer, ReLU

#: The ONNX operator set the exporter writes: 17 (ONNX 1.12, 2022), widely supported.
#: The operators' definitions in it date from opset 11 (Conv) to 15
#: (BatchNormalization), and the file's IR version is the lowest that opset 17 allows
#: (8), so runtimes of the last years read it.
OPSET = 17

#: The name of the graph's input, and of its two outputs.
INPUT_NAME, PROBABILITIES, LOGITS = "images", "probabilities", "logits"


class UnsupportedLayerError(TypeError):
    """A layer of the model has no ONNX counterpart in the exporter."""


def _import_onnx():
    """The onnx module, or an ImportError that says how to install it."""
    try:
        import onnx
    except ImportError as err:
        raise ImportError(
            "export_onnx needs the onnx package, which is not installed: "
            'pip install "cnn[onnx]" (onnx and onnxruntime)'
        ) from err
    return onnx


class _Graph:
    """The nodes and initializers built so far, and a name for every tensor."""

    def __init__(self, helper, numpy_helper):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers = [], []

    def weight(self, name, array):
        """Store ``array`` as a float32 initializer called ``name``; return the
        name."""
        array = np.ascontiguousarray(array, dtype=np.float32)
        self.initializers.append(self.numpy_helper.from_array(array, name))
        return name

    def node(self, op, inputs, name, **attributes):
        """Add one ``op`` node whose output tensor is called ``name``; return the
        name."""
        self.nodes.append(
            self.helper.make_node(op, inputs, [name], name=name, **attributes)
        )
        return name


# One function per layer class: (graph, layer, prefix, input name) -> output name.


def _conv(g, layer, prefix, x):
    p = layer.padding
    return g.node(
        "Conv",
        [
            x,
            g.weight(f"{prefix}.weights", layer.weights),  # (F, C, K, K): ONNX's OIHW
            g.weight(f"{prefix}.biases", layer.biases),
        ],
        f"{prefix}.Conv",
        kernel_shape=[layer.filter_size] * 2,
        strides=[layer.stride] * 2,
        pads=[p, p, p, p],  # top, left, bottom, right
    )


def _max_pool(g, layer, prefix, x):
    return g.node(
        "MaxPool",
        [x],
        f"{prefix}.MaxPool",
        kernel_shape=[layer.pool_size] * 2,
        strides=[layer.stride] * 2,
    )


def _conv_max_pool(g, layer, prefix, x):
    return _max_pool(g, layer.pool, prefix, _conv(g, layer.conv, prefix, x))


def _batch_norm(g, layer, prefix, x):
    # evaluation: (X - running_mean) / sqrt(running_var + eps) * gamma + beta, per
    # channel (axis 1) of (N, C, H, W) or per feature of (N, D)
    return g.node(
        "BatchNormalization",
        [
            x,
            g.weight(f"{prefix}.gamma", layer.gamma),
            g.weight(f"{prefix}.beta", layer.beta),
            g.weight(f"{prefix}.running_mean", layer.running_mean),
            g.weight(f"{prefix}.running_var", layer.running_var),
        ],
        f"{prefix}.BatchNormalization",
        epsilon=float(layer.eps),
    )


def _relu(g, layer, prefix, x):
    return g.node("Relu", [x], f"{prefix}.Relu")


def _flatten(g, layer, prefix, x):
    # C order, as X.reshape(N, -1): feature c*H*W + h*W + w
    return g.node("Flatten", [x], f"{prefix}.Flatten", axis=1)


def _dense(g, layer, prefix, x):
    # Gemm: A @ B + C with B = our weights (input_size, output_size), not transposed
    return g.node(
        "Gemm",
        [
            x,
            g.weight(f"{prefix}.weights", layer.weights),
            g.weight(f"{prefix}.biases", layer.biases),
        ],
        f"{prefix}.Gemm",
    )


def _dropout(g, layer, prefix, x):
    return x  # the identity in evaluation: no node


#: Our layer classes and how each is written. Looked up by exact class: a subclass may
#: compute something else.
EXPORTERS = {
    ConvLayer: _conv,
    BatchNorm: _batch_norm,
    ReLU: _relu,
    MaxPoolLayer: _max_pool,
    ConvMaxPool: _conv_max_pool,
    Flatten: _flatten,
    FullyConnectedLayer: _dense,
    Dropout: _dropout,
}


def _expected_input(layer):
    """The input shape (one example, no batch axis) that ``layer`` needs, as a test on
    the shape and a description; None if it takes any shape."""
    kind = type(layer)
    if kind in (ConvLayer, ConvMaxPool):
        C = (layer if kind is ConvLayer else layer.conv).num_channels
        return (lambda s: len(s) == 3 and s[0] == C), f"({C}, H, W)"
    if kind is MaxPoolLayer:
        return (lambda s: len(s) == 3), "(C, H, W)"
    if kind is BatchNorm:
        D = layer.num_features
        return (lambda s: len(s) in (1, 3) and s[0] == D), f"({D},) or ({D}, H, W)"
    if kind is FullyConnectedLayer:
        D = layer.input_size
        return (lambda s: tuple(s) == (D,)), f"({D},)"
    return None


def _check_layer(i, layer, shape):
    """Raise a clear error if layer ``i`` cannot be exported or does not fit ``shape``
    (the shape of one example that the layers before it produce)."""
    if type(layer) not in EXPORTERS:
        kind = (
            f"a subclass of {type(layer).__mro__[1].__name__}"
            if any(isinstance(layer, cls) for cls in EXPORTERS)
            else "a layer"
        )
        raise UnsupportedLayerError(
            f"export_onnx: layer {i}, {layer!r}, is {kind} that the exporter does not "
            f"know, so it has no ONNX counterpart. The exporter writes exactly these "
            f"classes: {', '.join(cls.__name__ for cls in EXPORTERS)} (a subclass may "
            "compute something else, so it is refused too)"
        )
    expected = _expected_input(layer)
    if expected is not None and not expected[0](shape):
        raise ValueError(
            f"export_onnx: layer {i}, {layer!r}, takes inputs of shape {expected[1]} "
            f"but the layers before it give {tuple(shape)}"
        )


def export_onnx(model, path=None):
    """Write ``model`` as a standard ONNX graph in evaluation mode (opset
    :data:`OPSET`).

    Parameters
    ----------
    model : Sequential
        SimpleCNN, ``two_conv_net()``, ``deep_cnn()`` or any
        :class:`~cnn.model.Sequential` of the layers in :data:`EXPORTERS` (ConvLayer,
        BatchNorm, ReLU, MaxPoolLayer, ConvMaxPool, Flatten, FullyConnectedLayer,
        Dropout). Its current weights and BatchNorm running statistics are stored as
        float32, whatever the model's dtype.
    path : str or os.PathLike, optional
        File to write the model to (conventionally ``*.onnx``).

    Returns
    -------
    onnx.ModelProto
        One input, ``images``: float32 (N, C, H, W) with ``(C, H, W) =
        model.input_shape`` and a symbolic batch size ``N``. Two outputs:
        ``probabilities`` (N, num_classes), the softmax of ``logits``
        (N, num_classes). Checked with ``onnx.checker.check_model(full_check=True)``
        before it is returned or written.

    Raises
    ------
    ImportError
        If the ``onnx`` package is not installed (``pip install "cnn[onnx]"``).
    UnsupportedLayerError
        (a TypeError) If a layer is not exactly one of the classes above: a layer
        written by a reader, or a subclass of a built-in layer. The message names the
        layer, its position and the classes the exporter knows.
    ValueError
        If a layer does not fit the shape the layers before it produce, or the last one
        does not give ``num_classes`` logits.

    Examples
    --------
    >>> import onnxruntime
    >>> export_onnx(model, "model.onnx")  # doctest: +SKIP
    >>> session = onnxruntime.InferenceSession("model.onnx")  # doctest: +SKIP
    >>> probabilities, logits = session.run(None, {"images": X})  # doctest: +SKIP
    """
    onnx = _import_onnx()
    from onnx import TensorProto, helper, numpy_helper

    shape = tuple(model.input_shape)
    for i, layer in enumerate(model.layers):  # every check before anything is built
        _check_layer(i, layer, shape)
        shape = tuple(layer.output_shape(shape))
    if shape != (model.num_classes,):
        raise ValueError(
            f"export_onnx: the last layer must give {model.num_classes} logits per "
            f"image; the layers give shape {shape}"
        )

    g = _Graph(helper, numpy_helper)
    x = INPUT_NAME
    for i, layer in enumerate(model.layers):
        x = EXPORTERS[type(layer)](g, layer, f"layer{i}", x)
    if g.nodes and g.nodes[-1].output[0] == x:
        g.nodes[-1].output[0] = LOGITS
    else:  # the network ends with a layer that adds no node (Dropout)
        g.nodes.append(helper.make_node("Identity", [x], [LOGITS], name=LOGITS))
    g.nodes.append(
        helper.make_node("Softmax", [LOGITS], [PROBABILITIES], name="Softmax", axis=1)
    )
    classes = ["N", model.num_classes]
    graph = helper.make_graph(
        g.nodes,
        "cnn",
        [
            helper.make_tensor_value_info(
                INPUT_NAME, TensorProto.FLOAT, ["N", *model.input_shape]
            )
        ],
        [
            helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, classes),
            helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, classes),
        ],
        initializer=g.initializers,
        doc_string=repr(model),
    )
    opsets = [helper.make_opsetid("", OPSET)]
    proto = helper.make_model(
        graph,
        opset_imports=opsets,
        ir_version=helper.find_min_ir_version_for(opsets),
        producer_name="cnn",
        producer_version=_version(),
        doc_string=(
            f"{type(model).__name__} exported by cnn.export_onnx: images "
            f"(N, {', '.join(map(str, model.input_shape))}) float32 -> probabilities "
            f"and logits (N, {model.num_classes})"
        ),
    )
    onnx.checker.check_model(proto, full_check=True)
    if path is not None:
        onnx.save_model(proto, os.fspath(path))
    return proto


def _version():
    from . import __version__

    return __version__
