"""The layer protocol: what every layer is and does, whether it comes with the package
or from a reader.

Explained in the chapter *More layers*, which also writes a new layer in a notebook
cell.
"""

import inspect

from ._checks import check_positive_float
from .config import Configurable


class Layer(Configurable):
    """Base class of every layer. A layer is exactly this:

    ``forward(X, training=True) -> out``
        The layer's output for a batch ``X``. With ``training=True`` it keeps what its
        gradient needs (and dropout drops); with ``training=False`` it keeps nothing.
    ``gradient(dout, input_grad=True) -> dX``
        From ``dout``, the loss gradient of the last forward's output, it fills
        ``self.grads`` and returns ``dX``, the gradient of its input. It never changes a
        parameter. With ``input_grad=False`` it may skip ``dX`` and return None (a
        network's first layer has no use for it).
    ``params``, ``grads``
        Name -> array: the live parameter arrays (updated in place by optimizers), and
        their gradients from the last ``gradient`` call, with the same names and shapes.
    ``buffers``
        Name -> array: state that is saved with the model but not trained (BatchNorm's
        running statistics).
    its constructor's arguments
        Recorded when the layer is made (:meth:`config`), so ``load_model`` can make it
        again.

    To write a layer: subclass ``Layer``, call ``super().__init__()``, and define
    ``__init__``, ``forward`` and ``gradient``; fill ``params`` (and, in ``gradient``,
    ``grads``) if it has parameters. Nothing else: defining the class registers it for
    saving and loading, and everything below comes with it.
    """

    # class name -> class, for load_model: filled as each subclass is defined
    registry = {}
    family = "layer"

    #: Whether ``train(..., processes=P)`` (:mod:`cnn.parallel`) may split the batches
    #: between processes: True where each image's output depends on that image alone,
    #: or where the layer sums what mixes the images over ``peers`` (BatchNorm).
    #: Training refuses a layer that does not say so.
    data_parallel = False
    #: The :class:`cnn.parallel.Peers` of a data-parallel training while it runs.
    peers = None

    def __init_subclass__(cls, **kwargs):
        # Checked before the class is registered, so that a refused class never replaces
        # a working one.
        _check_signature(cls, "forward", "(X, training=True)", "training")
        _check_signature(cls, "gradient", "(dout, input_grad=True)", "input_grad")
        super().__init_subclass__(**kwargs)

    def __new__(cls, *args, **kwargs):
        for method in ("forward", "gradient"):
            if getattr(cls, method) is getattr(Layer, method):
                raise TypeError(
                    f"{cls.__name__} must define {method}{_SIGNATURES[method]}: every "
                    "layer has forward(X, training=True) and "
                    "gradient(dout, input_grad=True)"
                )
        self = super().__new__(cls, *args, **kwargs)
        # Here rather than in __init__, so that a subclass that forgets
        # super().__init__() still works.
        self.params, self.grads, self.buffers = {}, {}, {}
        return self

    def __init__(self):
        """Nothing to set: ``params``, ``grads`` and ``buffers`` start empty."""

    def forward(self, X, training=True):
        """The output for a batch X; see the class docstring."""
        raise NotImplementedError

    def gradient(self, dout, input_grad=True):
        """Fill ``self.grads`` and return dX for the upstream gradient ``dout``; see the
        class docstring."""
        raise NotImplementedError

    # --------------------------------------------- given to every layer by the protocol

    def backward(self, dout, learning_rate=0.01):
        """The activity's backward pass: the gradients, then one plain SGD step; returns
        dX.

        ``learning_rate=0`` computes the gradients (in ``self.grads``) and changes no
        parameter.
        """
        # checked before anything changes
        learning_rate = check_positive_float(
            f"{type(self).__name__}.backward: learning_rate",
            learning_rate,
            allow_zero=True,
        )
        dX = self.gradient(dout)
        self.update(learning_rate)
        return dX

    def update(self, learning_rate):
        """One plain SGD step in place: ``param -= learning_rate * grad`` for every
        parameter."""
        learning_rate = check_positive_float(
            f"{type(self).__name__}.update: learning_rate",
            learning_rate,
            allow_zero=True,
        )
        if self.params and not self.grads:
            raise RuntimeError(
                f"{type(self).__name__}.update called before any backward pass"
            )
        if learning_rate == 0:
            return
        for name, value in self.params.items():
            # in place: params stay the live arrays
            value -= learning_rate * self.grads[name]

    def set_grads(self, **grads):
        """Keep the given gradients as ``self.grads``, each in the dtype of its
        parameter."""
        self.grads = {
            name: grad.astype(self.params[name].dtype, copy=False)
            for name, grad in grads.items()
        }

    def num_params(self):
        """Number of trainable numbers in this layer."""
        return int(sum(p.size for p in self.params.values()))

    def output_shape(self, input_shape):
        """Shape of one output for one input of shape ``input_shape`` (no batch axis):
        the same, by default."""
        return tuple(input_shape)

    def __repr__(self):
        args = ", ".join(f"{name}={value!r}" for name, value in self.config().items())
        return f"{type(self).__name__}({args})"


_SIGNATURES = {"forward": "(X, training=True)", "gradient": "(dout, input_grad=True)"}


def _check_signature(cls, method, expected, keyword):
    """Refuse, when the class is defined, a ``forward`` or ``gradient`` that Sequential
    could not call."""
    function = cls.__dict__.get(method)
    if function is None:
        return
    parameters = inspect.signature(function).parameters
    if keyword not in parameters and not any(
        p.kind is p.VAR_KEYWORD for p in parameters.values()
    ):
        raise TypeError(
            f"{cls.__name__}.{method} must take {expected}; it is defined as "
            f"{method}{inspect.signature(function)}"
        )
