"""cnn.steps: training_steps, the speed rewrites of a list of layers (each ReLU after
the max pool that follows it; a convolution and the pooling after it as one ConvMaxPool
step), and that they compute what the layers do."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import cnn
from cnn import (
    ConvLayer,
    Dropout,
    Flatten,
    FullyConnectedLayer,
    MaxPoolLayer,
    ReLU,
    Sequential,
    SimpleCNN,
)


def test_training_steps_fuse_each_conv_with_the_max_pool_after_it():
    """Training runs Conv -> ReLU -> MaxPool as ConvMaxPool -> ReLU, where the pool's
    windows tile the input; overlapping windows, the loops version and a BatchNorm in
    between keep the separate layers."""

    def names(model):
        return [type(step).__name__ for step in model.training_steps()]

    assert names(SimpleCNN()) == [
        "ConvMaxPool",
        "ReLU",
        "Flatten",
        "FullyConnectedLayer",
    ]
    assert names(cnn.networks.two_conv_net()) == [
        "ConvLayer",
        "ReLU",
        "ConvMaxPool",
        "ReLU",
        "Flatten",
        "FullyConnectedLayer",
    ]
    assert names(SimpleCNN(impl="loops")) == [
        "ConvLayer",
        "MaxPoolLayer",
        "ReLU",
        "Flatten",
        "FullyConnectedLayer",
    ]
    overlapping = Sequential(
        [
            ConvLayer(2, 3, 1, rng=1),
            ReLU(),
            MaxPoolLayer(3, 1),
            Flatten(),
            FullyConnectedLayer(2 * 4 * 4, 10, rng=1),
        ],
        input_shape=(1, 8, 8),
    )
    assert names(overlapping) == [
        "ConvLayer",
        "MaxPoolLayer",
        "ReLU",
        "Flatten",
        "FullyConnectedLayer",
    ]
    assert "ConvMaxPool" not in names(cnn.networks.deep_cnn())
    fused = SimpleCNN().training_steps()[0]
    assert fused.params is fused.conv.params


def _logits_and_grads(model, X, y, order):
    """Logits and every layer's gradients, running the layers in ``order`` and back."""
    for layer in model.layers:
        if isinstance(layer, Dropout):
            layer.rng = np.random.default_rng(0)  # the same dropout masks in both runs
    logits = model.logits(X, True, order)
    _, dout = cnn.softmax_cross_entropy(logits, y)
    for layer in reversed(order):
        dout = layer.gradient(dout)
    return logits, [
        g.copy() for layer in model.param_layers for g in layer.grads.values()
    ]


@pytest.mark.parametrize(
    "make",
    [
        lambda: SimpleCNN(seed=3, impl="loops"),
        lambda: cnn.networks.deep_cnn(seed=3),
        lambda: Sequential(
            [
                ConvLayer(2, 3, 1, rng=1),
                ReLU(),
                MaxPoolLayer(3, 1),
                Flatten(),
                FullyConnectedLayer(2 * 4 * 4, 10, rng=1),
            ],
            input_shape=(1, 8, 8),
        ),
    ],
)
def test_relu_after_the_pool_gives_exactly_the_listed_orders_outputs_and_gradients(
    rng, make
):
    """Training runs each ReLU after the max pool that follows it (they commute): the
    logits and all gradients are bit-for-bit those of the listed order, also with ties
    at zero (blank image regions) and with overlapping windows. (These networks have no
    convolution that training fuses with its pool.)"""
    model = make()
    C, H, W = model.input_shape
    X = rng.standard_normal((5, C, H, W)).astype(np.float32)
    X[:, :, : H // 2] = 0.0  # blank rows: windows of equal values
    y = rng.integers(0, 10, 5)
    fast = model.training_steps()
    swapped = [
        i
        for i, layer in enumerate(model.layers)
        if isinstance(layer, ReLU)
        and i + 1 < len(model.layers)
        and isinstance(model.layers[i + 1], MaxPoolLayer)
    ]
    assert swapped and all(
        fast[i] is model.layers[i + 1] and fast[i + 1] is model.layers[i]
        for i in swapped
    )
    listed_logits, listed_grads = _logits_and_grads(model, X, y, model.layers)
    fast_logits, fast_grads = _logits_and_grads(model, X, y, fast)
    assert_array_equal(fast_logits, listed_logits)
    for fast_grad, listed_grad in zip(fast_grads, listed_grads, strict=True):
        assert_array_equal(fast_grad, listed_grad)


@pytest.mark.parametrize(
    "make", [lambda: SimpleCNN(seed=3), lambda: cnn.networks.two_conv_net(seed=3)]
)
def test_training_order_with_fused_conv_and_pool_gives_the_listed_orders_results(
    rng, make
):
    """With a ConvMaxPool step the logits are still bit-for-bit the listed order's (the
    same products, the same maxima); the convolution's gradients differ only by float32
    rounding, because the product that sums them over pixels takes the pixels in another
    order. (The listed convolutions use im2col, as the fused step does: with the
    shifted products their sums would be taken in another order too.)"""
    model = make()
    for layer in model.layers:
        if isinstance(layer, ConvLayer):
            layer.algorithm = "im2col"
    X = rng.standard_normal((5, 1, 28, 28)).astype(np.float32)
    X[:, :, :14] = 0.0
    y = rng.integers(0, 10, 5)
    fast = model.training_steps()
    assert any(isinstance(step, cnn.conv_maxpool.ConvMaxPool) for step in fast)
    listed_logits, listed_grads = _logits_and_grads(model, X, y, model.layers)
    fast_logits, fast_grads = _logits_and_grads(model, X, y, fast)
    assert_array_equal(fast_logits, listed_logits)
    for fast_grad, listed_grad in zip(fast_grads, listed_grads, strict=True):
        assert_allclose(
            fast_grad, listed_grad, rtol=1e-4, atol=1e-6 * np.abs(listed_grad).max()
        )
