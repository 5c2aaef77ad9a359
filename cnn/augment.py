"""Data augmentation on the fly (bonus challenge 5): random rotations, shifts and
elastic distortions.

Every transformation here is an *inverse mapping*: for each pixel ``(i, j)`` of the
output we compute where it comes from in the input, ``(src_i, src_j)``, usually between
pixels, and read the input there by bilinear interpolation (the weighted mean of the
four surrounding pixels; outside the image the value is ``fill``). Mapping backwards
leaves no holes in the output, which mapping forwards would.

Conventions: pixel ``(i, j)`` is row ``i`` (downwards) and column ``j`` (rightwards), as
``plt.imshow`` draws an image. A positive angle rotates the picture *counter-clockwise*
about the image centre, so a rotation by +90 degrees equals ``np.rot90(image)``; a shift
``(dy, dx)`` moves the picture ``dy`` pixels down and ``dx`` pixels right.

Images may be a batch (N, H, W) or (N, C, H, W); all channels of an image get the same
transformation, and the output has the input's shape and dtype. Everything is vectorised
over the batch.
"""

import numpy as np

from ._checks import check_array, check_positive_float


def _as_nchw(name, X):
    """Check a batch of images; return it as (N, C, H, W) (a view) and the original
    shape."""
    X = check_array(name, X, shape_doc="(N, H, W) or (N, C, H, W)")
    if X.ndim not in (3, 4):
        raise ValueError(
            f"{name} must be a batch of images of shape (N, H, W) or (N, C, H, W); "
            f"got shape {X.shape}"
        )
    return (X[:, None] if X.ndim == 3 else X), X.shape


def bilinear_sample(X, src_i, src_j, fill=0.0):
    """Read images at fractional positions by bilinear interpolation.

    Parameters
    ----------
    X : ndarray of shape (N, C, H, W)
    src_i, src_j : ndarray of shape (N, OH, OW)
        For each output pixel of each image, the (row, column) position to read in that
        image.
    fill : float
        Value of the input outside the image.

    Returns
    -------
    out : ndarray of shape (N, C, OH, OW), X's dtype
        ``out[n, c, i, j]`` is ``X[n, c]`` interpolated at
        ``(src_i[n, i, j], src_j[n, i, j])``.
    """
    N, C, H, W = X.shape
    if src_i.shape != src_j.shape or src_i.ndim != 3 or len(src_i) != N:
        raise ValueError(
            f"bilinear_sample: src_i and src_j must both have shape (N={N}, OH, OW); "
            f"got {src_i.shape} and {src_j.shape}"
        )
    i0, j0 = np.floor(src_i), np.floor(src_j)
    fi, fj = src_i - i0, src_j - j0  # fractional parts, in [0, 1)
    i0, j0 = i0.astype(np.intp), j0.astype(np.intp)
    flat = X.reshape(N, C, H * W)
    out = np.zeros((N, C) + src_i.shape[1:], dtype=np.float64)
    # The four neighbours (i0, j0), (i0, j0+1), (i0+1, j0), (i0+1, j0+1) and their
    # weights.
    for di, dj, weight in (
        (0, 0, (1 - fi) * (1 - fj)),
        (0, 1, (1 - fi) * fj),
        (1, 0, fi * (1 - fj)),
        (1, 1, fi * fj),
    ):
        ii, jj = i0 + di, j0 + dj
        inside = (ii >= 0) & (ii < H) & (jj >= 0) & (jj < W)
        index = np.where(inside, ii * W + jj, 0).reshape(N, 1, -1)  # (N, 1, OH*OW)
        values = np.take_along_axis(
            flat, np.broadcast_to(index, (N, C, index.shape[2])), axis=2
        )
        values = np.where(inside[:, None], values.reshape(out.shape), fill)
        out += weight[:, None] * values
    return out.astype(X.dtype, copy=False)


