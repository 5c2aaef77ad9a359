"""SimpleCNN and Sequential: architecture, reproducibility, training, backward and evaluation (Parts 8 and 10)."""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import cnn
from cnn import ConvLayer, Dropout, Flatten, FullyConnectedLayer, MaxPoolLayer, ReLU, Sequential, SimpleCNN, evaluate


def all_params(model):
    """Copies of every parameter array of the model, in layer order."""
    return [p.copy() for layer in model.param_layers for p in layer.params.values()]


@pytest.fixture(scope="module")
def trained(small_mnist):
    """A SimpleCNN trained for 3 epochs on 500 MNIST images, with its history (trained once per module)."""
    (X_train, y_train), _ = small_mnist
    model = SimpleCNN(seed=0)
    history = model.train(X_train, y_train, epochs=3, batch_size=32, verbose=0)
    return model, history


# ---------------------------------------------------------------------------- architecture


def test_simplecnn_layers_in_the_activity_order():
    """Conv(8 filters, 3x3, padding 1) -> ReLU -> MaxPool 2x2 -> Flatten -> FC(1568 -> 10)."""
    layers = SimpleCNN().layers
    assert [type(layer) for layer in layers] == [ConvLayer, ReLU, MaxPoolLayer, Flatten, FullyConnectedLayer]
    conv, _, pool, _, fc = layers
    assert (conv.num_filters, conv.filter_size, conv.num_channels, conv.stride, conv.padding) == (8, 3, 1, 1, 1)
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
    """summary lists each layer's output shape and parameter count: 80 conv + 15690 FC = 15770."""
    rows = SimpleCNN().summary()
    assert [shape for _, shape, _ in rows] == [(8, 28, 28), (8, 28, 28), (8, 14, 14), (1568,), (10,)]
    assert [count for _, _, count in rows] == [8 * 9 + 8, 0, 0, 0, 1568 * 10 + 10]
    assert [count for _, _, count in rows] == [80, 0, 0, 0, 15690]
    assert SimpleCNN().num_params() == 15770
    assert rows[0][0].startswith("ConvLayer(num_filters=8, filter_size=3")


