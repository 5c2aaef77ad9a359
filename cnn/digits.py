"""Your own digits: an image of a handwritten digit prepared the way MNIST's were.

MNIST's digits were scanned (NIST), "size normalized to fit in a 20x20 pixel box while
preserving their aspect ratio" with anti-aliasing, and "centered in a 28x28 image by
computing the center of mass of the pixels" (LeCun et al.): light strokes on black. A
network trained on them expects exactly that, so an image of a digit drawn on a screen
or photographed on paper goes through the same steps first. :func:`prepare_digit` runs
them, one small function each, so that each can be mirrored one to one in another
language (the JavaScript of a page where the reader draws):

1. **Decode** (files only, :func:`read_image`): Pillow opens the file, turns it upright
   by its EXIF orientation (photos from phones) and converts it to RGBA. Arrays are
   checked (:func:`as_unit_array`): at least 3 x 3 pixels, finite; uint8 values are
   divided by 255 (uint16 by 65535), floats must lie in [0, 1]. All arithmetic from
   here on is in float64.
2. **Grey** (:func:`to_grey`): alpha is composited on white paper,
   ``c = a * c + (1 - a)`` for each colour channel (a transparent canvas is white
   paper), and the colour becomes its luma ``0.299 R + 0.587 G + 0.114 B`` (ITU-R
   BT.601, the weights of Pillow's "L"). If every pixel has the same grey level there
   is no digit.
3. **Light on dark** (:func:`ink_is_dark`): the paper is what the image's border shows
   (:func:`border`: the pixels of the first and last row and column, each once). Its
   level is their median (for an even count, the mean of the two middle values). If it
   lies above the middle of the image's range, ``median > (min + max) / 2``, the ink is
   darker than the paper and the image is inverted, ``x = 1 - x``; otherwise ``x`` is
   the grey image as it is.
4. **Background** (:func:`background`, :func:`above_paper`): uneven paper (a shadow,
   light from one side) is modelled as the plane ``B[i, j] = m + (bottom - top) *
   (v - 1/2) + (right - left) * (u - 1/2)``, with ``m`` the median of the border,
   ``top``, ``bottom``, ``left``, ``right`` the medians of the four sides (``x[0]``,
   ``x[-1]``, ``x[:, 0]``, ``x[:, -1]``, corners in both of their sides),
   ``v = i / (H - 1)`` and ``u = j / (W - 1)``: exact for paper whose level changes
   linearly across the image, and little moved by ink where the digit touches a side.
   How far each pixel stands out from the paper is ``d = x - B``; for an inverted
   image (dark ink on light paper) it is divided by the paper's brightness,
   ``d = (x - B) / max(1 - B, MIN_PAPER)`` (``MIN_PAPER`` = 0.1), because light
   multiplies: on paper lit half as bright, ink is half as dark.
5. **Ink** (:func:`ink`, :func:`noise_level`): ``y = max(d, 0)``; the ink's contrast is
   ``c = max(y)``. If ``c < MIN_CONTRAST`` (0.1) there is no digit. The paper's noise
   ``s`` is the median absolute deviation of ``d`` over the border times 1.4826 (the
   standard deviation, for normal noise). The threshold
   ``t = max(INK_THRESHOLD * c, NOISE_THRESHOLD * s)`` (0.25 of the contrast, 6 times
   the noise) cuts paper grain, noise and what the plane leaves of the background; if
   ``t >= c`` nothing stands out from the noise and there is no digit. The ink is
   ``z = max(y - t, 0)``: strokes keep their soft edges above ``t``.
6. **Crop** (:func:`bounding_box`): to the smallest rectangle holding every pixel with
   ``z > 0``, of ``h x w`` pixels.
7. **Scale** (:func:`fit_box`, :func:`area_resize`): to ``oh x ow`` with the longer side
   ``BOX`` (20) and the shorter ``max(1, floor(20 * short / long + 1/2))``, computed
   in integers as ``(40 * short + long) // (2 * long)``. Resampling is by area
   averaging, separately along each axis: of ``n`` input and ``m`` output pixels,
   output pixel ``i`` covers the input interval ``[i * n / m, (i + 1) * n / m)`` and is
   the mean of the input over it, input pixel ``k`` (the interval ``[k, k + 1)``)
   weighted by the length of its overlap. That is ``Ry @ z @ Rx.T`` with ``R[i, k] =
   overlap * m / n`` (:func:`area_weights`; each row sums to 1).
8. **Centre** (:func:`centre_of_mass`, :func:`place`): the centre of mass ``(cy, cx) =
   (sum(i * v) / sum(v), sum(j * v) / sum(v))`` of the scaled digit ``v`` (pixel
   centres at integer indices) goes to pixel ``(14, 14)`` of a 28 x 28 image of zeros,
   where MNIST's are (mean (14.00, 14.01) over the 70,000 images, all but 2 within half
   a pixel). ``v``'s top-left corner goes to row ``floor(14 - cy + 1/2 + 1e-9)`` and
   column ``floor(14 - cx + 1/2 + 1e-9)``: rounded half up; the ``1e-9`` makes an exact
   half (a symmetric digit) round up in every language, whatever the order in which
   its sums were rounded. Both are clamped to ``[0, 28 - oh]`` and ``[0, 28 - ow]``, so
   that no ink leaves the image.
9. **To [0, 1]**: divided by the brightest pixel, which becomes 1 (MNIST's strokes
   saturate); float32 of shape (1, 28, 28), one image as
   :func:`~cnn.data.prepare_images` gives them.

Every step but the decoding is plain arithmetic (no Pillow resampling), so the result is
deterministic, and a port computes the same numbers up to the rounding of its sums.

A photo works when the digit is the only mark on the paper and paper shows all around
it (crop away the table and the sheet's edges): the border is taken as the paper.
"""

