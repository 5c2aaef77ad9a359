"""Pictures for the book: digits, filters, feature maps, learning curves and confusion
matrices.

Every function returns the matplotlib ``Figure`` it drew, with a title and labelled
axes, so a chapter can show it, save it or ``glue`` it.
"""

import numpy as np


def _plt():
    # imported lazily: the layers do not need matplotlib
    import matplotlib.pyplot as plt

    return plt


def _image_grid(pictures, titles, ncols, size, title, fontsize=8, **imshow):
    """Draw ``pictures`` (a sequence of 2-D arrays) in a grid of ``ncols`` columns, each
    under its title.

    ``titles`` holds one ``(text, colour)`` per picture, or None. Returns the figure,
    its axes and the last image drawn (for a colour bar).
    """
    n = len(pictures)
    cols = max(1, min(ncols, n))
    rows = -(-n // cols)
    fig, axes = _plt().subplots(
        rows,
        cols,
        figsize=(size * cols, size * rows + (0.5 if title else 0)),
        squeeze=False,
    )
    image = None
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            image = ax.imshow(pictures[k], **imshow)
            if titles is not None and titles[k] is not None:
                ax.set_title(titles[k][0], fontsize=fontsize, color=titles[k][1])
    if title:
        fig.suptitle(title)
    return fig, axes, image


def show_images(
    images,
    labels=None,
    predictions=None,
    ncols=10,
    title=None,
    cmap="gray",
    size=1.1,
    vmin=None,
    vmax=None,
):
    """A grid of images with their labels (and predictions, in red where they differ).

    Parameters
    ----------
    images : ndarray of shape (N, H, W) or (N, 1, H, W)
    labels, predictions : ndarray of shape (N,), optional
    """
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[:, 0]
    titles = None
    if predictions is not None:
        titles = [
            (
                f"{labels[k]}→{predictions[k]}",
                "crimson" if predictions[k] != labels[k] else "black",
            )
            if labels is not None
            else (f"{predictions[k]}", "black")
            for k in range(len(images))
        ]
    elif labels is not None:
        titles = [(str(label), "black") for label in labels]
    fig, _, _ = _image_grid(
        images, titles, ncols, size, title, fontsize=9, cmap=cmap, vmin=vmin, vmax=vmax
    )
    fig.tight_layout()
    return fig


def show_filters(weights, title="Filters", ncols=8, size=1.2):
    """Each filter of the first input channel, on a symmetric colour scale
    (blue < 0 < red).

    Parameters
    ----------
    weights : ndarray of shape (F, C, K, K)
    """
    w = np.asarray(weights)[:, 0]
    lim = float(np.abs(w).max()) or 1.0
    fig, axes, image = _image_grid(
        w,
        [(f"filter {k}", "black") for k in range(len(w))],
        ncols,
        size,
        title,
        cmap="RdBu_r",
        vmin=-lim,
        vmax=lim,
    )
    fig.colorbar(image, ax=axes, shrink=0.8, label="weight")
    return fig


def show_feature_maps(maps, title="Feature maps", ncols=8, size=1.3, cmap="viridis"):
    """The channels of one feature map, each with its index.

    Parameters
    ----------
    maps : ndarray of shape (C, H, W)
    """
    maps = np.asarray(maps)
    fig, _, _ = _image_grid(
        maps,
        [(f"channel {k}", "black") for k in range(len(maps))],
        ncols,
        size,
        title,
        cmap=cmap,
    )
    fig.tight_layout()
    return fig


def plot_history(
    histories, metrics=("loss", "val_accuracy"), title=None, percent=False
):
    """Learning curves: one panel per metric, one line per run, or per setting trained
    over several seeds.

    Parameters
    ----------
    histories : dict
        Maps a run's name to the history dict returned by ``train``, or to a list of
        such dicts, one per seed: then the line is the mean over the seeds and a band
        shows mean ± one (sample) standard deviation.
    metrics : sequence of str, or dict
        Keys of the history dicts, e.g. ``"loss"``, ``"accuracy"``, ``"val_accuracy"``;
        a dict maps each key to the title of its panel.
    percent : bool
        Show accuracies in percent.
    """
    names = {
        "loss": "training loss",
        "accuracy": "training accuracy",
        "val_loss": "test loss",
        "val_accuracy": "test accuracy",
        "seconds": "seconds per epoch",
    }
    if not isinstance(metrics, dict):
        metrics = {metric: names.get(metric, metric) for metric in metrics}
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    histories = {
        name: runs if isinstance(runs, (list, tuple)) else [runs]
        for name, runs in histories.items()
    }
    several_lines_or_seeds = len(histories) > 1 or any(
        len(runs) > 1 for runs in histories.values()
    )
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False
    )
    for ax, (metric, label) in zip(axes.flat, metrics.items(), strict=True):
        scale = 100 if percent and "accuracy" in metric else 1
        for name, runs in histories.items():
            # (seeds, epochs)
            values = scale * np.array([run[metric] for run in runs], dtype=np.float64)
            epochs = np.arange(1, values.shape[1] + 1)
            mean = values.mean(axis=0)
            legend = (
                name if len(runs) == 1 else f"{name} (mean ± std, {len(runs)} seeds)"
            )
            (line,) = ax.plot(epochs, mean, marker="o", markersize=3, label=legend)
            if len(runs) > 1:
                std = values.std(axis=0, ddof=1)
                ax.fill_between(
                    epochs, mean - std, mean + std, color=line.get_color(), alpha=0.25
                )
        ax.set_xlabel("epoch")
        # epochs are whole numbers
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.grid(alpha=0.3)
        if several_lines_or_seeds:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrix(y_true, y_pred, num_classes=10):
    """Counts ``cm[i, j]`` of images of class ``i`` predicted as class ``j``; shape
    (num_classes, num_classes)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"confusion_matrix: y_true {y_true.shape} and y_pred {y_pred.shape} must "
            "have the same shape"
        )
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def plot_confusion_matrix(cm, title="Confusion matrix"):
    """Draw a confusion matrix with its counts; the diagonal (correct answers) is left
    out of the colour scale."""
    cm = np.asarray(cm)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    im = ax.imshow(off, cmap="Reds")
    # cells where black text would be hard to read on dark red
    dark = off > 0.6 * max(off.max(), 1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            color = "navy" if i == j else ("white" if dark[i, j] else "black")
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                fontsize=8,
                color=color,
                fontweight="bold" if i == j else "normal",
            )
    ax.set_xticks(range(cm.shape[1]))
    ax.set_yticks(range(cm.shape[0]))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, shrink=0.8, label="mistakes")
    fig.tight_layout()
    return fig
