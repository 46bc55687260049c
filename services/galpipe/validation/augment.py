"""The paper's galaxy augmentations (section 5): rotation, Gaussian blur, Poisson resampling.

There is no oracle for galaxy orientations, so the paper measures robustness instead: apply a
random non-empty subset of

- **R** -- rotate by a random angle alpha (bicubic); the measured angle must follow,
  ``R' = (R + alpha) mod 180``;
- **B** -- blur with a Gaussian of random strength;
- **N** -- "reconstruct the image at a random clarity by sampling repeatedly in the Poisson
  distribution";

re-measure, and report the deviation from the prediction (the paper: ~6.17 deg mean over
500,000 augmented images). This module implements the three operations, batched over
``images: float32 (N, B, S, S)`` (axes ``[galaxy, band, row, col]``, row 0 = FITS y = 1,
``docs/science.md``, "Conventions"), and the sampling of the protocol's parameters. Everything
is pure: inputs are not modified and randomness comes only from the generator passed in.

Conventions
-----------
- Image angle ``phi``: counter-clockwise from +x (column) towards +y (row), degrees, axial.
- :func:`rotate` by ``alpha`` turns the image content counter-clockwise in that frame, so
  ``phi' = (phi + alpha) mod 180``. With rows increasing upwards this is
  ``scipy.ndimage.rotate(image, -alpha, reshape=False, order=3)``: ndimage's positive angle
  turns from +row towards +col (clockwise here). ``rotate(image, 90)`` equals
  ``numpy.rot90(image, k=-1, axes=(-2, -1))`` on a square stamp. The tests prove both on the
  second moments of an elongated Gaussian.
- Centre of rotation: ``((S-1)/2, (S-1)/2)`` in (row, col), the one ``ndimage.rotate`` uses.
- Boundaries: zero outside the stamp (``mode="constant"``, ``cval=0``) for both rotation and
  blur, like the Radon operator; the survey subtracted the sky, so 0 is the background level.
  Light rotated in from outside the stamp or blurred out of it is therefore lost/missing, which
  matters only for a galaxy near the edge (the circular mask of step 2 drops the corners anyway).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage, special

__all__ = [
    "BLUR_SIGMA_RANGE_PX",
    "ROTATION_RANGE_DEG",
    "TOTAL_COUNTS_RANGE",
    "AugmentationParams",
    "apply_augmentations",
    "blur",
    "expected_scene",
    "poisson_resample",
    "rotate",
    "rotation_no_data",
    "sample_augmentations",
]

#: The protocol's parameter ranges (ours; the paper gives none): alpha ~ U[0, 180) deg,
#: sigma ~ U[0.5, 2.0] px, total counts ~ log-uniform on [1e3, 1e5] photons per galaxy (all
#: bands together).
ROTATION_RANGE_DEG = (0.0, 180.0)
BLUR_SIGMA_RANGE_PX = (0.5, 2.0)
TOTAL_COUNTS_RANGE = (1.0e3, 1.0e5)

#: Bicubic: the spline order of the paper's "bicubic interpolation".
_SPLINE_ORDER = 3

#: Gaussian kernels are cut at this many sigma, as ``scipy.ndimage.gaussian_filter`` does.
_BLUR_TRUNCATE = 4.0

RngLike = np.random.Generator | int


def _as_generator(rng: RngLike) -> np.random.Generator:
    """The generator itself, or a fresh one seeded with an int (reproducible by seed)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, int | np.integer) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng={rng!r}: expected a numpy.random.Generator or an int seed")


def _check_images(images: ArrayLike) -> NDArray[np.float32]:
    """Return ``images`` as float32 ``(N, B, S, S)``; raise if the shape or values are wrong."""
    batch = np.asarray(images, dtype=np.float32)
    if batch.ndim != 4 or batch.shape[-1] != batch.shape[-2]:
        raise ValueError(f"images has shape {batch.shape}: expected (N, B, S, S) square stamps")
    finite = np.isfinite(batch)
    if not finite.all():
        galaxies = np.flatnonzero(~finite.all(axis=(1, 2, 3)))
        raise ValueError(
            f"images has {int((~finite).sum())} NaN/inf pixels (galaxies {galaxies[:10].tolist()}"
            f"{'...' if galaxies.size > 10 else ''}): sanitise before augmenting, a spline "
            "or a blur would spread them over the stamp"
        )
    return batch


