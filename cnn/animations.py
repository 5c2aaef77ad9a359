"""Animations of four mechanisms of the book, each frame computed by the package's own
functions.

- :func:`animate_convolution`: the kernel slides over a zero-padded image with a stride
  and fills the output, one output pixel per frame, each the :func:`cnn.conv.convolve2d`
  of the window under the kernel (chapter *Convolution*).
- :func:`animate_max_pooling`: max pooling forward, one window per frame
  (:func:`cnn.layers.max_with_winner`), then backward, each window's upstream gradient
  routed to its winner (:func:`cnn.layers.route_to_winner`) (chapter *Pooling*).
- :func:`animate_im2col`: :func:`cnn.conv.im2col` unrolls each window into a column, one
  per frame, then one matrix product computes every output pixel of every filter at once
  (chapter *The convolution layer*).
- :func:`animate_input_gradient`: the input gradient of a convolution as a *full*
  convolution of the upstream gradient (dilated when the stride is above 1) with the
  flipped kernel, one input pixel per frame (chapter *Backpropagation through
  convolution*).

Each function computes all its frames first and returns a :class:`MechanismAnimation`, a
matplotlib ``FuncAnimation`` that also holds what each frame shows (``frames_data``) and
the final arrays (``result``), so that a chapter can check that its last frame equals
the package's result (the output of ``convolve2d``, ``MaxPoolLayer``, ``ConvLayer``).
``anim.to_html()`` is a JavaScript animation that needs neither a server nor a network
connection; :func:`key_frames` draws a few frames side by side, as a static strip for a
printed edition.

The pictures write the numbers in the cells, so they are made for small arrays
(up to about 9 × 9) of small integers. Shapes: an image is ``(H, W)`` (one image, one
channel), a kernel ``(K, K)``.
"""

import base64
import io
import re

import matplotlib
import matplotlib.image
import numpy as np
from matplotlib.animation import FuncAnimation
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .conv import convolve2d, im2col, output_size
from .layers import max_with_winner, route_to_winner

# Cell colours shared by the four animations.
PAD = "#d9d9d9"  # zero padding
DILATION = "#efefef"  # zeros inserted between gradient pixels (stride > 1)
PLAIN = "white"
DONE = "#deebf7"  # an output already computed
CURRENT = "#fdd49e"  # the output being computed in this frame
WINDOW = "#fff3c4"  # the cells under the current window
WINNER = "#fc8d59"  # the maximum of the current pooling window
OLD_WINNER = "#fdd0a2"  # maxima of earlier windows
CROPPED = "#f2f2f2"  # padding rows/columns of a gradient, cut off at the end
EDGE = "crimson"  # outline of the current window / cell
_RGB = {}

# Buttons of matplotlib's JavaScript player, drawn as characters instead of icons from a
# web font (the player links Font Awesome from a CDN, which an offline page cannot
# load).
_BUTTON_GLYPHS = {
    "fa fa-minus": "&minus;",
    "fa fa-fast-backward": "|&#9664;&#9664;",
    "fa fa-step-backward": "|&#9664;",
    "fa fa-play fa-flip-horizontal": "&#9664;",
    "fa fa-pause": "&#10074;&#10074;",
    "fa fa-play": "&#9654;",
    "fa fa-step-forward": "&#9654;|",
    "fa fa-fast-forward": "&#9654;&#9654;|",
    "fa fa-plus": "+",
}


def _text(value):
    """How a number is written in a cell: integers without decimals, NaN
    (not computed yet) as nothing."""
    if value is None or not np.isfinite(value):
        return ""
    if value == 0:
        return "0"  # also for -0.0
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


