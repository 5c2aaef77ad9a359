"""Bad input gets a clear exception naming the argument and what was expected, before any state changes."""
import re

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import cnn
from cnn import (ConvLayer, Dropout, Flatten, FullyConnectedLayer, MaxPoolLayer, Momentum, ReLU, SimpleCNN,
                 convolve2d, cross_entropy_loss, evaluate, softmax)


def images(n, seed=0):
    """n random float32 images of shape (1, 28, 28)."""
    return np.random.default_rng(seed).random((n, 1, 28, 28)).astype(np.float32)


def snapshot(layer):
    return {name: value.copy() for name, value in layer.params.items()}


def assert_unchanged(layer, before):
    for name, value in before.items():
        assert_array_equal(layer.params[name], value, err_msg=name)
        assert layer.params[name] is getattr(layer, name)


# ---------------------------------------------------------------------------- constructor arguments

BAD_INTEGERS = [
    # (constructor, keyword arguments, exception, message regex)
    (ConvLayer, dict(num_filters=2, filter_size=3, num_channels=1, stride=0), ValueError,
     r"stride must be an integer >= 1; got 0"),
    (ConvLayer, dict(num_filters=2, filter_size=3, num_channels=1, stride=-1), ValueError,
     r"stride must be an integer >= 1; got -1"),
    (ConvLayer, dict(num_filters=2, filter_size=3, num_channels=1, stride=1.5), TypeError,
     r"stride must be an integer >= 1; got 1\.5"),
    (ConvLayer, dict(num_filters=2, filter_size=3, num_channels=1, stride=True), TypeError,
     r"stride must be an integer >= 1; got True"),
    (ConvLayer, dict(num_filters=2, filter_size=3, num_channels=1, padding=-1), ValueError,
     r"padding must be an integer >= 0; got -1"),
    (ConvLayer, dict(num_filters=2, filter_size=3, num_channels=1, padding=1.5), TypeError,
     r"padding must be an integer >= 0; got 1\.5"),
    (ConvLayer, dict(num_filters=2, filter_size=3, num_channels=1, padding=True), TypeError,
     r"padding must be an integer >= 0; got True"),
    (ConvLayer, dict(num_filters=2, filter_size=2.5, num_channels=1), TypeError,
     r"filter_size.*must be an integer >= 1; got 2\.5"),
    (ConvLayer, dict(num_filters=2, filter_size="3", num_channels=1), TypeError,
     r"filter_size.*must be an integer >= 1; got '3'"),
    (ConvLayer, dict(num_filters=2, filter_size=0, num_channels=1), ValueError,
     r"filter_size.*must be an integer >= 1; got 0"),
    (ConvLayer, dict(num_filters=0, filter_size=3, num_channels=1), ValueError,
     r"num_filters must be an integer >= 1; got 0"),
    (ConvLayer, dict(num_filters=2, filter_size=3, num_channels=1.0), TypeError,
     r"num_channels must be an integer >= 1; got 1\.0"),
    (MaxPoolLayer, dict(pool_size=0), ValueError, r"pool_size must be an integer >= 1; got 0"),
    (MaxPoolLayer, dict(pool_size=2.0), TypeError, r"pool_size must be an integer >= 1; got 2\.0"),
    (MaxPoolLayer, dict(pool_size=True), TypeError, r"pool_size must be an integer >= 1; got True"),
    (MaxPoolLayer, dict(stride=0), ValueError, r"stride must be an integer >= 1; got 0"),
    (MaxPoolLayer, dict(stride=-1), ValueError, r"stride must be an integer >= 1; got -1"),
    (MaxPoolLayer, dict(stride=1.5), TypeError, r"stride must be an integer >= 1; got 1\.5"),
    (MaxPoolLayer, dict(stride=True), TypeError, r"stride must be an integer >= 1; got True"),
    (FullyConnectedLayer, dict(input_size=0, output_size=10), ValueError, r"input_size must be an integer >= 1"),
    (FullyConnectedLayer, dict(input_size=4, output_size=2, learning_rate=-0.1), ValueError,
     r"learning_rate must be >= 0; got -0\.1"),
    (Dropout, dict(rate=1.0), ValueError, r"rate must be in \[0, 1\); got 1\.0"),
    (Dropout, dict(rate=-0.2), ValueError, r"rate must be >= 0; got -0\.2"),
    (SimpleCNN, dict(learning_rate=0), ValueError, r"learning_rate must be > 0; got 0"),
    (SimpleCNN, dict(learning_rate=float("nan")), TypeError, r"learning_rate must be a finite real number; got nan"),
    (SimpleCNN, dict(lr_decay=1.5), ValueError, r"lr_decay must be in \(0, 1\]; got 1\.5"),
    (Momentum, dict(momentum=1.0), ValueError, r"momentum must be in \[0, 1\); got 1\.0"),
]


