"""The book's pictures: the confusion matrix counts, and the figures have what a reader
needs."""

import matplotlib

matplotlib.use("Agg")  # no display in tests

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from cnn import viz


def test_confusion_matrix_counts_each_true_predicted_pair():
    cm = viz.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], num_classes=3)
    assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert cm.sum() == 6


def test_confusion_matrix_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="must have the same shape"):
        viz.confusion_matrix([0, 1], [0, 1, 2])


def test_confusion_matrix_plot_writes_every_count_readable_on_its_cell():
    """Every count is written; white on the darkest mistakes, black on light cells, navy
    on the diagonal."""
    cm = np.array([[50, 0, 9], [1, 40, 0], [0, 2, 60]])
    fig = viz.plot_confusion_matrix(cm)
    texts = {
        (round(t.get_position()[1]), round(t.get_position()[0])): t
        for t in fig.axes[0].texts
    }
    assert {k: int(t.get_text()) for k, t in texts.items()} == {
        (i, j): cm[i, j] for i in range(3) for j in range(3)
    }
    # the most frequent mistake
    assert matplotlib.colors.same_color(texts[(0, 2)].get_color(), "white")
    # no mistakes: light cell
    assert matplotlib.colors.same_color(texts[(1, 2)].get_color(), "black")
    # correct answers
    assert matplotlib.colors.same_color(texts[(1, 1)].get_color(), "navy")
    matplotlib.pyplot.close(fig)


def test_show_filters_draws_one_panel_per_filter():
    fig = viz.show_filters(np.random.default_rng(0).standard_normal((8, 1, 3, 3)))
    assert sum(1 for ax in fig.axes if ax.images) == 8
    matplotlib.pyplot.close(fig)


def test_plot_history_over_seeds_draws_the_mean_and_a_band_of_one_std():
    seeds = [
        {"loss": [1.0, 0.5], "val_accuracy": [0.90, 0.95]},
        {"loss": [3.0, 1.5], "val_accuracy": [0.92, 0.97]},
    ]
    single = {"loss": [2.0, 1.0], "val_accuracy": [0.5, 0.6]}
    fig = viz.plot_history(
        {"over seeds": seeds, "one run": single},
        metrics={"loss": "loss", "val_accuracy": "test accuracy (%)"},
        percent=True,
    )
    loss_ax, acc_ax = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["loss", "test accuracy (%)"]
    mean_line, single_line = loss_ax.lines
    assert_array_equal(mean_line.get_ydata(), [2.0, 1.0])
    assert_array_equal(single_line.get_ydata(), [2.0, 1.0])
    assert "2 seeds" in mean_line.get_label() and single_line.get_label() == "one run"
    (band,) = loss_ax.collections  # one band: only the seeded run has one
    band_y = band.get_paths()[0].vertices[:, 1]
    std = np.std([[1.0, 0.5], [3.0, 1.5]], axis=0, ddof=1)
    assert np.isclose(band_y.min(), (np.array([2.0, 1.0]) - std).min())
    assert np.isclose(band_y.max(), (np.array([2.0, 1.0]) + std).max())
    # accuracies in percent
    np.testing.assert_allclose(acc_ax.lines[0].get_ydata(), [91.0, 96.0])
    matplotlib.pyplot.close(fig)
