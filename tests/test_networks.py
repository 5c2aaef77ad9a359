"""two_conv_net and deep_cnn: shapes, parameter counts, gradients of tiny versions, and a short training."""
import numpy as np
import pytest

from cnn import load_mnist_prepared
from cnn.batchnorm import BatchNorm
from cnn.conv import ConvLayer
from cnn.gradcheck import check_model
from cnn.layers import Dropout, FullyConnectedLayer
from cnn.model import Sequential
from cnn.networks import DEEP_CNN_TRAINING, deep_cnn, make_optimizer, two_conv_net
from cnn.optim import Adam, Momentum


def test_two_conv_net_architecture():
    model = two_conv_net()
    assert isinstance(model, Sequential)
    assert [type(layer).__name__ for layer in model.layers] == [
        "ConvLayer", "ReLU", "ConvLayer", "ReLU", "MaxPoolLayer", "Flatten", "FullyConnectedLayer"]
    assert [shape for _, shape, _ in model.summary()] == [
        (8, 28, 28), (8, 28, 28), (16, 28, 28), (16, 28, 28), (16, 14, 14), (16 * 14 * 14,), (10,)]
    assert model.num_params() == (8 * 9 + 8) + (16 * 8 * 9 + 16) + (16 * 14 * 14 * 10 + 10)
    X = np.zeros((3, 1, 28, 28), np.float32)
    assert model.forward(X).shape == (3, 10)


def test_deep_cnn_architecture():
    model = deep_cnn()
    shapes = [shape for _, shape, _ in model.summary()]
    assert shapes[-1] == (10,)
    F1, F2 = 16, 32
    assert (F1, 14, 14) in shapes and (F2, 7, 7) in shapes
    convs = [layer for layer in model.layers if isinstance(layer, ConvLayer)]
    norms = [layer for layer in model.layers if isinstance(layer, BatchNorm)]
    dense = [layer for layer in model.layers if isinstance(layer, FullyConnectedLayer)]
    assert len(convs) == len(norms) == 4 and len(dense) == 2
    assert any(isinstance(layer, Dropout) for layer in model.layers)
    expected = ((F1 * 9 + F1) + (F1 * F1 * 9 + F1) + (F2 * F1 * 9 + F2) + (F2 * F2 * 9 + F2)   # convolutions
                + 2 * (2 * F1 + 2 * F2)                                                         # gamma, beta
                + (F2 * 49 * 128 + 128) + (128 * 10 + 10))                                      # dense
    assert model.num_params() == expected
    assert isinstance(model.optimizer, Adam)
    assert model.learning_rate == DEEP_CNN_TRAINING["learning_rate"]
    assert model.lr_decay == DEEP_CNN_TRAINING["lr_decay"]
    assert model.predict(np.zeros((2, 1, 28, 28), np.float32)).shape == (2,)


def test_options_and_seeds():
    small = deep_cnn(filters=(4, 8), convs_per_stage=1, hidden=16, input_shape=(3, 8, 8), num_classes=5)
    assert [shape for _, shape, _ in small.summary()][-1] == (5,)
    assert small.forward(np.zeros((2, 3, 8, 8), np.float32)).shape == (2, 5)
    a, b, c = deep_cnn(seed=1), deep_cnn(seed=1), deep_cnn(seed=2)
    np.testing.assert_array_equal(a.layers[0].weights, b.layers[0].weights)
    assert not np.array_equal(a.layers[0].weights, c.layers[0].weights)
    assert isinstance(two_conv_net(optimizer="momentum").optimizer, Momentum)
    assert two_conv_net().optimizer is None and deep_cnn(optimizer=None).optimizer is None
    optimizer = Adam(0.01)
    assert make_optimizer(optimizer, 0.1) is optimizer
    with pytest.raises(ValueError, match="optimizer must be one of"):
        deep_cnn(optimizer="rmsprop")
    with pytest.raises(ValueError, match="at least 4"):
        deep_cnn(input_shape=(1, 3, 28))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        two_conv_net(input_shape=(28, 28))


@pytest.mark.parametrize("make", [
    lambda: two_conv_net(seed=0, filters=(2, 3), input_shape=(1, 6, 6), num_classes=3, dtype=np.float64),
    lambda: deep_cnn(seed=0, filters=(2, 3), hidden=5, dropout=0.0, input_shape=(1, 4, 4), num_classes=3,
                     dtype=np.float64),
], ids=["two_conv_net", "deep_cnn"])
def test_gradients_of_tiny_versions(make):
    model = make()
    rng = np.random.default_rng(1)
    X = rng.standard_normal((4,) + model.input_shape)
    y = np.array([0, 1, 2, 1])
    errors = check_model(model, X, y, max_checks=6)
    # A convolution's bias right before a BatchNorm has no effect (the BatchNorm subtracts the channel's
    # mean): its gradient is 0 up to rounding and its relative error meaningless; check it is ~0 instead.
    before_norm = {f"{i}.biases" for i, layer in enumerate(model.layers[:-1])
                   if isinstance(layer, ConvLayer) and isinstance(model.layers[i + 1], BatchNorm)}
    for i_name in before_norm:
        i = int(i_name.split(".")[0])
        assert np.abs(model.layers[i].grads["biases"]).max() < 1e-12
    errors = {name: error for name, error in errors.items() if name not in before_norm}
    assert max(errors.values()) < 1e-5, errors


@pytest.fixture(scope="module")
def mnist_500():
    (X, y), _ = load_mnist_prepared()
    return X[:500], y[:500]


@pytest.mark.parametrize("make", [lambda: two_conv_net(seed=0, filters=(2, 4)),
                                  lambda: deep_cnn(seed=0, filters=(4, 8), convs_per_stage=1, hidden=32)],
                         ids=["two_conv_net", "deep_cnn"])
def test_short_training_reduces_the_loss(mnist_500, make):
    X, y = mnist_500
    model = make()
    history = model.train(X, y, epochs=2, batch_size=32, verbose=0)
    assert history["loss"][1] < history["loss"][0] < 2.5
    assert history["accuracy"][1] > history["accuracy"][0]