def _per_galaxy(values: ArrayLike, n_galaxies: int, name: str, unit: str) -> NDArray[np.float64]:
    """Broadcast a scalar or ``(N,)`` parameter to ``(N,)`` float64, finite."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim > 1 or (array.ndim == 1 and array.shape[0] != n_galaxies):
        raise ValueError(f"{name} has shape {array.shape}: expected a scalar or ({n_galaxies},)")
    array = np.broadcast_to(array, (n_galaxies,))
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite ({unit}); got {array[~np.isfinite(array)][:5]}")
    return array


def rotate(images: ArrayLike, alpha_deg: ArrayLike) -> NDArray[np.float32]:
    """Augmentation R: rotate each galaxy about the stamp centre by its own angle (bicubic).

    Paper section 5: "rotates the image by a random degree via dotting a transformation matrix
    and applying bicubic interpolation"; the measured angle becomes ``(phi + alpha) mod 180``.

    Parameters
    ----------
    images : array_like, shape (N, B, S, S)
        Cutouts (any flux unit), finite. All bands of a galaxy turn by the same angle.
    alpha_deg : array_like, shape (N,) or scalar
        Rotation in degrees, counter-clockwise from +x (column) towards +y (row).

    Returns
    -------
    numpy.ndarray, shape (N, B, S, S), float32
        The rotated cutouts on the same pixel grid; pixels whose source lies outside the stamp
        are 0. Identical to ``scipy.ndimage.rotate(img, -alpha, reshape=False, order=3)`` per
        band.

    Notes
    -----
    Output pixel ``(r, c)`` samples the cubic-spline interpolant of the input at the point
    turned back by ``-alpha`` about the centre ``m = ((S-1)/2, (S-1)/2)``, in (row, col)::

        [r_in, c_in] = [[cos a, -sin a], [sin a, cos a]] @ ([r, c] - m) + m

    Implementation: one ``ndimage.affine_transform`` call per band image. The loop is over
    images, each call is compiled C; no pixel loop. The vectorised routes measured slower
    (``docs/decisions.md``, "How the augmentations are computed").
    """
    batch = _check_images(images)
    n_galaxies, n_bands, size, _ = batch.shape
    alpha = _per_galaxy(alpha_deg, n_galaxies, "alpha_deg", "degrees")
    matrices, offsets = _rotation_maps(alpha, size)
    rotated = np.empty_like(batch)
    for galaxy in range(n_galaxies):
        for band in range(n_bands):
            ndimage.affine_transform(
                batch[galaxy, band],
                matrices[galaxy],
                offsets[galaxy],
                order=_SPLINE_ORDER,
                mode="constant",
                cval=0.0,
                output=rotated[galaxy, band],
            )
    return rotated


def _rotation_maps(
    alpha_deg: NDArray[np.float64], size: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(N, 2, 2)`` matrices and ``(N, 2)`` offsets from output to input ``(row, col)``.

    ``input = matrix @ output + offset`` turns back by ``-alpha`` about the stamp centre
    (:func:`rotate`, Notes).
    """
    # Exact at multiples of 90 deg (as in ndimage.rotate): cos(pi/2) = 6e-17 would put edge
    # pixels a hair outside the stamp, where mode="constant" returns 0.
    cos_a, sin_a = special.cosdg(alpha_deg), special.sindg(alpha_deg)
    matrices = np.stack([np.stack([cos_a, -sin_a], -1), np.stack([sin_a, cos_a], -1)], -2)
    centre = np.full(2, (size - 1) / 2.0)
    return matrices, centre - matrices @ centre


def rotation_no_data(alpha_deg: ArrayLike, size: int) -> NDArray[np.bool_]:
    """The pixels that a rotation brings in from outside the stamp: no data.

    Parameters
    ----------
    alpha_deg : array_like, shape (N,)
        Rotations in degrees, as for :func:`rotate`.
    size : int
        Stamp side ``S``, pixels.

    Returns
    -------
    numpy.ndarray, shape (N, S, S), bool
        True where the pixel's source point lies outside the input grid ``[0, S-1]^2``,
        exactly the pixels :func:`rotate` sets to 0 (``mode="constant"`` samples nothing
        there); the same for every band.
    """
    alpha = np.atleast_1d(np.asarray(alpha_deg, dtype=np.float64))
    matrices, offsets = _rotation_maps(alpha, size)
    grid = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij"), axis=-1)
    source = np.einsum("nij,rcj->nrci", matrices, grid.astype(np.float64)) + offsets[:, None, None]
    return np.any((source < 0) | (source > size - 1), axis=-1)


