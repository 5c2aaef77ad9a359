"""The book's animations: each builds, has the frames it should, and its last frame is
the package's result.

Odd shapes, strides that do not divide the input, padding and overlapping pooling
windows, compared with ``convolve2d``, ``MaxPoolLayer`` and ``ConvLayer`` (and the loop
references of conftest).
"""

import base64
import io
import re

import matplotlib

matplotlib.use("Agg")  # no display in tests

import matplotlib.pyplot as plt
import numpy as np
import pytest
from conftest import case_id, conv_reference, maxpool_reference
from numpy.testing import assert_allclose, assert_array_equal

import cnn
from cnn import animations
from cnn.conv import output_size

# An animation built to check its frames and never played makes matplotlib warn; these
# are not played.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Animation was deleted without rendering anything"
)

# (H, W, K, stride, padding)
CONV_GEOMETRIES = [
    (5, 5, 3, 2, 1),
    (6, 4, 3, 1, 0),
    (7, 5, 2, 3, 2),
    (4, 7, 3, 2, 0),
    (5, 6, 1, 2, 1),
]
# (H, W, pool_size, stride): overlapping, non-overlapping with a leftover border, gapped
POOL_GEOMETRIES = [(7, 7, 3, 2), (5, 6, 2, 2), (6, 7, 3, 1), (9, 6, 2, 3), (4, 4, 2, 2)]
# (H, W, F, K, stride, padding)
IM2COL_GEOMETRIES = [
    (5, 5, 2, 3, 2, 1),
    (6, 4, 3, 2, 1, 0),
    (7, 6, 1, 3, 3, 2),
    (4, 5, 2, 3, 1, 1),
]


@pytest.fixture(autouse=True)
def no_pyplot_figures():
    """The animations draw outside pyplot, so a notebook shows no static copy of
    them."""
    before = set(plt.get_fignums())
    yield
    assert set(plt.get_fignums()) == before


def _filled(frame, key):
    return int(np.sum(~np.isnan(frame[key])))


@pytest.mark.parametrize("geometry", CONV_GEOMETRIES, ids=case_id)
def test_convolution_last_frame_is_convolve2d(geometry, rng):
    H, W, K, s, p = geometry
    image, kernel = rng.standard_normal((H, W)), rng.standard_normal((K, K))
    anim = animations.animate_convolution(image, kernel, stride=s, padding=p)
    OH, OW = output_size(H, K, s, p), output_size(W, K, s, p)
    assert anim.num_frames == 1 + OH * OW
    expected = cnn.convolve2d(image, kernel, stride=s, padding=p)
    assert_array_equal(anim.frames_data[-1]["out"], anim.result["out"])
    assert_allclose(anim.result["out"], expected, rtol=1e-12, atol=1e-12)
    assert_allclose(
        anim.result["out"],
        conv_reference(image[None, None], kernel[None, None], [0.0], s, p)[0, 0],
        rtol=1e-12,
        atol=1e-12,
    )
    # One more output pixel per frame, in row-major order, at the window the frame
    # outlines.
    assert [_filled(f, "out") for f in anim.frames_data] == list(range(OH * OW + 1))
    assert [f["position"] for f in anim.frames_data[1:]] == [
        (i, j) for i in range(OH) for j in range(OW)
    ]
    anim.to_html()


@pytest.mark.parametrize("geometry", POOL_GEOMETRIES, ids=case_id)
def test_max_pooling_last_frame_is_max_pool_layer(geometry, rng):
    H, W, P, s = geometry
    X = rng.integers(0, 4, (H, W)).astype(float)  # small integers: ties in most windows
    OH, OW = (H - P) // s + 1, (W - P) // s + 1
    dout = rng.standard_normal((OH, OW))
    anim = animations.animate_max_pooling(X, dout, pool_size=P, stride=s)
    assert anim.num_frames == 1 + 2 * OH * OW
    for impl in ("vectorized", "loops"):
        layer = cnn.MaxPoolLayer(P, s, impl=impl)
        assert_array_equal(anim.result["out"], layer.forward(X[None, None])[0, 0])
        assert_allclose(
            anim.result["dX"],
            layer.backward(dout[None, None])[0, 0],
            rtol=1e-12,
            atol=1e-12,
        )
    out_ref, dX_ref = maxpool_reference(X[None, None], P, s, dout[None, None])
    assert_allclose(anim.result["dX"], dX_ref[0, 0], rtol=1e-12, atol=1e-12)
    last = anim.frames_data[-1]
    assert_array_equal(last["out"], anim.result["out"])
    assert_array_equal(last["dX"], anim.result["dX"])
    # Forward frames fill the output one window at a time; the gradient appears only in
    # the backward half.
    assert [_filled(f, "out") for f in anim.frames_data[: OH * OW + 1]] == list(
        range(OH * OW + 1)
    )
    assert all(_filled(f, "dX") == 0 for f in anim.frames_data[: OH * OW + 1])
    assert all(f["phase"] == "backward" for f in anim.frames_data[OH * OW + 1 :])
    # Each backward frame adds exactly its dout to exactly its winner.
    for before, after in zip(
        anim.frames_data[OH * OW + 1 :], anim.frames_data[OH * OW + 2 :], strict=False
    ):
        i, j = after["position"]
        change = after["dX"] - before["dX"]
        assert change[after["winner"]] == pytest.approx(dout[i, j])
        assert np.count_nonzero(change) <= 1


