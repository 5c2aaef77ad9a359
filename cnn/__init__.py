"""A convolutional neural network from scratch in NumPy: the reference implementation of
the book.

The names below are the activity's public API::

    from cnn import convolve2d, ConvLayer, MaxPoolLayer, ReLU, Flatten
    from cnn import FullyConnectedLayer, softmax, cross_entropy_loss
    from cnn import SimpleCNN, evaluate, load_mnist

A new layer subclasses :class:`cnn.Layer` (see :mod:`cnn.layer`); nothing else in the
package changes.

Your own images of digits go in through :func:`prepare_digit` (:mod:`cnn.digits`), and a
trained network goes out to ONNX through :func:`export_onnx` (:mod:`cnn.onnx_export`,
which needs ``pip install "cnn[onnx]"``).
"""

from .augment import (
    affine_transform,
    augment_batch,
    elastic_distortion,
    random_affine,
    train_with_augmentation,
)
from .batchnorm import BatchNorm
from .conv import (
    ConvLayer,
    col2im,
    conv_backward_loops,
    conv_forward_loops,
    convolve2d,
    im2col,
    output_size,
)
from .conv_maxpool import ConvMaxPool
from .data import DataIntegrityError, load_mnist, load_mnist_prepared, prepare_images
from .digits import DigitImageError, prepare_digit
from .gradcheck import (
    check_layer,
    check_model,
    numerical_gradient,
    numerical_gradient_array,
    rel_error,
)
from .io import ModelFileError, load_model, save_model
from .layer import Layer
from .layers import Dropout, Flatten, FullyConnectedLayer, MaxPoolLayer, ReLU
from .losses import (
    cross_entropy_from_logits,
    cross_entropy_loss,
    log_softmax,
    softmax,
    softmax_cross_entropy,
    softmax_cross_entropy_gradient,
)
from .model import Sequential
from .networks import DEEP_CNN_TRAINING, SimpleCNN, deep_cnn, two_conv_net
from .onnx_export import export_onnx
from .optim import SGD, Adam, Momentum, Optimizer
from .train import evaluate

__version__ = "0.1.0"

__all__ = [
    "convolve2d",
    "ConvLayer",
    "MaxPoolLayer",
    "ReLU",
    "Flatten",
    "FullyConnectedLayer",
    "softmax",
    "cross_entropy_loss",
    "SimpleCNN",
    "evaluate",
    "load_mnist",
    "Dropout",
    "Layer",
    "Sequential",
    "Optimizer",
    "SGD",
    "Momentum",
    "Adam",
    "im2col",
    "col2im",
    "conv_forward_loops",
    "conv_backward_loops",
    "output_size",
    "log_softmax",
    "cross_entropy_from_logits",
    "softmax_cross_entropy",
    "softmax_cross_entropy_gradient",
    "numerical_gradient",
    "numerical_gradient_array",
    "rel_error",
    "check_layer",
    "check_model",
    "load_mnist_prepared",
    "prepare_images",
    "DataIntegrityError",
    "BatchNorm",
    "augment_batch",
    "random_affine",
    "affine_transform",
    "elastic_distortion",
    "train_with_augmentation",
    "DEEP_CNN_TRAINING",
    "save_model",
    "load_model",
    "ModelFileError",
    "two_conv_net",
    "deep_cnn",
    "ConvMaxPool",
    "prepare_digit",
    "DigitImageError",
    "export_onnx",
]
