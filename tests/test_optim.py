"""cnn.optim: SGD, Momentum (and Nesterov) and Adam against hand-written references on a
toy quadratic."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from cnn import SGD, Adam, FullyConnectedLayer, Momentum


class Quadratic:
    """The toy problem: loss(W, b) = 0.5 * ||X W + b - T||^2 / N for a float64 dense
    layer."""

    def __init__(self, seed=0, n_in=4, n_out=3, N=20):
        rng = np.random.default_rng(seed)
        self.X = rng.standard_normal((N, n_in))
        self.T = rng.standard_normal((N, n_out))
        self.layer = FullyConnectedLayer(n_in, n_out, rng=seed, dtype=np.float64)
        self.layer.biases[...] = rng.standard_normal(n_out)

    def residual(self, W, b):
        return self.X @ W + b - self.T

    def loss(self):
        return (
            0.5
            * np.sum(self.residual(self.layer.weights, self.layer.biases) ** 2)
            / len(self.X)
        )

    def hand_grads(self, W, b):
        """The gradient worked out by hand: X.T r / N and sum(r) / N."""
        r = self.residual(W, b) / len(self.X)
        return {"weights": self.X.T @ r, "biases": r.sum(axis=0)}

    def backward(self):
        """Fill the layer's grads through its own backward pass."""
        out = self.layer.forward(self.X)
        self.layer.gradient((out - self.T) / len(self.X))


def test_quadratic_gradients_of_the_layer_match_the_hand_formula():
    """The toy problem's gradients from the layer equal X.T r / N and sum(r) / N (so the
    references below are fair)."""
    q = Quadratic()
    q.backward()
    expected = q.hand_grads(q.layer.weights, q.layer.biases)
    for name in ("weights", "biases"):
        assert_allclose(q.layer.grads[name], expected[name], rtol=1e-13)


def test_sgd_step_equals_layer_update():
    """SGD(lr).step([layer]) does exactly what layer.update(lr) does: p -= lr * g."""
    a, b = Quadratic(seed=1), Quadratic(seed=1)
    a.backward()
    b.backward()
    W0 = a.layer.weights.copy()
    SGD(0.3).step([a.layer])
    b.layer.update(0.3)
    assert_array_equal(a.layer.weights, b.layer.weights)
    assert_array_equal(a.layer.biases, b.layer.biases)
    assert_allclose(a.layer.weights, W0 - 0.3 * a.layer.grads["weights"], rtol=1e-15)


def test_sgd_step_learning_rate_argument_overrides():
    """step(layers, learning_rate=x) uses x instead of the optimizer's own rate."""
    a, b = Quadratic(seed=2), Quadratic(seed=2)
    a.backward()
    b.backward()
    SGD(0.3).step([a.layer], learning_rate=0.01)
    b.layer.update(0.01)
    assert_array_equal(a.layer.weights, b.layer.weights)


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_matches_hand_written_reference(nesterov):
    """Five steps of Momentum equal v = mu v - lr g; p += v
    (Nesterov: p += mu v - lr g)."""
    lr, mu = 0.1, 0.9
    q = Quadratic(seed=3)
    opt = Momentum(learning_rate=lr, momentum=mu, nesterov=nesterov)
    W, b = q.layer.weights.copy(), q.layer.biases.copy()
    vW, vb = np.zeros_like(W), np.zeros_like(b)
    for _ in range(5):
        g = q.hand_grads(W, b)
        vW, vb = mu * vW - lr * g["weights"], mu * vb - lr * g["biases"]
        if nesterov:
            W, b = W + mu * vW - lr * g["weights"], b + mu * vb - lr * g["biases"]
        else:
            W, b = W + vW, b + vb
        q.backward()
        opt.step([q.layer])
    assert_allclose(q.layer.weights, W, rtol=1e-12)
    assert_allclose(q.layer.biases, b, rtol=1e-12)