@pytest.mark.parametrize("make, kwargs, error, message", BAD_INTEGERS,
                         ids=[f"{c.__name__}-{k}" for c, k, _, _ in BAD_INTEGERS])
def test_bad_constructor_arguments_are_refused_by_name(make, kwargs, error, message):
    """Stride, padding, sizes, rates: 0, -1, 1.5, True or '3' where an integer (or range) is expected."""
    with pytest.raises(error, match=message):
        make(**kwargs)


def test_numpy_integers_are_accepted_as_sizes():
    """np.int64 sizes are integers too (only bool is refused)."""
    layer = ConvLayer(np.int64(2), np.int64(3), np.int64(1), stride=np.int64(2), padding=np.int32(1))
    assert layer.forward(np.zeros((1, 1, 5, 5), dtype=np.float32)).shape == (1, 2, 3, 3)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(stride=0), ValueError, r"convolve2d: stride must be an integer >= 1; got 0"),
    (dict(stride=True), TypeError, r"convolve2d: stride must be an integer >= 1; got True"),
    (dict(padding=-1), ValueError, r"convolve2d: padding must be an integer >= 0; got -1"),
    (dict(padding=0.5), TypeError, r"convolve2d: padding must be an integer >= 0; got 0\.5"),
])
def test_convolve2d_bad_stride_or_padding(kwargs, error, message):
    """convolve2d checks its stride and padding like the layer does."""
    with pytest.raises(error, match=message):
        convolve2d(np.ones((4, 4)), np.ones((2, 2)), **kwargs)


# ---------------------------------------------------------------------------- input arrays: shape, dtype, values


def test_conv_wrong_number_of_dimensions():
    """A 3-D batch (forgotten channel axis) names X, the 4-D shape expected, and what was given."""
    with pytest.raises(ValueError, match=r"ConvLayer\.forward: X must be a 4-D array of shape \(N, C, H, W\); "
                                         r"got 3-D array of shape \(2, 28, 28\)"):
        ConvLayer(8, 3, 1).forward(np.zeros((2, 28, 28), dtype=np.float32))


def test_conv_channel_count_mismatch():
    """3-channel input to a 1-channel layer names both counts."""
    with pytest.raises(ValueError, match=r"X has 3 channels.*expects num_channels=1"):
        ConvLayer(8, 3, 1).forward(np.zeros((2, 3, 8, 8), dtype=np.float32))


def test_refused_too_small_input_leaves_the_cache_intact(rng):
    """A 4x4 input to a 5x5-kernel layer is refused, and the cache of the last good forward still works."""
    layer, twin = (ConvLayer(2, 5, 1, rng=0, dtype=np.float64) for _ in range(2))
    X = rng.standard_normal((1, 1, 6, 7))
    dout = rng.standard_normal(layer.forward(X).shape)
    twin.forward(X)
    with pytest.raises(ValueError, match=r"5x5 kernel is larger than the padded input 4x4"):
        layer.forward(np.ones((1, 1, 4, 4)))
    assert_array_equal(layer.gradient(dout), twin.gradient(dout))


def test_conv_kernel_larger_than_padded_input():
    """A 5x5 kernel on a 3x3 input with padding 0 names the kernel, the padded size and the remedy."""
    with pytest.raises(ValueError, match=r"5x5 kernel is larger than the padded input 3x3 .*padding 0.*"
                                         r"smaller kernel or more padding"):
        ConvLayer(1, 5, 1).forward(np.zeros((1, 1, 3, 3)))