def _gaussian_band_matrices(sigma_px: NDArray[np.float64], size: int) -> NDArray[np.float32]:
    """Per-galaxy ``(N, S, S)`` 1-D Gaussian convolution matrices with zero padding.

    ``T[n, i, j]`` is the weight of input pixel ``j`` in output pixel ``i``: the sampled
    Gaussian ``exp(-(j-i)^2 / (2 sigma^2))`` cut at ``int(4 sigma + 0.5)`` pixels and
    normalised over that whole cut kernel -- exactly ``scipy.ndimage.gaussian_filter1d``'s
    kernel; rows near the edge simply miss the taps that fall outside (``mode="constant"``).
    ``sigma = 0`` gives the identity.
    """
    radius = (_BLUR_TRUNCATE * sigma_px + 0.5).astype(np.int64)
    safe_sigma = np.maximum(sigma_px, 1e-12)[:, None]
    taps = np.arange(-radius.max(), radius.max() + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (taps[None, :] / safe_sigma) ** 2)
    kernel *= np.abs(taps)[None, :] <= radius[:, None]
    norm = kernel.sum(axis=1)
    lag = np.arange(size)[None, :] - np.arange(size)[:, None]  # j - i
    weights = np.exp(-0.5 * (lag[None, :, :] / safe_sigma[:, :, None]) ** 2)
    weights *= np.abs(lag)[None, :, :] <= radius[:, None, None]
    return (weights / norm[:, None, None]).astype(np.float32)


def blur(
    images: ArrayLike, sigma_px: ArrayLike, no_data: ArrayLike | None = None
) -> NDArray[np.float32]:
    """Augmentation B: Gaussian blur with a standard deviation per galaxy, in pixels.

    Paper section 5: "blurs the image by a random strength using the gaussian blur method".

    Parameters
    ----------
    images : array_like, shape (N, B, S, S)
        Cutouts, finite. All bands of a galaxy get the same blur.
    sigma_px : array_like, shape (N,) or scalar
        Gaussian standard deviation in pixels, >= 0 (0 leaves the galaxy unchanged).
    no_data : array_like, shape (N, S, S), optional
        Pixels without data (e.g. :func:`rotation_no_data`). They stay 0, and the others are
        blurred over the pixels with data only (normalised convolution ``G*(X M) / G*M``,
        ``M`` the data mask). Default: every pixel is data.

    Returns
    -------
    numpy.ndarray, shape (N, B, S, S), float32
        Without ``no_data``: ``scipy.ndimage.gaussian_filter(img, sigma, mode="constant",
        cval=0, truncate=4)`` per band (to float32 rounding). Boundary: zero outside the
        stamp, so flux within ~4 sigma of the edge is partly blurred out of the stamp and
        lost; total flux is preserved for a galaxy well inside.

    Notes
    -----
    The Gaussian is separable, so the blur of galaxy ``n`` is ``T_n @ X @ T_n.T`` with ``T_n``
    its ``(S, S)`` 1-D convolution matrix (zero padding built in). All galaxies go through two
    batched matrix products, faster than a loop of ``gaussian_filter`` calls
    (``docs/decisions.md``, "How the augmentations are computed").

    Why no data stays no data: a plain blur spreads the data into a rotation's empty corners
    as a fading, low-noise rim that is neither data nor the 0 that marks no data. The
    measurement takes that rim for sky and its noise for the sky's, and finds spurious
    "neighbours" (``docs/decisions.md``, "Augmentations that keep no data as no data"). A
    survey seen with worse seeing still has no data where it had none.
    """
    batch = _check_images(images)
    n_galaxies, _, size, _ = batch.shape
    sigma = _per_galaxy(sigma_px, n_galaxies, "sigma_px", "pixels")
    if np.any(sigma < 0):
        raise ValueError(f"sigma_px must be >= 0 pixels; got {sigma[sigma < 0][:5]}")
    empty = np.zeros((n_galaxies, size, size), dtype=bool)
    if no_data is not None:
        empty = np.asarray(no_data, dtype=bool)
        if empty.shape != (n_galaxies, size, size):
            raise ValueError(
                f"no_data: expected shape {(n_galaxies, size, size)} (one mask per galaxy), "
                f"got {empty.shape}"
            )
        # G*(X M): the no-data pixels contribute nothing, whatever value they hold.
        batch = np.where(empty[:, None], np.float32(0.0), batch)
    rows = _gaussian_band_matrices(sigma, size)[:, None, :, :]  # (N, 1, S, S), shared by bands
    blurred = (rows @ batch @ np.swapaxes(rows, -1, -2)).astype(np.float32, copy=False)
    partial = np.flatnonzero(empty.any(axis=(-2, -1)))
    if partial.size == 0:
        return blurred
    # ... / G*M on the galaxies with no-data pixels; a data pixel weighs itself, so its
    # coverage is > 0.
    part_empty = empty[partial, None]  # (n, 1, S, S), shared by bands
    part_rows = rows[partial]
    coverage = part_rows @ (~part_empty).astype(np.float32) @ np.swapaxes(part_rows, -1, -2)
    blurred[partial] = np.where(
        part_empty, np.float32(0.0), blurred[partial] / np.where(part_empty, 1.0, coverage)
    )
    return blurred