def adam_reference(q, lr, b1, b2, eps, steps, efficient):
    """Adam written out from Kingma and Ba (2015), Algorithm 1; ``efficient`` uses their
    Section 2 variant lr_t = lr sqrt(1 - b2^t) / (1 - b1^t),
    p -= lr_t m / (sqrt(v) + eps)."""
    p = {"weights": q.layer.weights.copy(), "biases": q.layer.biases.copy()}
    m = {k: np.zeros_like(a) for k, a in p.items()}
    v = {k: np.zeros_like(a) for k, a in p.items()}
    for t in range(1, steps + 1):
        g = q.hand_grads(p["weights"], p["biases"])
        for k in p:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            if efficient:
                p[k] = p[k] - lr * np.sqrt(1 - b2**t) / (1 - b1**t) * m[k] / (
                    np.sqrt(v[k]) + eps
                )
            else:
                m_hat, v_hat = m[k] / (1 - b1**t), v[k] / (1 - b2**t)
                p[k] = p[k] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


@pytest.mark.parametrize(
    "eps, efficient",
    [(0.0, False), (1e-8, True)],
    ids=["textbook-eps0", "efficient-eps"],
)
def test_adam_matches_hand_written_reference(eps, efficient):
    """Five Adam steps equal m, v, bias-corrected m_hat, v_hat and
    p -= lr m_hat / (sqrt(v_hat) + eps)."""
    lr, b1, b2 = 0.05, 0.9, 0.999
    q = Quadratic(seed=4)
    expected = adam_reference(q, lr, b1, b2, eps, 5, efficient)
    opt = Adam(learning_rate=lr, beta1=b1, beta2=b2, eps=eps)
    for _ in range(5):
        q.backward()
        opt.step([q.layer])
    assert_allclose(q.layer.weights, expected["weights"], rtol=1e-12)
    assert_allclose(q.layer.biases, expected["biases"], rtol=1e-12)


def test_adam_in_place_gives_the_bits_of_the_formula_with_temporaries():
    """In float32, three steps of the in-place update equal, bit for bit, the formula
    evaluated with temporary arrays (its step in float64, as ``scale * m`` is)."""
    rng = np.random.default_rng(7)
    p = rng.standard_normal((7, 5)).astype(np.float32)
    layer = FullyConnectedLayer(7, 5, rng=0)
    layer.weights[...] = p
    opt = Adam(learning_rate=0.01)
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t in range(1, 4):
        g = rng.standard_normal(p.shape).astype(np.float32)
        layer.grads = {"weights": g, "biases": np.zeros(5, np.float32)}
        opt.step([layer])
        m = 0.9 * m + (1 - 0.9) * g
        v = 0.999 * v + (1 - 0.999) * g * g
        scale = 0.01 * np.sqrt(1 - 0.999**t) / (1 - 0.9**t)
        p = p - (scale * m / (np.sqrt(v) + 1e-8)).astype(np.float32)
        assert p.dtype == np.float32
        np.testing.assert_array_equal(layer.weights, p)


def test_adam_first_step_has_size_lr_per_parameter():
    """With bias correction, Adam's first step moves every parameter by lr (times the
    sign of its gradient)."""
    q = Quadratic(seed=5)
    W0 = q.layer.weights.copy()
    q.backward()
    Adam(learning_rate=0.01).step([q.layer])
    assert_allclose(
        W0 - q.layer.weights, 0.01 * np.sign(q.layer.grads["weights"]), rtol=1e-5
    )


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda: SGD(0.1),
        lambda: Momentum(0.05, 0.9),
        lambda: Momentum(0.05, 0.9, nesterov=True),
        lambda: Adam(0.05),
    ],
    ids=["sgd", "momentum", "nesterov", "adam"],
)
def test_optimizers_minimise_a_quadratic(make_optimizer):
    """300 steps bring the least-squares loss within 1e-3 of its minimum, found by
    np.linalg.lstsq."""
    q = Quadratic(seed=6)
    A = np.hstack([q.X, np.ones((len(q.X), 1))])
    best = (
        0.5 * np.sum((A @ np.linalg.lstsq(A, q.T, rcond=None)[0] - q.T) ** 2) / len(q.X)
    )
    start = q.loss()
    opt = make_optimizer()
    for _ in range(300):
        q.backward()
        opt.step([q.layer])
    assert q.loss() - best < 1e-3 * (start - best)
