"""MNIST as shipped in the package: shapes, published checksums and class counts,
integrity errors, packaging."""

import configparser
import hashlib
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import cnn
from cnn import DataIntegrityError, load_mnist, prepare_images
from cnn.data import MNIST_PATH, MNIST_SHA256

# Published in /work/shared/data/README.md (the external reference, copied here by
# hand).
PUBLISHED_SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}
PUBLISHED_FILE_SHA256 = (
    "06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64"
)
PUBLISHED_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
PUBLISHED_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
PUBLISHED_MEAN_PIXEL = 33.318
REPO = Path(__file__).resolve().parents[1]


def sha256(array):
    """SHA-256 of an array's raw C-order bytes, as the README defines it."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def arrays_by_name(mnist):
    (x_train, y_train), (x_test, y_test) = mnist
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def test_load_mnist_returns_uint8_arrays_of_the_keras_shapes(mnist):
    """((X_train, y_train), (X_test, y_test)) with uint8 (60000,28,28), (60000,),
    (10000,28,28), (10000,)."""
    arrays = arrays_by_name(mnist)
    shapes = {
        "x_train": (60000, 28, 28),
        "y_train": (60000,),
        "x_test": (10000, 28, 28),
        "y_test": (10000,),
    }
    for name, array in arrays.items():
        assert isinstance(array, np.ndarray) and array.dtype == np.uint8, name
        assert array.shape == shapes[name], name
    assert arrays["y_train"].max() == 9 and arrays["y_test"].min() == 0


@pytest.mark.parametrize("name", sorted(PUBLISHED_SHA256))
def test_array_checksums_match_the_published_sums(mnist, name):
    """Each array's SHA-256 equals the sum published with the data, and the package's
    MNIST_SHA256."""
    digest = sha256(arrays_by_name(mnist)[name])
    assert digest == PUBLISHED_SHA256[name]
    assert MNIST_SHA256[name] == PUBLISHED_SHA256[name]


def test_packaged_file_is_the_published_file():
    """The package's mnist.npz has the published file SHA-256."""
    assert hashlib.sha256(MNIST_PATH.read_bytes()).hexdigest() == PUBLISHED_FILE_SHA256


def test_class_counts_and_mean_pixel_match_the_published_values(mnist):
    """Digits 0-9 occur as often as published, in train and test; the mean pixel is
    33.318."""
    (x_train, y_train), (_, y_test) = mnist
    assert np.bincount(y_train, minlength=10).tolist() == PUBLISHED_TRAIN_COUNTS
    assert np.bincount(y_test, minlength=10).tolist() == PUBLISHED_TEST_COUNTS
    assert x_train.mean() == pytest.approx(PUBLISHED_MEAN_PIXEL, abs=5e-4)


def write_npz(path, arrays):
    np.savez(path, **arrays)
    return path


def test_a_corrupted_pixel_raises_naming_file_and_expected_sha(mnist, tmp_path):
    """One changed pixel in a re-saved copy raises DataIntegrityError naming the file
    and the expected SHA-256."""
    arrays = dict(arrays_by_name(mnist))
    arrays["x_test"] = arrays["x_test"].copy()
    arrays["x_test"][123, 14, 14] ^= 1
    path = write_npz(tmp_path / "mnist_bad.npz", arrays)
    with pytest.raises(DataIntegrityError, match=re.escape(str(path))) as info:
        load_mnist(path)
    message = str(info.value)
    assert "x_test" in message and PUBLISHED_SHA256["x_test"] in message
    assert sha256(arrays["x_test"]) in message  # and the SHA-256 it actually found


def test_an_intact_resaved_copy_loads(mnist, tmp_path):
    """A copy re-saved with np.savez (other file bytes, same arrays) passes the checks:
    sums are of the arrays."""
    path = write_npz(tmp_path / "copy.npz", arrays_by_name(mnist))
    (x_train, _), (_, y_test) = load_mnist(path)
    assert_array_equal(y_test, mnist[1][1])
    assert sha256(x_train) == PUBLISHED_SHA256["x_train"]


def test_a_truncated_file_raises_naming_the_file(tmp_path):
    """Half of the real file raises DataIntegrityError naming the file and the expected
    SHA-256 sums."""
    data = MNIST_PATH.read_bytes()
    path = tmp_path / "truncated.npz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataIntegrityError, match=re.escape(str(path))) as info:
        load_mnist(path)
    assert PUBLISHED_SHA256["x_train"] in str(info.value)


