"""cnn.layer: the layer protocol. A layer written outside the package, here in this test
file, is checked, trains inside Sequential, and saves and loads like a built-in one,
with no change to the package. And the activity's backward(dout, learning_rate), which
the protocol gives every layer (here through ConvLayer)."""

import numpy as np
import pytest
from conftest import assert_unchanged, snapshot
from numpy.testing import assert_allclose, assert_array_equal

import cnn
from cnn import (
    ConvLayer,
    Flatten,
    FullyConnectedLayer,
    Layer,
    MaxPoolLayer,
    Sequential,
    check_layer,
    load_model,
    save_model,
)


class LeakyReLU(Layer):
    """max(alpha x, x): a parameter-free layer with a constructor argument."""

    def __init__(self, alpha=0.01):
        super().__init__()
        self.alpha = alpha

    def forward(self, X, training=True):
        self._positive = X > 0
        return np.where(self._positive, X, self.alpha * X)

    def gradient(self, dout, input_grad=True):
        return np.where(self._positive, dout, self.alpha * dout)


class ChannelScale(Layer):
    """A learnable scale per channel of (N, C, H, W) feature maps: a layer with a
    parameter."""

    def __init__(self, num_channels, dtype=np.float32):
        super().__init__()
        self.num_channels = num_channels
        self.scale = np.ones(num_channels, dtype=dtype)
        self.params = {"scale": self.scale}

    def forward(self, X, training=True):
        self._X = X
        return X * self.scale[:, None, None]

    def gradient(self, dout, input_grad=True):
        self.grads = {"scale": np.einsum("nchw,nchw->c", dout, self._X)}
        return dout * self.scale[:, None, None] if input_grad else None


def _model(seed=0):
    rng = np.random.default_rng(seed)
    layers = [
        cnn.ConvLayer(4, 3, 1, padding=1, rng=rng),
        ChannelScale(4),
        LeakyReLU(0.1),
        MaxPoolLayer(2, 2),
        Flatten(),
        FullyConnectedLayer(4 * 14 * 14, 10, rng=rng),
    ]
    return Sequential(layers, learning_rate=0.1, seed=seed)


def test_user_layers_pass_the_gradient_check():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2, 3, 4, 5))
    X[np.abs(X) < 1e-3] = 0.5  # keep away from LeakyReLU's kink
    assert max(check_layer(LeakyReLU(0.2), X).values()) < 1e-7
    errors = check_layer(ChannelScale(3, dtype=np.float64), X)
    assert set(errors) == {"X", "scale"} and max(errors.values()) < 1e-7


def test_user_layers_train_inside_sequential_and_round_trip_through_a_file(tmp_path):
    (X, y), _ = cnn.load_mnist_prepared()
    model = _model()
    history = model.train(X[:512], y[:512], epochs=2, batch_size=32, verbose=0)
    assert history["loss"][-1] < history["loss"][0]
    # the custom parameter trained
    assert not np.array_equal(model.layers[1].scale, np.ones(4))
    save_model(model, tmp_path / "custom.npz")
    loaded = load_model(tmp_path / "custom.npz")
    assert [type(layer) for layer in loaded.layers] == [
        type(layer) for layer in model.layers
    ]
    assert loaded.layers[2].alpha == 0.1
    assert_array_equal(loaded.layers[1].scale, model.layers[1].scale)
    assert_array_equal(loaded.predict_proba(X[:200]), model.predict_proba(X[:200]))


def test_a_layer_is_known_by_name_once_defined_and_unknown_names_are_clear_errors(
    tmp_path,
):
    model = Sequential(
        [Flatten(), LeakyReLU(), FullyConnectedLayer(4, 2)],
        input_shape=(1, 2, 2),
        num_classes=2,
    )
    save_model(model, tmp_path / "m.npz")
    assert Layer.registry["LeakyReLU"] is LeakyReLU
    del Layer.registry["LeakyReLU"]  # as in a process that has not defined the class
    try:
        with pytest.raises(
            cnn.ModelFileError, match="unknown type 'LeakyReLU'.*define or import it"
        ):
            load_model(tmp_path / "m.npz")
    finally:
        Layer.registry["LeakyReLU"] = LeakyReLU


