"""cnn.prepare_digit: images of digits, drawn, scanned or photographed, come out as
MNIST's digits are (each step, the whole on MNIST digits put on paper and on synthetic
photos, files, and a clear error for every bad input)."""

import re

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from PIL import Image, ImageDraw

import cnn
from cnn import DigitImageError, SimpleCNN, prepare_digit
from cnn.digits import (
    above_paper,
    area_resize,
    area_weights,
    background,
    border,
    bounding_box,
    centre_of_mass,
    fit_box,
    ink,
    ink_is_dark,
    noise_level,
    place,
    to_grey,
)

# --------------------------------------------------------------------------- helpers


def box_of(image):
    """(height, width) of the bounding box of the non-zero pixels of a 2-D image."""
    rows = np.flatnonzero(image.any(axis=1))
    cols = np.flatnonzero(image.any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def correlation(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def on_paper(digit, rng, scale=3):
    """An MNIST digit (28, 28) uint8 as dark ink on a large white canvas: upscaled
    ``scale`` times, inverted, and put at a random place, off centre."""
    big = 255 - np.kron(digit, np.ones((scale, scale), dtype=np.uint8))
    H, W = rng.integers(150, 320, size=2)
    canvas = np.full((H, W), 255, dtype=np.uint8)
    top, left = rng.integers(0, H - big.shape[0]), rng.integers(0, W - big.shape[1])
    canvas[top : top + big.shape[0], left : left + big.shape[1]] = big
    return canvas


def photo(digit, rng, noise=0.02):
    """An MNIST digit written (5x larger) on uneven grey paper and photographed: the
    paper's brightness goes from 0.55 to 0.85 across the picture, the picture has a
    warm colour cast and normal noise; uint8 RGB (240, 320, 3)."""
    H, W = 240, 320
    v, u = np.meshgrid(np.linspace(0, 1, H), np.linspace(0, 1, W), indexing="ij")
    paper = 0.55 + 0.3 * (0.7 * u + 0.3 * v)
    ink = np.zeros((H, W))
    ink[50:190, 110:250] = np.kron(digit / 255.0, np.ones((5, 5)))
    grey = paper * (1 - 0.8 * ink) + rng.normal(0, noise, (H, W))
    rgb = np.stack([grey, 0.97 * grey, 0.9 * grey], axis=-1)
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def drawn_seven(size=(200, 160)):
    """A 7 drawn with PIL lines, black on white, as a reader would draw it."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.line([(40, 40), (120, 40), (70, 170)], fill="black", width=12, joint="curve")
    return image


@pytest.fixture(scope="module")
def reader(mnist):
    """A SimpleCNN trained for 2 epochs on 10,000 MNIST images (about a second; 95% on
    the test set): it tells whether a prepared digit still reads as the original."""
    (X_train, y_train), _ = mnist
    model = SimpleCNN(seed=0)
    model.train(
        cnn.prepare_images(X_train[:10_000]),
        y_train[:10_000].astype(np.int64),
        epochs=2,
        batch_size=32,
        verbose=0,
    )
    return model


@pytest.fixture(scope="module")
def test_digits(mnist):
    """The first 200 MNIST test digits, uint8 (200, 28, 28), and as the network sees
    them (200, 1, 28, 28)."""
    _, (X_test, _) = mnist
    return X_test[:200], cnn.prepare_images(X_test[:200])


# ----------------------------------------------------------------- the whole function


def test_mnist_digits_on_paper_come_back_as_they_were(test_digits, reader):
    """200 MNIST test digits, inverted, 3x larger, off centre on a large white canvas:
    prepared, each is close to the original (the threshold trims the faintest edge
    pixels) and reads as the same digit."""
    digits, originals = test_digits
    rng = np.random.default_rng(0)
    prepared = np.stack([prepare_digit(on_paper(d, rng)) for d in digits])
    assert prepared.shape == (200, 1, 28, 28) and prepared.dtype == np.float32
    correlations = [correlation(p, o) for p, o in zip(prepared, originals, strict=True)]
    same = np.mean(reader.predict(prepared) == reader.predict(originals))
    print(
        f"correlation with the originals: median {np.median(correlations):.3f}, "
        f"10th percentile {np.percentile(correlations, 10):.3f}; same prediction "
        f"{same:.1%}"
    )
    assert np.median(correlations) > 0.97
    assert np.percentile(correlations, 10) > 0.85
    assert same >= 0.97
    for image in prepared[:, 0]:
        assert image.min() == 0 and image.max() == 1
        assert max(box_of(image)) == 20  # MNIST's box: the longer side 20 pixels
        cy, cx = centre_of_mass(image)
        assert abs(cy - 14) <= 0.5 + 1e-6 and abs(cx - 14) <= 0.5 + 1e-6


def test_without_threshold_an_mnist_digit_comes_back_exactly(test_digits, monkeypatch):
    """With the ink threshold at 0, the steps undo the upscaling, inversion and shift
    exactly (area averaging of 3x3 blocks, then MNIST's own centring): evidence that
    the steps are MNIST's."""
    monkeypatch.setattr(cnn.digits, "INK_THRESHOLD", 0.0)
    digits, originals = test_digits
    rng = np.random.default_rng(1)
    for digit, original in zip(digits[:50], originals[:50], strict=True):
        if max(box_of(digit)) != 20:  # 3 in 10,000 MNIST digits are 19 pixels
            continue
        expected = original / original.max()  # MNIST's brightest pixel is 254 or 255
        assert_allclose(prepare_digit(on_paper(digit, rng)), expected, atol=1e-6)


def test_a_synthetic_photo_of_a_digit_on_uneven_paper(test_digits, reader):
    """Grey paper 0.55 to 0.85 across the picture, a colour cast, noise: the background
    and the noise go, the digit stays."""
    digits, originals = test_digits
    rng = np.random.default_rng(2)
    prepared = np.stack([prepare_digit(photo(d, rng)) for d in digits[:60]])
    originals = originals[:60]
    correlations = [correlation(p, o) for p, o in zip(prepared, originals, strict=True)]
    same = np.mean(reader.predict(prepared) == reader.predict(originals))
    print(f"photos: median correlation {np.median(correlations):.3f}, same {same:.1%}")
    assert np.median(correlations) > 0.95
    assert same >= 0.95
    for image in prepared[:, 0]:
        assert max(box_of(image)) == 20  # no speck of noise widened the box


def test_heavy_noise_is_cut_by_the_noise_threshold(test_digits, monkeypatch):
    """Noise of 0.04 on paper where the ink stands out by 0.45 to 0.7: 6 standard
    deviations of the noise are above the largest noise; without that threshold,
    specks of noise widen the box."""
    digits, originals = test_digits
    photos = [photo(d, np.random.default_rng(3), noise=0.04) for d in digits[:4]]
    originals = originals[:4]
    for image, original in zip(photos, originals, strict=True):
        prepared = prepare_digit(image)[0]
        assert correlation(prepared, original) > 0.9
        assert max(box_of(prepared)) == 20
    monkeypatch.setattr(cnn.digits, "NOISE_THRESHOLD", 0.0)
    for image, original in zip(photos, originals, strict=True):
        assert correlation(prepare_digit(image), original) < 0.5


def test_rgb_and_rgba_with_a_transparent_background(test_digits):
    """Blue ink on yellowish paper reads as grey ink on grey paper; an RGBA canvas whose
    background is transparent (any colour, alpha 0) is white paper."""
    digit = test_digits[0][0]
    grey = on_paper(digit, np.random.default_rng(4))
    expected = prepare_digit(grey)
    ink_amount = (255 - grey) / 255.0  # 0 on paper, 1 on the darkest ink
    paper, blue = np.array([1.0, 0.95, 0.8]), np.array([0.1, 0.2, 0.6])
    rgb = (1 - ink_amount[..., None]) * paper + ink_amount[..., None] * blue
    assert correlation(prepare_digit(rgb), expected) > 0.99
    assert prepare_digit(np.round(rgb * 255).astype(np.uint8)).shape == (1, 28, 28)

    # black ink, as opaque as it is dark, on a canvas of transparent black pixels
    rgba = np.zeros(grey.shape + (4,), dtype=np.uint8)
    rgba[..., 3] = 255 - grey
    assert_allclose(prepare_digit(rgba), expected, atol=1e-6)
    # the colour of transparent pixels does not matter: transparent white
    rgba[..., :3] = np.where(rgba[..., 3:] == 0, 255, 0)
    assert_allclose(prepare_digit(rgba), expected, atol=1e-6)


def test_light_ink_on_dark_is_taken_as_it_is(test_digits):
    dark_on_light = on_paper(test_digits[0][0], np.random.default_rng(5))
    light_on_dark = 255 - dark_on_light  # as MNIST: not inverted
    assert_allclose(
        prepare_digit(light_on_dark), prepare_digit(dark_on_light), atol=1e-6
    )


def test_png_and_jpeg_files(test_digits, tmp_path, reader):
    digit, original = test_digits[0][0], test_digits[1][:1]
    canvas = on_paper(digit, np.random.default_rng(6))
    Image.fromarray(canvas).convert("RGB").save(tmp_path / "digit.png")
    Image.fromarray(canvas).save(tmp_path / "digit.jpg", quality=85)
    from_png = prepare_digit(tmp_path / "digit.png")
    assert_allclose(from_png, prepare_digit(canvas), atol=1e-6)  # lossless
    from_jpeg = prepare_digit(str(tmp_path / "digit.jpg"))
    assert correlation(from_jpeg, from_png) > 0.95
    assert reader.predict(from_jpeg[None]) == reader.predict(original)
    # a grey PNG with an alpha channel, and a 16-bit grey PNG
    Image.fromarray(canvas).convert("LA").save(tmp_path / "la.png")
    assert_allclose(prepare_digit(tmp_path / "la.png"), from_png, atol=1e-6)
    Image.fromarray(canvas.astype(np.uint16) * 257).save(tmp_path / "16bit.png")
    assert_allclose(prepare_digit(tmp_path / "16bit.png"), from_png, atol=1e-6)


def test_a_digit_drawn_with_lines(tmp_path):
    drawn_seven().save(tmp_path / "seven.png")
    image = prepare_digit(tmp_path / "seven.png")[0]
    assert box_of(image)[0] == 20 and 10 <= box_of(image)[1] < 20  # taller than wide
    cy, cx = centre_of_mass(image)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


def test_the_exif_orientation_of_a_photo_is_applied(tmp_path):
    """A phone stores a portrait photo as a landscape image and an EXIF tag saying
    'rotate'; the digit is read upright."""
    upright = drawn_seven()
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # lying on its side
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    stored.save(tmp_path / "p.jpg", exif=exif)
    from_photo = prepare_digit(tmp_path / "p.jpg")
    assert correlation(from_photo, prepare_digit(np.asarray(upright))) > 0.95
    assert correlation(from_photo, prepare_digit(np.asarray(stored))) < 0.5


# ------------------------------------------------------------------------- the steps


def test_to_grey_composites_alpha_on_white_and_takes_the_luma():
    rgba = np.array(
        [[[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.5]]]
    )
    assert_allclose(to_grey(rgba), [[0.299, 1.0, 0.5 + 0.5 * 0.114]])
    assert_allclose(to_grey(rgba[..., :3]), [[0.299, 0.0, 0.114]])
    assert_array_equal(to_grey(np.eye(3)), np.eye(3))


def test_border_takes_each_edge_pixel_once():
    x = np.arange(20.0).reshape(4, 5)
    assert sorted(border(x)) == [0, 1, 2, 3, 4, 5, 9, 10, 14, 15, 16, 17, 18, 19]


def test_ink_is_dark_compares_the_paper_with_the_middle_of_the_range():
    x = np.full((5, 5), 0.45)  # dim paper, darker ink: inverted
    x[2, 2] = 0.1
    assert ink_is_dark(x)
    x[2, 2] = 0.9  # lighter ink
    assert not ink_is_dark(x)


def test_background_fits_a_plane_and_ignores_ink_on_a_side():
    v, u = np.meshgrid(np.linspace(0, 1, 9), np.linspace(0, 1, 12), indexing="ij")
    plane = 0.2 + 0.3 * v + 0.1 * u
    assert_allclose(background(plane), plane, atol=1e-12)
    inked = np.full((9, 12), 0.3)
    inked[3:7, 0] = inked[0, 5:9] = 1.0  # strokes touching the sides
    inked[4:6, 4:8] = 1.0
    assert_allclose(background(inked), 0.3, atol=1e-12)


def test_above_paper_divides_by_the_brightness_of_light_paper():
    """Ink of reflectance 0.2 on paper lit from 0.5 to 1.0: the same contrast, 0.8,
    everywhere; a light-on-dark image is not divided."""
    light = np.linspace(0.5, 1.0, 10)[None, :] * np.ones((10, 1))
    grey = light.copy()
    grey[3:7, 2:8] *= 0.2
    d = above_paper(1 - grey, inverted=True)
    assert_allclose(d[3:7, 2:8], 0.8, atol=1e-12)
    assert_allclose(d[[0, -1]], 0, atol=1e-12)
    assert_allclose(above_paper(grey, inverted=False), grey - light, atol=1e-12)


def test_noise_level_estimates_the_standard_deviation():
    noise = np.random.default_rng(0).normal(0, 0.03, (300, 400))
    assert noise_level(noise) == pytest.approx(0.03, rel=0.05)
    assert noise_level(np.zeros((5, 5))) == 0


def test_ink_cuts_below_the_threshold():
    """Contrast 1, no noise: the threshold is 0.25."""
    x = np.zeros((6, 6))
    x[2, 2:5] = [1.0, 0.5, 0.2]
    assert_allclose(ink(x)[2, 2:5], [0.75, 0.25, 0.0])


def test_bounding_box_and_fit_box():
    z = np.zeros((10, 12))
    z[2, 3] = z[7, 5] = 0.5
    assert bounding_box(z) == (2, 7, 3, 5)
    assert fit_box(84, 84) == (20, 20)
    assert fit_box(40, 30) == (20, 15)
    assert fit_box(30, 40) == (15, 20)
    assert fit_box(8, 1) == (20, 3)  # 2.5 rounds up
    assert fit_box(40, 1) == (20, 1)  # at least one pixel
    assert fit_box(150, 12) == (20, 2)  # 1.6
    assert fit_box(5, 3) == (20, 12)  # small digits are scaled up


def test_area_weights_average_each_output_pixel_over_its_interval():
    assert_allclose(area_weights(4, 2), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    assert_allclose(area_weights(3, 2), [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]])
    assert_allclose(area_weights(1, 3), [[1], [1], [1]])  # scaling up
    assert_array_equal(area_weights(7, 7), np.eye(7))
    for n, m in [(84, 20), (61, 20), (13, 20), (500, 7)]:
        weights = area_weights(n, m)
        assert_allclose(weights.sum(axis=1), 1)
        assert_allclose(weights.sum(axis=0), m / n)  # every input pixel counted once
    x = np.random.default_rng(0).random((60, 90))
    blocks = x.reshape(20, 3, 30, 3).mean(axis=(1, 3))
    assert_allclose(area_resize(x, 20, 30), blocks)


def test_place_rounds_half_up_and_keeps_the_digit_inside():
    bar = np.ones((20, 2))  # centre of mass (9.5, 0.5): exact halves
    out = place(bar)
    assert box_of(out) == (20, 2)
    assert centre_of_mass(out) == (14.5, 14.5)  # floor(14 - 9.5 + 0.5) = 5: half up
    # all the mass in a corner: the box is clamped, nothing is lost
    corner = np.zeros((20, 20))
    corner[0, 0] = 1  # would go to (14, 14): the box's top-left at most 28 - 20
    assert place(corner).sum() == 1 and place(corner)[8, 8] == 1
    corner = corner[::-1, ::-1]  # would go to (14, 14): the box's top-left at least 0
    assert place(corner).sum() == 1 and place(corner)[19, 19] == 1


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((0, 5)), r"is empty \(shape \(0, 5\)\)"),
        (np.zeros((0, 0, 3)), r"is empty"),
        (np.zeros((2, 9)), r"2 x 9 pixels: too small .* at least 3 x 3"),
        (np.zeros(10), r"must have shape \(H, W\) grey, .* got shape \(10,\)"),
        (np.zeros((1, 8, 8, 3)), r"got shape \(1, 8, 8, 3\)"),
        (np.zeros((8, 8, 2)), r"got shape \(8, 8, 2\)"),
        (np.array([["a", "b"]] * 3), r"must be a numeric array .* got dtype <U1"),
        (np.full((5, 5), np.nan), r"contains NaN or infinite values"),
        (np.where(np.eye(5) > 0, np.inf, 0.5), r"contains NaN or infinite values"),
        (np.eye(5) * 255.0, r"float values must lie in \[0, 1\]; got \[0, 255\]"),
        (np.eye(5, dtype=np.int64) * 300, r"integer values must lie in 0..255"),
        (
            np.full((8, 8), 200, np.uint8),
            r"no digit found: the image is all one colour",
        ),
        (
            np.zeros((8, 8, 4)),
            r"no digit found: the image is all one colour \(grey level 1",
        ),
    ],
    ids=[
        "empty",
        "empty RGB",
        "too small",
        "1-D",
        "4-D",
        "two channels",
        "strings",
        "NaN",
        "infinite",
        "0..255 floats",
        "ints above 255",
        "one colour",
        "all transparent",
    ],
)
def test_bad_arrays(image, message):
    with pytest.raises(DigitImageError, match=message):
        prepare_digit(image)


