"""Shared fixtures and helpers for the test suite of the ``cnn`` package.

The helpers here are the *references* the tests compare the package with (plain loops
written from the definitions, kept deliberately naive and independent of the code under
test, and the same operations written with JAX), and the checks and fixtures that the
tests of several modules share.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # before anything imports keras

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from jax import lax
from numpy.testing import assert_allclose, assert_array_equal

import cnn
from cnn import SimpleCNN, numerical_gradient_array

settings.register_profile("cnn", deadline=None, max_examples=30, print_blob=True)
settings.load_profile("cnn")
jax.config.update("jax_enable_x64", True)

# Float64 gradient checks: a correct backward pass agrees with centred differences to
# about 1e-9; a gradient off by a factor of 2 gives 1/3, a transposed or flipped kernel
# gives O(1).
GRAD_TOL = 1e-6

# Comparisons with JAX in float64: the same operations, summed in another order.
RTOL, ATOL = 1e-10, 1e-12

# Convolution geometries (N, C, H, W, F, K, stride, padding): odd sizes, H != W, every
# kernel size 1, 2, 3, 5, strides 1-3, paddings 0-2, and strides that do not divide
# H + 2P - K.
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

# Geometries for the shifted products (stride 1, padding at most K - 1): one channel,
# a 1x1 kernel, an even kernel, no padding, the widest padding, a one-row output.
SHIFT_CASES = [
    (1, 1, 5, 4, 1, 1, 1, 0),
    (3, 2, 7, 5, 3, 3, 1, 1),
    (2, 3, 5, 6, 2, 5, 1, 2),
    (2, 2, 6, 9, 3, 2, 1, 1),
    (2, 3, 4, 4, 2, 3, 1, 2),
    (1, 2, 3, 8, 4, 3, 1, 0),
]

# Pooling geometries (N, C, H, W, pool_size, stride): non-overlapping, overlapping
# (stride < pool), gapped (stride > pool) and sizes the stride does not divide.
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


def make_conv(
    F,
    C,
    K,
    stride=1,
    padding=0,
    impl="vectorized",
    dtype=np.float64,
    seed=0,
    algorithm="auto",
):
    """A ConvLayer with random weights *and* random (non-zero) biases, so bias bugs are
    visible."""
    layer = cnn.ConvLayer(
        F,
        K,
        C,
        stride=stride,
        padding=padding,
        rng=seed,
        dtype=dtype,
        impl=impl,
        algorithm=algorithm,
    )
    # in place: params stay live
    layer.biases[...] = np.random.default_rng(seed + 1).standard_normal(F)
    return layer


# ------------------------------------------------------------ references: loops and JAX


def conv_reference(X, Wt, b, stride, padding):
    """Convolution layer forward from its definition, one multiply-add at a time
    (cross-correlation)."""
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
                                total += (
                                    Xp[n, c, i * stride + a, j * stride + d]
                                    * Wt[f, c, a, d]
                                )
                    out[n, f, i, j] = total
    return out


def maxpool_reference(X, P, s, dout=None):
    """Max pooling forward (and, given dout, backward) with loops; ties go to the first
    maximum in row-major order of the window, exactly as ``np.argmax`` picks it."""
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


def jax_conv(X, Wt, b, stride, padding):
    """NCHW / OIHW cross-correlation with JAX, plus a bias per output channel."""
    out = lax.conv_general_dilated(
        X,
        Wt,
        window_strides=(stride, stride),
        padding=[(padding, padding), (padding, padding)],
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
    )
    return out + b[None, :, None, None]


def jax_maxpool(X, P, s):
    """Max pooling with lax.reduce_window over (P, P) windows every s pixels, no
    padding."""
    return lax.reduce_window(X, -jnp.inf, lax.max, (1, 1, P, P), (1, 1, s, s), "VALID")


# ------------------------------------------------------------------------------- inputs


def distinct_values(shape, rng, spacing=0.01):
    """An array whose entries are all different by at least ``spacing``: no ties and no
    near-ties, so max pooling is differentiable at it and centred differences with
    h=1e-5 do not cross a kink."""
    n = int(np.prod(shape))
    return (rng.permutation(n).astype(np.float64) * spacing - n * spacing / 2).reshape(
        shape
    )


def away_from_zero(shape, rng, margin=1e-3):
    """Standard normal values with |x| >= margin, so ReLU's kink at 0 is never crossed
    by h=1e-5."""
    X = rng.standard_normal(shape)
    return np.where(np.abs(X) < margin, np.copysign(margin, X) + X, X)


def images(n, seed=0):
    """n random float32 images of shape (1, 28, 28)."""
    return np.random.default_rng(seed).random((n, 1, 28, 28)).astype(np.float32)


# hypothesis: a seed for the random inputs of a property test
seeds = st.integers(0, 2**32 - 1)


# ------------------------------------------------------------------------------- checks


def assert_gradients_match(errors, tol=GRAD_TOL):
    """Every relative error returned by check_layer/check_model is below tol."""
    assert errors, "nothing was checked"
    bad = {name: err for name, err in errors.items() if not err < tol}
    assert not bad, f"relative errors above {tol}: {bad} (all: {errors})"


def assert_matches_numerical_gradients(layer, X, seed):
    """Analytic dX and parameter gradients equal centred differences to rtol GRAD_TOL.

    Over thousands of random geometries some gradient elements are tiny (one small
    weight times one small dout, ~1e-9), where the centred difference's rounding noise
    (~1e-11) alone exceeds a purely relative 1e-6; an absolute floor of 1e-9 times the
    largest gradient absorbs that noise and nothing else (a wrong gradient is wrong by
    O(1) relative on most elements).
    """
    out = layer.forward(X)
    dout = np.random.default_rng(seed).standard_normal(out.shape)
    analytic = {"X": layer.gradient(dout)}
    analytic.update({name: g.copy() for name, g in layer.grads.items()})
    targets = {"X": X, **layer.params}
    for name, value in targets.items():
        numeric = numerical_gradient_array(lambda: layer.forward(X), value, dout)
        assert_allclose(
            analytic[name],
            numeric,
            rtol=GRAD_TOL,
            atol=1e-9 * max(1.0, np.abs(numeric).max()),
            err_msg=name,
        )


def snapshot(layer):
    return {name: value.copy() for name, value in layer.params.items()}


def assert_unchanged(layer, before):
    for name, value in before.items():
        assert_array_equal(layer.params[name], value, err_msg=name)
        assert layer.params[name] is getattr(layer, name)


def all_params(model):
    """Copies of every parameter array of the model, in layer order."""
    return [p.copy() for layer in model.param_layers for p in layer.params.values()]


# ------------------------------------------------------------- data and a trained model


@pytest.fixture(scope="session")
def mnist():
    """The whole MNIST as ``load_mnist()`` returns it (uint8), loaded and verified once
    per session."""
    return cnn.load_mnist()


@pytest.fixture(scope="session")
def small_mnist(mnist):
    """A small prepared subset: 500 training images and 1000 held-out test images,
    float32 in [0, 1]."""
    (X_train, y_train), (X_test, y_test) = mnist
    return (
        (cnn.prepare_images(X_train[:500]), y_train[:500].astype(np.int64)),
        (cnn.prepare_images(X_test[:1000]), y_test[:1000].astype(np.int64)),
    )


@pytest.fixture(scope="session")
def trained(small_mnist):
    """A SimpleCNN trained for 3 epochs on 500 MNIST images, with its history (trained
    once per session)."""
    (X_train, y_train), _ = small_mnist
    model = SimpleCNN(seed=0)
    history = model.train(X_train, y_train, epochs=3, batch_size=32, verbose=0)
    return model, history
