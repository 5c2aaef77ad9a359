"""cnn.losses: softmax, cross-entropy and the gradient that starts backpropagation
(Part 7), against hand-worked values, numerical gradients, JAX and any finite logits
(hypothesis); their refusals of bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

import cnn
from cnn import (
    cross_entropy_from_logits,
    cross_entropy_loss,
    log_softmax,
    numerical_gradient,
    rel_error,
    softmax,
    softmax_cross_entropy_gradient,
)


def test_softmax_rows_sum_to_one_and_are_positive(rng):
    """Each row of softmax is a probability distribution."""
    p = softmax(5 * rng.standard_normal((6, 10)))
    assert p.shape == (6, 10)
    assert np.all(p > 0)
    assert_allclose(p.sum(axis=1), 1.0, rtol=1e-14)


def test_softmax_hand_worked_example():
    """softmax([0, ln 2, ln 3]) = [1, 2, 3] / 6."""
    assert_allclose(
        softmax(np.array([[0.0, np.log(2.0), np.log(3.0)]])),
        [[1 / 6, 2 / 6, 3 / 6]],
        rtol=1e-14,
    )


def test_softmax_invariant_to_adding_a_constant_per_row(rng):
    """softmax(x + c) == softmax(x) for any constant c added to a whole row."""
    x = rng.standard_normal((4, 5))
    shift = np.array([[1000.0], [-1000.0], [3.5], [0.0]])
    assert_allclose(softmax(x + shift), softmax(x), rtol=1e-12)


@pytest.mark.parametrize(
    "logits, expected",
    [
        ([[1e4, 0.0]], [[1.0, 0.0]]),
        ([[1e4, 1e4]], [[0.5, 0.5]]),
        ([[-1e4, -1e4, -1e4, -1e4]], [[0.25, 0.25, 0.25, 0.25]]),
        ([[0.0, -1e4]], [[1.0, 0.0]]),
    ],
)
def test_softmax_of_huge_logits_is_finite_and_exact(logits, expected):
    """Logits of magnitude 1e4 (exp would overflow) give exact, finite probabilities."""
    p = softmax(np.array(logits))
    assert np.all(np.isfinite(p))
    assert_array_equal(p, expected)


def test_softmax_works_in_float32_and_keeps_dtype():
    """float32 logits give float32 probabilities, huge values included."""
    p = softmax(np.array([[1e4, 0.0, -1e4]], dtype=np.float32))
    assert p.dtype == np.float32
    assert_array_equal(p, [[1.0, 0.0, 0.0]])


def test_log_softmax_is_exact_where_softmax_underflows():
    """log_softmax([0, -1e4]) = [0, -1e4] exactly, although softmax gives 0 for the
    second class."""
    assert_allclose(
        log_softmax(np.array([[0.0, -1e4]])), [[0.0, -1e4]], rtol=1e-15, atol=0
    )


def test_cross_entropy_hand_worked_example():
    """-mean(log p[label]) on two rows computed by hand: -(ln 0.7 + ln 0.25) / 2."""
    p = np.array([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]])
    expected = -(np.log(0.7) + np.log(0.25)) / 2  # (0.356675 + 1.386294) / 2 = 0.871485
    assert cross_entropy_loss(p, np.array([0, 1])) == pytest.approx(expected, rel=1e-14)
    assert expected == pytest.approx(0.871485, abs=1e-6)


def test_cross_entropy_of_a_perfect_prediction_is_zero():
    """Probability 1 on the right class gives a loss of exactly 0."""
    assert (
        cross_entropy_loss(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([1, 0])) == 0.0
    )


def test_cross_entropy_returns_a_python_float():
    """The loss is a plain float, as the training loop expects."""
    assert type(cross_entropy_loss(np.array([[0.5, 0.5]]), np.array([1]))) is float


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_is_finite_when_a_probability_underflows(dtype):
    """A true-class probability of exactly 0 gives a large but finite loss, -log(tiny)
    of the dtype."""
    loss = cross_entropy_loss(np.array([[1.0, 0.0]], dtype=dtype), np.array([1]))
    assert np.isfinite(loss)
    assert loss == pytest.approx(-np.log(np.finfo(dtype).tiny), rel=1e-6)


def test_cross_entropy_from_logits_equals_loss_of_softmax(rng):
    """cross_entropy_from_logits(z, y) == cross_entropy_loss(softmax(z), y) for moderate
    logits."""
    z, y = 2 * rng.standard_normal((8, 10)), rng.integers(0, 10, 8)
    assert cross_entropy_from_logits(z, y) == pytest.approx(
        cross_entropy_loss(softmax(z), y), rel=1e-12
    )


def test_cross_entropy_from_logits_is_exact_for_huge_logits():
    """Logits [0, 1e4] with label 0 give a loss of exactly 1e4 (the probability would
    underflow to 0)."""
    assert cross_entropy_from_logits(
        np.array([[0.0, 1e4]]), np.array([0])
    ) == pytest.approx(1e4, rel=1e-15)


@pytest.mark.parametrize("N, classes", [(1, 2), (4, 10), (7, 3)])
def test_softmax_cross_entropy_gradient_matches_numerical_gradient(rng, N, classes):
    """(softmax(z) - one_hot(y)) / N is the gradient of cross_entropy_from_logits(z, y)
    with respect to z."""
    z, y = rng.standard_normal((N, classes)), rng.integers(0, classes, N)
    numeric = numerical_gradient(lambda: cross_entropy_from_logits(z, y), z)
    analytic = softmax_cross_entropy_gradient(softmax(z), y)
    assert rel_error(analytic, numeric) < 1e-6


def test_softmax_cross_entropy_gradient_hand_worked_example():
    """(probs - one_hot) / N on two rows worked by hand; each row of the gradient sums
    to 0."""
    g = softmax_cross_entropy_gradient(
        np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]), np.array([0, 2])
    )
    assert_allclose(g, [[-0.15, 0.1, 0.05], [0.05, 0.05, -0.1]], rtol=1e-12, atol=1e-15)
    assert_allclose(g.sum(axis=1), 0.0, atol=1e-15)


# ---------------------------------------------- any finite logits (hypothesis), and JAX


@settings(max_examples=40)
@given(
    st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=1, max_size=12),
    st.floats(-1e3, 1e3),
)
def test_softmax_is_a_distribution_invariant_to_shifts(logits, shift):
    """For any finite logits: probabilities in [0, 1] summing to 1, unchanged by adding
    a constant."""
    x = np.array([logits])
    p = softmax(x)
    assert np.all((p >= 0) & (p <= 1))
    assert abs(p.sum() - 1) < 1e-12
    assert_allclose(softmax(x + shift), p, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("N, classes", [(1, 2), (5, 10), (7, 3)])
def test_softmax_cross_entropy_match_jax(rng, N, classes):
    """softmax, log_softmax, the loss and its gradient equal jax.nn.softmax, log_softmax
    and jax.grad."""
    logits = 3 * rng.standard_normal((N, classes))
    y = rng.integers(0, classes, N)

    @jax.jit
    def reference(z):
        def loss(z):
            return -jnp.mean(
                jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], axis=1)
            )

        return jax.nn.softmax(z), jax.nn.log_softmax(z), loss(z), jax.grad(loss)(z)

    probs, log_probs, loss, grad = reference(logits)
    assert_allclose(cnn.softmax(logits), probs, rtol=1e-13)
    assert_allclose(cnn.log_softmax(logits), log_probs, rtol=1e-13, atol=1e-15)
    assert cnn.cross_entropy_from_logits(logits, y) == pytest.approx(
        float(loss), rel=1e-13
    )
    assert cnn.cross_entropy_loss(cnn.softmax(logits), y) == pytest.approx(
        float(loss), rel=1e-12
    )
    assert_allclose(
        cnn.softmax_cross_entropy_gradient(cnn.softmax(logits), y),
        grad,
        rtol=1e-12,
        atol=1e-15,
    )


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "predictions",
    [
        [[2.0, -1.0, 0.5]],  # logits, not probabilities
        [[0.1, 0.3, 0.2]],  # logits that happen to lie in [0, 1]: the row sums to 0.6
        [[0.5, 0.9, 0.0]],  # sums to 1.4
    ],
    ids=["negative-logits", "row-sums-0.6", "row-sums-1.4"],
)
def test_cross_entropy_refuses_non_probabilities(predictions):
    """cross_entropy_loss given something that is not a probability distribution per row
    says to apply softmax."""
    with pytest.raises(
        ValueError,
        match=r"cross_entropy_loss: predictions must be probabilities.*softmax",
    ):
        cross_entropy_loss(np.array(predictions), np.array([1]))


def test_cross_entropy_refuses_wrong_shape_and_nan():
    """1-D predictions and NaN predictions are refused with the expected
    shape / finiteness."""
    with pytest.raises(
        ValueError, match=r"predictions must be a 2-D array of shape \(N, num_classes\)"
    ):
        cross_entropy_loss(np.array([0.5, 0.5]), np.array([1]))
    with pytest.raises(ValueError, match=r"predictions contains 1 NaN"):
        cross_entropy_loss(np.array([[np.nan, 0.5]]), np.array([1]))


def test_softmax_refuses_a_scalar_and_nan():
    """softmax needs a class axis and finite logits."""
    with pytest.raises(ValueError, match=r"softmax: x must have at least one axis"):
        softmax(np.float64(1.0))
    with pytest.raises(ValueError, match=r"softmax: x contains 1 NaN"):
        softmax(np.array([[1.0, np.nan]]))
