"""cnn.book: the checks behind the book's sentences, errors shown on purpose, spreads
over seeds."""

import os
import subprocess
import sys

import numpy as np
import pytest

from cnn.book import (
    ChapterClock,
    ClaimError,
    Spread,
    claim,
    compare,
    exceeds_noise,
    expect_error,
    format_duration,
    glue,
    over_seeds,
    spread,
)


def test_claim_passes_silently_when_it_holds():
    assert claim(2 > 1, "two is more than one", a=2, b=1) is None


def test_claim_quotes_the_sentence_and_the_figures():
    with pytest.raises(ClaimError) as info:
        claim(
            0.82 > 1,
            "an Adam epoch takes longer than an SGD epoch",
            ratio=0.82,
            epochs=3,
        )
    message = str(info.value)
    assert '"an Adam epoch takes longer than an SGD epoch"' in message
    assert "ratio = 0.82" in message and "epochs = 3" in message


def test_claim_shows_floats_short_inside_containers():
    with pytest.raises(ClaimError) as info:
        claim(
            False,
            "s",
            runs=(60.660000000000004, 56.53),
            by_name={"a": np.float64(0.1 + 0.2)},
            grid=np.array([1 / 3, 2 / 3]),
            one=(1.5,),
        )
    message = str(info.value)
    assert "runs = (60.66, 56.53)" in message and "by_name = {'a': 0.3}" in message
    assert "grid = [0.333333 0.666667]" in message and "one = (1.5,)" in message


def test_claim_accepts_numpy_booleans():
    claim(np.bool_(True), "numpy's True holds")
    with pytest.raises(ClaimError):
        claim(np.float64(1.0) < 0.5, "a numpy comparison that fails")


def test_expect_error_prints_the_message(capsys):
    with expect_error(ValueError, "4 dimensions"):
        raise ValueError("expected 4 dimensions (N, C, H, W); got 3")
    assert (
        capsys.readouterr().out
        == "ValueError: expected 4 dimensions (N, C, H, W); got 3\n"
    )


def test_expect_error_fails_when_nothing_is_raised():
    with pytest.raises(ClaimError, match="raised nothing"):
        with expect_error(ValueError):
            pass


def test_expect_error_fails_on_another_message():
    with pytest.raises(ClaimError, match="whose message contains 'shape'"):
        with expect_error(ValueError, "shape"):
            raise ValueError("dtype")


def test_expect_error_lets_another_type_through():
    with pytest.raises(TypeError):
        with expect_error(ValueError):
            raise TypeError("not a ValueError")


def test_spread_mean_std_and_format():
    s = spread([0.97, 0.98, 0.99], 100)
    assert s.mean == pytest.approx(98.0)
    assert s.std == pytest.approx(1.0)  # sample standard deviation, ddof=1
    assert (s.min, s.max) == pytest.approx((97.0, 99.0))
    assert len(s) == 3
    assert f"{s:.2f}" == "98.00 ± 1.00"
    assert Spread((5.0,)).std == 0.0


@pytest.mark.parametrize("values", [(), (1.0, float("nan")), (float("inf"),)])
def test_spread_refuses_empty_or_non_finite(values):
    with pytest.raises(ValueError, match="at least one finite value"):
        Spread(values)


def test_exceeds_noise_compares_the_gap_with_both_spreads():
    a, b = spread([1.0, 2.0, 3.0]), spread([4.0, 5.0, 6.0])  # gap 3, stds 1 + 1
    assert exceeds_noise(a, b) and exceeds_noise(b, a)
    c = spread([2.5, 3.5, 4.5])  # gap 1.5 < 2
    assert not exceeds_noise(a, c)
    with pytest.raises(ValueError, match="at least two seeds"):
        exceeds_noise(Spread((1.0,)), b)


def test_compare_picks_the_phrase():
    low, high, middle = (
        spread([1.0, 1.1, 0.9]),
        spread([5.0, 5.1, 4.9]),
        spread([0.8, 1.2, 1.0]),
    )
    assert compare(high, low, "higher", "lower", "same") == "higher"
    assert compare(low, high, "higher", "lower", "same") == "lower"
    assert compare(low, middle, "higher", "lower", "same") == "same"


def _square_and_pid(seed):
    return seed * seed, os.getpid()


# over_seeds forks, and this test session imports JAX (conftest, for the comparisons
# with JAX), which is not fork-safe: the tests that fork run in a fresh interpreter, as
# a notebook that trains without JAX does.
FORKING = """
import os, sys
import numpy as np
from cnn import SimpleCNN
from cnn.book import over_seeds

assert "jax" not in sys.modules

def square_and_pid(seed):
    return seed * seed, os.getpid()

results = over_seeds(square_and_pid, [3, 1, 2], processes=2)
assert [r[0] for r in results] == [9, 1, 4], results
assert all(pid != os.getpid() for _, pid in results), "the workers are other processes"

rng = np.random.default_rng(0)
X, y = rng.random((64, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 64)

def train(seed):                      # defined in __main__, as in a notebook
    model = SimpleCNN(seed=seed)
    model.train(X, y, epochs=1, batch_size=16, verbose=0)
    return model.predict_proba(X[:8])

parallel = over_seeds(train, [0, 1], processes=2)
serial = over_seeds(train, [0, 1], processes=1)
for p, s in zip(parallel, serial):
    # forked workers train exactly as this process does
    np.testing.assert_array_equal(p, s)
assert not np.array_equal(parallel[0], parallel[1])
print("ok")
"""


def test_over_seeds_in_worker_processes_trains_as_a_loop():
    """Results in the order of the seeds, from other processes, bit-identical to
    training in this process."""
    result = subprocess.run(
        [sys.executable, "-c", FORKING], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[
        -3000:
    ]
    assert "Warning" not in result.stderr, result.stderr[-3000:]


def test_over_seeds_in_this_process():
    results = over_seeds(_square_and_pid, [2, 5], processes=1)
    assert results == [(4, os.getpid()), (25, os.getpid())]


def test_over_seeds_refuses_to_fork_a_process_that_imported_jax():
    import jax  # noqa: F401  (conftest imports it anyway)

    with pytest.raises(RuntimeError, match="imported JAX, which is not fork-safe"):
        over_seeds(_square_and_pid, [1, 2], processes=2)


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0.4, "0 s"),
        (44.6, "45 s"),
        (59.4, "59 s"),
        (60, "1 min 00 s"),
        (192.2, "3 min 12 s"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_chapter_clock_counts_up():
    clock = ChapterClock()
    first = clock.seconds()
    assert 0 <= first <= clock.seconds()


def test_glue_without_myst_nb_shows_the_value_or_nothing(monkeypatch, capsys):
    """A chapter downloaded as a notebook runs where myst-nb is not installed: glue then
    shows what the page shows (the value, or nothing for display=False) and never
    fails."""
    monkeypatch.setitem(sys.modules, "myst_nb", None)  # `import myst_nb` now fails
    assert glue("hidden", 3.25, display=False) is None
    assert capsys.readouterr().out == ""
    glue("shown", "0.987", display=True)
    assert "0.987" in capsys.readouterr().out