def test_convolve2d_kernel_larger_than_padded_input():
    """convolve2d refuses a 4x2 kernel on a 3x3 image (padded 3x3)."""
    with pytest.raises(ValueError, match=r"convolve2d: the 4x2 kernel is larger than the padded input 3x3"):
        convolve2d(np.ones((3, 3)), np.ones((4, 2)))


def test_maxpool_window_larger_than_input():
    """A 3x3 pool on a 2x5 input names both sizes."""
    with pytest.raises(ValueError, match=r"3x3 pool window is larger than the 2x5 input"):
        MaxPoolLayer(3, 1).forward(np.zeros((1, 1, 2, 5)))


def test_maxpool_wrong_number_of_dimensions():
    """MaxPoolLayer.forward wants (N, C, H, W)."""
    with pytest.raises(ValueError, match=r"MaxPoolLayer\.forward: X must be a 4-D array of shape \(N, C, H, W\)"):
        MaxPoolLayer().forward(np.zeros((4, 4)))


def test_fully_connected_wrong_feature_count():
    """Unflattened or wrongly sized input to the dense layer names the feature counts and the remedy."""
    fc = FullyConnectedLayer(1568, 10)
    with pytest.raises(ValueError, match=r"X must be a 2-D array of shape \(N, 1568\); got 4-D"):
        fc.forward(np.zeros((2, 8, 14, 14), dtype=np.float32))
    with pytest.raises(ValueError, match=r"X has 1000 features.*expects input_size=1568"):
        fc.forward(np.zeros((2, 1000), dtype=np.float32))


def test_flatten_needs_a_batch_axis():
    """Flatten of a 1-D array asks for (N, ...)."""
    with pytest.raises(ValueError, match=r"Flatten\.forward: X must have a batch axis"):
        Flatten().forward(np.zeros(5))


LAYER_FORWARDS = {
    "ConvLayer": (lambda: ConvLayer(2, 3, 1, padding=1, rng=0), (2, 1, 5, 5)),
    "MaxPoolLayer": (lambda: MaxPoolLayer(2, 2), (2, 1, 4, 4)),
    "ReLU": (ReLU, (2, 3)),
    "Flatten": (Flatten, (2, 1, 2, 2)),
    "FullyConnectedLayer": (lambda: FullyConnectedLayer(3, 2, rng=0), (2, 3)),
    "Dropout": (lambda: Dropout(0.5, rng=0), (2, 3)),
}


@pytest.mark.parametrize("name", sorted(LAYER_FORWARDS))
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_input_is_refused(name, bad):
    """Every layer refuses NaN and infinite inputs, saying how many there are."""
    make, shape = LAYER_FORWARDS[name]
    X = np.ones(shape, dtype=np.float32)
    X.flat[1] = bad
    with pytest.raises(ValueError, match=rf"{name}\.forward: X contains 1 NaN or infinite value\(s\); "
                                         r"expected only finite numbers"):
        make().forward(X)


@pytest.mark.parametrize("name", sorted(LAYER_FORWARDS))
def test_uint8_images_given_to_a_layer_are_refused(name):
    """Integer (uint8) images are refused with the conversion to use: astype('float32') / 255."""
    make, shape = LAYER_FORWARDS[name]
    with pytest.raises(TypeError, match=rf"{name}\.forward: X must be a floating-point array.*got dtype uint8.*"
                                        r"astype\('float32'\) / 255"):
        make().forward(np.ones(shape, dtype=np.uint8))


@pytest.mark.parametrize("name", sorted(LAYER_FORWARDS))
def test_empty_batch_is_refused(name):
    """A batch of 0 images is refused, naming the shape."""
    make, shape = LAYER_FORWARDS[name]
    with pytest.raises(ValueError, match=rf"{name}\.forward: X must not be empty; got shape \(0,"):
        make().forward(np.ones((0,) + shape[1:], dtype=np.float32))