def poisson_resample(
    images: ArrayLike, total_counts: ArrayLike, rng: RngLike
) -> NDArray[np.float32]:
    """Augmentation N: re-observe each galaxy with a given expected number of photons.

    Paper section 5: "reconstructs the image at a random clarity by sampling repeatedly in the
    Poisson distribution". Clarity is set by ``total_counts``: fewer counts, noisier image.

    Parameters
    ----------
    images : array_like, shape (N, B, S, S)
        Cutouts (flux, e.g. nanomaggies), finite.
    total_counts : array_like, shape (N,) or scalar
        Expected photon count of the whole galaxy stamp, all bands together, > 0.
    rng : numpy.random.Generator or int
        Source of randomness (an int is a seed).

    Returns
    -------
    numpy.ndarray, shape (N, B, S, S), float32
        ``Poisson(k * max(x, 0)) / k`` per pixel with ``k = total_counts / sum(max(x, 0))``
        over all bands and pixels of the galaxy. Expectation ``max(x, 0)`` (flux is
        preserved), variance ``max(x, 0) / k``. A galaxy without positive pixels comes back
        all zero.

    Notes
    -----
    - Negative pixels (sky-subtracted noise) are clipped to 0 first: a Poisson rate cannot be
      negative. The result is therefore non-negative and its mean is the clipped image, not the
      input (the negative half of the sky noise is lost, its positive half kept, so the
      background rises slightly). A caller that wants the noise floor kept can shift each band
      to a minimum of 0 first (as preprocessing step 2 does) and undo the shift afterwards.
    - One scale per galaxy, not per band: the counts split between bands in proportion to
      their flux, so colours are kept and a faint band gets noisier, as in a shorter exposure.
    """
    batch = _check_images(images)
    generator = _as_generator(rng)
    n_galaxies = batch.shape[0]
    counts = _per_galaxy(total_counts, n_galaxies, "total_counts", "photons")
    if np.any(counts <= 0):
        raise ValueError(f"total_counts must be > 0 photons; got {counts[counts <= 0][:5]}")
    rate = np.clip(batch, 0.0, None).astype(np.float64)
    flux = rate.sum(axis=(1, 2, 3))
    scale = np.divide(counts, flux, out=np.zeros_like(flux), where=flux > 0)  # photons per flux
    photons = generator.poisson(rate * scale[:, None, None, None])
    inverse = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale > 0)
    return (photons * inverse[:, None, None, None]).astype(np.float32)


@dataclass(frozen=True)
class AugmentationParams:
    """The augmentations drawn for a batch: which apply to each galaxy, with what parameters.

    Every parameter is drawn for every galaxy (so the random stream does not depend on the
    subsets); the flags say which are applied.

    Attributes
    ----------
    apply_rotation, apply_blur, apply_resample : numpy.ndarray of bool, shape (N,)
        Which of R, B, N apply; at least one per galaxy.
    alpha_deg : numpy.ndarray of float64, shape (N,)
        Rotation angle, degrees, counter-clockwise (see :func:`rotate`).
    blur_sigma_px : numpy.ndarray of float64, shape (N,)
        Blur standard deviation, pixels.
    total_counts : numpy.ndarray of float64, shape (N,)
        Expected photons of the resampled galaxy, all bands together.
    """

    apply_rotation: NDArray[np.bool_]
    apply_blur: NDArray[np.bool_]
    apply_resample: NDArray[np.bool_]
    alpha_deg: NDArray[np.float64]
    blur_sigma_px: NDArray[np.float64]
    total_counts: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.alpha_deg.shape[0])

    @property
    def angle_shift_deg(self) -> NDArray[np.float64]:
        """The predicted change of the image angle, degrees: alpha where R applies, else 0."""
        return np.where(self.apply_rotation, self.alpha_deg, 0.0)


