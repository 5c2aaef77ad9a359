"""What the book's chapters share: claims the build checks, errors shown on purpose,
spreads over seeds.

Every sentence of the book about a computed result ("A beats B", "the two agree", "it
converges faster") is backed by a :func:`claim` in its chapter, so that the build fails,
quoting the sentence, the day the sentence stops being true. Comparisons between
training runs are made over several seeds (:func:`over_seeds`, :class:`Spread`), and a
difference is claimed only where it exceeds the spread (:func:`exceeds_noise`). A cell
that shows an error on purpose runs inside :func:`expect_error`, which fails if the
error is not raised. :class:`ChapterClock` times a chapter's code for its opening line.
:func:`glue` hands a result to the page's text, in the book and in a downloaded
notebook.
"""

import contextlib
import functools
import math
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits


class ClaimError(AssertionError):
    """A sentence of the book about a computed result does not hold for this build's
    results."""


def _short(value):
    """A figure for an error message: floats to 6 significant digits, also inside lists,
    dicts and arrays."""
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    if isinstance(value, np.ndarray):
        return np.array2string(value, precision=6, threshold=20)
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_short(v) for v in value)
        return (
            f"[{inner}]"
            if isinstance(value, list)
            else f"({inner}{',' if len(value) == 1 else ''})"
        )
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_short(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _figures(figures):
    return ", ".join(f"{name} = {_short(value)}" for name, value in figures.items())


def claim(holds, sentence, **figures):
    """Check that a sentence of the book holds for this build's results; fail the build
    if not.

    Parameters
    ----------
    holds : bool
        The condition that makes the sentence true, computed from this build's results.
    sentence : str
        The claim as the prose makes it, quoted in the error message.
    **figures
        The numbers the condition was computed from, shown in the error message.

    Raises
    ------
    ClaimError
        If ``holds`` is false: the message quotes the sentence and the figures that
        contradict it.
    """
    if not bool(holds):
        detail = f" This build measured: {_figures(figures)}." if figures else ""
        raise ClaimError(
            f'The book says "{sentence}", '
            f"but that does not hold for this build.{detail}"
        )


@contextlib.contextmanager
def expect_error(error_type, match=None):
    """Run a block that must raise ``error_type``; print the error's message, as a
    reader would see it.

    The build fails (``ClaimError``) if the block raises nothing or if the message does
    not contain ``match``; an error of another type is not caught, so it fails the cell
    as any error does.

    Example::

        with expect_error(ValueError, "expected 4 dimensions"):
            layer.forward(np.zeros((28, 28)))
    """
    try:
        yield
    except error_type as error:
        message = str(error)
        if match is not None and match not in message:
            raise ClaimError(
                f"expected a {error_type.__name__} whose message contains {match!r}; "
                f"got: {message}"
            ) from error
        print(f"{type(error).__name__}: {message}")
    else:
        raise ClaimError(
            f"expected the code above to raise {error_type.__name__}, "
            "but it raised nothing"
        )


@dataclass(frozen=True)
class Spread:
    """Results of one experiment repeated over seeds: their mean and sample standard
    deviation.

    Formats as ``mean ± std`` with the format spec applied to both: ``f"{s:.2f}"`` gives
    ``"98.12 ± 0.08"``.
    """

    values: tuple

    def __post_init__(self):
        values = tuple(float(v) for v in self.values)
        if not values or not all(math.isfinite(v) for v in values):
            raise ValueError(
                f"Spread needs at least one finite value; got {self.values!r}"
            )
        object.__setattr__(self, "values", values)

    @property
    def mean(self):
        return float(np.mean(self.values))

    @property
    def std(self):
        """Sample standard deviation (ddof=1); 0 for a single value."""
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else 0.0

    @property
    def min(self):
        return min(self.values)

    @property
    def max(self):
        return max(self.values)

    def __len__(self):
        return len(self.values)

    def __format__(self, spec):
        return f"{format(self.mean, spec)} ± {format(self.std, spec)}"

    def __str__(self):
        return format(self, ".4g")


def spread(values, scale=1.0):
    """A :class:`Spread` of ``values`` multiplied by ``scale`` (100 for accuracies as
    percentages)."""
    return Spread(tuple(scale * float(v) for v in values))


def exceeds_noise(a, b):
    """Whether the means of two :class:`Spread` differ by more than the sum of their
    standard deviations.

    This is the book's rule for claiming a difference between two settings: the gap
    between the means must be larger than the seeds' own scatter around each of them.
    With one value on each side there is no spread to compare with, so it raises
    ``ValueError``.
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError(
            "a difference over seeds needs at least two seeds on each side; "
            f"got {len(a)} and {len(b)}"
        )
    return abs(a.mean - b.mean) > a.std + b.std


def compare(a, b, higher, lower, same):
    """One of three phrases, by how :class:`Spread` ``a`` compares with ``b`` over
    seeds.

    ``higher`` if a's mean exceeds b's by more than the spread, ``lower`` if it falls
    short by more than the spread, ``same`` otherwise. Use it to glue a whole sentence,
    so that no fixed text beside it assumes one branch.
    """
    if not exceeds_noise(a, b):
        return same
    return higher if a.mean > b.mean else lower


def _available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def over_seeds(run, seeds, processes=None):
    """``[run(seed) for seed in seeds]``, computed in parallel worker processes.

    Each worker runs with one BLAS thread (as ``Sequential`` trains anyway), so on a
    machine with several cores, several seeds train at once in about the time of one,
    without their thread pools competing. The workers are forked from the calling
    process, so ``run`` may be a function defined in a notebook; its results must be
    picklable (numbers, arrays, histories, models). Pass ``verbose=0`` to ``train``
    inside ``run``.

    Parameters
    ----------
    run : callable
        ``run(seed)`` performs one experiment and returns its result.
    seeds : sequence
        The items to map over: seeds, or any picklable items such as ``(setting, seed)``
        pairs.
    processes : int, optional
        Worker processes; default: one per seed, at most one per available core. 1 runs
        in this process.
    """
    seeds = list(seeds)
    if processes is None:
        processes = min(len(seeds), _available_cores())
    if processes <= 1 or len(seeds) <= 1:
        return [run(seed) for seed in seeds]
    if "jax" in sys.modules:
        # JAX's thread pools do not survive a fork: the workers could deadlock.
        raise RuntimeError(
            "over_seeds forks worker processes, and this process has imported JAX, "
            "which is not fork-safe; run the framework in a subprocess of its own, "
            "or pass processes=1"
        )
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        return pool.map(functools.partial(_single_threaded, run), seeds, chunksize=1)


def _single_threaded(run, seed):
    with threadpool_limits(limits=1, user_api="blas"):
        return run(seed)


def format_duration(seconds):
    """``"45 s"`` or ``"3 min 12 s"``."""
    seconds = int(round(seconds))
    return (
        f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"
    )


def glue(name, value, display=True):
    """Hand ``value`` to the page's text under ``name`` (myst-nb's ``glue``).

    The chapters call this rather than ``myst_nb.glue`` so that a chapter downloaded as
    a notebook runs with only the package installed: without myst-nb (plain Jupyter)
    the value is shown if ``display`` is true, as the book shows it, and nothing else
    happens.
    """
    try:
        # the book's dependency, not the package's
        from myst_nb import glue as myst_glue
    except ImportError:
        if display:
            try:
                from IPython.display import display as show
            except ImportError:  # not even Jupyter: a plain Python script
                show = print
            show(value)
        return
    myst_glue(name, value, display=display)


class ChapterClock:
    """Times a chapter's code: started by its first cell, glued by its last as
    ``chapter_run_time``."""

    def __init__(self):
        self.start = time.perf_counter()

    def seconds(self):
        return time.perf_counter() - self.start

    def glue(self, name="chapter_run_time"):
        """Glue the time since the clock started, as text such as ``"3 min 12 s"``."""
        glue(name, format_duration(self.seconds()), display=False)