def test_model_refuses_uint8_nan_and_3d_images(mnist):
    """SimpleCNN.train, predict and evaluate give the same clear errors for raw images."""
    model = SimpleCNN()
    (raw, labels), _ = mnist
    with pytest.raises(TypeError, match=r"train: X_train must be a floating-point array.*uint8"):
        model.train(raw[:8].reshape(-1, 1, 28, 28), labels[:8], verbose=0)
    with pytest.raises(ValueError, match=r"X must be a 4-D array of shape \(N, C, H, W\); got 3-D"):
        model.predict(raw[:8].astype(np.float32))
    X = images(4)
    X[2, 0, 3, 3] = np.nan
    with pytest.raises(ValueError, match=r"evaluate: X contains 1 NaN"):
        evaluate(model, X, np.arange(4))


# ---------------------------------------------------------------------------- labels


LABEL = r"(: y|: y_train|: labels)"   # the argument's name in train/evaluate/backward, and in cross_entropy_loss
BAD_LABELS = [
    (np.array([0.5, 1, 2, 3]), TypeError, LABEL + r" must hold integer class indices; got dtype float64"),
    (np.array(["0", "1", "2", "3"]), TypeError, LABEL + r" must hold integer class indices; got dtype <U1"),
    (np.array([0, 1, 10, 3]), ValueError, LABEL + r" must hold class indices in \[0, 9\]; got values from 0 to 10"),
    (np.array([0, -1, 2, 3]), ValueError, LABEL + r" must hold class indices in \[0, 9\]; got values from -1 to 3"),
    (np.eye(10)[[0, 1, 2, 3]], ValueError, LABEL + r" must be a 1-D array of class indices of shape \(N,\); got shape "
                                           r"\(4, 10\)"),
    (np.array([0, 1, 2]), ValueError, r"y.* has 3 labels but there are 4 inputs; expected one label per input"),
]


@pytest.mark.parametrize("labels, error, message", BAD_LABELS,
                         ids=["fractional", "strings", "too-large", "negative", "one-hot", "too-few"])
@pytest.mark.parametrize("call", ["train", "evaluate", "backward", "cross_entropy_loss"])
def test_bad_labels_are_refused(call, labels, error, message):
    """Labels that are not integers in [0, 10), not 1-D, or not one per image are refused with what was expected."""
    model = SimpleCNN()
    X = images(4)
    calls = {
        "train": lambda: model.train(X, labels, epochs=1, verbose=0),
        "evaluate": lambda: evaluate(model, X, labels),
        "backward": lambda: model.backward(X, labels),
        "cross_entropy_loss": lambda: cross_entropy_loss(np.full((4, 10), 0.1), labels),
    }
    before = [snapshot(layer) for layer in model.param_layers]
    with pytest.raises(error, match=message):
        calls[call]()
    for layer, saved in zip(model.param_layers, before):
        assert_unchanged(layer, saved)


def test_whole_float_labels_are_accepted():
    """Float labels holding whole numbers (e.g. 3.0) are accepted as class indices."""
    assert cross_entropy_loss(np.full((2, 10), 0.1), np.array([3.0, 7.0])) == pytest.approx(np.log(10))


def test_x_and_y_of_different_lengths_in_training():
    """train with 6 images and 5 labels names both counts."""
    with pytest.raises(ValueError, match=r"y_train has 5 labels but there are 6 inputs"):
        SimpleCNN().train(images(6), np.arange(5), verbose=0)


def test_empty_training_set_and_bad_epochs_or_batch_size():
    """train refuses an empty set, epochs=0 and batch_size=0 by name."""
    model = SimpleCNN()
    with pytest.raises(ValueError, match=r"train: X_train must not be empty"):
        model.train(images(0), np.arange(0), verbose=0)
    with pytest.raises(ValueError, match=r"epochs must be an integer >= 1; got 0"):
        model.train(images(2), np.arange(2), epochs=0, verbose=0)
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1; got 0"):
        model.train(images(2), np.arange(2), batch_size=0, verbose=0)


# ---------------------------------------------------------------------------- backward