def affine_transform(X, angles=0.0, shifts=(0.0, 0.0), scales=1.0, fill=0.0):
    """Rotate, scale and shift every image of a batch (deterministic; see
    :func:`random_affine`).

    Each output pixel ``p`` reads the input at ``c + R(-angle) (p - c - shift) / scale``
    where ``c`` is the image centre ``((H - 1) / 2, (W - 1) / 2)``: the inverse of
    "scale and rotate about the centre, then shift".

    Parameters
    ----------
    X : ndarray of shape (N, H, W) or (N, C, H, W)
    angles : float or ndarray of shape (N,)
        Counter-clockwise rotations in degrees.
    shifts : (dy, dx) or ndarray of shape (N, 2)
        Translations in pixels, down and right.
    scales : float or ndarray of shape (N,)
        Zoom factors (> 1 enlarges the picture).
    fill : float
        Value of the pixels that come from outside the image.

    Returns
    -------
    out : ndarray of X's shape and dtype
    """
    X4, shape = _as_nchw("affine_transform: X", X)
    N, _, H, W = X4.shape
    theta = np.deg2rad(np.broadcast_to(np.asarray(angles, dtype=np.float64), (N,)))
    shifts = np.broadcast_to(np.asarray(shifts, dtype=np.float64), (N, 2))
    scales = np.broadcast_to(np.asarray(scales, dtype=np.float64), (N,))
    if np.any(scales <= 0) or not (
        np.isfinite(theta).all() and np.isfinite(shifts).all()
    ):
        raise ValueError(
            "affine_transform: angles and shifts must be finite and scales > 0"
        )
    cy, cx = (H - 1) / 2, (W - 1) / 2
    # Output positions relative to the centre, minus the shift: u (down) and v (right),
    # each (N, H, W).
    u = np.arange(H, dtype=np.float64)[None, :, None] - cy - shifts[:, 0, None, None]
    v = np.arange(W, dtype=np.float64)[None, None, :] - cx - shifts[:, 1, None, None]
    cos = (np.cos(theta) / scales)[:, None, None]
    sin = (np.sin(theta) / scales)[:, None, None]
    # Rotating back by -angle, written in (down, right) coordinates (the row axis points
    # down).
    src_i = cy + cos * u + sin * v
    src_j = cx - sin * u + cos * v
    return bilinear_sample(X4, src_i, src_j, fill).reshape(shape)


def random_affine(X, rng, max_rotation=10.0, max_shift=2.0, max_scale=0.0, fill=0.0):
    """Rotate, shift (and optionally scale) each image by its own random amount.

    Parameters
    ----------
    X : ndarray of shape (N, H, W) or (N, C, H, W)
    rng : numpy.random.Generator or int or None
        Source of the random transformations (a seed gives reproducible output).
    max_rotation : float
        Angles are uniform in ``[-max_rotation, max_rotation]`` degrees.
    max_shift : float
        Shifts along each axis are uniform in ``[-max_shift, max_shift]`` pixels.
    max_scale : float in [0, 1)
        Zoom factors are uniform in ``[1 - max_scale, 1 + max_scale]``; 0 keeps the
        size.
    fill : float
        Value of the pixels that come from outside the image.

    Returns
    -------
    out : ndarray of X's shape and dtype
    """
    max_rotation = check_positive_float(
        "random_affine: max_rotation", max_rotation, allow_zero=True
    )
    max_shift = check_positive_float(
        "random_affine: max_shift", max_shift, allow_zero=True
    )
    max_scale = check_positive_float(
        "random_affine: max_scale", max_scale, allow_zero=True
    )
    if max_scale >= 1:
        raise ValueError(f"random_affine: max_scale must be in [0, 1); got {max_scale}")
    rng = np.random.default_rng(rng)
    N = len(_as_nchw("random_affine: X", X)[0])
    angles = rng.uniform(-max_rotation, max_rotation, N)
    shifts = rng.uniform(-max_shift, max_shift, (N, 2))
    scales = rng.uniform(1 - max_scale, 1 + max_scale, N)
    return affine_transform(X, angles, shifts, scales, fill)


def _gaussian_matrix(n, sigma):
    """The (n, n) matrix that blurs a length-n signal with a normalised Gaussian of std
    ``sigma`` (zeros outside)."""
    d = np.arange(n)[:, None] - np.arange(n)[None, :]
    return np.exp(-0.5 * (d / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))