def test_max_pooling_default_dout_counts_windows():
    anim = animations.animate_max_pooling(np.arange(16.0).reshape(4, 4))
    assert_array_equal(anim.result["out"], [[5, 7], [13, 15]])
    assert_array_equal(anim.result["dX"][1::2, 1::2], [[1, 2], [3, 4]])


def _layer_with(weights, biases, stride, padding):
    F, K, _ = weights.shape
    layer = cnn.ConvLayer(F, K, 1, stride=stride, padding=padding, dtype=np.float64)
    layer.weights[:, 0] = weights
    layer.biases[:] = biases
    return layer


@pytest.mark.parametrize("geometry", IM2COL_GEOMETRIES, ids=case_id)
def test_im2col_product_is_conv_layer_forward(geometry, rng):
    H, W, F, K, s, p = geometry
    image, weights, biases = (
        rng.standard_normal((H, W)),
        rng.standard_normal((F, K, K)),
        rng.standard_normal(F),
    )
    anim = animations.animate_im2col(image, weights, biases, stride=s, padding=p)
    OH, OW = output_size(H, K, s, p), output_size(W, K, s, p)
    assert anim.num_frames == OH * OW + 2
    layer = _layer_with(weights, biases, s, p)
    assert_allclose(
        anim.result["out"], layer.forward(image[None, None])[0], rtol=1e-10, atol=1e-12
    )
    assert_array_equal(anim.result["cols"], cnn.im2col(image[None, None], K, s, p))
    last = anim.frames_data[-1]
    assert_array_equal(last["cols"], anim.result["cols"])
    assert_array_equal(last["out"].reshape(F, OH, OW), anim.result["out"])
    # The column each frame adds is the window the frame outlines on the padded image.
    padded = np.pad(image, p)
    for frame in anim.frames_data[1:-1]:
        i, j = frame["position"]
        assert_array_equal(
            frame["cols"][:, i * OW + j],
            padded[i * s : i * s + K, j * s : j * s + K].ravel(),
        )
    assert [_filled(f, "cols") for f in anim.frames_data[:-1]] == [
        K * K * n for n in range(OH * OW + 1)
    ]
    # one product, in the last frame
    assert all(np.isnan(f["out"]).all() for f in anim.frames_data[:-1])


def test_im2col_accepts_layer_shaped_weights():
    weights = np.arange(18.0).reshape(2, 1, 3, 3)
    anim = animations.animate_im2col(np.ones((4, 4)), weights)
    assert anim.result["out"].shape == (2, 2, 2)


@pytest.mark.parametrize(
    "geometry", CONV_GEOMETRIES + [(7, 6, 3, 3, 0), (6, 5, 2, 2, 1)], ids=case_id
)
def test_input_gradient_last_frame_is_conv_layer_dX(geometry, rng):
    H, W, K, s, p = geometry
    kernel = rng.standard_normal((K, K))
    OH, OW = output_size(H, K, s, p), output_size(W, K, s, p)
    dout = rng.standard_normal((OH, OW))
    anim = animations.animate_input_gradient(kernel, dout, (H, W), stride=s, padding=p)
    FH, FW = s * (OH - 1) + K, s * (OW - 1) + K
    assert anim.num_frames == 1 + FH * FW
    layer = _layer_with(kernel[None], [0.0], s, p)
    layer.forward(rng.standard_normal((1, 1, H, W)))
    assert_allclose(
        anim.result["dX"],
        layer.gradient(dout[None, None])[0, 0],
        rtol=1e-10,
        atol=1e-12,
    )
    dX_loops = cnn.conv_backward_loops(
        np.zeros((1, 1, H, W)), kernel[None, None], dout[None, None], s, p
    )[0]
    assert_allclose(anim.result["dX"], dX_loops[0, 0], rtol=1e-10, atol=1e-12)
    last = anim.frames_data[-1]["dXp"]
    assert not np.isnan(last).any()
    assert_array_equal(last[p : p + H, p : p + W], anim.result["dX"])
    assert [_filled(f, "dXp") for f in anim.frames_data] == [
        (H + 2 * p) * (W + 2 * p) - FH * FW + n for n in range(FH * FW + 1)
    ]


