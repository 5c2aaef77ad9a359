"""Where a training step's time goes, and how far it is from what the machine can do.

Explained in the chapter *Performance*, whose roofline and step-time breakdown are
computed with these functions.

:func:`step_breakdown` times training steps with the package's own functions wrapped in
timers, and sorts the time into categories; :func:`matmul_peak` and
:func:`copy_bandwidth` measure the two roofs of a roofline plot, and :func:`conv_flops`
and :func:`network_flops` count the arithmetic set against them.
"""

import contextlib
import time

import numpy as np
from threadpoolctl import threadpool_limits

from . import conv, conv_maxpool, conv_shifts, train
from .batchnorm import BatchNorm
from .conv import ConvLayer
from .layers import Dropout, Flatten, FullyConnectedLayer, MaxPoolLayer, ReLU

#: The categories of :func:`step_breakdown`, in the order a table shows them.
CATEGORIES = (
    "matrix products",
    "copies (im2col, col2im, grids)",
    "batch normalisation",
    "pooling",
    "ReLU, dropout, flatten, loss",
    "optimizer",
    "Python and the rest",
)

# What each category times: functions of the package's modules (replaced by timed
# wrappers while a breakdown runs) and the methods of layer classes.
_FUNCTIONS = {
    "matrix products": [
        (conv, "matmul_in_blocks"),
        (conv_maxpool, "matmul_in_blocks"),
        # with the additions of their terms
        (conv_shifts, "shifted_products"),
        (conv_shifts, "tap_gradients"),
        (conv_shifts, "columns_product"),
        (conv_shifts, "columns_gradient"),
    ],
    "copies (im2col, col2im, grids)": [
        (conv, "im2col"),
        (conv, "_col2im_channels_first"),
        (conv_shifts, "padded_rows"),
        (conv_shifts, "from_grid"),
        (conv_shifts, "to_grid"),
        (conv_shifts, "grid_columns"),
        (conv_shifts, "add_grid_columns"),
    ],
    "pooling": [(conv_maxpool, "max_with_winner"), (conv_maxpool, "route_to_winner")],
    "ReLU, dropout, flatten, loss": [(train, "softmax_cross_entropy")],
}
_LAYERS = {
    BatchNorm: "batch normalisation",
    MaxPoolLayer: "pooling",
    ReLU: "ReLU, dropout, flatten, loss",
    Dropout: "ReLU, dropout, flatten, loss",
    Flatten: "ReLU, dropout, flatten, loss",
    # a dense layer is two small products and a sum
    FullyConnectedLayer: "matrix products",
}


class _Clock:
    """Exclusive times: a timed call inside another timed call (im2col inside a
    convolution's step, a product inside the input gradient) counts for its own
    category only, and is taken out of its caller's."""

    def __init__(self):
        self.seconds = dict.fromkeys(CATEGORIES, 0.0)
        self._stack = []  # [category, seconds spent in timed callees]

    def wrap(self, category, function):
        def timed(*args, **kwargs):
            self._stack.append([category, 0.0])
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                _, inner = self._stack.pop()
                self.seconds[category] += elapsed - inner
                if self._stack:
                    self._stack[-1][1] += elapsed

        return timed


@contextlib.contextmanager
def _timed(clock, model, steps):
    """Wrap the package's functions and the steps' methods in ``clock``'s timers;
    restore them on exit."""
    undo = []
    for category, places in _FUNCTIONS.items():
        for module, name in places:
            original = getattr(module, name)
            setattr(module, name, clock.wrap(category, original))
            undo.append((module, name, original))
    for step in steps:
        category = _LAYERS.get(type(step))
        if category is None:
            continue
        for name in ("forward", "gradient"):
            # an instance attribute hides the class's method until it is deleted
            setattr(step, name, clock.wrap(category, getattr(step, name)))
            undo.append((step, name, None))
    original_step = model.step
    model.step = clock.wrap("optimizer", original_step)
    undo.append((model, "step", None))
    try:
        yield
    finally:
        for owner, name, original in reversed(undo):
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)


def step_breakdown(model, X, y, batch_size=64, steps=30, warmup=3):
    """Milliseconds per training step by category, on one BLAS thread.

    Runs ``warmup`` then ``steps`` training steps of ``model`` (it trains: use a copy
    if it matters) on consecutive batches of (X, y), the package's functions wrapped in
    timers, and returns ``{category: ms per step}`` for :data:`CATEGORIES` plus
    ``"total"``. "Python and the rest" is the total minus the timed categories: the
    interpreter's work between NumPy calls, the layers' checks and small arrays, and
    the convolution's own code around its products and copies.
    """
    clock = _Clock()
    run = model.training_steps()
    needed = (warmup + steps) * batch_size
    if len(X) < needed:
        raise ValueError(
            f"step_breakdown: {warmup} + {steps} steps of {batch_size} images need "
            f"{needed} images; got {len(X)}"
        )
    with threadpool_limits(limits=1, user_api="blas"):
        for b in range(warmup):
            batch = slice(b * batch_size, (b + 1) * batch_size)
            train.train_step(model, X[batch], y[batch], run)
        with _timed(clock, model, run):
            start = time.perf_counter()
            for b in range(warmup, warmup + steps):
                batch = slice(b * batch_size, (b + 1) * batch_size)
                train.train_step(model, X[batch], y[batch], run)
            total = time.perf_counter() - start
    timed = sum(clock.seconds.values())
    clock.seconds["Python and the rest"] = total - timed
    result = {name: 1000 * value / steps for name, value in clock.seconds.items()}
    result["total"] = 1000 * total / steps
    return result


def matmul_peak(threads=1, size=1024, repeats=10):
    """GFLOP/s of a large square float32 matrix product on ``threads`` BLAS threads
    (the best of ``repeats``): the machine's arithmetic roof as BLAS reaches it."""
    A = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    with threadpool_limits(limits=threads, user_api="blas"):
        A @ A  # warm-up
        best = min(_seconds(lambda: A @ A) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def copy_bandwidth(megabytes=64, repeats=10):
    """GB/s of copying a large float32 array (bytes read plus bytes written, the best
    of ``repeats``): the roof of work that only moves memory."""
    source = np.ones(megabytes * 2**20 // 4, dtype=np.float32)
    target = np.empty_like(source)
    np.copyto(target, source)
    best = min(_seconds(lambda: np.copyto(target, source)) for _ in range(repeats))
    return 2 * source.nbytes / best / 1e9


def conv_flops(layer, input_shape, N):
    """Floating-point operations of one product of a convolution layer on a batch of
    ``N`` images of shape ``input_shape`` (C, H, W):
    ``2 * N * OH * OW * F * C * K * K``, a multiply and an add per weight, per output
    pixel. The forward pass, the weight gradient and the input gradient are one such
    product each."""
    C = input_shape[0]
    F, OH, OW = layer.output_shape(input_shape)
    K = layer.filter_size
    return 2 * N * OH * OW * F * C * K * K


def network_flops(model, N):
    """Floating-point operations of one training step of ``model`` on ``N`` images:
    the forward product, the weight gradient and the input gradient of every
    convolution and dense layer, except the first layer's input gradient, which
    training skips. Element-wise work is not counted; it is small beside the products.
    """
    shape, total, first = tuple(model.input_shape), 0, True
    for layer in model.layers:
        if isinstance(layer, ConvLayer):
            one = conv_flops(layer, shape, N)
        elif isinstance(layer, FullyConnectedLayer):
            one = 2 * N * layer.input_size * layer.output_size
        else:
            one = 0
        if one:
            total += one * (2 if first else 3)
            first = False
        shape = layer.output_shape(shape)
    return total


def _seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