import os

import numpy as np

#: The side of the box the digit is scaled to fit, and of the image it is placed in.
BOX, SIZE = 20, 28
#: Where the centre of mass goes: pixel (14, 14), as in MNIST.
CENTRE = 14.0
#: The ink's threshold, as a fraction of its contrast over the paper (step 5).
INK_THRESHOLD = 0.25
#: The ink's threshold, in standard deviations of the paper's noise (step 5): above
#: the largest of the noise in a picture of millions of pixels (about 5.5).
NOISE_THRESHOLD = 6.0
#: The least contrast, over the paper, of an image with a digit (step 5).
MIN_CONTRAST = 0.1
#: The least brightness of light paper that ink is measured against (step 4).
MIN_PAPER = 0.1
#: Luma weights of R, G and B (ITU-R BT.601, as PIL's conversion to "L").
LUMA = (0.299, 0.587, 0.114)


class DigitImageError(ValueError):
    """An image cannot be prepared as a digit: unreadable, empty, of the wrong shape or
    values, or with no digit in it."""


# ------------------------------------------------------------- 1-2: from file to grey


def read_image(path):
    """Decode an image file into an RGBA array.

    Parameters
    ----------
    path : str or os.PathLike
        A PNG, JPEG, GIF, BMP, WebP, TIFF, ... file (anything Pillow reads).

    Returns
    -------
    ndarray of shape (H, W, 4), float64 in [0, 1]
        Turned upright by the file's EXIF orientation; 16-bit greyscale files keep
        their 16 bits.

    Raises
    ------
    DigitImageError
        If the file is missing, empty, unreadable or not an image.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    name = os.fspath(path)
    if os.path.isfile(name) and os.path.getsize(name) == 0:
        raise DigitImageError(
            f"{name}: an empty file (0 bytes), not an image; expected a PNG, JPEG, "
            "GIF, BMP, WebP or TIFF image of a digit"
        )
    try:
        with Image.open(name) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I", "I;16", "I;16B", "I;16L"):
                grey = np.asarray(image, dtype=np.float64) / 65535.0
                return np.dstack([np.clip(grey, 0, 1)] * 3 + [np.ones_like(grey)])
            if image.mode == "F":
                grey = np.asarray(image, dtype=np.float64)
                return np.dstack([grey] * 3 + [np.ones_like(grey)])
            return np.asarray(image.convert("RGBA"), dtype=np.float64) / 255.0
    except FileNotFoundError:
        raise DigitImageError(f"{name}: no such image file") from None
    except IsADirectoryError:
        raise DigitImageError(f"{name}: is a directory, not an image file") from None
    except PermissionError:
        raise DigitImageError(f"{name}: cannot be read (permission denied)") from None
    except Image.DecompressionBombError as err:
        raise DigitImageError(f"{name}: too large to decode safely ({err})") from None
    except UnidentifiedImageError:
        raise DigitImageError(
            f"{name}: not an image file that Pillow can read; expected a PNG, JPEG, "
            "GIF, BMP, WebP or TIFF image of a digit"
        ) from None
    except (OSError, ValueError, SyntaxError) as err:  # truncated or corrupt data
        raise DigitImageError(
            f"{name}: the image cannot be decoded ({type(err).__name__}: {err}); "
            "expected a complete PNG, JPEG, GIF, BMP, WebP or TIFF image"
        ) from None


def as_unit_array(image, name="prepare_digit: image"):
    """Check an image array and return it as float64 values in [0, 1].

    Parameters
    ----------
    image : array_like of shape (H, W), (H, W, 3) or (H, W, 4)
        Grey, RGB or RGBA. uint8 values are divided by 255, uint16 by 65535, bool
        gives 0 and 1; other integers must lie in 0..255 and are divided by 255;
        floats must lie in [0, 1].

    Returns
    -------
    ndarray of the same shape, float64 in [0, 1]

    Raises
    ------
    DigitImageError
        For an empty array, one smaller than 3 x 3 pixels, another shape, a
        non-numeric dtype, NaN or infinity, or values out of range.
    """
    a = np.asarray(image)
    shape_doc = "(H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA"
    if a.dtype.kind not in "biuf":
        raise DigitImageError(
            f"{name} must be a numeric array of shape {shape_doc}; got dtype {a.dtype}"
        )
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise DigitImageError(
            f"{name} must have shape {shape_doc}; got shape {a.shape}"
        )
    if a.size == 0:
        raise DigitImageError(f"{name} is empty (shape {a.shape}): there is no digit")
    if min(a.shape[:2]) < 3:
        raise DigitImageError(
            f"{name} is {a.shape[0]} x {a.shape[1]} pixels: too small for a digit with "
            "paper around it (the border is taken as the paper); at least 3 x 3 pixels "
            "are needed"
        )
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise DigitImageError(f"{name} contains NaN or infinite values")
        low, high = float(a.min()), float(a.max())
        if low < 0 or high > 1:
            raise DigitImageError(
                f"{name}: float values must lie in [0, 1]; got [{low:g}, {high:g}] "
                "(for 0..255 values, divide by 255 or pass uint8)"
            )
        return a.astype(np.float64)
    if a.dtype == np.uint8:
        return a / 255.0
    if a.dtype == np.uint16:
        return a / 65535.0
    if a.dtype.kind == "b":
        return a.astype(np.float64)
    low, high = int(a.min()), int(a.max())
    if low < 0 or high > 255:
        raise DigitImageError(
            f"{name}: integer values must lie in 0..255; got {low}..{high}"
        )
    return a / 255.0


def to_grey(image):
    """Grey levels of an image in [0, 1]: alpha composited on white, colour reduced to
    luma (step 2).

    Parameters
    ----------
    image : ndarray of shape (H, W), (H, W, 3) or (H, W, 4), floats in [0, 1]

    Returns
    -------
    ndarray of shape (H, W), float64
        ``0.299 R + 0.587 G + 0.114 B`` of ``a * colour + (1 - a)``; a grey image as it
        is.
    """
    if image.ndim == 2:
        return image.astype(np.float64)
    colour = image[..., :3]
    if image.shape[2] == 4:
        alpha = image[..., 3:]
        colour = alpha * colour + (1.0 - alpha)  # on white paper
    r, g, b = LUMA
    return r * colour[..., 0] + g * colour[..., 1] + b * colour[..., 2]


# ----------------------------------------------------- 3-5: from grey to ink alone


def border(x):
    """The pixels of the first and last row and column of ``x`` (H, W), H and W >= 3,
    each once, as a 1-D array: ``x[0]``, ``x[-1]``, ``x[1:-1, 0]``, ``x[1:-1, -1]``."""
    return np.concatenate([x[0], x[-1], x[1:-1, 0], x[1:-1, -1]])


def ink_is_dark(grey):
    """True if the ink is darker than the paper (step 3): the border's median lies above
    the middle of the range, ``median(border) > (min + max) / 2``."""
    return bool(np.median(border(grey)) > (grey.min() + grey.max()) / 2)


def background(x):
    """The paper's level at every pixel of ``x`` (H, W): a plane through the medians of
    the four sides (step 4).

    Returns
    -------
    ndarray of shape (H, W)
        ``m + (bottom - top) * (v - 1/2) + (right - left) * (u - 1/2)`` with ``m`` the
        median of :func:`border`, ``top`` (``x[0]``), ``bottom`` (``x[-1]``), ``left``
        (``x[:, 0]``), ``right`` (``x[:, -1]``) the medians of the sides,
        ``v = i / (H - 1)`` and ``u = j / (W - 1)``.
    """
    H, W = x.shape
    m = np.median(border(x))
    top, bottom = np.median(x[0]), np.median(x[-1])
    left, right = np.median(x[:, 0]), np.median(x[:, -1])
    v = np.arange(H) / (H - 1)
    u = np.arange(W) / (W - 1)
    return m + (bottom - top) * (v[:, None] - 0.5) + (right - left) * (u[None, :] - 0.5)


def above_paper(x, inverted):
    """How far each pixel of ``x`` (H, W), light ink on dark, stands out from the paper
    (step 4).

    Parameters
    ----------
    x : ndarray of shape (H, W)
    inverted : bool
        True if ``x`` is ``1 - grey`` of dark ink on light paper (a drawing on white, a
        photo).

    Returns
    -------
    ndarray of shape (H, W)
        ``d = x - B`` with ``B = background(x)``; for an inverted image divided by the
        paper's brightness, ``d / max(1 - B, MIN_PAPER)``: light multiplies, so ink on
        paper lit half as bright is half as dark, and the division evens that out.
    """
    B = background(x)
    d = x - B
    if inverted:
        d /= np.maximum(1.0 - B, MIN_PAPER)
    return d


def noise_level(d):
    """The standard deviation of the paper's noise in ``d`` (H, W), from its border
    (step 5): ``1.4826 * median(|r - median(r)|)`` over the border pixels ``r``.

    The median absolute deviation, scaled to equal the standard deviation of normal
    noise; ink touching the border hardly moves it.
    """
    r = border(d)
    return float(1.4826 * np.median(np.abs(r - np.median(r))))


def ink(d):
    """The ink alone, light on a black background, from ``d`` (H, W), how far each pixel
    stands out from the paper (step 5).

    Returns
    -------
    ndarray of shape (H, W), float64 >= 0, with at least one positive value
        ``max(y - t, 0)`` with ``y = max(d, 0)`` and the threshold
        ``t = max(INK_THRESHOLD * max(y), NOISE_THRESHOLD * noise_level(d))``.

    Raises
    ------
    DigitImageError
        If the ink's contrast ``max(y)`` is below :data:`MIN_CONTRAST`, or not above
        the threshold (the paper's noise).
    """
    y = np.maximum(d, 0.0)
    contrast = float(y.max())
    if contrast < MIN_CONTRAST:
        raise DigitImageError(
            "no digit found: nothing stands out from the paper by more than "
            f"{contrast:.3f} (at least {MIN_CONTRAST} is needed, where black ink on "
            "white paper is 1); is the image blank, or the digit too faint?"
        )
    noise = noise_level(d)
    threshold = max(INK_THRESHOLD * contrast, NOISE_THRESHOLD * noise)
    if threshold >= contrast:
        raise DigitImageError(
            "no digit found: nothing stands out from the paper's noise (the ink's "
            f"contrast {contrast:.3f} is at most {NOISE_THRESHOLD:g} times the noise, "
            f"{noise:.3f}); is the image blank, or the digit too faint?"
        )
    return np.maximum(y - threshold, 0.0)


# --------------------------------------------------- 6-9: from ink to MNIST's layout


def bounding_box(z):
    """``(top, bottom, left, right)``, inclusive, of the pixels ``z > 0`` of ``z``
    (H, W), which has at least one (step 6)."""
    rows = np.flatnonzero((z > 0).any(axis=1))
    cols = np.flatnonzero((z > 0).any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def fit_box(h, w, box=BOX):
    """The size ``(oh, ow)`` of an ``h x w`` image scaled to fit ``box x box`` keeping
    its aspect ratio (step 7): the longer side becomes ``box``, the shorter
    ``max(1, floor(box * short / long + 1/2))``, computed in integers."""
    long = max(h, w)

    def side(n):
        return max(1, (2 * box * n + long) // (2 * long))

    return side(h), side(w)


def area_weights(n, m):
    """The (m, n) matrix that resamples an axis of ``n`` pixels to ``m`` by area
    averaging (step 7).

    Output pixel ``i`` covers the input interval ``[i*n/m, (i+1)*n/m)``; ``R[i, k]`` is
    the length of its overlap with input pixel ``k`` (``[k, k+1)``) times ``m / n``, so
    every row sums to 1 and ``R @ a`` averages ``a`` over each output pixel's interval.
    """
    edges = np.arange(m + 1) * n / m  # (i * n) / m: one rounding, as in any language
    k = np.arange(n)
    overlap = np.minimum(edges[1:, None], k[None, :] + 1.0) - np.maximum(
        edges[:-1, None], k[None, :]
    )
    return np.maximum(overlap, 0.0) * (m / n)


def area_resize(z, oh, ow):
    """Resample ``z`` (h, w) to (oh, ow) by area averaging: ``Ry @ z @ Rx.T`` with the
    matrices of :func:`area_weights` (step 7)."""
    h, w = z.shape
    return area_weights(h, oh) @ z @ area_weights(w, ow).T


def centre_of_mass(v):
    """``(cy, cx)`` of ``v`` (h, w) with positive total: the mean row and column
    index, weighted by the values (step 8)."""
    total = v.sum()
    cy = (v.sum(axis=1) * np.arange(v.shape[0])).sum() / total
    cx = (v.sum(axis=0) * np.arange(v.shape[1])).sum() / total
    return float(cy), float(cx)


def place(v, size=SIZE, centre=CENTRE):
    """Put ``v`` (h, w), at most ``size`` on each side, in a ``size x size`` image of
    zeros with its centre of mass at ``(centre, centre)`` (step 8).

    Returns
    -------
    ndarray of shape (size, size)
        ``v`` with its top-left corner at
        ``floor(centre - c + 1/2 + 1e-9)`` on each axis (``c`` its centre of mass
        there), clamped so that all of ``v`` stays inside.
    """
    h, w = v.shape
    cy, cx = centre_of_mass(v)
    top = min(max(int(np.floor(centre - cy + 0.5 + 1e-9)), 0), size - h)
    left = min(max(int(np.floor(centre - cx + 0.5 + 1e-9)), 0), size - w)
    out = np.zeros((size, size))
    out[top : top + h, left : left + w] = v
    return out


def prepare_digit(image):
    """An image of one handwritten digit, as the network's input: MNIST's preparation
    (the steps of the module docstring).

    Parameters
    ----------
    image : str, os.PathLike or array_like
        An image file (PNG, JPEG, ...), or an array of shape (H, W) grey, (H, W, 3) RGB
        or (H, W, 4) RGBA (transparent pixels are white paper): uint8 (0..255), or float
        in [0, 1]. Dark ink on light paper or light ink on a dark background, of any
        size; a photo of a digit on paper works if the digit is the only mark on it.

    Returns
    -------
    ndarray of shape (1, 28, 28), float32 in [0, 1]
        Light strokes on black, the longer side of the digit's bounding box 20 pixels,
        its centre of mass at pixel (14, 14), the brightest pixel 1: one image as
        :func:`~cnn.data.prepare_images` gives them, so ``model.predict_proba(
        prepare_digit(image)[None])`` classifies it.

    Raises
    ------
    DigitImageError
        (a ValueError) If the file cannot be read as an image; if the array is empty,
        of another shape, not numeric, has NaN, infinite or out-of-range values; if the
        image is all one colour, or nothing in it stands out from the paper enough to
        be a digit. The message says which and what was expected.

    Examples
    --------
    >>> x = prepare_digit("seven.png")  # doctest: +SKIP
    >>> model.predict_proba(x[None])  # (1, 10)  # doctest: +SKIP
    """
    if isinstance(image, (str, os.PathLike)):
        name = os.fspath(image)
        try:
            return _prepare(as_unit_array(read_image(image), name), "the image")
        except DigitImageError as err:
            message = str(err)
            raise DigitImageError(
                message if message.startswith(name) else f"{name}: {message}"
            ) from None
    return _prepare(as_unit_array(image), "the image")


def _prepare(rgba, where):
    """Steps 2 to 9 for an array checked by :func:`as_unit_array`."""
    grey = to_grey(rgba)
    low, high = float(grey.min()), float(grey.max())
    if low == high:
        raise DigitImageError(
            f"no digit found: {where} is all one colour (grey level {low:.3f} "
            "everywhere); expected a digit drawn on a plain background"
        )
    inverted = ink_is_dark(grey)
    x = 1.0 - grey if inverted else grey
    z = ink(above_paper(x, inverted))
    top, bottom, left, right = bounding_box(z)
    z = z[top : bottom + 1, left : right + 1]
    v = area_resize(z, *fit_box(*z.shape))
    out = place(v)
    return (out / out.max()).astype(np.float32)[None]