class _Grid:
    """A matrix drawn as square cells with a number in each, on one Axes; row r, column
    c is at (c, r).

    The cell colours are one image and the cell borders one line collection (a few
    artists instead of one per cell), and the row and column numbers are plain texts
    rather than axis ticks: each frame is drawn in full, so every artist counts.
    """

    def __init__(
        self,
        ax,
        shape,
        title,
        fontsize=10,
        row_labels=None,
        col_labels=None,
        label_size=7,
    ):
        rows, cols = shape
        self.shape = shape
        self.ax = ax
        self.image = ax.imshow(
            np.ones((rows, cols, 3)),
            interpolation="nearest",
            extent=(-0.5, cols - 0.5, rows - 0.5, -0.5),
        )
        lines = [[(-0.5, r - 0.5), (cols - 0.5, r - 0.5)] for r in range(rows + 1)]
        lines += [[(c - 0.5, -0.5), (c - 0.5, rows - 0.5)] for c in range(cols + 1)]
        ax.add_collection(LineCollection(lines, colors="#9e9e9e", linewidths=0.7))
        self.texts = np.empty(shape, dtype=object)
        for r in range(rows):
            for c in range(cols):
                self.texts[r, c] = ax.text(
                    c, r, "", ha="center", va="center", fontsize=fontsize
                )
        row_labels = range(rows) if row_labels is None else row_labels
        col_labels = range(cols) if col_labels is None else col_labels
        for r, label in enumerate(row_labels):
            ax.text(
                -0.6,
                r,
                str(label),
                ha="right",
                va="center",
                fontsize=label_size,
                color="#555555",
            )
        for c, label in enumerate(col_labels):
            ax.text(
                c,
                rows - 0.4,
                str(label),
                ha="center",
                va="top",
                fontsize=label_size,
                color="#555555",
            )
        self.boxes = {}
        ax.set_xlim(-0.6, cols - 0.4)
        ax.set_ylim(rows - 0.4, -0.6)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(title, fontsize=fontsize)

    def show(self, values, colors=None, bold=None):
        """Write ``values`` (NaN: blank) into the cells, fill them with ``colors`` (an
        array of colour names)."""
        for (r, c), value in np.ndenumerate(values):
            self.texts[r, c].set_text(_text(value))
            self.texts[r, c].set_fontweight(
                "bold" if bold is not None and bold[r, c] else "normal"
            )
        rgb = np.ones(self.shape + (3,))
        if colors is not None:
            for name in set(colors.flat):
                rgb[colors == name] = _RGB.setdefault(name, to_rgb(name))
        self.image.set_data(rgb)

    def box(self, name, where, color=EDGE, lw=2.5, ls="-"):
        """Outline rows ``r0:r1`` and columns ``c0:c1`` (``where = (r0, r1, c0, c1)``),
        or hide it (None)."""
        if name not in self.boxes:
            self.boxes[name] = self.ax.add_patch(
                Rectangle(
                    (0, 0), 1, 1, fill=False, edgecolor=color, lw=lw, ls=ls, zorder=5
                )
            )
        patch = self.boxes[name]
        patch.set_visible(where is not None)
        if where is not None:
            r0, r1, c0, c1 = where
            patch.set_bounds(c0 - 0.5, r0 - 0.5, c1 - c0, r1 - r0)


class _Canvas(FigureCanvasAgg):
    """An Agg canvas that draws only when a frame is saved: FuncAnimation asks for an
    extra redraw after each frame (``draw_idle``), which on a canvas without a window
    would draw every frame twice."""

    def draw_idle(self, *args, **kwargs):
        pass


def _figure(width, height, dpi):
    """A figure outside pyplot (so a notebook never shows it as a static picture), drawn
    by Agg."""
    fig = Figure(figsize=(width, height), dpi=dpi, facecolor="white")
    _Canvas(fig)
    return fig


class MechanismAnimation(FuncAnimation):
    """A ``FuncAnimation`` whose frames were all computed before drawing, and that keeps
    them.

    Attributes
    ----------
    frames_data : list of dict
        What each frame shows: arrays (NaN where a value is not computed yet), the
        current window, and the caption. ``len(frames_data)`` is the number of frames.
    result : dict of str to ndarray
        The arrays of the last frame, complete (the package's results, to compare with).
    figure : matplotlib.figure.Figure
        The figure the frames are drawn on (not managed by pyplot).
    """

    def __init__(self, fig, draw, frames_data, result, interval):
        self.figure = fig
        self.frames_data = frames_data
        self.result = result
        self._draw_data = draw
        super().__init__(
            fig,
            self._draw_frame_number,
            frames=len(frames_data),
            interval=interval,
            repeat=False,
            blit=False,
            cache_frame_data=False,
        )

    def _draw_frame_number(self, k):
        self._draw_data(self.frames_data[k])
        return []

    @property
    def num_frames(self):
        """The number of frames."""
        return len(self.frames_data)

    def to_html(self):
        """The animation as HTML with JavaScript controls, all frames embedded as PNG:
        works offline.

        This is matplotlib's ``to_jshtml()`` with two changes: the buttons are drawn
        with characters instead of a web font from a CDN, and the image starts on the
        first frame (so that the page has a picture even before its script runs).
        """
        # the frames at the figure's own dpi
        with matplotlib.rc_context({"savefig.dpi": "figure"}):
            html = self.to_jshtml(default_mode="once")
        html = re.sub(
            r'<link rel="stylesheet"\s+href="https?://[^"]*font-awesome[^"]*">',
            "",
            html,
        )
        for icon, glyph in _BUTTON_GLYPHS.items():
            html = html.replace(
                f'<i class="{icon}"></i>', f'<span class="anim-glyph">{glyph}</span>'
            )
        first = re.search(r'frames\[0\] = "(data:image/[a-z]+;base64,[^"]+)"', html)
        if first is None or "fa fa-" in html:
            raise RuntimeError(
                "matplotlib's JavaScript animation template has changed; update to_html"
            )
        return re.sub(
            r'<img id="(_anim_img\w+)">',
            rf'<img id="\1" src="{first.group(1)}" alt="animation">',
            html,
            count=1,
        )

    def _repr_html_(self):
        return self.to_html()

    def _repr_mimebundle_(self, include=None, exclude=None):
        """The animation for a page that plays it (``text/html``) and a still of its
        key frames for one that cannot, such as the PDF (``image/png``): each edition
        of the book picks the richest it can show."""
        return {"text/html": self.to_html(), "image/png": self.key_frames_png()}

    def key_frames_png(self):
        """:func:`key_frames` of this animation as a PNG, base64-encoded (as notebooks
        store images)."""
        import matplotlib.pyplot as plt

        fig = key_frames(self)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        plt.close(fig)  # shown through the bundle, not again by the notebook's backend
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    def frame_image(self, k, dpi=None):
        """Frame ``k`` drawn as an RGBA image, an ndarray of shape (height, width, 4)
        with values in [0, 1]."""
        self._draw_frame_number(k)
        # drawn, if not played: matplotlib's "deleted without rendering" is moot
        self._draw_was_started = True
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=dpi or self.figure.dpi)
        buffer.seek(0)
        return matplotlib.image.imread(buffer)