def test_loops_impl_network_computes_the_same_probabilities(rng):
    """SimpleCNN(impl='loops') and the default vectorized network give the same forward pass."""
    X = rng.random((2, 1, 28, 28)).astype(np.float32)
    assert_allclose(SimpleCNN(seed=1, impl="loops").forward(X), SimpleCNN(seed=1).forward(X), rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------- reproducibility


def test_same_seed_gives_bit_identical_initial_weights():
    """Two SimpleCNN(seed=3) start from exactly the same weights and biases."""
    for a, b in zip(all_params(SimpleCNN(seed=3)), all_params(SimpleCNN(seed=3))):
        assert_array_equal(a, b)


def test_different_seed_gives_different_weights():
    """SimpleCNN(seed=3) and SimpleCNN(seed=4) differ in both weight arrays."""
    a, b = SimpleCNN(seed=3), SimpleCNN(seed=4)
    for la, lb in zip(a.param_layers, b.param_layers):
        assert not np.array_equal(la.weights, lb.weights)


def test_same_seed_gives_identical_training(small_mnist):
    """Same seed, same data: identical history (loss, accuracy, learning rate) and identical final weights."""
    (X, y), _ = small_mnist
    runs = []
    for _ in range(2):
        model = SimpleCNN(seed=5)
        history = model.train(X[:300], y[:300], epochs=2, batch_size=32, verbose=0)
        runs.append((model, history))
    (m1, h1), (m2, h2) = runs
    for key in ("loss", "accuracy", "learning_rate"):
        assert h1[key] == h2[key], key
    for a, b in zip(all_params(m1), all_params(m2)):
        assert_array_equal(a, b)
    assert not np.array_equal(all_params(m1)[0], all_params(SimpleCNN(seed=5))[0])   # training did change them


# ---------------------------------------------------------------------------- training


def test_short_training_reduces_loss_and_beats_chance(trained, small_mnist):
    """3 epochs on 500 images: the loss falls every epoch and held-out accuracy is far above chance (10%)."""
    model, history = trained
    _, (X_test, y_test) = small_mnist
    assert len(history["loss"]) == 3
    assert history["loss"][0] > history["loss"][1] > history["loss"][2]
    assert history["loss"][-1] < 0.7 * history["loss"][0]
    assert history["accuracy"][-1] > 0.7
    assert evaluate(model, X_test, y_test) > 0.6


def test_history_learning_rate_follows_the_decay():
    """Epoch e trains at learning_rate * lr_decay**e, recorded in the history."""
    rng = np.random.default_rng(0)
    X, y = rng.random((8, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 8)
    history = SimpleCNN(learning_rate=0.1, lr_decay=0.5).train(X, y, epochs=3, batch_size=4, verbose=0)
    assert_allclose(history["learning_rate"], [0.1, 0.05, 0.025], rtol=1e-15)
    assert len(history["seconds"]) == 3


def test_train_with_validation_data_records_val_metrics(small_mnist):
    """validation_data adds val_loss and val_accuracy per epoch; val_accuracy equals evaluate on it."""
    (X, y), (X_val, y_val) = small_mnist
    model = SimpleCNN(seed=1)
    history = model.train(X[:64], y[:64], epochs=1, batch_size=32, validation_data=(X_val[:50], y_val[:50]),
                          verbose=0)
    assert len(history["val_loss"]) == len(history["val_accuracy"]) == 1
    assert history["val_accuracy"][0] == evaluate(model, X_val[:50], y_val[:50])
    expected = cnn.cross_entropy_loss(model.predict_proba(X_val[:50]), y_val[:50])
    assert history["val_loss"][0] == pytest.approx(expected, rel=1e-5)


def test_train_is_silent_with_verbose_zero(capsys):
    """verbose=0 prints nothing."""
    rng = np.random.default_rng(0)
    SimpleCNN().train(rng.random((4, 1, 28, 28)).astype(np.float32), np.arange(4), epochs=1, verbose=0)
    assert capsys.readouterr().out == ""


# ---------------------------------------------------------------------------- backward


def test_backward_without_forward_runs_forward_and_returns_the_loss(rng):
    """model.backward(X, y) with no prior forward returns the batch loss at the old weights and updates."""
    X, y = rng.random((6, 1, 28, 28)).astype(np.float32), np.array([0, 1, 2, 3, 4, 5])
    model, twin = SimpleCNN(seed=2), SimpleCNN(seed=2)
    expected = cnn.cross_entropy_loss(twin.forward(X), y)
    before = all_params(model)
    loss = model.backward(X, y)
    assert isinstance(loss, float)
    assert loss == pytest.approx(expected, rel=1e-5)
    assert all(not np.array_equal(a, b) for a, b in zip(before, all_params(model)))


def test_model_grads_are_the_gradients_before_the_update(rng):
    """After model.backward, each layer's grads are the gradients at the old weights, and p_new = p_old - lr * g."""
    X, y = rng.random((4, 1, 28, 28)).astype(np.float32), np.array([7, 1, 0, 9])
    model, twin = SimpleCNN(seed=6), SimpleCNN(seed=6)
    dout = cnn.softmax_cross_entropy_gradient(twin.forward(X), y)     # the reference: chain rule by hand
    for layer in reversed(twin.layers):
        dout = layer.gradient(dout)
    model.backward(X, y)
    lr = model.current_learning_rate
    for layer, ref in zip(model.param_layers, twin.param_layers):
        for name in ("weights", "biases"):
            assert_allclose(layer.grads[name], ref.grads[name], rtol=1e-5, atol=1e-8)
            assert_allclose(layer.params[name], ref.params[name] - lr * layer.grads[name], rtol=1e-6, atol=1e-8)


def test_conv_backward_with_zero_learning_rate_fills_grads_but_keeps_params(rng):
    """ConvLayer.backward(dout, learning_rate=0) leaves weights and biases unchanged and sets grads."""
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
    """ConvLayer.backward(dout, lr) returns dX and sets W_new = W_old - lr * dW, b_new = b_old - lr * db."""
    layer = ConvLayer(2, 3, 2, stride=2, rng=0, dtype=np.float64)
    X = rng.standard_normal((2, 2, 7, 6))
    out = layer.forward(X)
    dout = rng.standard_normal(out.shape)
    W_old, b_old = layer.weights.copy(), layer.biases.copy()
    dX = layer.backward(dout, learning_rate=0.05)
    assert dX.shape == X.shape
    assert_allclose(layer.weights, W_old - 0.05 * layer.grads["weights"], rtol=1e-14)
    assert_allclose(layer.biases, b_old - 0.05 * dout.sum(axis=(0, 2, 3)), rtol=1e-14)


# ---------------------------------------------------------------------------- prediction and evaluation


def test_evaluate_is_the_fraction_of_correct_predictions(trained, small_mnist):
    """evaluate returns a Python float in [0, 1] equal to mean(predict(X) == y)."""
    model, _ = trained
    _, (X_test, y_test) = small_mnist
    accuracy = evaluate(model, X_test[:200], y_test[:200])
    assert type(accuracy) is float
    assert 0.0 <= accuracy <= 1.0
    assert accuracy == np.mean(model.predict(X_test[:200]) == y_test[:200])


def test_evaluate_hand_worked_counts():
    """A model that predicts 1, 2, 3, 4 scores 2/4 against labels 1, 2, 0, 0."""
    class Fixed:
        num_classes = 10

        def predict(self, X):
            return np.array([1, 2, 3, 4])

    assert evaluate(Fixed(), np.zeros((4, 1, 28, 28), dtype=np.float32), np.array([1, 2, 0, 0])) == 0.5


def test_prediction_does_not_depend_on_batch_size(trained, small_mnist):
    """predict with batch_size 7 and 500 give the same labels and (to rounding) the same probabilities."""
    model, _ = trained
    _, (X_test, _) = small_mnist
    X = X_test[:500]
    assert_array_equal(model.predict(X, batch_size=7), model.predict(X, batch_size=500))
    assert_allclose(model.predict_proba(X, batch_size=7), model.predict_proba(X, batch_size=500), rtol=1e-4,
                    atol=1e-5)


def test_prediction_does_not_change_the_model(trained, small_mnist):
    """predict is pure: the weights stay the same and repeated calls agree."""
    model, _ = trained
    _, (X_test, _) = small_mnist
    before = all_params(model)
    first = model.predict_proba(X_test[:50])
    assert_array_equal(model.predict_proba(X_test[:50]), first)
    for a, b in zip(before, all_params(model)):
        assert_array_equal(a, b)


def test_predict_switches_dropout_off(rng):
    """A network with Dropout predicts deterministically (evaluation mode), while training forward passes differ."""
    model = Sequential([Flatten(), Dropout(0.5, rng=0), FullyConnectedLayer(16, 3, rng=0)],
                       input_shape=(1, 4, 4), num_classes=3)
    X = rng.random((5, 1, 4, 4)).astype(np.float32)
    assert_array_equal(model.predict_proba(X), model.predict_proba(X))
    assert not np.array_equal(model.forward(X), model.forward(X))


# ---------------------------------------------------------------------------- ReLU and max pool commute


def _logits_and_grads(model, X, y, order):
    """Logits and every layer's gradients, running the layers in ``order`` and back."""
    for layer in model.layers:
        if isinstance(layer, Dropout):
            layer.rng = np.random.default_rng(0)   # the same dropout masks in both runs
    logits = model.logits(X, True, order)
    _, dout = cnn.softmax_cross_entropy(logits, y)
    for layer in reversed(order):
        dout = layer.gradient(dout)
    return logits, [g.copy() for layer in model.param_layers for g in layer.grads.values()]


@pytest.mark.parametrize("make", [lambda: SimpleCNN(seed=3, impl="loops"),
                                  lambda: cnn.networks.deep_cnn(seed=3),
                                  lambda: Sequential([ConvLayer(2, 3, 1, rng=1), ReLU(), MaxPoolLayer(3, 1),
                                                      Flatten(), FullyConnectedLayer(2 * 4 * 4, 10, rng=1)],
                                                     input_shape=(1, 8, 8))])
def test_relu_after_the_pool_gives_exactly_the_listed_orders_outputs_and_gradients(rng, make):
    """Training runs each ReLU after the max pool that follows it (they commute): the logits and
    all gradients are bit-for-bit those of the listed order, also with ties at zero (blank image regions)
    and with overlapping windows. (These networks have no convolution that training fuses with its pool.)"""
    model = make()
    C, H, W = model.input_shape
    X = rng.standard_normal((5, C, H, W)).astype(np.float32)
    X[:, :, : H // 2] = 0.0                                    # blank rows: windows of equal values
    y = rng.integers(0, 10, 5)
    fast = model.training_steps()
    swapped = [i for i, layer in enumerate(model.layers) if isinstance(layer, ReLU)
               and i + 1 < len(model.layers) and isinstance(model.layers[i + 1], MaxPoolLayer)]
    assert swapped and all(fast[i] is model.layers[i + 1] and fast[i + 1] is model.layers[i] for i in swapped)
    listed_logits, listed_grads = _logits_and_grads(model, X, y, model.layers)
    fast_logits, fast_grads = _logits_and_grads(model, X, y, fast)
    assert_array_equal(fast_logits, listed_logits)
    for fast_grad, listed_grad in zip(fast_grads, listed_grads):
        assert_array_equal(fast_grad, listed_grad)


@pytest.mark.parametrize("make", [lambda: SimpleCNN(seed=3), lambda: cnn.networks.two_conv_net(seed=3)])
def test_training_order_with_fused_conv_and_pool_gives_the_listed_orders_results(rng, make):
    """With a ConvMaxPool step the logits are still bit-for-bit the listed order's (the same products,
    the same maxima); the convolution's gradients differ only by float32 rounding, because the product
    that sums them over pixels takes the pixels in another order."""
    model = make()
    X = rng.standard_normal((5, 1, 28, 28)).astype(np.float32)
    X[:, :, :14] = 0.0
    y = rng.integers(0, 10, 5)
    fast = model.training_steps()
    assert any(isinstance(step, cnn.conv_maxpool.ConvMaxPool) for step in fast)
    listed_logits, listed_grads = _logits_and_grads(model, X, y, model.layers)
    fast_logits, fast_grads = _logits_and_grads(model, X, y, fast)
    assert_array_equal(fast_logits, listed_logits)
    for fast_grad, listed_grad in zip(fast_grads, listed_grads):
        assert_allclose(fast_grad, listed_grad, rtol=1e-4, atol=1e-6 * np.abs(listed_grad).max())


def test_forward_runs_the_listed_order_so_a_hand_written_backward_works(rng):
    """After model.forward, walking reversed(model.layers) by hand (as the activity does) works."""
    model = SimpleCNN(seed=0)
    X, y = rng.random((3, 1, 28, 28)).astype(np.float32), np.array([1, 2, 3])
    dout = cnn.softmax_cross_entropy_gradient(model.forward(X), y)
    for layer in reversed(model.layers):
        dout = layer.gradient(dout)
    assert dout.shape == X.shape


def test_astype_converts_params_and_buffers_and_keeps_them_live(rng):
    """astype(float64) converts every parameter and BatchNorm statistic; params and attributes stay the
    same arrays (so an update through one is seen by the other); predictions barely change."""
    model = cnn.networks.deep_cnn(seed=0)
    X = rng.random((4, 1, 28, 28)).astype(np.float32)
    before = model.predict_proba(X)
    assert model.astype(np.float64) is model
    for layer in model.layers:
        for store in (layer.params, getattr(layer, "buffers", {})):
            for name, value in store.items():
                assert value.dtype == np.float64 and getattr(layer, name) is value
    assert model.predict_proba(X.astype(np.float64)).dtype == np.float64
    assert_allclose(model.predict_proba(X.astype(np.float64)), before, atol=1e-5)
    model.layers[0].params["weights"][...] = 0
    assert not model.layers[0].weights.any()
