"""The command line ``python -m cnn``: train and evaluate on a few images, help, and
clear errors."""

import subprocess
import sys

import numpy as np
import pytest

import cnn.__main__
from cnn import load_mnist_prepared
from cnn.__main__ import main
from cnn.io import load_model, save_model
from cnn.networks import two_conv_net


@pytest.fixture(scope="module")
def mnist_head():
    """The first 100 training and test images of MNIST, loaded once for the whole
    module."""
    (X_train, y_train), (X_test, y_test) = load_mnist_prepared()
    return (X_train[:100], y_train[:100]), (X_test[:100], y_test[:100])


@pytest.fixture(autouse=True)
def quick_data(monkeypatch, mnist_head):
    """The command line reads these instead of verifying and converting all 70,000
    images on every call."""
    monkeypatch.setattr(cnn.__main__, "load_mnist_prepared", lambda: mnist_head)


@pytest.mark.parametrize(
    "model, extra",
    [("simple", []), ("two_conv", ["--augment"]), ("deep", ["--validate"])],
)
def test_train_then_evaluate(tmp_path, capsys, model, extra):
    out = tmp_path / f"{model}.npz"
    code = main(
        [
            "train",
            "--model",
            model,
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--learning-rate",
            "0.01",
            "--seed",
            "3",
            "--limit",
            "48",
            "--out",
            str(out),
        ]
        + extra
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "epoch 1/1" in printed and "test accuracy" in printed and str(out) in printed
    assert ("with augmentation" in printed) == ("--augment" in extra)
    assert ("val_accuracy" in printed) == ("--validate" in extra)
    loaded = load_model(out)
    assert loaded.learning_rate == 0.01 and loaded.seed == 3

    assert main(["evaluate", str(out), "--limit", "40"]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "on 40 images" in printed


def test_evaluate_reports_the_accuracy_of_the_saved_model(tmp_path, capsys, mnist_head):
    from cnn import evaluate

    model = two_conv_net(filters=(2, 2))
    save_model(model, tmp_path / "m.npz")
    _, (X_test, y_test) = mnist_head
    assert main(["evaluate", str(tmp_path / "m.npz"), "--limit", "30"]) == 0
    assert f"{evaluate(model, X_test[:30], y_test[:30]):.2%}" in capsys.readouterr().out


def test_missing_or_invalid_model_file(tmp_path, capsys):
    missing = tmp_path / "missing.npz"
    assert main(["evaluate", str(missing)]) == 2
    err = capsys.readouterr().err
    assert (
        str(missing) in err and "no such model file" in err and "Traceback" not in err
    )

    junk = tmp_path / "junk.npz"
    junk.write_text("not a model")
    assert main(["evaluate", str(junk)]) == 2
    err = capsys.readouterr().err
    assert str(junk) in err and "not a readable model file" in err

    other = tmp_path / "other.npz"
    np.savez(other, weights=np.ones(3))
    assert main(["evaluate", str(other)]) == 2
    assert "not a saved model" in capsys.readouterr().err


def test_model_for_other_inputs_is_refused(tmp_path, capsys):
    save_model(
        two_conv_net(filters=(2, 2), input_shape=(1, 8, 8)), tmp_path / "small.npz"
    )
    assert main(["evaluate", str(tmp_path / "small.npz")]) == 2
    assert "(1, 8, 8)" in capsys.readouterr().err


def test_usage_errors_and_help(tmp_path, capsys):
    assert main([]) == 2
    assert main(["train", "--model", "huge"]) == 2
    assert main(["train", "--epochs", "0"]) == 2
    assert main(["train", "--learning-rate", "fast"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert (
        main(
            ["train", "--out", str(tmp_path / "no_such_dir" / "m.npz"), "--limit", "10"]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--help"]) == 0
    printed = capsys.readouterr().out
    for option in (
        "--model",
        "--epochs",
        "--batch-size",
        "--learning-rate",
        "--seed",
        "--out",
        "--augment",
        "--validate",
        "--limit",
    ):
        assert option in printed
    assert main(["evaluate", "--help"]) == 0


def test_python_dash_m(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "cnn", "evaluate", str(tmp_path / "none.npz")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "no such model file" in result.stderr and "Traceback" not in result.stderr
