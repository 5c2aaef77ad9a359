"""The command line ``python -m cnn``: train and evaluate on a few images, read digits
from image files, export to ONNX, help, and clear errors."""

import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import cnn.__main__
from cnn import (
    Flatten,
    FullyConnectedLayer,
    Layer,
    Sequential,
    SimpleCNN,
    load_mnist_prepared,
    prepare_digit,
)
from cnn.__main__ import main
from cnn.io import load_model, save_model
from cnn.networks import deep_cnn, two_conv_net


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


def test_train_in_two_processes(tmp_path):
    """--processes 2 trains (in a Python of its own: this session has imported JAX,
    which training refuses to fork) and saves a model that loads."""
    out = tmp_path / "deep.npz"
    result = subprocess.run(
        [sys.executable, "-m", "cnn", "train", "--model", "deep", "--epochs", "1"]
        + ["--batch-size", "16", "--limit", "64", "--processes", "2"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "epoch 1/1" in result.stdout and "test accuracy" in result.stdout
    assert len(load_model(out).layers) == len(cnn.deep_cnn().layers)


# ------------------------------------------------------------- predict and export


def _digit_files(tmp_path, mnist_head, n=3):
    """The first n test digits as PNG files of dark ink on white paper, 4x larger."""
    _, (X_test, _) = mnist_head
    paths = []
    for i in range(n):
        ink = np.kron(X_test[i, 0], np.ones((4, 4)))
        pixels = np.round(255 * (1 - ink)).astype(np.uint8)
        paths.append(tmp_path / f"digit{i}.png")
        Image.fromarray(np.pad(pixels, 30, constant_values=255)).save(paths[-1])
    return paths


PREDICTION = re.compile(r"^(?P<name>.+): (?P<digit>\d) \((?P<percent>\d+\.\d)%\)$")
PROBABILITIES = re.compile(r"^  " + " ".join(rf"{k}:(\d\.\d{{3}})" for k in range(10)))


def test_predict_prints_each_image_s_digit_and_probabilities(
    tmp_path, capsys, trained, mnist_head
):
    model, _ = trained
    save_model(model, tmp_path / "m.npz")
    paths = _digit_files(tmp_path, mnist_head)
    assert main(["predict", str(tmp_path / "m.npz"), *map(str, paths)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 * len(paths)
    for path, first, second in zip(paths, lines[::2], lines[1::2], strict=True):
        expected = model.predict_proba(prepare_digit(path)[None])[0]
        match = PREDICTION.match(first)
        assert match and match["name"] == str(path)
        assert int(match["digit"]) == expected.argmax()
        assert float(match["percent"]) == pytest.approx(100 * expected.max(), abs=0.05)
        probabilities = [float(p) for p in PROBABILITIES.match(second).groups()]
        assert probabilities == pytest.approx(expected, abs=5e-4)


def test_predict_reports_bad_images_and_still_reads_the_others(
    tmp_path, capsys, trained, mnist_head
):
    model, _ = trained
    save_model(model, tmp_path / "m.npz")
    [good] = _digit_files(tmp_path, mnist_head, n=1)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    white = tmp_path / "white.png"
    Image.new("RGB", (50, 40), "white").save(white)
    missing = tmp_path / "missing.png"
    files = [text, good, white, missing]
    assert main(["predict", str(tmp_path / "m.npz"), *map(str, files)]) == 2
    printed = capsys.readouterr()
    assert PREDICTION.match(printed.out.splitlines()[0])["name"] == str(good)
    assert len(printed.out.splitlines()) == 2
    errors = printed.err.splitlines()
    assert errors == [
        f"error: {text}: not an image file that Pillow can read; expected a PNG, JPEG, "
        "GIF, BMP, WebP or TIFF image of a digit",
        f"error: {white}: no digit found: the image is all one colour (grey level "
        "1.000 everywhere); expected a digit drawn on a plain background",
        f"error: {missing}: no such image file",
    ]


def test_predict_needs_an_mnist_model(tmp_path, capsys, mnist_head):
    [image] = _digit_files(tmp_path, mnist_head, n=1)
    assert main(["predict", str(tmp_path / "none.npz"), str(image)]) == 2
    assert "no such model file" in capsys.readouterr().err
    save_model(
        two_conv_net(filters=(2, 2), input_shape=(1, 8, 8)), tmp_path / "small.npz"
    )
    assert main(["predict", str(tmp_path / "small.npz"), str(image)]) == 2
    assert "(1, 8, 8)" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "small.npz")]) == 2  # no image: usage
    assert "arguments are required: image" in capsys.readouterr().err


def test_export_writes_a_file_that_onnx_runtime_runs(tmp_path, capsys, mnist_head):
    import onnxruntime

    model = deep_cnn(seed=2, filters=(4, 8), hidden=16)
    (X_train, y_train), (X_test, _) = mnist_head
    model.train(X_train, y_train, epochs=1, batch_size=20, verbose=0)
    save_model(model, tmp_path / "deep.npz")
    out = tmp_path / "deep.onnx"
    assert main(["export", str(tmp_path / "deep.npz"), str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines() == [
        f"wrote {out}: ONNX opset 17, {out.stat().st_size:,} bytes",
        "  images (N, 1, 28, 28) float32 -> probabilities, logits (N, 10)",
        "  19 layers -> 19 nodes: Conv x4, BatchNormalization x4, Relu x5, MaxPool x2, "
        "Flatten, Gemm x2, Softmax; 1 Dropout left out (the identity in evaluation)",
    ]
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    probabilities, _ = session.run(None, {"images": X_test})
    assert np.abs(probabilities - model.predict_proba(X_test)).max() <= 1e-5


class TimesTwoForCli(Layer):
    """A reader's layer: saved and loaded by name, but with no ONNX counterpart."""

    def forward(self, X, training=True):
        return 2 * X

    def gradient(self, dout, input_grad=True):
        return 2 * dout


def test_export_errors(tmp_path, capsys, monkeypatch):
    simple = tmp_path / "simple.npz"
    save_model(SimpleCNN(), simple)
    assert main(["export", str(tmp_path / "none.npz"), str(tmp_path / "x.onnx")]) == 2
    assert "no such model file" in capsys.readouterr().err
    assert main(["export", str(simple), str(tmp_path / "no_dir" / "x.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err

    own = tmp_path / "own.npz"
    save_model(
        Sequential([TimesTwoForCli(), Flatten(), FullyConnectedLayer(784, 10)]), own
    )
    assert main(["export", str(own), str(tmp_path / "own.onnx")]) == 2
    err = capsys.readouterr().err
    assert f"error: {own}: export_onnx: layer 0, TimesTwoForCli()" in err
    assert "no ONNX counterpart" in err and not (tmp_path / "own.onnx").exists()

    monkeypatch.setitem(sys.modules, "onnx", None)  # as if onnx were not installed
    assert main(["export", str(simple), str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert 'pip install "cnn[onnx]"' in err and "Traceback" not in err


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    printed = capsys.readouterr().out
    for command in ("train", "evaluate", "predict", "export"):
        assert command in printed
    assert main(["predict", "--help"]) == 0
    assert "prepare_digit" in capsys.readouterr().out
    assert main(["export", "--help"]) == 0
    assert 'pip install "cnn[onnx]"' in " ".join(capsys.readouterr().out.split())
