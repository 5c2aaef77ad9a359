"""save_model / load_model: round trips, reproducibility, and clear errors for files
that are not models."""

import json

import numpy as np
import pytest

from cnn import Sequential, SimpleCNN
from cnn.batchnorm import BatchNorm
from cnn.io import FORMAT_VERSION, ModelFileError, load_model, save_model
from cnn.layers import Dropout, Flatten, FullyConnectedLayer, ReLU
from cnn.networks import deep_cnn, two_conv_net
from cnn.optim import Momentum


def _data(n=64, shape=(1, 28, 28), seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n,) + shape).astype(np.float32), rng.integers(0, 10, n)


def _layer_arrays(model):
    return [
        {
            name: value.copy()
            for name, value in {**layer.params, **getattr(layer, "buffers", {})}.items()
        }
        for layer in model.layers
    ]


@pytest.mark.parametrize(
    "make",
    [
        lambda: SimpleCNN(seed=1),
        lambda: two_conv_net(seed=2, filters=(2, 3), optimizer="momentum"),
        # a second 28x28 convolution: on one thread it would run the shifted products,
        # on two im2col, so the thread setting must come back too for equal answers
        lambda: deep_cnn(seed=3, filters=(2, 4), hidden=8),
    ],
    ids=["SimpleCNN", "two_conv_net", "deep_cnn"],
)
def test_round_trip_gives_identical_predictions(tmp_path, make):
    X, y = _data()
    model = make()
    # moves the parameters and running statistics
    model.train(X, y, epochs=1, batch_size=16, verbose=0)
    path = tmp_path / "model.npz"
    save_model(model, path)
    loaded = load_model(path)

    assert isinstance(loaded, Sequential)
    assert loaded.saved_class == type(model).__name__
    assert [repr(layer) for layer in loaded.layers] == [
        repr(layer) for layer in model.layers
    ]
    for before, after in zip(_layer_arrays(model), _layer_arrays(loaded), strict=True):
        assert before.keys() == after.keys()
        for name in before:
            assert after[name].dtype == before[name].dtype
            np.testing.assert_array_equal(after[name], before[name])
    for attr in (
        "learning_rate",
        "lr_decay",
        "seed",
        "input_shape",
        "num_classes",
        "threads",
    ):
        assert getattr(loaded, attr) == getattr(model, attr)
    assert type(loaded.optimizer) is type(model.optimizer)
    # evaluation mode: exact
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    # The loaded parameters are live: training the loaded model goes on from the saved
    # weights.
    loaded.train(X, y, epochs=1, batch_size=16, verbose=0)


