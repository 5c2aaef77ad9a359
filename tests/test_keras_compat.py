"""cnn.keras_compat: our networks rebuilt in Keras (JAX backend) compute the same
outputs and gradients."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

import cnn
from cnn import (
    BatchNorm,
    ConvLayer,
    Flatten,
    FullyConnectedLayer,
    MaxPoolLayer,
    ReLU,
    Sequential,
)
from cnn.keras_compat import copy_weights_to_keras, import_keras, keras_grads, to_keras
from cnn.losses import softmax_cross_entropy

F32 = dict(rtol=1e-4, atol=1e-5)


def _images(n, shape=(1, 28, 28), seed=0):
    return np.random.default_rng(seed).random((n,) + shape, dtype=np.float32)


def _bn_net(seed=3):
    """Conv (stride 2, padding 1) -> BatchNorm -> ReLU -> MaxPool -> Flatten -> FC ->
    BatchNorm -> FC: odd sizes."""
    rng = np.random.default_rng(seed)
    layers = [
        ConvLayer(4, 3, 2, stride=2, padding=1, rng=rng),
        BatchNorm(4),
        ReLU(),
        MaxPoolLayer(2, 2),
        Flatten(),
        FullyConnectedLayer(4 * 2 * 3, 6, rng=rng),
        BatchNorm(6),
        ReLU(),
        FullyConnectedLayer(6, 3, rng=rng),
    ]
    model = Sequential(layers, input_shape=(2, 9, 11), num_classes=3)
    # learned-looking values, so a swapped gamma/beta or statistic shows
    for layer in model.layers:
        if isinstance(layer, BatchNorm):
            r = np.random.default_rng(layer.num_features)
            layer.gamma[...] = r.uniform(0.5, 2, layer.num_features)
            layer.beta[...] = r.normal(0, 1, layer.num_features)
            layer.running_mean[...] = r.normal(0, 0.3, layer.num_features)
            layer.running_var[...] = r.uniform(0.5, 2, layer.num_features)
    return model


def test_simple_cnn_outputs_and_gradients_match_keras():
    import_keras()
    model = cnn.SimpleCNN(seed=1)
    kmodel = to_keras(model)
    X, y = _images(16), np.arange(16) % 10
    assert_allclose(np.asarray(kmodel(X)), model.logits(X, training=False), **F32)
    _, dlogits = softmax_cross_entropy(model.logits(X), y)
    model.gradient(dlogits)
    theirs, loss = keras_grads(kmodel, X, y, model)
    assert loss == pytest.approx(softmax_cross_entropy(model.logits(X), y)[0], rel=1e-5)
    assert len(theirs) == len(model.param_layers)
    for layer, grads in zip(model.param_layers, theirs, strict=True):
        assert set(grads) == set(layer.grads)
        for name in grads:
            assert_allclose(grads[name], layer.grads[name], rtol=1e-4, atol=1e-6)


def test_batchnorm_parameters_statistics_and_gradients_are_mapped_by_name():
    """BatchNorm's gamma, beta and running statistics reach Keras in its order, and its
    gradients come back as gamma and beta (not as weights and biases): in evaluation and
    in training mode."""
    import_keras()
    model = _bn_net()
    kmodel = to_keras(model)
    X, y = _images(8, (2, 9, 11), seed=1), np.arange(8) % 3
    assert_allclose(
        np.asarray(kmodel(X, training=False)), model.logits(X, training=False), **F32
    )
    _, dlogits = softmax_cross_entropy(model.logits(X, training=True), y)
    model.gradient(dlogits)
    theirs, _ = keras_grads(kmodel, X, y, model, training=True)
    names = [sorted(grads) for grads in theirs]
    assert names == [sorted(layer.params) for layer in model.param_layers]
    assert ["beta", "gamma"] in names
    for layer, grads in zip(model.param_layers, theirs, strict=True):
        for name in grads:
            assert_allclose(grads[name], layer.grads[name], rtol=1e-3, atol=1e-5)


def test_channels_last_matches_after_moving_the_channels():
    import_keras()
    model = _bn_net()
    kmodel = to_keras(model, data_format="channels_last")
    X = _images(5, (2, 9, 11), seed=2)
    assert_allclose(
        np.asarray(kmodel(X.transpose(0, 2, 3, 1), training=False)),
        model.logits(X, training=False),
        **F32,
    )


def test_copy_weights_follows_training():
    """After our model trains, copying again makes the Keras twin compute the new
    function."""
    import_keras()
    model = cnn.SimpleCNN(seed=2)
    kmodel = to_keras(model)
    X, y = _images(32, seed=3), np.arange(32) % 10
    model.backward(X, y)
    assert not np.allclose(
        np.asarray(kmodel(X)), model.logits(X, training=False), **F32
    )
    copy_weights_to_keras(model, kmodel)
    assert_allclose(np.asarray(kmodel(X)), model.logits(X, training=False), **F32)


def test_a_layer_without_a_keras_twin_is_refused_by_name():
    import_keras()

    class Scale(cnn.Layer):
        def forward(self, X, training=True):
            return 2 * X

        def gradient(self, dout, input_grad=True):
            return 2 * dout

    model = Sequential(
        [Flatten(), Scale(), FullyConnectedLayer(4, 2)],
        input_shape=(1, 2, 2),
        num_classes=2,
    )
    with pytest.raises(TypeError, match="no Keras equivalent for Scale"):
        to_keras(model)
    with pytest.raises(ValueError, match="data_format must be"):
        to_keras(cnn.SimpleCNN(), data_format="NCHW")
