"""(photo-z) Pixels of a galaxy at its catalogue position and one feature vector per pixel.

Step 1 of the pixel-level photometric redshifts ("image-photo-z", ``docs/photoz.md``): segment
each stamp, keep the segment that SExtractor's ASSOC would match to the catalogue position, and
describe every one of its pixels by a vector that a learner maps to a redshift
(:mod:`galpipe.learning.pixel_redshift`).

Method, per batch ``cubes`` ``(N, B, S, S)`` of calibrated, sky-subtracted fluxes in nanomaggies
(AB ``m = 22.5 - 2.5 log10 f``) with their 1σ errors ``sigmas`` (same shape; axes
``[..., row, col]``):

1. **No data.** A pixel lacks data when its flux is not finite in any band, or its error is not
   finite and positive (zero coverage: an inverse variance of 0). Such pixels are never sky,
   never detected and never part of a galaxy: the method's rule drops a pixel that is NaN in
   any band, since its vector would be incomplete.
2. **Detection image**: the one the radon pipeline's neighbour masking segments
   (:func:`galpipe.science.neighbours.detection_images`), so both pipelines see the same
   sources: ``D = Σ_b (I_b - level_b) / σ_b / sqrt(n_bands)``, unit noise, divided by the noise
   it keeps through sep's matched filter (correlated noise of resampled coadds), σ_b floored
   for noiseless stamps. ``level_b`` is the clipped sky level of the stamp's corners
   (:func:`galpipe.science.sky.sky_level_and_noise`; a residual sky offset would otherwise
   move the threshold); σ_b is the median of the band's error image over its data pixels:
   the sky's noise wherever the sky dominates, which it does in most of a 40×40 stamp, and
   the data's own statement of it (``error_source``) rather than a second estimate.
3. **Segmentation**: ``sep.extract`` on ``D`` with a unit error (SExtractor's algorithm:
   matched 3×3 filter, ``detect_sigma``, ``minarea``, multi-threshold deblending, cleaning).
4. **ASSOC**: of the segments, the one whose barycentre (sep's ``x``, ``y``, SExtractor's
   ``X_IMAGE``, ``Y_IMAGE``) is *nearest* the catalogue position is matched if it lies within
   ``assoc_radius_px`` (``ASSOC_TYPE NEAREST``, ``ASSOC_RADIUS``); only the matched segment is
   kept (``ASSOCSELEC_TYPE MATCHED``). Every other source's pixels -- a companion, a star --
   are excluded. No match: no pixels, and the reason says why.
5. **Pixel vectors** (:func:`feature_names` gives the columns, :data:`FEATURE_NAMES` for
   griz): per band the pixel's *luptitude* (asinh magnitude, Lupton, Gunn & Szalay 1999),
   then per band its error, then the pixel's distance from the segment's barycentre divided by
   the largest such distance in the segment (0 at the centre, 1 at the farthest pixel), then
   the pixel's offsets from the barycentre along the image's x (column) and y (row) axes in
   arcseconds.

Why luptitudes: a pixel's flux in a galaxy's outskirts is often at or below zero through noise,
where a logarithmic magnitude does not exist and its error diverges. The luptitude
``μ = 22.5 - 2.5 log10(b) - a·asinh(f / 2b)``, ``a = 2.5 / ln 10``, is linear in ``f`` near 0,
equals the magnitude to 0.01 mag once ``f > 10 b``, and its error ``a σ_f / sqrt(f² + 4 b²)``
stays finite. The softening ``b`` (nanomaggies per pixel) must be the same for every stamp a
learner compares -- the training set and the predicted set -- so it is a fixed setting per
band, not measured per stamp; near the pixels' sky noise is optimal (Lupton et al.:
``b = 1.042 σ``).

``sep`` works on one 2-D image, so the segmentation runs in a loop over galaxies; the sky, the
detection images and every per-pixel quantity are vectorised over the batch. The loop sizes
``sep``'s pixel stack to the stamp and restores it afterwards, a process-wide setting: do not run
this concurrently with other ``sep`` users in threads of the same process.

This module imports nothing of galpipe outside :mod:`galpipe.science`; its errors are plain
``ValueError`` subclasses (:class:`PixelVectorError`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from galpipe.science.neighbours import (
    NeighbourConfig,
    detection_images,
    extract_segments,
    sep_pixstack,
)
from galpipe.science.sky import sky_level_and_noise

__all__ = [
    "FEATURE_NAMES",
    "NANOMAGGY_ZEROPOINT",
    "PixelVectorConfig",
    "PixelVectorError",
    "PixelVectors",
    "assign_pixels",
    "feature_names",
    "luptitudes",
    "pixel_vectors",
    "sky_noise_errors",
]

#: AB magnitude of a flux of 1 nanomaggy.
NANOMAGGY_ZEROPOINT = 22.5
# Pogson's ratio over the natural logarithm: d(m)/d(ln f).
_POGSON = 2.5 / np.log(10.0)


class PixelVectorError(ValueError):
    """An input of the pixel vectors is malformed; the message names it and the problem."""


def feature_names(bands: Sequence[str]) -> tuple[str, ...]:
    """The columns of the pixel vectors of stamps with these bands, in order.

    Parameters
    ----------
    bands : sequence of str
        Band names in the order of the cubes' band axis, e.g. ``"griz"``.

    Returns
    -------
    tuple of str
        ``lup_<band>`` (luptitude, mag) for every band, ``lup_err_<band>`` (its 1σ error, mag)
        for every band, ``r_norm`` (distance from the segment's barycentre over the segment's
        largest one, dimensionless), ``dx_arcsec`` and ``dy_arcsec`` (offsets from the
        barycentre along the image's x and y axes, arcsec).
    """
    names = [str(band) for band in bands]
    return (
        *(f"lup_{band}" for band in names),
        *(f"lup_err_{band}" for band in names),
        "r_norm",
        "dx_arcsec",
        "dy_arcsec",
    )


#: The columns of the pixel vectors of griz stamps (``galpipe.survey.layout.BANDS``).
FEATURE_NAMES: tuple[str, ...] = feature_names("griz")


@dataclass(frozen=True)
class PixelVectorConfig:
    """Segmentation and feature parameters; the SExtractor defaults unless said otherwise.

    Attributes
    ----------
    assoc_radius_px : float
        ASSOC_RADIUS: the largest distance, pixels, between the catalogue position and the
        barycentre of the segment matched to it.
    detect_sigma : float
        DETECT_THRESH in σ of the detection image's (filtered) noise.
    minarea : int
        DETECT_MINAREA, pixels.
    deblend_nthresh : int
        DEBLEND_NTHRESH, the number of deblending sub-thresholds.
    deblend_cont : float
        DEBLEND_MINCONT, in [0, 1]; 1 disables deblending. SExtractor's 0.005 rather than the
        neighbour masking's 0.001: a galaxy's own knots split off by deblending would lose
        their pixels here, while there they were only tested for symmetry.
    softening_nmgy : float or tuple of float
        The luptitudes' softening ``b`` in nanomaggies per pixel, one for all bands or one per
        band; > 0. The default 0.005 is about the per-pixel sky noise of DR10 griz coadds
        (0.262″ pixels); set it near the noise of the data used (``b ≈ 1.042 σ``), the same
        for training and prediction.
    noise_floor_rel : float
        Floor of each band's σ in the detection image as a fraction of the band's peak
        (:class:`galpipe.science.neighbours.NeighbourConfig`), for noiseless stamps.
    """

    assoc_radius_px: float = 5.0
    detect_sigma: float = 1.5
    minarea: int = 5
    deblend_nthresh: int = 32
    deblend_cont: float = 0.005
    softening_nmgy: float | tuple[float, ...] = 0.005
    noise_floor_rel: float = 1e-3

    def __post_init__(self) -> None:
        if not (np.isfinite(self.assoc_radius_px) and self.assoc_radius_px > 0):
            raise PixelVectorError(
                f"assoc_radius_px: expected a finite distance > 0 pixels, got "
                f"{self.assoc_radius_px}"
            )
        if not self.detect_sigma > 0:
            raise PixelVectorError(f"detect_sigma: expected > 0 (σ), got {self.detect_sigma}")
        if self.minarea < 1:
            raise PixelVectorError(f"minarea: expected >= 1 pixel, got {self.minarea}")
        if self.deblend_nthresh < 1:
            raise PixelVectorError(f"deblend_nthresh: expected >= 1, got {self.deblend_nthresh}")
        if not 0 <= self.deblend_cont <= 1:
            raise PixelVectorError(f"deblend_cont: expected within [0, 1], got {self.deblend_cont}")
        softening = np.atleast_1d(np.asarray(self.softening_nmgy, dtype=np.float64))
        if softening.ndim != 1 or softening.size == 0 or not np.all(np.isfinite(softening)):
            raise PixelVectorError(
                f"softening_nmgy: expected one or more finite values, got {self.softening_nmgy}"
            )
        if not np.all(softening > 0):
            raise PixelVectorError(
                f"softening_nmgy: expected > 0 nanomaggies, got {self.softening_nmgy}"
            )
        if not 0 < self.noise_floor_rel < 1:
            raise PixelVectorError(
                f"noise_floor_rel: expected within (0, 1), got {self.noise_floor_rel}"
            )

    def softening(self, n_bands: int) -> npt.NDArray[np.float64]:
        """The softening of each of ``n_bands`` bands, nanomaggies per pixel, ``(n_bands,)``.

        Raises
        ------
        PixelVectorError
            If one value per band was given for another number of bands.
        """
        values = np.atleast_1d(np.asarray(self.softening_nmgy, dtype=np.float64))
        if values.size == 1:
            return np.full(n_bands, values[0])
        if values.size != n_bands:
            raise PixelVectorError(
                f"softening_nmgy: {values.size} values given for {n_bands} bands; give one "
                "value or one per band"
            )
        return values


@dataclass(frozen=True)
class PixelVectors:
    """The pixel vectors of a batch of galaxies (what :func:`pixel_vectors` returns).

    Pixels are ordered by galaxy, then row, then column of the stamp.

    Attributes
    ----------
    features : numpy.ndarray
        float32 ``(P, F)``, columns :attr:`feature_names`.
    galaxy_index : numpy.ndarray
        int64 ``(P,)``: the galaxy (0 .. N-1, the batch's order) each pixel belongs to.
    flux_weight : numpy.ndarray
        float32 ``(P,)``: the pixel's flux summed over the bands, nanomaggies; may be negative
        (noise). The weight of the flux-weighted combiners.
    n_pixels : numpy.ndarray
        int64 ``(N,)``: pixels of each galaxy; 0 where none was matched.
    reasons : tuple of (str or None)
        ``(N,)``: why a galaxy has no pixels, None where it has some.
    feature_names : tuple of str
        ``(F,)`` the names of the columns (:func:`feature_names`).
    bands : tuple of str
        ``(B,)`` the band names.
    segment_flux : numpy.ndarray
        float64 ``(N, B)``: the sum of the matched pixels' fluxes per band (an isophotal flux),
        nanomaggies; 0 where no pixel. The input of the integrated-flux baseline.
    segment_flux_err : numpy.ndarray
        float64 ``(N, B)``: its 1σ error, nanomaggies.
    centre_xy : numpy.ndarray
        float64 ``(N, 2)``: the matched segment's barycentre ``(x, y)`` in pixels (0-based,
        x = column); NaN where none.
    """

    features: npt.NDArray[np.float32]
    galaxy_index: npt.NDArray[np.int64]
    flux_weight: npt.NDArray[np.float32]
    n_pixels: npt.NDArray[np.int64]
    reasons: tuple[str | None, ...]
    feature_names: tuple[str, ...] = FEATURE_NAMES
    bands: tuple[str, ...] = tuple("griz")
    segment_flux: npt.NDArray[np.float64] = field(
        default_factory=lambda: np.zeros((0, 4), dtype=np.float64)
    )
    segment_flux_err: npt.NDArray[np.float64] = field(
        default_factory=lambda: np.zeros((0, 4), dtype=np.float64)
    )
    centre_xy: npt.NDArray[np.float64] = field(
        default_factory=lambda: np.zeros((0, 2), dtype=np.float64)
    )

    @property
    def n_galaxies(self) -> int:
        """N, the galaxies of the batch (with or without pixels)."""
        return int(self.n_pixels.size)

    def column(self, name: str) -> npt.NDArray[np.float32]:
        """The ``(P,)`` values of the feature called ``name``.

        Raises
        ------
        PixelVectorError
            If there is no such feature.
        """
        if name not in self.feature_names:
            raise PixelVectorError(f"feature {name!r}: not one of {', '.join(self.feature_names)}")
        return self.features[:, self.feature_names.index(name)]


def luptitudes(
    flux: npt.ArrayLike, flux_err: npt.ArrayLike, softening: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Asinh magnitudes of fluxes in nanomaggies, and their errors.

    Parameters
    ----------
    flux, flux_err : array_like
        Fluxes and their 1σ errors, nanomaggies; any sign of flux.
    softening : array_like
        The softening ``b`` > 0, nanomaggies, broadcast against ``flux`` (e.g. ``(B,)`` for a
        last axis of bands).

    Returns
    -------
    mu, mu_err : numpy.ndarray
        float64, mag: ``μ = 22.5 - 2.5 log10(b) - a asinh(f / 2b)`` and
        ``a σ_f / sqrt(f² + 4b²)``, ``a = 2.5 / ln 10`` (the first-order propagation of σ_f).
    """
    f = np.asarray(flux, dtype=np.float64)
    err = np.asarray(flux_err, dtype=np.float64)
    b = np.asarray(softening, dtype=np.float64)
    mu = NANOMAGGY_ZEROPOINT - 2.5 * np.log10(b) - _POGSON * np.arcsinh(f / (2.0 * b))
    mu_err = _POGSON * err / np.sqrt(np.square(f) + 4.0 * np.square(b))
    return mu, mu_err


def assign_pixels(
    cube: npt.ArrayLike,
    sigma: npt.ArrayLike,
    position_xy: tuple[float, float] | npt.ArrayLike,
    config: PixelVectorConfig | None = None,
) -> tuple[npt.NDArray[np.bool_], str | None]:
    """The pixels of the galaxy at ``position_xy`` in one stamp (steps 1-4 of the module).

    Parameters
    ----------
    cube : array_like
        ``(B, S, S)`` sky-subtracted fluxes, nanomaggies (NaN where no data).
    sigma : array_like
        ``(B, S, S)`` their 1σ errors, nanomaggies (not finite or <= 0 where no data).
    position_xy : array_like
        ``(x, y)`` the catalogue position in 0-based pixel coordinates of the stamp (x =
        column, pixel centres at integers; the stamp centre of an S = 40 cutout is 19.5).
    config : PixelVectorConfig, optional
        ``PixelVectorConfig()`` if omitted.

    Returns
    -------
    mask : numpy.ndarray
        bool ``(S, S)``: the matched segment's pixels with data in every band; all False when
        nothing is matched.
    reason : str or None
        Why ``mask`` is empty; None when it is not.

    Raises
    ------
    PixelVectorError
        If the shapes disagree or the position is not finite.
    """
    cubes = np.asarray(cube, dtype=np.float32)
    sigmas = np.asarray(sigma, dtype=np.float32)
    if cubes.ndim != 3:
        raise PixelVectorError(f"cube: expected shape (B, S, S), got {cubes.shape}")
    position = np.asarray(position_xy, dtype=np.float64).reshape(1, -1)
    masks, _, reasons = _assign(cubes[None], sigmas[None], position, config or PixelVectorConfig())
    return masks[0], reasons[0]


def sky_noise_errors(cubes: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Per-pixel errors of stamps that come without them: each band's sky noise everywhere.

    A Legacy Survey cutout carries no error image, so the error of each pixel is the band's
    sky noise measured in the stamp's corners (:func:`galpipe.science.sky.sky_level_and_noise`:
    clipped, IQR-based); the source's own Poisson noise is left out (its gain is not in the
    cutout), which understates the error of a galaxy's brightest pixels. Pixels without data
    get an error of 0, which :func:`pixel_vectors` reads as no data.

    Parameters
    ----------
    cubes : array_like
        ``(N, B, S, S)`` fluxes, nanomaggies (NaN where no data).

    Returns
    -------
    numpy.ndarray
        float32 ``(N, B, S, S)`` 1σ errors, nanomaggies.
    """
    data = np.asarray(cubes, dtype=np.float32)
    if data.ndim != 4:
        raise PixelVectorError(f"cubes: expected (N, B, S, S), got shape {data.shape}")
    no_data = ~np.isfinite(data)
    _, noise = sky_level_and_noise(np.where(no_data, 0.0, data).astype(np.float32), no_data)
    errors = np.broadcast_to(noise[:, :, None, None], data.shape).astype(np.float32)
    return np.where(no_data, np.float32(0.0), errors)


def pixel_vectors(
    cubes: npt.ArrayLike,
    sigmas: npt.ArrayLike,
    positions: npt.ArrayLike,
    config: PixelVectorConfig | None = None,
    pixel_scale_arcsec: float = 0.262,
    bands: Sequence[str] = "griz",
) -> PixelVectors:
    """One feature vector per pixel of every galaxy matched at its catalogue position.

    Parameters
    ----------
    cubes : array_like
        ``(N, B, S, S)`` sky-subtracted fluxes, nanomaggies (NaN where no data).
    sigmas : array_like
        ``(N, B, S, S)`` their 1σ errors, nanomaggies (not finite or <= 0 where no data).
    positions : array_like
        ``(N, 2)`` the catalogue positions ``(x, y)``, 0-based pixels of each stamp.
    config : PixelVectorConfig, optional
        ``PixelVectorConfig()`` if omitted.
    pixel_scale_arcsec : float, optional
        Arcseconds per pixel (DR10: 0.262; SDSS: 0.396).
    bands : sequence of str, optional
        The band names, one per band of the cubes (default griz).

    Returns
    -------
    PixelVectors
        Features, pixel-to-galaxy index, flux weights, pixel counts and the reasons of the
        galaxies without pixels (module docstring, step 5).

    Raises
    ------
    PixelVectorError
        If a shape disagrees, a position is not finite, the pixel scale is not positive or
        the softening has the wrong number of bands.
    """
    config = config or PixelVectorConfig()
    flux = np.asarray(cubes, dtype=np.float32)
    error = np.asarray(sigmas, dtype=np.float32)
    if flux.ndim != 4:
        raise PixelVectorError(f"cubes: expected shape (N, B, S, S), got {flux.shape}")
    n_galaxies, n_bands = flux.shape[:2]
    band_names = tuple(str(band) for band in bands)
    if len(band_names) != n_bands:
        raise PixelVectorError(
            f"bands: {len(band_names)} names ({''.join(band_names)}) for cubes of {n_bands} bands"
        )
    if not (np.isfinite(pixel_scale_arcsec) and pixel_scale_arcsec > 0):
        raise PixelVectorError(
            f"pixel_scale_arcsec: expected > 0 arcsec per pixel, got {pixel_scale_arcsec}"
        )
    softening = config.softening(n_bands)
    position = np.asarray(positions, dtype=np.float64)
    if position.ndim != 2 or position.shape[0] != n_galaxies:
        raise PixelVectorError(
            f"positions: expected shape ({n_galaxies}, 2) for {n_galaxies} cubes, got "
            f"{position.shape}"
        )
    masks, centres, reasons = _assign(flux, error, position, config)

    # Every pixel of every galaxy at once; np.nonzero orders them by galaxy, row, column.
    galaxy, rows, cols = np.nonzero(masks)
    pixel_flux = flux[galaxy, :, rows, cols].astype(np.float64)  # (P, B)
    pixel_err = error[galaxy, :, rows, cols].astype(np.float64)
    mu, mu_err = luptitudes(pixel_flux, pixel_err, softening)
    dx = (cols - centres[galaxy, 0]) * pixel_scale_arcsec
    dy = (rows - centres[galaxy, 1]) * pixel_scale_arcsec
    distance = np.hypot(dx, dy)
    largest = np.zeros(n_galaxies, dtype=np.float64)
    np.maximum.at(largest, galaxy, distance)
    # A one-pixel segment has no extent: its pixel is at distance 0 of itself.
    scale = largest[galaxy]
    r_norm = np.divide(distance, scale, out=np.zeros_like(distance), where=scale > 0)

    features = np.empty((galaxy.size, 2 * n_bands + 3), dtype=np.float32)
    features[:, :n_bands] = mu
    features[:, n_bands : 2 * n_bands] = mu_err
    features[:, 2 * n_bands] = r_norm
    features[:, 2 * n_bands + 1] = dx
    features[:, 2 * n_bands + 2] = dy

    segment_flux = _sum_by_galaxy(galaxy, pixel_flux, n_galaxies)
    segment_var = _sum_by_galaxy(galaxy, np.square(pixel_err), n_galaxies)
    return PixelVectors(
        features=features,
        galaxy_index=galaxy.astype(np.int64),
        flux_weight=pixel_flux.sum(axis=1).astype(np.float32),
        n_pixels=masks.sum(axis=(-2, -1)).astype(np.int64),
        reasons=tuple(reasons),
        feature_names=feature_names(band_names),
        bands=band_names,
        segment_flux=segment_flux,
        segment_flux_err=np.sqrt(segment_var),
        centre_xy=centres,
    )


def _assign(
    flux: npt.NDArray[np.float32],
    error: npt.NDArray[np.float32],
    positions: npt.NDArray[np.float64],
    config: PixelVectorConfig,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64], list[str | None]]:
    """Steps 1-4 for a batch: pixel masks ``(N, S, S)``, barycentres ``(N, 2)`` (NaN where
    none) and reasons ``(N,)``."""
    if flux.ndim != 4 or flux.shape[-1] != flux.shape[-2]:
        raise PixelVectorError(
            f"cubes: expected shape (N, B, S, S) with square stamps, got {flux.shape}"
        )
    if error.shape != flux.shape:
        raise PixelVectorError(
            f"sigmas: expected shape {flux.shape} like the cubes, got {error.shape}"
        )
    n_galaxies, _, size, _ = flux.shape
    if positions.shape != (n_galaxies, 2):
        raise PixelVectorError(
            f"positions: expected shape ({n_galaxies}, 2), got {positions.shape}"
        )
    if not np.isfinite(positions).all():
        bad = int(np.flatnonzero(~np.isfinite(positions).all(axis=1))[0])
        raise PixelVectorError(
            f"positions: galaxy {bad} has a position that is not finite: {positions[bad].tolist()}"
        )

    no_data = ~np.isfinite(flux) | ~(np.isfinite(error) & (error > 0))
    valid: npt.NDArray[np.bool_] = np.asarray(~no_data.any(axis=1))  # (N, S, S): data in all bands
    filled = np.where(no_data, np.float32(0), flux)
    level, _ = sky_level_and_noise(filled, no_data)
    masks = np.zeros((n_galaxies, size, size), dtype=bool)
    centres = np.full((n_galaxies, 2), np.nan)
    reasons: list[str | None] = [None] * n_galaxies
    if n_galaxies == 0 or size == 0:
        return masks, centres, reasons
    noise = _band_noise(error, no_data)
    detection, has_signal, _, _ = detection_images(
        filled, no_data, NeighbourConfig(noise_floor_rel=config.noise_floor_rel), (level, noise)
    )
    detection[~valid] = 0
    radius = config.assoc_radius_px
    with sep_pixstack(size):
        for index in range(n_galaxies):
            if not valid[index].any():
                reasons[index] = "no pixel of the stamp has data in every band"
                continue
            if not has_signal[index]:
                reasons[index] = "no band of the stamp carries signal (blank or constant)"
                continue
            sources, segmap = extract_segments(detection[index], config)
            if len(sources) == 0:
                reasons[index] = "no source detected in the stamp"
                continue
            x, y = positions[index]
            offset = np.hypot(sources["x"] - x, sources["y"] - y)
            nearest = int(np.argmin(offset))
            if offset[nearest] > radius:
                reasons[index] = (
                    f"no segment within {radius:g} px of the catalogue position "
                    f"({x:.1f}, {y:.1f}); the nearest is {offset[nearest]:.1f} px away"
                )
                continue
            mask = (segmap == nearest + 1) & valid[index]
            if not mask.any():
                reasons[index] = "every pixel of the matched segment lacks data in a band"
                continue
            masks[index] = mask
            centres[index] = (sources["x"][nearest], sources["y"][nearest])
    return masks, centres, reasons


def _band_noise(
    error: npt.NDArray[np.float32], no_data: npt.NDArray[np.bool_]
) -> npt.NDArray[np.float32]:
    """Each band's median error over its data pixels, float32 ``(N, B)``; 0 without data."""
    n_galaxies, n_bands = error.shape[:2]
    flat_no_data = no_data.reshape(n_galaxies, n_bands, -1)
    # The no-data pixels sort last as +inf: the median is that of the first n_data values.
    values = np.sort(np.where(flat_no_data, np.float32(np.inf), error.reshape(flat_no_data.shape)))
    n_data = (~flat_no_data).sum(axis=-1)
    pick = np.stack([np.maximum(n_data - 1, 0) // 2, n_data // 2], axis=-1)
    pick = np.minimum(pick, values.shape[-1] - 1)
    median = np.take_along_axis(values, pick, axis=-1).mean(axis=-1)
    return np.where(n_data > 0, median, 0).astype(np.float32)


def _sum_by_galaxy(
    galaxy: npt.NDArray[np.intp], values: npt.NDArray[np.float64], n_galaxies: int
) -> npt.NDArray[np.float64]:
    """``(N, B)`` sums of the ``(P, B)`` pixel ``values`` over each galaxy's pixels."""
    sums = np.zeros((n_galaxies, values.shape[1]), dtype=np.float64)
    for band in range(values.shape[1]):
        sums[:, band] = np.bincount(galaxy, weights=values[:, band], minlength=n_galaxies)
    return sums