def key_frames(anim, frames=None, ncols=2, dpi=None, width=10.0):
    """A static strip of key frames of an animation, for an edition that cannot play it.

    Parameters
    ----------
    anim : MechanismAnimation
    frames : sequence of int, optional
        Which frames to draw; default: four frames spread from the first computed one to
        the last.
    ncols : int
        Frames per row.
    dpi : float, optional
        Resolution of each frame (default: the animation's own).
    width : float
        Width of the figure in inches.

    Returns
    -------
    matplotlib.figure.Figure
        One panel per frame, titled "frame k of n" (each frame has its caption drawn
        in).
    """
    import matplotlib.pyplot as plt

    n = anim.num_frames
    if frames is None:
        frames = sorted(
            set(
                np.linspace(min(1, n - 1), n - 1, min(4, n))
                .round()
                .astype(int)
                .tolist()
            )
        )
    frames = [int(k) for k in frames]
    if not frames or min(frames) < 0 or max(frames) >= n:
        raise ValueError(
            f"key_frames: frames must be between 0 and {n - 1}; got {frames}"
        )
    images = [anim.frame_image(k, dpi) for k in frames]
    rows = -(-len(images) // ncols)
    h, w = images[0].shape[:2]
    fig, axes = plt.subplots(
        rows, ncols, figsize=(width, width / ncols * h / w * rows * 1.08), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, k, image in zip(axes.flat, frames, images, strict=False):
        ax.imshow(image)
        ax.set_title(f"frame {k + 1} of {n}", fontsize=9)
    fig.tight_layout()
    return fig


def _colors(shape, fill=PLAIN):
    """An object array of colour names of shape ``shape``, all ``fill``."""
    return np.full(shape, fill, dtype=object)


def _padding_mask(H, W, padding):
    """True on the zeros that padding adds around an (H, W) input: shape
    (H + 2p, W + 2p)."""
    is_pad = np.ones((H + 2 * padding, W + 2 * padding), dtype=bool)
    is_pad[padding : padding + H, padding : padding + W] = False
    return is_pad


def _window_outline(grid, name, window, size):
    """Outline a window whose top-left corner is ``window = (r, c)`` and whose size is
    ``(h, w)``, or hide it."""
    grid.box(
        name,
        None
        if window is None
        else (window[0], window[0] + size[0], window[1], window[1] + size[1]),
    )


def _show_padded_input(grid, padded, is_pad, window, size):
    """Draw the padded input: padding shaded, the window at ``window = (r, c)`` of
    ``size`` highlighted."""
    colors = _colors(padded.shape)
    colors[is_pad] = PAD
    if window is not None:
        colors[window[0] : window[0] + size[0], window[1] : window[1] + size[1]] = (
            WINDOW
        )
    grid.show(padded, colors)
    _window_outline(grid, "window", window, size)


def _as_float_matrix(name, array):
    """``array`` as a float64 ndarray of shape (rows, columns), or a ValueError naming
    it."""
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array; got shape {array.shape}")
    return array


# --------------------------------------------------------------------------------------
# 1. Convolution: the kernel slides over the padded image with a stride.
# --------------------------------------------------------------------------------------


def animate_convolution(image, kernel, stride=1, padding=0, interval=800, dpi=72):
    """The kernel sliding over a zero-padded image with a stride, filling the output
    pixel by pixel.

    Frame 0 shows the padded image, the kernel and an empty output; frame
    ``1 + i*OW + j`` computes output pixel ``(i, j)`` as ``convolve2d`` of the window
    under the kernel (the padded rows ``i*stride ... i*stride + KH`` and columns
    ``j*stride ... j*stride + KW``) with the kernel.

    Parameters
    ----------
    image : array of shape (H, W)
    kernel : array of shape (KH, KW)
    stride : int >= 1
    padding : int >= 0
    interval : int
        Milliseconds between frames when playing.
    dpi : float
        Resolution of the frames.

    Returns
    -------
    MechanismAnimation
        ``1 + OH*OW`` frames; ``result["out"]``, of shape (OH, OW), is the output of the
        last frame, to compare with ``convolve2d(image, kernel, stride, padding)``.
    """
    image, kernel = _as_float_matrix("image", image), _as_float_matrix("kernel", kernel)
    (H, W), (KH, KW) = image.shape, kernel.shape
    OH, OW = output_size(H, KH, stride, padding), output_size(W, KW, stride, padding)
    if OH < 1 or OW < 1:
        raise ValueError(
            f"the {KH}x{KW} kernel does not fit the {H}x{W} image "
            f"with padding {padding}"
        )
    padded = np.pad(image, padding)

    out = np.full((OH, OW), np.nan)
    frames = [
        {
            "out": out.copy(),
            "position": None,
            "caption": f"padding {padding} adds zeros (grey) around the image; "
            "press play to slide the kernel",
        }
    ]
    for i in range(OH):
        for j in range(OW):
            r, c = i * stride, j * stride
            out[i, j] = convolve2d(padded[r : r + KH, c : c + KW], kernel)[0, 0]
            frames.append(
                {
                    "out": out.copy(),
                    "position": (i, j),
                    "caption": f"out[{i}, {j}] = sum of window × kernel = "
                    f"{_text(out[i, j])}"
                    + (
                        f"   (next window: {stride} to the right)"
                        if j + 1 < OW
                        else f"   (next row of windows: {stride} down)"
                        if i + 1 < OH
                        else ""
                    ),
                }
            )

    Hp, Wp = padded.shape
    cell = 0.42
    fig = _figure(cell * (Wp + KW + OW) + 2.2, cell * max(Hp, 3) + 1.5, dpi)
    axes = fig.subplots(
        1, 3, gridspec_kw={"width_ratios": [Wp, KW, OW], "wspace": 0.35}
    )
    grid_in = _Grid(axes[0], (Hp, Wp), f"padded input ({H}×{W}, padding {padding})")
    grid_k = _Grid(axes[1], (KH, KW), f"kernel ({KH}×{KW})")
    grid_out = _Grid(axes[2], (OH, OW), f"output ({OH}×{OW}), stride {stride}")
    grid_k.show(kernel)
    is_pad = _padding_mask(H, W, padding)
    caption = fig.text(0.5, 0.03, "", ha="center", fontsize=10)
    fig.subplots_adjust(left=0.05, right=0.98, top=0.86, bottom=0.14)

    def draw(frame):
        out_colors = np.where(np.isnan(frame["out"]), PLAIN, DONE).astype(object)
        window = None
        if frame["position"] is not None:
            i, j = frame["position"]
            window = (i * stride, j * stride)
            out_colors[i, j] = CURRENT
        _show_padded_input(grid_in, padded, is_pad, window, (KH, KW))
        grid_out.show(frame["out"], out_colors)
        _window_outline(grid_out, "current", frame["position"], (1, 1))
        caption.set_text(frame["caption"])

    return MechanismAnimation(fig, draw, frames, {"out": out.copy()}, interval)


# --------------------------------------------------------------------------------------
# 2. Max pooling: forward to each window's maximum, backward to each window's winner.
# --------------------------------------------------------------------------------------


def animate_max_pooling(X, dout=None, pool_size=2, stride=2, interval=800, dpi=72):
    """Max pooling forward, one window per frame, then backward, one upstream gradient
    per frame.

    Forward frames take each window's maximum with ``max_with_winner`` over the ``P*P``
    positions of the window (the first maximum wins ties); backward frames send
    ``dout[i, j]`` to that window's winner with ``route_to_winner``, adding to what the
    pixel already has when windows overlap.

    Parameters
    ----------
    X : array of shape (H, W)
    dout : array of shape (OH, OW), optional
        The upstream gradient; default ``1, 2, ..., OH*OW`` in row-major order.
    pool_size, stride : int >= 1
    interval : int
        Milliseconds between frames.
    dpi : float

    Returns
    -------
    MechanismAnimation
        ``1 + 2*OH*OW`` frames; ``result["out"]`` (OH, OW) and ``result["dX"]`` (H, W)
        are the output and the input gradient of the last frame, to compare with
        ``MaxPoolLayer(pool_size, stride)``.
    """
    X = _as_float_matrix("X", X)
    H, W = X.shape
    P, s = pool_size, stride
    OH, OW = (H - P) // s + 1, (W - P) // s + 1
    if P > H or P > W or P < 1 or s < 1:
        raise ValueError(
            f"a {P}x{P} pool window with stride {s} does not fit the {H}x{W} input"
        )
    dout = (
        np.arange(1.0, OH * OW + 1).reshape(OH, OW)
        if dout is None
        else _as_float_matrix("dout", dout)
    )
    if dout.shape != (OH, OW):
        raise ValueError(
            f"dout must have the output's shape {(OH, OW)}; got {dout.shape}"
        )

    def window_views(A, i, j):
        """The P*P positions of window (i, j) of A, each a 1x1 view (a window of
        max_with_winner)."""
        return [
            A[i * s + u : i * s + u + 1, j * s + v : j * s + v + 1]
            for u in range(P)
            for v in range(P)
        ]

    out = np.full((OH, OW), np.nan)
    winners = {}  # (i, j) -> the winner array of that window
    won = np.zeros((H, W), dtype=int)  # how many windows each pixel has won so far
    frames = [
        {
            "out": out.copy(),
            "dX": np.full((H, W), np.nan),
            "phase": "forward",
            "position": None,
            "won": won.copy(),
            "winner": None,
            "caption": f"forward: the maximum of each {P}×{P} window, "
            f"windows {s} apart",
        }
    ]
    for i in range(OH):
        for j in range(OW):
            maximum, winner = max_with_winner(window_views(X, i, j))
            out[i, j], winners[i, j] = maximum[0, 0], winner
            k = int(winner[0, 0])
            at = (i * s + k // P, j * s + k % P)
            won[at] += 1
            frames.append(
                {
                    "out": out.copy(),
                    "dX": np.full((H, W), np.nan),
                    "phase": "forward",
                    "position": (i, j),
                    "won": won.copy(),
                    "winner": at,
                    "caption": f"window ({i}, {j}): maximum {_text(out[i, j])}, "
                    f"at row {at[0]}, column {at[1]}"
                    + (
                        " (the first of equal maxima)"
                        if np.sum(np.concatenate(window_views(X, i, j)) == out[i, j])
                        > 1
                        else ""
                    ),
                }
            )
    dX = np.zeros((H, W))
    for i in range(OH):
        for j in range(OW):
            k = int(winners[i, j][0, 0])
            at = (i * s + k // P, j * s + k % P)
            before = dX[at]
            route_to_winner(
                dout[i : i + 1, j : j + 1],
                winners[i, j],
                window_views(dX, i, j),
                overlapping=True,
            )
            frames.append(
                {
                    "out": out.copy(),
                    "dX": dX.copy(),
                    "phase": "backward",
                    "position": (i, j),
                    "won": won.copy(),
                    "winner": at,
                    "caption": f"backward: dout[{i}, {j}] = {_text(dout[i, j])} "
                    f"goes to the winner at row {at[0]}, column {at[1]}"
                    + (
                        f", which now has {_text(before)} + {_text(dout[i, j])}"
                        if before
                        else ""
                    ),
                }
            )

    cell = 0.42
    fig = _figure(cell * (2 * W + 2 * OW) + 2.6, cell * max(H, 3) + 1.5, dpi)
    axes = fig.subplots(
        1, 4, gridspec_kw={"width_ratios": [W, OW, OW, W], "wspace": 0.35}
    )
    grid_x = _Grid(axes[0], (H, W), f"input X ({H}×{W})")
    grid_out = _Grid(axes[1], (OH, OW), f"out ({OH}×{OW})")
    grid_dout = _Grid(axes[2], (OH, OW), "dout (given)")
    grid_dx = _Grid(axes[3], (H, W), f"dX ({H}×{W})")
    caption = fig.text(0.5, 0.03, "", ha="center", fontsize=10)
    fig.subplots_adjust(left=0.04, right=0.98, top=0.86, bottom=0.14)

    def draw(frame):
        forward = frame["phase"] == "forward"
        x_colors = np.where(frame["won"] > 0, OLD_WINNER, PLAIN).astype(object)
        out_colors = np.where(np.isnan(frame["out"]), PLAIN, DONE).astype(object)
        dout_colors, dx_colors = (
            _colors((OH, OW), PLAIN if forward else DONE),
            _colors((H, W)),
        )
        window = None
        if frame["position"] is not None:
            i, j = frame["position"]
            window = (i * s, j * s)
            (out_colors if forward else dout_colors)[i, j] = CURRENT
            if forward:
                x_colors[window[0] : window[0] + P, window[1] : window[1] + P] = (
                    np.where(
                        frame["won"][
                            window[0] : window[0] + P, window[1] : window[1] + P
                        ]
                        > 0,
                        OLD_WINNER,
                        WINDOW,
                    )
                )
                x_colors[frame["winner"]] = WINNER
            else:
                dx_colors[window[0] : window[0] + P, window[1] : window[1] + P] = WINDOW
                dx_colors[frame["winner"]] = WINNER
        grid_x.show(X, x_colors, bold=frame["won"] > 0)
        _window_outline(grid_x, "window", window if forward else None, (P, P))
        grid_out.show(frame["out"], out_colors)
        _window_outline(
            grid_out, "current", frame["position"] if forward else None, (1, 1)
        )
        grid_dout.show(np.full((OH, OW), np.nan) if forward else dout, dout_colors)
        _window_outline(
            grid_dout, "current", None if forward else frame["position"], (1, 1)
        )
        grid_dx.show(frame["dX"], dx_colors)
        _window_outline(grid_dx, "window", None if forward else window, (P, P))
        caption.set_text(frame["caption"])

    return MechanismAnimation(
        fig, draw, frames, {"out": out.copy(), "dX": dX.copy()}, interval
    )


# --------------------------------------------------------------------------------------
# 3. im2col: windows become columns, and one matrix product does the whole layer.
# --------------------------------------------------------------------------------------


def animate_im2col(
    image, weights, biases=None, stride=1, padding=0, interval=800, dpi=72
):
    """im2col unrolling each window of an image into a column, then the single matrix
    product.

    Frame 0 shows the padded image and an empty ``cols``; frame ``1 + i*OW + j`` reveals
    column ``i*OW + j`` of ``cols = im2col(image[None, None], K, stride, padding)`` and
    outlines the window it came from; the last frame shows
    ``weights.reshape(F, K*K) @ cols + biases[:, None]``, all output pixels of all
    filters from one product.

    Parameters
    ----------
    image : array of shape (H, W)
        One image with one channel (N = C = 1).
    weights : array of shape (F, K, K) or (F, 1, K, K)
    biases : array of shape (F,), optional (default zeros)
    stride : int >= 1
    padding : int >= 0
    interval : int
    dpi : float

    Returns
    -------
    MechanismAnimation
        ``OH*OW + 2`` frames; ``result["cols"]`` of shape (K*K, OH*OW) and
        ``result["out"]`` of shape (F, OH, OW), the product reshaped, to compare with
        ``ConvLayer.forward`` on ``image[None, None]``.
    """
    image = _as_float_matrix("image", image)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim == 4 and weights.shape[1] == 1:
        weights = weights[:, 0]
    if weights.ndim != 3 or weights.shape[1] != weights.shape[2]:
        raise ValueError(
            "weights must have shape (F, K, K) or (F, 1, K, K); "
            f"got {np.shape(weights)}"
        )
    F, K, _ = weights.shape
    biases = (
        np.zeros(F)
        if biases is None
        else np.asarray(biases, dtype=np.float64).reshape(F)
    )
    H, W = image.shape
    OH, OW = output_size(H, K, stride, padding), output_size(W, K, stride, padding)
    if OH < 1 or OW < 1:
        raise ValueError(
            f"the {K}x{K} kernel does not fit the {H}x{W} image with padding {padding}"
        )
    padded = np.pad(image, padding)
    cols = im2col(image[None, None], K, stride, padding)  # (K*K, OH*OW)
    W_mat = weights.reshape(F, K * K)
    product = W_mat @ cols + biases[:, None]  # (F, OH*OW): the one matrix product

    shown = np.full(cols.shape, np.nan)
    empty = np.full((F, OH * OW), np.nan)
    frames = [
        {
            "cols": shown.copy(),
            "out": empty,
            "position": None,
            "caption": f"im2col: each {K}×{K} window becomes one column of cols "
            f"({K * K}×{OH * OW})",
        }
    ]
    for i in range(OH):
        for j in range(OW):
            shown[:, i * OW + j] = cols[:, i * OW + j]
            frames.append(
                {
                    "cols": shown.copy(),
                    "out": empty,
                    "position": (i, j),
                    "caption": f"column {i * OW + j} of cols: "
                    f"the window under output pixel ({i}, {j}), read row by row",
                }
            )
    frames.append(
        {
            "cols": shown.copy(),
            "out": product.copy(),
            "position": None,
            "caption": f"one matrix product: ({F}×{K * K} weights) "
            f"@ ({K * K}×{OH * OW} cols) + biases = all {F * OH * OW} outputs",
        }
    )

    Hp, Wp = padded.shape
    cell = 0.36
    left, right = max(Wp, K * K), OH * OW
    top, bottom = max(Hp, K * K), F
    fig = _figure(cell * (left + right) + 2.6, cell * (top + bottom) + 2.4, dpi)
    gs = fig.add_gridspec(
        2,
        2,
        width_ratios=[left, right],
        height_ratios=[top, bottom],
        wspace=0.3,
        hspace=0.35,
    )
    taps = [f"({u},{v})" for u in range(K) for v in range(K)]
    pixels = [f"{i},{j}" for i in range(OH) for j in range(OW)]
    grid_in = _Grid(
        fig.add_subplot(gs[0, 0]),
        (Hp, Wp),
        f"padded image ({H}×{W}, padding {padding})",
        fontsize=9,
    )
    grid_cols = _Grid(
        fig.add_subplot(gs[0, 1]),
        (K * K, OH * OW),
        "cols = im2col(image): row = tap (u, v), column = output pixel (i, j)",
        fontsize=9,
        row_labels=taps,
        col_labels=pixels,
    )
    grid_w = _Grid(
        fig.add_subplot(gs[1, 0]),
        (F, K * K),
        "filters, one per row",
        fontsize=9,
        row_labels=[f"f={f}, b={_text(biases[f])}" for f in range(F)],
        col_labels=taps,
    )
    grid_out = _Grid(
        fig.add_subplot(gs[1, 1]),
        (F, OH * OW),
        f"weights @ cols + b; row f reshaped to {OH}×{OW} is feature map f",
        fontsize=9,
        row_labels=[f"f={f}" for f in range(F)],
        col_labels=pixels,
    )
    grid_w.show(W_mat)
    is_pad = _padding_mask(H, W, padding)
    caption = fig.text(0.5, 0.02, "", ha="center", fontsize=10)
    fig.subplots_adjust(left=0.1, right=0.98, top=0.93, bottom=0.1)

    def draw(frame):
        col_colors = np.where(np.isnan(frame["cols"]), PLAIN, DONE).astype(object)
        window = column = None
        if frame["position"] is not None:
            i, j = frame["position"]
            window, column = (i * stride, j * stride), i * OW + j
            col_colors[:, column] = WINDOW
        _show_padded_input(grid_in, padded, is_pad, window, (K, K))
        grid_cols.show(frame["cols"], col_colors)
        grid_cols.box(
            "column", None if column is None else (0, K * K, column, column + 1)
        )
        done = not np.isnan(frame["out"]).any()
        grid_out.show(frame["out"], _colors((F, OH * OW), CURRENT if done else PLAIN))
        grid_out.box("all", (0, F, 0, OH * OW) if done else None)
        grid_cols.box("all", (0, K * K, 0, OH * OW) if done else None, ls="--")
        grid_w.box("all", (0, F, 0, K * K) if done else None, ls="--")
        caption.set_text(frame["caption"])

    result = {"cols": cols.copy(), "out": product.reshape(F, OH, OW)}
    return MechanismAnimation(fig, draw, frames, result, interval)


# --------------------------------------------------------------------------------------
# 4. The input gradient: a full convolution of the (dilated) upstream gradient with the
#    flipped kernel.
# --------------------------------------------------------------------------------------


def animate_input_gradient(
    kernel, dout, input_shape, stride=1, padding=0, interval=700, dpi=72
):
    """The input gradient of a convolution as a full convolution with the flipped
    kernel, pixel by pixel.

    ``dout`` is dilated (``stride - 1`` zeros between its pixels) and padded with
    ``K - 1`` zeros on every side; the kernel flipped in both axes slides over it, and
    each position gives one pixel of the gradient of the padded input, ``convolve2d`` of
    the window with the flipped kernel. Cutting the padding off gives ``dX``. Rows and
    columns of the input that no window reached (when the stride does not divide
    ``H + 2*padding - K``) have gradient 0 from the start.

    Parameters
    ----------
    kernel : array of shape (K, K)
        The layer's filter (one filter, one channel).
    dout : array of shape (OH, OW)
        The upstream gradient.
    input_shape : tuple (H, W)
        The shape of the layer's input; ``OH = output_size(H, K, stride, padding)``.
    stride : int >= 1
    padding : int >= 0
    interval : int
    dpi : float

    Returns
    -------
    MechanismAnimation
        ``1 + FH*FW`` frames with ``FH = stride*(OH - 1) + K`` (``H + 2*padding`` for
        stride 1); ``result["dX_padded"]`` (H + 2p, W + 2p) and ``result["dX"]`` (H, W),
        to compare with the ``dX`` of ``ConvLayer(1, K, 1, stride, padding)`` whose
        filter is ``kernel``.
    """
    kernel, dout = _as_float_matrix("kernel", kernel), _as_float_matrix("dout", dout)
    K = kernel.shape[0]
    if kernel.shape != (K, K):
        raise ValueError(f"kernel must be square; got shape {kernel.shape}")
    H, W = input_shape
    s, p = stride, padding
    OH, OW = output_size(H, K, s, p), output_size(W, K, s, p)
    if dout.shape != (OH, OW):
        raise ValueError(
            f"dout must have the layer's output shape {(OH, OW)} for input {(H, W)}, "
            f"kernel {K}, stride {s}, padding {p}; got {dout.shape}"
        )
    dilated = np.zeros((s * (OH - 1) + 1, s * (OW - 1) + 1))
    dilated[::s, ::s] = dout
    full_input = np.pad(dilated, K - 1)
    flipped = kernel[::-1, ::-1]
    # positions of the full convolution
    FH, FW = dilated.shape[0] + K - 1, dilated.shape[1] + K - 1
    Hp, Wp = H + 2 * p, W + 2 * p  # FH <= Hp, FW <= Wp

    dXp = np.full((Hp, Wp), np.nan)
    dXp[FH:, :] = 0.0  # never under a window: their gradient is 0
    dXp[:, FW:] = 0.0
    frames = [
        {
            "dXp": dXp.copy(),
            "position": None,
            "caption": f"dout{' dilated (zeros between pixels),' if s > 1 else ''} "
            f"padded with K − 1 = {K - 1} zeros; the kernel flipped in both axes "
            "slides over it",
        }
    ]
    for a in range(FH):
        for b in range(FW):
            dXp[a, b] = convolve2d(full_input[a : a + K, b : b + K], flipped)[0, 0]
            inside = p <= a < p + H and p <= b < p + W
            frames.append(
                {
                    "dXp": dXp.copy(),
                    "position": (a, b),
                    "caption": f"dX{'' if p == 0 else 'p'}[{a}, {b}] = "
                    f"sum of window × flipped kernel = {_text(dXp[a, b])}"
                    + ("" if inside else "   (in the padding: cut off)"),
                }
            )
    dX = dXp[p : p + H, p : p + W].copy()

    Dh, Dw = full_input.shape
    cell = 0.36
    fig = _figure(cell * (2 * K + Dw + Wp) + 3.0, cell * max(Dh, Hp) + 1.5, dpi)
    axes = fig.subplots(
        1, 4, gridspec_kw={"width_ratios": [K, K, Dw, Wp], "wspace": 0.3}
    )
    grid_k = _Grid(axes[0], (K, K), "kernel", fontsize=9)
    grid_f = _Grid(axes[1], (K, K), "flipped", fontsize=9)
    grid_d = _Grid(
        axes[2],
        (Dh, Dw),
        f"dout ({OH}×{OW}){', dilated' if s > 1 else ''}, padded by {K - 1}",
        fontsize=9,
    )
    title = (
        f"dX ({H}×{W})" if p == 0 else f"dX padded ({Hp}×{Wp}); dX is inside the box"
    )
    grid_x = _Grid(axes[3], (Hp, Wp), title, fontsize=9)
    grid_k.show(kernel)
    grid_f.show(flipped)
    d_colors = _colors((Dh, Dw), PAD)
    d_colors[K - 1 : K - 1 + dilated.shape[0], K - 1 : K - 1 + dilated.shape[1]] = (
        DILATION
    )
    d_colors[
        K - 1 : K - 1 + dilated.shape[0] : s, K - 1 : K - 1 + dilated.shape[1] : s
    ] = PLAIN
    if p:
        grid_x.box("dX", (p, p + H, p, p + W), color="black", lw=1.5, ls="--")
    is_cropped = np.ones((Hp, Wp), dtype=bool)
    is_cropped[p : p + H, p : p + W] = False
    caption = fig.text(0.5, 0.03, "", ha="center", fontsize=10)
    fig.subplots_adjust(left=0.03, right=0.98, top=0.86, bottom=0.14)

    def draw(frame):
        colors = d_colors.copy()
        x_colors = np.where(np.isnan(frame["dXp"]), PLAIN, DONE).astype(object)
        x_colors[is_cropped & ~np.isnan(frame["dXp"])] = CROPPED
        position = frame["position"]
        if position is not None:
            a, b = position
            colors[a : a + K, b : b + K] = np.where(
                colors[a : a + K, b : b + K] == PLAIN,
                WINDOW,
                colors[a : a + K, b : b + K],
            )
            x_colors[a, b] = CURRENT
        grid_d.show(full_input, colors)
        _window_outline(grid_d, "window", position, (K, K))
        grid_x.show(frame["dXp"], x_colors)
        _window_outline(grid_x, "current", position, (1, 1))
        caption.set_text(frame["caption"])

    return MechanismAnimation(
        fig, draw, frames, {"dX_padded": dXp.copy(), "dX": dX}, interval
    )