def test_a_missing_array_or_file_raises(mnist, tmp_path):
    """An .npz without y_test, and a path that does not exist, both raise
    DataIntegrityError naming the file."""
    arrays = arrays_by_name(mnist)
    partial = write_npz(
        tmp_path / "partial.npz", {k: v for k, v in arrays.items() if k != "y_test"}
    )
    with pytest.raises(DataIntegrityError, match=re.escape(str(partial)) + ".*y_test"):
        load_mnist(partial)
    missing = tmp_path / "nowhere.npz"
    with pytest.raises(
        DataIntegrityError, match=re.escape(str(missing)) + ".*not found"
    ):
        load_mnist(missing)


def test_wrong_dtype_is_refused(mnist, tmp_path):
    """Labels saved as int64 (same values) are refused: the layout must be exactly
    Keras' uint8."""
    arrays = dict(arrays_by_name(mnist))
    arrays["y_train"] = arrays["y_train"].astype(np.int64)
    path = write_npz(tmp_path / "int64.npz", arrays)
    with pytest.raises(
        DataIntegrityError, match=r"y_train.*dtype int64.*expected.*uint8"
    ):
        load_mnist(path)


def test_prepare_images_gives_float32_nchw_in_unit_interval(mnist):
    """prepare_images: uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) equal to X / 255,
    spanning [0, 1]."""
    (x_train, _), _ = mnist
    X = prepare_images(x_train[:100])
    assert X.dtype == np.float32 and X.shape == (100, 1, 28, 28)
    assert X.min() == 0.0 and X.max() == 1.0
    assert_array_equal(X[:, 0], x_train[:100].astype(np.float32) / np.float32(255.0))


def test_load_mnist_prepared_matches_the_activity_recipe(mnist):
    """load_mnist_prepared == the activity's
    reshape(-1, 1, 28, 28).astype('float32') / 255, labels as int64."""
    (X_train, y_train), (X_test, y_test) = cnn.load_mnist_prepared()
    (x_train, raw_y_train), (x_test, _) = mnist
    assert X_train.shape == (60000, 1, 28, 28) and X_test.shape == (10000, 1, 28, 28)
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    assert_array_equal(X_test, x_test.reshape(-1, 1, 28, 28).astype("float32") / 255.0)
    assert_array_equal(y_train, raw_y_train)


# ---------------------------------------------------------------------------- packaging


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built from a copy of the project (so the repository is not touched), as a
    plain install gets it."""
    src = tmp_path_factory.mktemp("src")
    for name in (
        "pyproject.toml",
        "README.md",
        "setup.py",
        "setup.cfg",
        "MANIFEST.in",
        "LICENSE",
    ):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, src / name)
    shutil.copytree(
        REPO / "cnn", src / "cnn", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(out),
            str(src),
        ],
        check=True,
        capture_output=True,
        cwd=src,
    )
    (path,) = out.glob("cnn-*.whl")
    return path


def test_wheel_contains_the_data_file(wheel):
    """A non-editable install ships cnn/data/mnist.npz, byte for byte the published
    file."""
    with zipfile.ZipFile(wheel) as zf:
        assert "cnn/data/mnist.npz" in zf.namelist()
        assert (
            hashlib.sha256(zf.read("cnn/data/mnist.npz")).hexdigest()
            == PUBLISHED_FILE_SHA256
        )
        assert {
            "cnn/__init__.py",
            "cnn/conv.py",
            "cnn/layers.py",
            "cnn/data.py",
        } <= set(zf.namelist())


def test_wheel_console_scripts_point_to_modules_it_contains(wheel):
    """Every console script declared in the wheel names a module that the wheel actually
    contains."""
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        parser = configparser.ConfigParser()
        for n in entry_points:
            parser.read_string(zf.read(n).decode())
    scripts = (
        dict(parser["console_scripts"]) if parser.has_section("console_scripts") else {}
    )
    for script, target in scripts.items():
        module = target.split(":")[0].strip()
        candidates = {
            module.replace(".", "/") + ".py",
            module.replace(".", "/") + "/__init__.py",
        }
        assert candidates & names, (
            f"console script {script!r} -> {target!r}, but the wheel has no {module}"
        )
