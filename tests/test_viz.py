"""The book's pictures: the confusion matrix counts, and the figures have what a reader needs."""
import matplotlib

matplotlib.use("Agg")   # no display in tests

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
    """Every count is written; white on the darkest mistakes, black on light cells, navy on the diagonal."""
    cm = np.array([[50, 0, 9], [1, 40, 0], [0, 2, 60]])
    fig = viz.plot_confusion_matrix(cm)
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in fig.axes[0].texts}
    assert {k: int(t.get_text()) for k, t in texts.items()} == {(i, j): cm[i, j] for i in range(3) for j in range(3)}
    assert matplotlib.colors.same_color(texts[(0, 2)].get_color(), "white")    # the most frequent mistake
    assert matplotlib.colors.same_color(texts[(1, 2)].get_color(), "black")    # no mistakes: light cell
    assert matplotlib.colors.same_color(texts[(1, 1)].get_color(), "navy")     # correct answers
    matplotlib.pyplot.close(fig)


def test_show_filters_draws_one_panel_per_filter():
    fig = viz.show_filters(np.random.default_rng(0).standard_normal((8, 1, 3, 3)))
    assert sum(1 for ax in fig.axes if ax.images) == 8
    matplotlib.pyplot.close(fig)
