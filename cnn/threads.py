"""Two cores for one convolution: the slices of a batch (:func:`cnn.conv.batch_slices`)
computed side by side in threads.

A convolution layer cuts its batch into slices whose im2col matrices fit in a core's
cache. The slices are independent, so two threads can each take one, each with its own
buffers and one BLAS thread: NumPy's copies and BLAS's products release Python's global
lock, so the two threads run at once. This keeps every product a cache-sized one, where
handing one large product to a two-threaded BLAS makes it read its matrix from memory.

:func:`cnn.train.blas_limits` turns this on while a model whose ``threads`` is
above one trains or predicts; elsewhere slices run one after another.
"""

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

_workers = 1
_pool = None  # (ThreadPoolExecutor, its number of threads), made on first use
_pool_lock = threading.Lock()


def workers():
    """How many threads :func:`map_slices` uses now (1 outside
    :func:`slice_threads`)."""
    return _workers


@contextlib.contextmanager
def slice_threads(n):
    """A context in which :func:`map_slices` runs up to ``n`` slices at once."""
    global _workers
    previous, _workers = _workers, max(1, int(n))
    try:
        yield
    finally:
        _workers = previous


def map_slices(fn, items):
    """``[fn(item) for item in items]``, in :func:`workers` threads when there are
    several items and several workers (results in the order of ``items``)."""
    if _workers == 1 or len(items) < 2:
        return [fn(item) for item in items]
    # One task per thread, each a run of consecutive items: handing the pool one task
    # per slice cost more in Python than the slices saved.
    n = min(_workers, len(items))
    bounds = [len(items) * i // n for i in range(n + 1)]
    runs = [items[bounds[i] : bounds[i + 1]] for i in range(n)]
    results = _executor(_workers).map(lambda run: [fn(item) for item in run], runs)
    return [result for run in results for result in run]


def _executor(n):
    """The pool of ``n`` threads, made anew when ``n`` changes."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[1] != n:
            if _pool is not None:
                _pool[0].shutdown(wait=True)
            executor = ThreadPoolExecutor(
                max_workers=n, thread_name_prefix="cnn-slices"
            )
            _pool = (executor, n)
        return _pool[0]


def local(store):
    """This thread's own dict inside ``store`` (a dict keyed by thread), for buffers
    that two threads must not share."""
    key = threading.get_ident()
    mine = store.get(key)
    if mine is None:
        mine = store[key] = {}
    return mine