def test_a_class_defined_again_replaces_the_old_one_and_an_old_instance_is_refused(
    tmp_path,
):
    old = LeakyReLU()

    class LeakyReLU2(LeakyReLU):
        pass

    # as when a notebook cell defining the class runs again
    LeakyReLU2.__name__ = "LeakyReLU"
    Layer.registry["LeakyReLU"] = LeakyReLU2
    try:
        model = Sequential(
            [Flatten(), old, FullyConnectedLayer(4, 2)],
            input_shape=(1, 2, 2),
            num_classes=2,
        )
        with pytest.raises(
            TypeError, match="another class named 'LeakyReLU' has been defined since"
        ):
            save_model(model, tmp_path / "m.npz")
    finally:
        Layer.registry["LeakyReLU"] = LeakyReLU


def test_the_protocol_is_enforced_when_a_layer_class_is_defined_or_made():
    with pytest.raises(
        TypeError, match=r"Bad.gradient must take \(dout, input_grad=True\)"
    ):

        class Bad(Layer):
            def forward(self, X, training=True):
                return X

            def gradient(self, dout):
                return dout

    assert "Bad" not in Layer.registry  # a refused class never replaces a working one
    with pytest.raises(
        TypeError, match=r"BadForward.forward must take \(X, training=True\)"
    ):

        class BadForward(Layer):
            def forward(self, X):
                return X

    # the activity's name for it, but the protocol's is gradient
    class OnlyBackward(Layer):
        def forward(self, X, training=True):
            return X

        def backward(self, dout, learning_rate=0.01):
            return dout

    with pytest.raises(TypeError, match="OnlyBackward must define gradient"):
        OnlyBackward()
    with pytest.raises(TypeError, match="already part of the cnn package"):

        class ReLU(Layer):
            def forward(self, X, training=True):
                return X

            def gradient(self, dout, input_grad=True):
                return dout

    with pytest.raises(TypeError, match="layer 1 .* is not a cnn.Layer"):
        Sequential(
            [Flatten(), object(), FullyConnectedLayer(4, 2)],
            input_shape=(1, 2, 2),
            num_classes=2,
        )


def test_a_layer_that_forgets_super_init_still_has_params_grads_and_buffers():
    class Forgetful(Layer):
        def __init__(self, k):
            self.k = k

        def forward(self, X, training=True):
            return X * self.k

        def gradient(self, dout, input_grad=True):
            return dout * self.k

    layer = Forgetful(3)
    assert layer.params == {} and layer.grads == {} and layer.buffers == {}
    assert layer.config() == {"k": 3} and repr(layer) == "Forgetful(k=3)"


def test_check_layer_catches_a_gradient_that_breaks_the_protocol():
    class Stepping(ChannelScale):
        def gradient(self, dout, input_grad=True):
            dX = super().gradient(dout, input_grad)
            self.scale -= 0.1 * self.grads["scale"]  # updates: gradient must not
            return dX

    class Misnamed(ChannelScale):
        def gradient(self, dout, input_grad=True):
            dX = super().gradient(dout, input_grad)
            self.grads = {"weights": self.grads["scale"]}
            return dX

    X = np.random.default_rng(1).standard_normal((2, 3, 4, 4))
    with pytest.raises(AssertionError, match="changed the parameter 'scale'"):
        check_layer(Stepping(3, dtype=np.float64), X)
    with pytest.raises(
        AssertionError, match=r"params has \['scale'\], grads has \['weights'\]"
    ):
        check_layer(Misnamed(3, dtype=np.float64), X)


def test_every_built_in_layer_follows_the_protocol():
    """One signature each: forward(X, training=True), gradient(dout, input_grad=True);
    params, grads, buffers dicts; config() that rebuilds an equal layer."""
    import inspect

    for name, cls in Layer.registry.items():
        if cls.__module__.split(".")[0] != "cnn":
            continue
        assert list(inspect.signature(cls.forward).parameters)[:3] == [
            "self",
            "X",
            "training",
        ], name
        assert list(inspect.signature(cls.gradient).parameters)[:3] == [
            "self",
            "dout",
            "input_grad",
        ], name
    for layer in _model().layers + [cnn.BatchNorm(3), cnn.Dropout(0.3), cnn.ReLU()]:
        assert (
            isinstance(layer.params, dict)
            and isinstance(layer.grads, dict)
            and isinstance(layer.buffers, dict)
        )
        again = type(layer)(**layer.config())
        assert again.config() == layer.config()