BACKWARD_LAYERS = {
    "ConvLayer": lambda: ConvLayer(2, 3, 1, padding=1, rng=0),
    "MaxPoolLayer": lambda: MaxPoolLayer(2, 2),
    "ReLU": ReLU,
    "Flatten": Flatten,
    "FullyConnectedLayer": lambda: FullyConnectedLayer(3, 2, rng=0),
    "Dropout": lambda: Dropout(0.5, rng=0),
}


@pytest.mark.parametrize("name", sorted(BACKWARD_LAYERS))
def test_backward_before_forward(name):
    """backward (or gradient) before any forward says to run forward first."""
    layer = BACKWARD_LAYERS[name]()
    call = layer.gradient if name == "FullyConnectedLayer" else layer.backward
    with pytest.raises(RuntimeError, match=rf"{name}\.backward called before forward: run forward\(X\)"):
        call(np.ones((2, 2)))


@pytest.mark.parametrize("name", sorted(set(LAYER_FORWARDS) - {"Flatten"}))   # Flatten's backward needs no cache
def test_backward_after_an_evaluation_forward_is_refused(name):
    """forward(X, training=False) keeps no cache, so a following backward is refused, not silently wrong."""
    make, shape = LAYER_FORWARDS[name]
    layer = make()
    out = layer.forward(np.ones(shape, dtype=np.float32), training=False)
    call = layer.gradient if name == "FullyConnectedLayer" else layer.backward
    with pytest.raises(RuntimeError, match=r"called before forward"):
        call(np.ones_like(out))


@pytest.mark.parametrize("name", sorted(LAYER_FORWARDS))
def test_dout_of_the_wrong_shape(name):
    """A dout that does not have the shape of the last output names both shapes."""
    make, shape = LAYER_FORWARDS[name]
    layer = make()
    out = layer.forward(np.ones(shape, dtype=np.float32))
    call = layer.gradient if name == "FullyConnectedLayer" else layer.backward
    bad = np.ones(out.shape[:-1] + (out.shape[-1] + 1,), dtype=np.float32)
    with pytest.raises(ValueError, match=rf"{name}\.backward: dout must have the shape of the last forward output "
                                         rf"{re.escape(str(tuple(out.shape)))}; got"):
        call(bad)


# ---------------------------------------------------------------------------- refusals leave the state intact


def test_refused_forward_leaves_conv_weights_and_cache_intact(rng):
    """After refused forwards (NaN, wrong channels, 3-D, empty, uint8), the weights are unchanged and backward
    still uses the cache of the last good forward."""
    layer, twin = ConvLayer(3, 3, 2, padding=1, rng=0, dtype=np.float64), ConvLayer(3, 3, 2, padding=1, rng=0,
                                                                                     dtype=np.float64)
    X = rng.standard_normal((2, 2, 5, 6))
    out = layer.forward(X)
    twin.forward(X)
    before = snapshot(layer)
    nan = X.copy()
    nan[0, 0, 0, 0] = np.nan
    for bad in (nan, np.ones((2, 3, 5, 6)), np.ones((2, 5, 6)), np.ones((0, 2, 5, 6)),
                np.ones((2, 2, 5, 6), dtype=np.uint8)):
        with pytest.raises((ValueError, TypeError)):
            layer.forward(bad)
    assert_unchanged(layer, before)
    dout = rng.standard_normal(out.shape)
    assert_array_equal(layer.gradient(dout), twin.gradient(dout))
    assert_array_equal(layer.grads["weights"], twin.grads["weights"])


def test_refused_backward_leaves_weights_grads_and_cache_intact(rng):
    """A dout of the wrong shape changes nothing: weights, grads and cache stay as they were."""
    layer, twin = (ConvLayer(3, 3, 2, padding=1, rng=0, dtype=np.float64) for _ in range(2))
    X = rng.standard_normal((2, 2, 5, 6))
    dout = rng.standard_normal(layer.forward(X).shape)
    twin.forward(X)
    layer.gradient(dout)
    grads = {k: v.copy() for k, v in layer.grads.items()}
    before = snapshot(layer)
    with pytest.raises(ValueError, match=r"dout must have the shape"):
        layer.backward(dout[:, :2])
    assert_unchanged(layer, before)
    for name, value in grads.items():
        assert_array_equal(layer.grads[name], value)
    dout2 = rng.standard_normal(dout.shape)
    assert_array_equal(layer.gradient(dout2), twin.gradient(dout2))


