"""MNIST: ``load_mnist`` (the copy shipped in this package, verified by SHA-256) and
image preparation.

Explained in the chapter *Introduction*. Data augmentation lives in :mod:`cnn.augment`.
"""

import hashlib
import os
from pathlib import Path

import numpy as np

#: The copy of MNIST inside the package, in exactly the layout of
#: ``keras.datasets.mnist.load_data()``.
MNIST_PATH = Path(__file__).with_name("data") / "mnist.npz"

#: SHA-256 of each array's raw C-order bytes (``hashlib.sha256(a.tobytes())``), as
#: published with the file.
MNIST_SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}
MNIST_SHAPES = {
    "x_train": (60000, 28, 28),
    "y_train": (60000,),
    "x_test": (10000, 28, 28),
    "y_test": (10000,),
}


class DataIntegrityError(ValueError):
    """A data file is missing, truncated or not the file it claims to be."""


def _verify(name, array, path):
    digest = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
    if (
        array.shape != MNIST_SHAPES[name]
        or array.dtype != np.uint8
        or digest != MNIST_SHA256[name]
    ):
        raise DataIntegrityError(
            f"{path}: array {name!r} is corrupted: got shape {array.shape}, dtype "
            f"{array.dtype}, SHA-256 {digest}; expected shape {MNIST_SHAPES[name]}, "
            f"dtype uint8, SHA-256 {MNIST_SHA256[name]}"
        )


def load_mnist(path=None, verify=True):
    """Load MNIST as ``((X_train, y_train), (X_test, y_test))``, identical to
    ``keras.datasets.mnist.load_data()``.

    Works offline: the arrays come from the copy shipped inside the package
    (or ``path``), loaded with ``allow_pickle=False`` and checked against their
    published SHA-256 sums.

    Returns
    -------
    (X_train, y_train), (X_test, y_test)
        uint8 arrays of shapes (60000, 28, 28), (60000,), (10000, 28, 28), (10000,);
        pixels 0..255, labels 0..9.

    Raises
    ------
    DataIntegrityError
        If the file is missing, unreadable, truncated or does not match its SHA-256
        sums.
    """
    path = Path(os.fspath(path)) if path is not None else MNIST_PATH
    if not path.is_file():
        raise DataIntegrityError(
            f"{path}: MNIST file not found; expected an .npz with keys "
            f"{sorted(MNIST_SHA256)}"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in MNIST_SHA256}
    except KeyError as err:
        raise DataIntegrityError(
            f"{path}: missing array {err}; expected keys {sorted(MNIST_SHA256)}"
        ) from None
    except Exception as err:
        # zipfile.BadZipFile, EOFError, ValueError, OSError: all mean a bad file
        raise DataIntegrityError(
            f"{path}: not a readable MNIST .npz file ({type(err).__name__}: {err}); "
            f"expected arrays with SHA-256 sums {MNIST_SHA256}"
        ) from None
    if verify:
        for name, array in arrays.items():
            _verify(name, array, path)
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def prepare_images(X):
    """uint8 images (N, 28, 28) -> float32 (N, 1, 28, 28) scaled to [0, 1], as in
    Part 10 of the activity."""
    X = np.asarray(X)
    if X.ndim != 3:
        raise ValueError(f"prepare_images: X must have shape (N, H, W); got {X.shape}")
    return X.reshape(-1, 1, *X.shape[1:]).astype(np.float32) / np.float32(255.0)


def load_mnist_prepared():
    """MNIST ready for the network: float32 images (N, 1, 28, 28) in [0, 1] and int64
    labels."""
    (X_train, y_train), (X_test, y_test) = load_mnist()
    return (
        (prepare_images(X_train), y_train.astype(np.int64)),
        (prepare_images(X_test), y_test.astype(np.int64)),
    )
