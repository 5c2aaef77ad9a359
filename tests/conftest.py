"""Shared fixtures and helpers for the test suite of the ``cnn`` package.

The helpers here are the *references* the tests compare the package with: plain loops written from
the definitions, kept deliberately naive and independent of the code under test.
"""
import os

os.environ.setdefault("KERAS_BACKEND", "jax")   # before anything imports keras

import numpy as np
import pytest
from hypothesis import settings

import cnn

settings.register_profile("cnn", deadline=None, max_examples=30, print_blob=True)
settings.load_profile("cnn")

# Float64 gradient checks: a correct backward pass agrees with centred differences to about 1e-9;
# a gradient off by a factor of 2 gives 1/3, a transposed or flipped kernel gives O(1).
GRAD_TOL = 1e-6

# Convolution geometries (N, C, H, W, F, K, stride, padding): odd sizes, H != W, every kernel size
# 1, 2, 3, 5, strides 1-3, paddings 0-2, and strides that do not divide H + 2P - K.
CONV_CASES = [
    (1, 1, 5, 4, 1, 1, 1, 0),
    (2, 3, 6, 5, 2, 2, 2, 0),
    (3, 2, 7, 5, 3, 3, 1, 1),
    (2, 1, 8, 6, 2, 3, 3, 2),
    (1, 2, 7, 9, 2, 5, 2, 1),
    (2, 3, 5, 6, 2, 5, 1, 2),
    (1, 1, 4, 7, 1, 3, 2, 0),
    (3, 2, 6, 3, 2, 2, 3, 1),
    (2, 2, 5, 7, 3, 1, 2, 2),
]

# Pooling geometries (N, C, H, W, pool_size, stride): non-overlapping, overlapping (stride < pool),
# gapped (stride > pool) and sizes the stride does not divide.
POOL_CASES = [
    (1, 1, 4, 6, 2, 2),
    (2, 3, 7, 5, 2, 2),
    (2, 2, 7, 8, 3, 2),
    (3, 1, 6, 7, 3, 1),
    (1, 2, 9, 6, 2, 3),
    (2, 2, 5, 5, 5, 1),
    (1, 3, 8, 5, 1, 1),
]


def case_id(case):
    """A readable test id for a geometry tuple."""
    return "x".join(str(v) for v in case)


@pytest.fixture
def rng():
    """A fresh, seeded float64 random generator for each test."""
    return np.random.default_rng(20240607)


def make_conv(F, C, K, stride=1, padding=0, impl="vectorized", dtype=np.float64, seed=0):
    """A ConvLayer with random weights *and* random (non-zero) biases, so bias bugs are visible."""
    layer = cnn.ConvLayer(F, K, C, stride=stride, padding=padding, rng=seed, dtype=dtype, impl=impl)
    layer.biases[...] = np.random.default_rng(seed + 1).standard_normal(F)   # in place: params stay live
    return layer


def conv_reference(X, Wt, b, stride, padding):
    """Convolution layer forward from its definition, one multiply-add at a time (cross-correlation)."""
    N, C, H, W = X.shape
    F, _, K, _ = Wt.shape
    Xp = np.zeros((N, C, H + 2 * padding, W + 2 * padding))
    Xp[:, :, padding : padding + H, padding : padding + W] = X
    OH = (H + 2 * padding - K) // stride + 1
    OW = (W + 2 * padding - K) // stride + 1
    out = np.zeros((N, F, OH, OW))
    for n in range(N):
        for f in range(F):
            for i in range(OH):
                for j in range(OW):
                    total = b[f]
                    for c in range(C):
                        for a in range(K):
                            for d in range(K):
                                total += Xp[n, c, i * stride + a, j * stride + d] * Wt[f, c, a, d]
                    out[n, f, i, j] = total
    return out


def maxpool_reference(X, P, s, dout=None):
    """Max pooling forward (and, given dout, backward) with loops; ties go to the first maximum in
    row-major order of the window, exactly as ``np.argmax`` picks it."""
    N, C, H, W = X.shape
    OH, OW = (H - P) // s + 1, (W - P) // s + 1
    out = np.zeros((N, C, OH, OW), dtype=X.dtype)
    dX = np.zeros(X.shape)
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    window = X[n, c, i * s : i * s + P, j * s : j * s + P]
                    out[n, c, i, j] = window.max()
                    if dout is not None:
                        a, d = np.unravel_index(np.argmax(window), window.shape)
                        dX[n, c, i * s + a, j * s + d] += dout[n, c, i, j]
    return out if dout is None else (out, dX)


def distinct_values(shape, rng, spacing=0.01):
    """An array whose entries are all different by at least ``spacing``: no ties and no near-ties,
    so max pooling is differentiable at it and centred differences with h=1e-5 do not cross a kink."""
    n = int(np.prod(shape))
    return (rng.permutation(n).astype(np.float64) * spacing - n * spacing / 2).reshape(shape)


def away_from_zero(shape, rng, margin=1e-3):
    """Standard normal values with |x| >= margin, so ReLU's kink at 0 is never crossed by h=1e-5."""
    X = rng.standard_normal(shape)
    return np.where(np.abs(X) < margin, np.copysign(margin, X) + X, X)


@pytest.fixture(scope="session")
def mnist():
    """The whole MNIST as ``load_mnist()`` returns it (uint8), loaded and verified once per session."""
    return cnn.load_mnist()


@pytest.fixture(scope="session")
def small_mnist(mnist):
    """A small prepared subset: 500 training images and 1000 held-out test images, float32 in [0, 1]."""
    (X_train, y_train), (X_test, y_test) = mnist
    return ((cnn.prepare_images(X_train[:500]), y_train[:500].astype(np.int64)),
            (cnn.prepare_images(X_test[:1000]), y_test[:1000].astype(np.int64)))