def test_loaded_batchnorm_keeps_running_statistics_and_hyperparameters(tmp_path):
    bn = BatchNorm(3, momentum=0.7, eps=1e-3)
    model = Sequential(
        [
            Flatten(),
            FullyConnectedLayer(4, 3, rng=0),
            bn,
            ReLU(),
            Dropout(0.3),
            FullyConnectedLayer(3, 2, rng=1, learning_rate=0.3),
        ],
        learning_rate=0.05,
        lr_decay=0.9,
        seed=None,
        optimizer=Momentum(0.05, 0.8, nesterov=True),
        input_shape=(1, 2, 2),
        num_classes=2,
    )
    bn.running_mean[...] = [1.0, 2.0, 3.0]
    bn.running_var[...] = [4.0, 5.0, 6.0]
    save_model(model, tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    lbn = loaded.layers[2]
    assert (lbn.momentum, lbn.eps) == (0.7, 1e-3)
    np.testing.assert_array_equal(lbn.running_mean, [1, 2, 3])
    np.testing.assert_array_equal(lbn.running_var, [4, 5, 6])
    assert loaded.layers[4].rate == 0.3 and loaded.layers[5].learning_rate == 0.3
    assert (
        loaded.seed is None
        and loaded.input_shape == (1, 2, 2)
        and loaded.num_classes == 2
    )
    assert loaded.optimizer.nesterov and loaded.optimizer.momentum == 0.8


def test_float64_models_stay_float64(tmp_path):
    model = two_conv_net(
        filters=(2, 2), input_shape=(1, 6, 6), num_classes=3, dtype=np.float64
    )
    save_model(model, tmp_path / "m.npz")
    assert load_model(tmp_path / "m.npz").layers[0].weights.dtype == np.float64


def test_same_seed_trained_twice_saves_byte_identical_arrays(tmp_path):
    X, y = _data(48)
    paths = []
    for run in range(2):
        model = deep_cnn(seed=5, filters=(2, 3), convs_per_stage=1, hidden=6)
        model.train(X, y, epochs=1, batch_size=16, verbose=0)
        paths.append(tmp_path / f"run{run}.npz")
        save_model(model, paths[-1])
    with (
        np.load(paths[0], allow_pickle=False) as a,
        np.load(paths[1], allow_pickle=False) as b,
    ):
        assert a.files == b.files
        for name in a.files:
            assert (
                a[name].dtype == b[name].dtype
                and a[name].tobytes() == b[name].tobytes()
            ), name


def test_file_layout_is_plain_numpy_and_json(tmp_path):
    save_model(SimpleCNN(), tmp_path / "simple.npz")
    assert not (tmp_path / "simple.npz.part").exists()
    with np.load(tmp_path / "simple.npz", allow_pickle=False) as data:
        architecture = json.loads(data["architecture"].item())
        assert data["architecture"].shape == () and data["layers.0.weights"].shape == (
            8,
            1,
            3,
            3,
        )
    assert (
        architecture["version"] == FORMAT_VERSION
        and architecture["class"] == "SimpleCNN"
    )
    assert [layer["type"] for layer in architecture["layers"]] == [
        "ConvLayer",
        "ReLU",
        "MaxPoolLayer",
        "Flatten",
        "FullyConnectedLayer",
    ]
    assert architecture["layers"][0]["args"] == {
        "num_filters": 8,
        "filter_size": 3,
        "num_channels": 1,
        "stride": 1,
        "padding": 1,
    }
    # the path is used exactly as given
    save_model(SimpleCNN(), tmp_path / "no_extension")
    assert (tmp_path / "no_extension").is_file()


def _rewrite(path, target, change):
    """Copy the model file ``path`` to ``target`` with its architecture changed by
    ``change(dict)``."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    architecture = json.loads(arrays.pop("architecture").item())
    change(architecture, arrays)
    np.savez(target, architecture=np.array(json.dumps(architecture)), **arrays)
    return target


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "good.npz"
    save_model(SimpleCNN(), path)
    return path


def _bad_files(tmp_path, saved):
    text = tmp_path / "notes.txt"
    text.write_text("this is not a model\n")
    random_npz = tmp_path / "random.npz"
    np.savez(random_npz, a=np.arange(3))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros(3))
    version = _rewrite(
        saved, tmp_path / "v99.npz", lambda a, arrays: a.update(version=99)
    )
    unknown = _rewrite(
        saved,
        tmp_path / "unknown.npz",
        lambda a, arrays: a["layers"][1].update(type="Softplus"),
    )
    missing = _rewrite(
        saved,
        tmp_path / "missing.npz",
        lambda a, arrays: arrays.pop("layers.0.weights"),
    )
    misshapen = _rewrite(
        saved,
        tmp_path / "misshapen.npz",
        lambda a, arrays: a["layers"][0]["args"].update(num_filters=4),
    )
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, architecture=np.array([{"format": "cnn-model"}], dtype=object))
    return {
        "missing file": (tmp_path / "nope.npz", "no such model file"),
        "text file": (text, "not a readable model file"),
        "random npz": (random_npz, "not a saved model"),
        "truncated": (truncated, "not a readable model file"),
        "npy": (npy, "not a saved model"),
        "wrong version": (version, "format version 99 is not supported"),
        "unknown layer": (unknown, "unknown type 'Softplus'"),
        "missing array": (missing, "'layers.0.weights' .* missing"),
        "misshapen array": (misshapen, "shape"),
        "pickled object": (pickled, "not a readable model file"),
    }


def test_files_that_are_not_models_give_clear_errors(tmp_path, saved):
    for case, (path, message) in _bad_files(tmp_path, saved).items():
        with pytest.raises(ModelFileError, match=message) as info:
            load_model(path)
        assert str(path) in str(info.value), case


def test_saving_an_unsupported_layer_is_refused(tmp_path):
    """A layer whose constructor argument is not a plain value cannot be written as
    JSON: refused, no file. (A plain subclass of a layer saves; see the tests of
    cnn.layer.)"""

    class Custom(ReLU):
        def __init__(self, function=np.tanh):
            super().__init__()
            self.function = function

    model = Sequential(
        [Flatten(), Custom(), FullyConnectedLayer(4, 2)],
        input_shape=(1, 2, 2),
        num_classes=2,
    )
    with pytest.raises(TypeError, match="cannot save layer"):
        save_model(model, tmp_path / "m.npz")
    assert not list(tmp_path.iterdir())
