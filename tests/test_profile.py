"""cnn.profile: the step-time breakdown (its categories add up, and it leaves the
package as it found it), the operation counts, and the two roofs."""

import time

import numpy as np
import pytest

import cnn
from cnn import ConvLayer, SimpleCNN, deep_cnn
from cnn.profile import (
    CATEGORIES,
    conv_flops,
    copy_bandwidth,
    matmul_peak,
    network_flops,
    step_breakdown,
)


def _data(n, shape=(1, 12, 12), seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.random((n, *shape), dtype=np.float32),
        rng.integers(0, 10, n),
    )


def test_breakdown_adds_up_and_sees_every_kind_of_work():
    """Every category is there, the timed ones are positive for a network that has
    that work, and together with 'Python and the rest' they make the total."""
    X, y = _data(48)
    model = deep_cnn(filters=(4, 6), hidden=8, input_shape=(1, 12, 12), threads=1)
    times = step_breakdown(model, X, y, batch_size=8, steps=4, warmup=2)
    assert list(times) == [*CATEGORIES, "total"]
    for name in CATEGORIES[:-1]:
        assert times[name] > 0, name
    assert sum(times[name] for name in CATEGORIES) == pytest.approx(times["total"])
    assert 0 <= times["Python and the rest"] < times["total"]


@pytest.mark.parametrize(
    "algorithm, product, copy",
    [
        ("shifts", "shifted_products", "padded_rows"),
        ("grid", "columns_product", "grid_columns"),
    ],
)
def test_breakdown_times_the_grid_algorithms_as_products_and_copies(
    monkeypatch, algorithm, product, copy
):
    """With the convolutions of several channels on the shifted products or the grid's
    columns, the time of their products and of their copies lands in those categories,
    not in 'the rest': each call is made to take 2 ms longer, and the categories grow
    by as much."""
    X, y = _data(48)
    model = deep_cnn(filters=(4, 6), hidden=8, input_shape=(1, 12, 12), threads=1)
    for layer in model.layers:
        if isinstance(layer, ConvLayer) and layer.num_channels > 1:
            layer.algorithm = algorithm
    calls = {product: 0, copy: 0}

    def slowed(name):
        original = getattr(cnn.conv_shifts, name)

        def slow(*args, **kwargs):
            calls[name] += 1
            time.sleep(0.002)
            return original(*args, **kwargs)

        return slow

    for name in calls:
        monkeypatch.setattr(cnn.conv_shifts, name, slowed(name))
    times = step_breakdown(model, X, y, batch_size=8, steps=4, warmup=2)
    per_step = {name: count / 6 * 2.0 for name, count in calls.items()}  # ms
    assert per_step[product] > 0 and per_step[copy] > 0
    assert times["matrix products"] >= per_step[product]
    assert times["copies (im2col, col2im, grids)"] >= per_step[copy]
    assert times["Python and the rest"] < 0.5 * min(per_step.values())


def test_breakdown_leaves_the_package_and_the_model_as_they_were():
    """The timed wrappers are removed: module functions are the originals again, and
    the model's and the layers' methods are their classes' again."""
    originals = (cnn.conv.matmul_in_blocks, cnn.conv.im2col, cnn.train.train_step)
    X, y = _data(40, (1, 28, 28))
    model = SimpleCNN(seed=0)
    step_breakdown(model, X, y, batch_size=8, steps=3, warmup=1)
    assert (cnn.conv.matmul_in_blocks, cnn.conv.im2col, cnn.train.train_step) == (
        originals
    )
    assert cnn.conv_maxpool.matmul_in_blocks is cnn.conv.matmul_in_blocks
    assert "step" not in vars(model)
    for layer in model.layers + model.training_steps():
        assert "forward" not in vars(layer) and "gradient" not in vars(layer)


def test_breakdown_asks_for_enough_images():
    X, y = _data(10, (1, 28, 28))
    with pytest.raises(ValueError, match=r"3 \+ 30 steps of 64 images need 2112"):
        step_breakdown(SimpleCNN(), X, y)


def test_operation_counts():
    """2 * N * OH * OW * F * C * K * K per product; a training step is three products
    per layer but two for the first (no input gradient)."""
    conv = ConvLayer(8, 3, 1, padding=1)
    assert conv_flops(conv, (1, 28, 28), 32) == 2 * 32 * 28 * 28 * 8 * 9
    assert conv_flops(ConvLayer(4, 3, 2, stride=2), (2, 9, 9), 3) == (
        2 * 3 * 4 * 4 * 4 * 2 * 9
    )
    dense = 2 * 32 * 1568 * 10
    assert network_flops(SimpleCNN(), 32) == 2 * (2 * 32 * 28 * 28 * 8 * 9) + 3 * dense
    deep = deep_cnn()
    convs = [
        2 * 64 * 28 * 28 * 16 * 1 * 9,
        2 * 64 * 28 * 28 * 16 * 16 * 9,
        2 * 64 * 14 * 14 * 32 * 16 * 9,
        2 * 64 * 14 * 14 * 32 * 32 * 9,
    ]
    dense = [2 * 64 * 1568 * 128, 2 * 64 * 128 * 10]
    assert network_flops(deep, 64) == 2 * convs[0] + 3 * (sum(convs[1:]) + sum(dense))


def test_roofs_are_positive_rates():
    assert 0 < matmul_peak(1, size=64, repeats=2) < 1e5
    assert 0 < copy_bandwidth(megabytes=1, repeats=2) < 1e4
