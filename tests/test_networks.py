"""cnn.networks: SimpleCNN (the activity's architecture, seeds, its gradients, against a
JAX network), two_conv_net and deep_cnn (shapes, parameter counts, options, gradients of
tiny versions, and a short training)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import all_params, assert_gradients_match, jax_conv, jax_maxpool
from numpy.testing import assert_allclose, assert_array_equal

import cnn
from cnn import (
    DEEP_CNN_TRAINING,
    Adam,
    BatchNorm,
    ConvLayer,
    Dropout,
    Flatten,
    FullyConnectedLayer,
    MaxPoolLayer,
    Momentum,
    ReLU,
    Sequential,
    SimpleCNN,
    check_model,
    deep_cnn,
    load_mnist_prepared,
    two_conv_net,
)
from cnn.optim import make_optimizer

# ---------------------------------------------------------------------------- SimpleCNN


def test_simplecnn_layers_in_the_activity_order():
    """Conv(8 filters, 3x3, padding 1) -> ReLU -> MaxPool 2x2 -> Flatten ->
    FC(1568 -> 10)."""
    layers = SimpleCNN().layers
    assert [type(layer) for layer in layers] == [
        ConvLayer,
        ReLU,
        MaxPoolLayer,
        Flatten,
        FullyConnectedLayer,
    ]
    conv, _, pool, _, fc = layers
    assert (
        conv.num_filters,
        conv.filter_size,
        conv.num_channels,
        conv.stride,
        conv.padding,
    ) == (8, 3, 1, 1, 1)
    assert (pool.pool_size, pool.stride) == (2, 2)
    assert (fc.input_size, fc.output_size) == (1568, 10)
    assert fc.weights.shape == (1568, 10)


def test_forward_gives_probabilities_of_shape_n_by_10(rng):
    """forward maps (N, 1, 28, 28) to (N, 10) non-negative rows that sum to 1."""
    probs = SimpleCNN().forward(rng.random((5, 1, 28, 28)).astype(np.float32))
    assert probs.shape == (5, 10)
    assert np.all(probs >= 0)
    assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_summary_shapes_and_parameter_counts():
    """summary lists each layer's output shape and parameter count:
    80 conv + 15690 FC = 15770."""
    rows = SimpleCNN().summary()
    assert [shape for _, shape, _ in rows] == [
        (8, 28, 28),
        (8, 28, 28),
        (8, 14, 14),
        (1568,),
        (10,),
    ]
    assert [count for _, _, count in rows] == [8 * 9 + 8, 0, 0, 0, 1568 * 10 + 10]
    assert [count for _, _, count in rows] == [80, 0, 0, 0, 15690]
    assert SimpleCNN().num_params() == 15770
    assert rows[0][0].startswith("ConvLayer(num_filters=8, filter_size=3")


def test_loops_impl_network_computes_the_same_probabilities(rng):
    """SimpleCNN(impl='loops') and the default vectorized network give the same forward
    pass."""
    X = rng.random((2, 1, 28, 28)).astype(np.float32)
    assert_allclose(
        SimpleCNN(seed=1, impl="loops").forward(X),
        SimpleCNN(seed=1).forward(X),
        rtol=1e-5,
        atol=1e-7,
    )


def test_same_seed_gives_bit_identical_initial_weights():
    """Two SimpleCNN(seed=3) start from exactly the same weights and biases."""
    for a, b in zip(
        all_params(SimpleCNN(seed=3)), all_params(SimpleCNN(seed=3)), strict=True
    ):
        assert_array_equal(a, b)


def test_different_seed_gives_different_weights():
    """SimpleCNN(seed=3) and SimpleCNN(seed=4) differ in both weight arrays."""
    a, b = SimpleCNN(seed=3), SimpleCNN(seed=4)
    for la, lb in zip(a.param_layers, b.param_layers, strict=True):
        assert not np.array_equal(la.weights, lb.weights)


def test_simplecnn_gradients_in_float64(rng):
    """The whole SimpleCNN (converted to float64, random biases) agrees with numerical
    gradients of the loss."""
    model = cnn.SimpleCNN(seed=4).astype(np.float64)
    for layer in model.param_layers:
        layer.biases[...] = 0.1 * rng.standard_normal(layer.biases.shape)
    assert all(
        layer.weights.dtype == np.float64 and layer.params["weights"] is layer.weights
        for layer in model.param_layers
    )
    X = rng.standard_normal((2, 1, 28, 28))
    errors = check_model(model, X, np.array([3, 7]))
    assert set(errors) == {"0.weights", "0.biases", "4.weights", "4.biases"}
    assert_gradients_match(errors)


def test_simplecnn_forward_matches_a_jax_network(rng):
    """SimpleCNN's probabilities equal the same network written with JAX primitives and
    the same weights."""
    model = cnn.SimpleCNN(seed=2)
    conv, fc = model.layers[0], model.layers[4]
    conv.biases[...] = 0.1 * rng.standard_normal(8)
    X = rng.random((3, 1, 28, 28)).astype(np.float32)
    h = jnp.maximum(
        jax_conv(
            X.astype(np.float64),
            conv.weights.astype(np.float64),
            conv.biases.astype(np.float64),
            1,
            1,
        ),
        0,
    )
    logits = (
        jax_maxpool(h, 2, 2).reshape(3, -1) @ fc.weights.astype(np.float64) + fc.biases
    )
    # float32 model
    assert_allclose(model.forward(X), jax.nn.softmax(logits), rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------ two_conv_net and deep_cnn


def test_two_conv_net_architecture():
    model = two_conv_net()
    assert isinstance(model, Sequential)
    assert [type(layer).__name__ for layer in model.layers] == [
        "ConvLayer",
        "ReLU",
        "ConvLayer",
        "ReLU",
        "MaxPoolLayer",
        "Flatten",
        "FullyConnectedLayer",
    ]
    assert [shape for _, shape, _ in model.summary()] == [
        (8, 28, 28),
        (8, 28, 28),
        (16, 28, 28),
        (16, 28, 28),
        (16, 14, 14),
        (16 * 14 * 14,),
        (10,),
    ]
    assert model.num_params() == (8 * 9 + 8) + (16 * 8 * 9 + 16) + (
        16 * 14 * 14 * 10 + 10
    )
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
    expected = (
        # convolutions
        (F1 * 9 + F1)
        + (F1 * F1 * 9 + F1)
        + (F2 * F1 * 9 + F2)
        + (F2 * F2 * 9 + F2)
        # gamma, beta
        + 2 * (2 * F1 + 2 * F2)
        # dense
        + (F2 * 49 * 128 + 128)
        + (128 * 10 + 10)
    )
    assert model.num_params() == expected
    assert isinstance(model.optimizer, Adam)
    assert model.learning_rate == DEEP_CNN_TRAINING["learning_rate"]
    assert model.lr_decay == DEEP_CNN_TRAINING["lr_decay"]
    assert model.predict(np.zeros((2, 1, 28, 28), np.float32)).shape == (2,)


def test_options_and_seeds():
    small = deep_cnn(
        filters=(4, 8),
        convs_per_stage=1,
        hidden=16,
        input_shape=(3, 8, 8),
        num_classes=5,
    )
    assert [shape for _, shape, _ in small.summary()][-1] == (5,)
    assert small.forward(np.zeros((2, 3, 8, 8), np.float32)).shape == (2, 5)
    a, b, c = deep_cnn(seed=1), deep_cnn(seed=1), deep_cnn(seed=2)
    np.testing.assert_array_equal(a.layers[0].weights, b.layers[0].weights)
    assert not np.array_equal(a.layers[0].weights, c.layers[0].weights)
    assert isinstance(two_conv_net(optimizer="momentum").optimizer, Momentum)
    assert (
        two_conv_net().optimizer is None and deep_cnn(optimizer=None).optimizer is None
    )
    optimizer = Adam(0.01)
    assert make_optimizer(optimizer, 0.1) is optimizer
    with pytest.raises(ValueError, match="optimizer must be one of"):
        deep_cnn(optimizer="rmsprop")
    with pytest.raises(ValueError, match="at least 4"):
        deep_cnn(input_shape=(1, 3, 28))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        two_conv_net(input_shape=(28, 28))


@pytest.mark.parametrize(
    "make",
    [
        lambda: two_conv_net(
            seed=0,
            filters=(2, 3),
            input_shape=(1, 6, 6),
            num_classes=3,
            dtype=np.float64,
        ),
        lambda: deep_cnn(
            seed=0,
            filters=(2, 3),
            hidden=5,
            dropout=0.0,
            input_shape=(1, 4, 4),
            num_classes=3,
            dtype=np.float64,
        ),
    ],
    ids=["two_conv_net", "deep_cnn"],
)
def test_gradients_of_tiny_versions(make):
    model = make()
    rng = np.random.default_rng(1)
    X = rng.standard_normal((4,) + model.input_shape)
    y = np.array([0, 1, 2, 1])
    errors = check_model(model, X, y, max_checks=6)
    # A convolution's bias right before a BatchNorm has no effect (the BatchNorm
    # subtracts the channel's mean): its gradient is 0 up to rounding and its relative
    # error meaningless; check it is ~0 instead.
    before_norm = {
        f"{i}.biases"
        for i, layer in enumerate(model.layers[:-1])
        if isinstance(layer, ConvLayer) and isinstance(model.layers[i + 1], BatchNorm)
    }
    for i_name in before_norm:
        i = int(i_name.split(".")[0])
        assert np.abs(model.layers[i].grads["biases"]).max() < 1e-12
    errors = {name: error for name, error in errors.items() if name not in before_norm}
    assert max(errors.values()) < 1e-5, errors


@pytest.fixture(scope="module")
def mnist_500():
    (X, y), _ = load_mnist_prepared()
    return X[:500], y[:500]


@pytest.mark.parametrize(
    "make",
    [
        lambda: two_conv_net(seed=0, filters=(2, 4)),
        lambda: deep_cnn(seed=0, filters=(4, 8), convs_per_stage=1, hidden=32),
    ],
    ids=["two_conv_net", "deep_cnn"],
)
def test_short_training_reduces_the_loss(mnist_500, make):
    X, y = mnist_500
    model = make()
    history = model.train(X, y, epochs=2, batch_size=32, verbose=0)
    assert history["loss"][1] < history["loss"][0] < 2.5
    assert history["accuracy"][1] > history["accuracy"][0]