# -------------------------------------------- backward: the gradient, then one SGD step


def test_conv_backward_with_zero_learning_rate_fills_grads_but_keeps_params(rng):
    """ConvLayer.backward(dout, learning_rate=0) leaves weights and biases unchanged and
    sets grads."""
    layer = ConvLayer(2, 3, 1, padding=1, rng=0)
    X = rng.random((2, 1, 5, 5)).astype(np.float32)
    out = layer.forward(X)
    before = [layer.weights.copy(), layer.biases.copy()]
    dout = rng.standard_normal(out.shape).astype(np.float32)
    layer.backward(dout, learning_rate=0)
    assert_array_equal(layer.weights, before[0])
    assert_array_equal(layer.biases, before[1])
    assert layer.grads["weights"].shape == (2, 1, 3, 3)
    assert_allclose(layer.grads["biases"], dout.sum(axis=(0, 2, 3)), rtol=1e-5)
    assert np.any(layer.grads["weights"] != 0)


def test_conv_backward_updates_by_plain_sgd(rng):
    """ConvLayer.backward(dout, lr) returns dX and sets W_new = W_old - lr * dW,
    b_new = b_old - lr * db."""
    layer = ConvLayer(2, 3, 2, stride=2, rng=0, dtype=np.float64)
    X = rng.standard_normal((2, 2, 7, 6))
    out = layer.forward(X)
    dout = rng.standard_normal(out.shape)
    W_old, b_old = layer.weights.copy(), layer.biases.copy()
    dX = layer.backward(dout, learning_rate=0.05)
    assert dX.shape == X.shape
    assert_allclose(layer.weights, W_old - 0.05 * layer.grads["weights"], rtol=1e-14)
    assert_allclose(layer.biases, b_old - 0.05 * dout.sum(axis=(0, 2, 3)), rtol=1e-14)


def test_refused_learning_rate_in_conv_backward_changes_nothing(rng):
    """ConvLayer.backward(dout, learning_rate=-0.1) is refused by name and leaves
    weights *and* grads as they were."""
    layer = ConvLayer(3, 3, 2, padding=1, rng=0, dtype=np.float64)
    X = rng.standard_normal((2, 2, 5, 6))
    dout = rng.standard_normal(layer.forward(X).shape)
    layer.gradient(dout)
    grads = {k: v.copy() for k, v in layer.grads.items()}
    before = snapshot(layer)
    with pytest.raises(ValueError, match=r"learning_rate must be >= 0; got -0\.1"):
        layer.backward(2 * dout, learning_rate=-0.1)
    assert_unchanged(layer, before)
    for name, value in grads.items():
        assert_array_equal(
            layer.grads[name],
            value,
            err_msg=f"grads[{name!r}] changed by a refused call",
        )


def test_only_a_class_own_unsaved_arguments_are_left_out(tmp_path):
    """ConvLayer does not save ``weight_scale`` and ``impl``; a reader's layer with an
    argument of the same name saves it, since it may change what the layer computes."""

    class Scaled(Layer):
        def __init__(self, weight_scale=1.0, impl="plain"):
            super().__init__()
            self.weight_scale, self.impl = weight_scale, impl

        def forward(self, X, training=True):
            return self.weight_scale * X

        def gradient(self, dout, input_grad=True):
            return self.weight_scale * dout

    assert "weight_scale" not in cnn.ConvLayer(2, 3, 1).config()
    assert Scaled(3.0, "other").config() == {"weight_scale": 3.0, "impl": "other"}
    model = Sequential(
        [Flatten(), Scaled(3.0), FullyConnectedLayer(4, 2)],
        input_shape=(1, 2, 2),
        num_classes=2,
    )
    save_model(model, tmp_path / "scaled.npz")
    assert load_model(tmp_path / "scaled.npz").layers[1].weight_scale == 3.0