def test_input_gradient_refuses_a_dout_of_the_wrong_shape():
    with pytest.raises(ValueError, match="output shape"):
        animations.animate_input_gradient(np.ones((3, 3)), np.ones((4, 4)), (5, 5))


# The examples the chapters show, to keep their HTML small.
CHAPTER_EXAMPLES = {
    "convolution": lambda: animations.animate_convolution(
        np.arange(25.0).reshape(5, 5) % 7, np.eye(3), 2, 1
    ),
    "pooling": lambda: animations.animate_max_pooling(
        np.arange(49.0).reshape(7, 7) % 10, None, 3, 2
    ),
    "im2col": lambda: animations.animate_im2col(
        np.arange(25.0).reshape(5, 5) % 7,
        np.ones((2, 3, 3)),
        [1, 2],
        stride=2,
        padding=1,
    ),
    "input_gradient": lambda: animations.animate_input_gradient(
        np.eye(3), np.ones((3, 3)), (5, 5)
    ),
}


@pytest.mark.parametrize("name", CHAPTER_EXAMPLES)
def test_html_plays_offline_and_stays_small(name):
    anim = CHAPTER_EXAMPLES[name]()
    html = anim.to_html()
    assert len(html) < 1_500_000
    # no web font, no CDN: works offline
    assert "http://" not in html and "https://" not in html
    assert "fa fa-" not in html
    assert int(re.search(r"new Array\((\d+)\)", html).group(1)) == anim.num_frames
    assert (
        len(re.findall(r"frames\[\d+\] = \"data:image/png;base64,", html))
        == anim.num_frames
    )
    img = re.search(r'<img id="_anim_img\w+" src="([^"]+)"', html)
    # a picture before the script runs
    assert img and img.group(1).startswith("data:image/png;base64,")
    for title in ("Play", "Pause", "Next frame", "Previous frame"):
        assert f'title="{title}"' in html
    assert anim._repr_html_().count("<img") == 1


def test_frames_differ_from_one_another():
    anim = CHAPTER_EXAMPLES["convolution"]()
    first, second, last = (anim.frame_image(k) for k in (0, 1, anim.num_frames - 1))
    assert first.shape == last.shape and first.shape[2] == 4
    assert not np.array_equal(first, second) and not np.array_equal(second, last)


def test_key_frames_draw_a_static_strip():
    anim = CHAPTER_EXAMPLES["pooling"]()
    fig = animations.key_frames(anim)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 4
    assert shown[-1].get_title() == f"frame {anim.num_frames} of {anim.num_frames}"
    for ax in shown:
        pixels = ax.images[0].get_array()
        assert pixels.std() > 0.01  # a drawn frame, not a blank
    plt.close(fig)
    fig = animations.key_frames(anim, frames=[0, 5], ncols=2)
    assert sum(1 for ax in fig.axes if ax.images) == 2
    plt.close(fig)
    with pytest.raises(ValueError, match="frames must be between"):
        animations.key_frames(anim, frames=[anim.num_frames])


def test_each_edition_gets_what_it_can_show():
    """The notebook output holds the playable HTML (for the web page) and a still of the
    key frames (for the PDF, which cannot play it); drawing the still leaves no figure
    open for the notebook's backend to show a second time."""
    anim = CHAPTER_EXAMPLES["convolution"]()
    open_before = plt.get_fignums()
    bundle = anim._repr_mimebundle_()
    assert set(bundle) == {"text/html", "image/png"}
    assert bundle["text/html"] == anim.to_html()
    png = base64.b64decode(bundle["image/png"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    still = matplotlib.image.imread(io.BytesIO(png))
    assert still.shape[1] > still.shape[0] > 100 and still.std() > 0.01
    assert plt.get_fignums() == open_before