def elastic_distortion(X, rng, alpha=34.0, sigma=4.0, fill=0.0):
    """Elastic distortion (Simard, Steinkraus and Platt, 2003): displace every pixel by
    a smooth random field.

    Each image gets two random fields (row and column displacements) uniform in [-1, 1],
    blurred by a Gaussian of std ``sigma`` pixels (``G_H @ field @ G_W.T`` with Gaussian
    matrices: two small matrix products) and multiplied by ``alpha``. The defaults are
    the paper's for MNIST; they move pixels by about 1.6 pixels on average, differently
    in different parts of the digit.

    Parameters
    ----------
    X : ndarray of shape (N, H, W) or (N, C, H, W)
    rng : numpy.random.Generator or int or None
    alpha : float >= 0
        Strength of the displacement: the blurred field is multiplied by ``alpha``
        pixels.
    sigma : float > 0
        Smoothness of the displacement field in pixels (small: jittery noise; large:
        almost an affine map).
    fill : float

    Returns
    -------
    out : ndarray of X's shape and dtype
    """
    alpha = check_positive_float("elastic_distortion: alpha", alpha, allow_zero=True)
    sigma = check_positive_float("elastic_distortion: sigma", sigma)
    X4, shape = _as_nchw("elastic_distortion: X", X)
    N, _, H, W = X4.shape
    rng = np.random.default_rng(rng)
    G_H, G_W = _gaussian_matrix(H, sigma), _gaussian_matrix(W, sigma)
    field = rng.uniform(-1, 1, (2, N, H, W))
    di, dj = alpha * (G_H @ field @ G_W.T)  # two smooth (N, H, W) displacement fields
    rows = np.arange(H, dtype=np.float64)[None, :, None]
    cols = np.arange(W, dtype=np.float64)[None, None, :]
    return bilinear_sample(X4, rows + di, cols + dj, fill).reshape(shape)


def augment_batch(
    X,
    rng,
    max_rotation=10.0,
    max_shift=2.0,
    max_scale=0.0,
    elastic_alpha=0.0,
    elastic_sigma=4.0,
    fill=0.0,
):
    """A random affine transformation, then (if ``elastic_alpha > 0``) an elastic
    distortion.

    The default, ``augment_batch(X, rng)``, rotates by up to 10 degrees and shifts by up
    to 2 pixels. Its signature ``(X, rng) -> X'`` is what
    :func:`train_with_augmentation` expects; fix other settings with
    ``functools.partial(augment_batch, max_rotation=15)``.

    Parameters
    ----------
    X : ndarray of shape (N, H, W) or (N, C, H, W)
    rng : numpy.random.Generator or int or None
    max_rotation, max_shift, max_scale, fill
        As in :func:`random_affine`.
    elastic_alpha, elastic_sigma
        ``alpha`` and ``sigma`` of :func:`elastic_distortion`; ``elastic_alpha=0`` skips
        it.

    Returns
    -------
    out : ndarray of X's shape and dtype
    """
    rng = np.random.default_rng(rng)
    out = random_affine(X, rng, max_rotation, max_shift, max_scale, fill)
    if elastic_alpha:
        out = elastic_distortion(out, rng, elastic_alpha, elastic_sigma, fill)
    return out


def train_with_augmentation(
    model,
    X_train,
    y_train,
    epochs=10,
    batch_size=32,
    augment=augment_batch,
    validation_data=None,
    verbose=1,
    processes=1,
):
    """Train a :class:`cnn.model.Sequential` like its ``train``, augmenting every
    mini-batch on the fly.

    Each epoch sees freshly transformed copies of the training images, so the network
    never sees the same picture twice; the original data are not changed. Shuffling,
    learning-rate schedule and the returned history are those of ``Sequential.train``;
    ``augment(Xb, rng)`` draws its randomness from the model's generator, so the model's
    seed makes a run reproducible. With ``augment=None`` the result is exactly that of
    ``model.train(..., shuffle=True)``.

    Parameters
    ----------
    model : Sequential
    X_train : ndarray of shape (N, C, H, W)
    y_train : ndarray of shape (N,)
    epochs, batch_size : int
    augment : callable ``(X, rng) -> X`` or None
        Applied to each training batch (N_b, C, H, W); :func:`augment_batch` by default.
    validation_data : tuple (X_val, y_val) or None
        Evaluated, without augmentation, at the end of every epoch.
    verbose : int
        0 silent, 1 one line per epoch.
    processes : int
        Processes that share every batch (:mod:`cnn.parallel`), as in ``train``.

    Returns
    -------
    history : dict of lists, one entry per epoch
        ``loss``, ``accuracy`` (over the augmented batches), ``seconds``,
        ``learning_rate``, and ``val_loss``, ``val_accuracy`` if there is validation
        data.
    """
    return model.train(
        X_train,
        y_train,
        epochs=epochs,
        batch_size=batch_size,
        validation_data=validation_data,
        verbose=verbose,
        augment=augment,
        processes=processes,
    )