def test_no_digit_in_a_blank_or_faint_image():
    rng = np.random.default_rng(0)
    blank = np.clip(0.8 + rng.normal(0, 0.04, (200, 200)), 0, 1)  # noise only
    with pytest.raises(
        DigitImageError,
        match="no digit found: nothing stands out from the paper.s noise",
    ):
        prepare_digit(blank)
    faint = np.full((50, 50), 0.8)
    faint[20:30, 24:26] = 0.75  # 1/16 darker than the paper
    with pytest.raises(DigitImageError, match=r"no digit found: .* by more than 0.06"):
        prepare_digit(faint)


def test_bad_files_are_named(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(DigitImageError, match=rf"{re.escape(str(text))}: not an image"):
        prepare_digit(text)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DigitImageError, match=r"empty.png: an empty file \(0 bytes\)"):
        prepare_digit(tmp_path / "empty.png")
    with pytest.raises(DigitImageError, match=r"missing.png: no such image file"):
        prepare_digit(tmp_path / "missing.png")
    with pytest.raises(DigitImageError, match=r"is a directory, not an image file"):
        prepare_digit(tmp_path)
    drawn_seven().save(tmp_path / "seven.png")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes((tmp_path / "seven.png").read_bytes()[:300])
    with pytest.raises(
        DigitImageError,
        match=rf"{re.escape(str(truncated))}: the image cannot be decoded",
    ):
        prepare_digit(truncated)
    Image.new("RGB", (40, 30), "white").save(tmp_path / "white.png")
    with pytest.raises(
        DigitImageError, match=r"white.png: no digit found: .* all one colour"
    ):
        prepare_digit(tmp_path / "white.png")
    Image.new("RGB", (2, 30), "white").save(tmp_path / "thin.png")
    with pytest.raises(DigitImageError, match=r"thin.png .* too small"):
        prepare_digit(tmp_path / "thin.png")