def test_refused_learning_rate_in_conv_backward_changes_nothing(rng):
    """ConvLayer.backward(dout, learning_rate=-0.1) is refused by name and leaves weights *and* grads as they were."""
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
        assert_array_equal(layer.grads[name], value, err_msg=f"grads[{name!r}] changed by a refused call")


def test_refused_training_leaves_the_model_as_it_was():
    """A refused train call (bad labels) changes nothing: training afterwards equals a fresh model's training."""
    X, y = images(8), np.arange(8)
    model, fresh = SimpleCNN(seed=1), SimpleCNN(seed=1)
    with pytest.raises(ValueError):
        model.train(X, np.arange(7), verbose=0)
    h1 = model.train(X, y, epochs=1, batch_size=4, verbose=0)
    h2 = fresh.train(X, y, epochs=1, batch_size=4, verbose=0)
    assert h1["loss"] == h2["loss"]
    for a, b in zip(model.param_layers, fresh.param_layers):
        assert_array_equal(a.weights, b.weights)


def test_refused_model_backward_then_good_backward(rng):
    """forward(X); refused backward(X, bad y); backward(X, y) gives the same loss and weights as without the refusal."""
    X, y = images(4), np.array([1, 2, 3, 4])
    model, twin = SimpleCNN(seed=2), SimpleCNN(seed=2)
    model.forward(X)
    twin.forward(X)
    with pytest.raises(ValueError, match=r"class indices in \[0, 9\]"):
        model.backward(X, np.array([1, 2, 3, 99]))
    assert model.backward(X, y) == twin.backward(X, y)
    for a, b in zip(model.param_layers, twin.param_layers):
        assert_array_equal(a.weights, b.weights)


# ---------------------------------------------------------------------------- losses and divergence


@pytest.mark.parametrize("predictions", [
    [[2.0, -1.0, 0.5]],                # logits, not probabilities
    [[0.1, 0.3, 0.2]],                 # logits that happen to lie in [0, 1]: the row sums to 0.6
    [[0.5, 0.9, 0.0]],                 # sums to 1.4
], ids=["negative-logits", "row-sums-0.6", "row-sums-1.4"])
def test_cross_entropy_refuses_non_probabilities(predictions):
    """cross_entropy_loss given something that is not a probability distribution per row says to apply softmax."""
    with pytest.raises(ValueError, match=r"cross_entropy_loss: predictions must be probabilities.*softmax"):
        cross_entropy_loss(np.array(predictions), np.array([1]))


def test_cross_entropy_refuses_wrong_shape_and_nan():
    """1-D predictions and NaN predictions are refused with the expected shape / finiteness."""
    with pytest.raises(ValueError, match=r"predictions must be a 2-D array of shape \(N, num_classes\)"):
        cross_entropy_loss(np.array([0.5, 0.5]), np.array([1]))
    with pytest.raises(ValueError, match=r"predictions contains 1 NaN"):
        cross_entropy_loss(np.array([[np.nan, 0.5]]), np.array([1]))


def test_softmax_refuses_a_scalar_and_nan():
    """softmax needs a class axis and finite logits."""
    with pytest.raises(ValueError, match=r"softmax: x must have at least one axis"):
        softmax(np.float64(1.0))
    with pytest.raises(ValueError, match=r"softmax: x contains 1 NaN"):
        softmax(np.array([[1.0, np.nan]]))


def test_diverging_training_raises_floating_point_error(mnist):
    """Training with learning_rate=1e6 on a few images diverges and must stop with FloatingPointError
    that suggests a smaller learning rate (not run on with losses of 1e5 and more)."""
    (X, y), _ = mnist
    X = cnn.prepare_images(X[:16])
    model = SimpleCNN(learning_rate=1e6, lr_decay=1.0)
    with pytest.raises(FloatingPointError, match=r"smaller learning rate"):
        model.train(X, y[:16], epochs=3, batch_size=4, verbose=0)