def sample_augmentations(n: int, rng: RngLike) -> AugmentationParams:
    """Draw the paper's protocol for ``n`` galaxies (section 5).

    Each galaxy gets a non-empty subset of {R, B, N}, the 7 subsets equally likely (so each
    operation applies with probability 4/7), and parameters

    - R: ``alpha ~ U[0, 180)`` degrees;
    - B: ``sigma ~ U[0.5, 2.0)`` pixels;
    - N: ``total_counts ~ log-U[1e3, 1e5)`` photons per galaxy.

    Parameters
    ----------
    n : int
        Number of galaxies, >= 0.
    rng : numpy.random.Generator or int
        Source of randomness (an int is a seed).

    Returns
    -------
    AugmentationParams
    """
    if n < 0:
        raise ValueError(f"n={n}: expected a number of galaxies >= 0")
    generator = _as_generator(rng)
    subset = generator.integers(1, 8, size=n)  # bit 0: R, bit 1: B, bit 2: N; never 0
    alpha = generator.uniform(*ROTATION_RANGE_DEG, size=n)
    sigma = generator.uniform(*BLUR_SIGMA_RANGE_PX, size=n)
    log_counts = generator.uniform(
        math.log(TOTAL_COUNTS_RANGE[0]), math.log(TOTAL_COUNTS_RANGE[1]), size=n
    )
    return AugmentationParams(
        apply_rotation=(subset & 1).astype(bool),
        apply_blur=(subset & 2).astype(bool),
        apply_resample=(subset & 4).astype(bool),
        alpha_deg=alpha,
        blur_sigma_px=sigma,
        total_counts=np.exp(log_counts),
    )


def apply_augmentations(
    images: ArrayLike, params: AugmentationParams, rng: RngLike
) -> NDArray[np.float32]:
    """Apply each galaxy's drawn augmentations, in the order R, then B, then N.

    Rotation and blur act on the scene as the sky and the optics would; the photon noise of
    the "re-observation" comes last. The corners a rotation brings in from outside the stamp
    hold no data: they are 0 after R and stay 0 through B (:func:`blur` with
    :func:`rotation_no_data`) and N, the cutout service's mark of no data.

    Parameters
    ----------
    images : array_like, shape (N, B, S, S)
        Cutouts, finite, ``N == len(params)``.
    params : AugmentationParams
        From :func:`sample_augmentations`.
    rng : numpy.random.Generator or int
        Randomness of the Poisson resampling.

    Returns
    -------
    numpy.ndarray, shape (N, B, S, S), float32
        The augmented cutouts (a new array). Compare the re-measured angle with
        ``(phi + params.angle_shift_deg) mod 180``.
    """
    generator = _as_generator(rng)
    out = expected_scene(images, params)
    selected = np.flatnonzero(params.apply_resample)
    if selected.size:
        out[selected] = poisson_resample(out[selected], params.total_counts[selected], generator)
    return out


def expected_scene(images: ArrayLike, params: AugmentationParams) -> NDArray[np.float32]:
    """R and B of :func:`apply_augmentations`, without N: how the scene's light is carried.

    For light that is everywhere non-negative (a noiseless model of some sources) this is the
    expectation of its contribution to the augmented image: N's expectation is its input
    wherever the image it resamples is non-negative (:func:`poisson_resample`). Where the
    resampled image dips below zero (sky noise far from any source) N clips, and this is not
    the exact expectation there.

    Parameters
    ----------
    images : array_like, shape (N, B, S, S)
        Light in the cutouts' frame, finite, ``N == len(params)``.
    params : AugmentationParams
        The augmentations drawn for the images this light belongs to.

    Returns
    -------
    numpy.ndarray, shape (N, B, S, S), float32
        A new array: R then B where drawn, the corners a rotation leaves without data at 0.
    """
    batch = _check_images(images)
    if batch.shape[0] != len(params):
        raise ValueError(
            f"images has {batch.shape[0]} galaxies but params has {len(params)}: one each"
        )
    out = batch.copy()
    no_data = np.zeros((batch.shape[0], *batch.shape[-2:]), dtype=bool)
    selected = np.flatnonzero(params.apply_rotation)
    if selected.size:
        out[selected] = rotate(out[selected], params.alpha_deg[selected])
        no_data[selected] = rotation_no_data(params.alpha_deg[selected], batch.shape[-1])
    selected = np.flatnonzero(params.apply_blur)
    if selected.size:
        out[selected] = blur(out[selected], params.blur_sigma_px[selected], no_data[selected])
    return out
