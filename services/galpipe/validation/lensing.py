"""Fit for weak lensing: isotropy of the angles, and shear from position angles alone.

Position angles alone carry the weak-lensing shear (Whittaker, Brown & Battye 2014, the
position-angle estimator): for intrinsic orientations uniform on the sky, a shear ``g`` turns
the mean of ``exp(2i theta)`` away from 0 by ``alpha g``, with the response ``alpha`` fixed by
the intrinsic ellipticity distribution. A measurement fit for lensing must therefore (a) have
no preferred direction of its own -- uniform angles for an isotropic population, errors
independent of the angle to the pixel grid and of the WCS handedness -- and (b) keep that
response: ``g_hat = (1 + m) g + c`` with ``m`` and ``c`` near 0.

Conventions
-----------
- Angles ``theta`` are position angles **east of north**, degrees, axial (period 180).
- Shears ``(g1, g2)`` are reduced shears in the frame of those angles (the *sky* frame):
  ``g1 > 0`` stretches along north-south (PA 0), ``g2 > 0`` along PA 45 (north-east). The
  ellipticity of a galaxy of axis ratio ``q`` at position angle ``theta`` is
  ``eps = (1 - q)/(1 + q) exp(2i theta)`` (GalSim's ``g``-type ellipticity), and a shear maps
  it exactly to ``eps' = (eps + g) / (1 + conj(g) eps)`` (GalSim's ``Shear`` addition, applying
  the intrinsic shape first; an isotropic PSF does not turn the axis).
- GalSim's ``shear(g1=, g2=)`` acts in the *image* frame (``+x`` = columns). On the cutout
  service's grid (north up, east left, ``CD = diag(-s, s)``) ``PA = image angle - 90``, so the
  sky shear is minus GalSim's: ``g_sky = -g_image`` (:func:`image_shear`).

Pure functions over arrays: :func:`sheared_position_angle`, :func:`orientation_response`,
:func:`estimate_shear`, :func:`fit_bias`, :func:`bootstrap_bias`, :func:`ks_uniform`,
:func:`grid_angle_bins`. The orchestration (:func:`run_lensing`) renders the truth population
(:mod:`galpipe.validation.population`) sheared and unsheared through the cutout service's FITS
and the radon pipeline's decoder, and measures it with ours and the peer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Self

import numpy as np
from scipy import stats

from galpipe.pipelines.stored_cutouts import decode_cutout
from galpipe.science.core import RadonConfig, measure_batch
from galpipe.science.features import axial_difference
from galpipe.science.orientation import (
    image_angle_to_position_angle,
    position_angle_to_image_angle,
)
from galpipe.survey.layout import BANDS, CUTOUT_SIZE_PX, PIXSCALE_ARCSEC
from galpipe.synthetic.fitsfile import cube_fits_bytes
from galpipe.synthetic.render import render_cutout
from galpipe.synthetic.truth import SkyConfig, TruthGalaxy
from galpipe.validation.parallel import map_chunks
from galpipe.validation.peer import PeerConfig, sep_orientation
from galpipe.validation.population import PopulationConfig, draw_truths
from galpipe.validation.stats import json_ready, nan_if_none

__all__ = [
    "ELLIPTICITY_STEP",
    "GRID_BINS",
    "INPUT_SHEARS",
    "RESPONSE_G_GRID",
    "RING",
    "BiasFit",
    "IsotropySummary",
    "LensingConfig",
    "LensingSummary",
    "bootstrap_bias",
    "estimate_shear",
    "fit_bias",
    "grid_angle_bins",
    "image_shear",
    "intrinsic_ellipticity",
    "ks_uniform",
    "orientation_response",
    "response_curve",
    "response_table",
    "ring_truths",
    "run_lensing",
    "sheared_position_angle",
]

#: Input sky shears ``(g1, g2)`` of the response fit: |g| 0.01-0.05 in four directions, so
#: both components and both signs are sampled; ``(0, 0)`` pins the additive bias.
INPUT_SHEARS: tuple[tuple[float, float], ...] = (
    (0.0, 0.0),
    (0.01, 0.0),
    (0.0, -0.02),
    (-0.03 / math.sqrt(2), 0.03 / math.sqrt(2)),
    (0.05, 0.0),
    (0.0, 0.05),
)
#: Ring test: every intrinsic galaxy is rendered at ``theta + k * 180/RING``, k < RING. Four
#: turns of 45 degrees make the mean of ``exp(2i theta)`` vanish exactly before the shear and
#: its first-order response independent of ``theta``: shape noise cancels, measurement noise
#: is left.
RING = 4
#: Bins of the true image angle modulo 90 degrees (the square grid's period), degrees.
GRID_BINS = 9
#: Angular samples of the orientation average in :func:`orientation_response`.
_RESPONSE_GRID = 360
#: |eps| resolution of :func:`response_table` (galaxies closer than this share a row).
ELLIPTICITY_STEP = 1e-3
#: Galaxies rendered per process-pool task.
_RENDER_CHUNK = 250


# ---------------------------------------------------------------- pure functions


def intrinsic_ellipticity(axis_ratio: np.ndarray) -> np.ndarray:
    """``|eps| = (1 - q) / (1 + q)``, GalSim's ``g``-type ellipticity of axis ratio ``q``."""
    q = np.asarray(axis_ratio, dtype=np.float64)
    return (1.0 - q) / (1.0 + q)


def sheared_position_angle(
    position_angle_deg: np.ndarray, ellipticity: np.ndarray, g1: float, g2: float
) -> np.ndarray:
    """The position angle of an elliptical profile after the shear ``(g1, g2)``.

    Parameters
    ----------
    position_angle_deg : numpy.ndarray
        Intrinsic major-axis angles, degrees (any frame; the shear is in the same frame).
    ellipticity : numpy.ndarray
        ``|eps| = (1-q)/(1+q)``, broadcast with the angles.
    g1, g2 : float
        Reduced shear, ``|g| < 1``.

    Returns
    -------
    numpy.ndarray
        Degrees in [0, 180): ``arg(eps') / 2`` with ``eps' = (eps + g)/(1 + conj(g) eps)``. A
        round galaxy (``eps = 0``) takes the shear's own direction.
    """
    eps = np.asarray(ellipticity, dtype=np.float64) * np.exp(
        2j * np.deg2rad(np.asarray(position_angle_deg, dtype=np.float64))
    )
    g = complex(g1, g2)
    sheared = (eps + g) / (1.0 + g.conjugate() * eps)
    return np.mod(np.rad2deg(np.angle(sheared)) / 2.0, 180.0)


def response_table(ellipticity: np.ndarray, g_abs: np.ndarray) -> np.ndarray:
    """Per galaxy, ``<cos 2(theta' - beta)>`` over uniform intrinsic orientations.

    For a galaxy of ellipticity ``|eps|`` whose intrinsic angle is uniform, sheared by ``g`` of
    modulus ``g_abs`` along ``beta``, the expectation of ``exp(2i theta')`` is
    ``R(|eps|, |g|) exp(2i beta)``. Its weak-shear slope is ``(|eps| + 1/|eps|) / 2`` -- which
    diverges for round galaxies, whose orientation a shear sets completely -- so ``R`` is
    computed exactly, by averaging :func:`sheared_position_angle` over a midpoint grid of
    :data:`_RESPONSE_GRID` intrinsic angles, not from the linear slope.

    Parameters
    ----------
    ellipticity : numpy.ndarray
        ``(N,)`` ``|eps|`` of the galaxies (resolved to :data:`ELLIPTICITY_STEP`).
    g_abs : numpy.ndarray
        ``(G,)`` shear moduli ``|g|``.

    Returns
    -------
    numpy.ndarray
        ``(N, G)`` ``R``, dimensionless in [0, 1].
    """
    eps = np.asarray(ellipticity, dtype=np.float64).ravel()
    # Galaxies share a row per |eps| rounded to ELLIPTICITY_STEP: a population costs at most
    # ~1,000 rows whatever its size, and R moves by far less than its statistical error.
    values, inverse = np.unique(
        np.round(eps / ELLIPTICITY_STEP) * ELLIPTICITY_STEP, return_inverse=True
    )
    g = np.atleast_1d(np.asarray(g_abs, dtype=np.float64)).ravel()
    psi = np.pi * (np.arange(_RESPONSE_GRID) + 0.5) / _RESPONSE_GRID
    z = values[:, None] * np.exp(2j * psi)[None, :]  # (U, M)
    table = np.empty((values.size, g.size))
    for k, gk in enumerate(g):
        sheared = (z + gk) / (1.0 + gk * z)
        modulus = np.abs(sheared)
        # cos of the sheared doubled angle; |sheared| = 0 only where eps = -g (angle undefined).
        cosine = np.divide(sheared.real, modulus, out=np.zeros_like(modulus), where=modulus > 0)
        table[:, k] = cosine.mean(axis=1)
    return table[inverse.ravel()]


def orientation_response(ellipticity: np.ndarray, g_abs: float | np.ndarray) -> np.ndarray:
    """The population mean of :func:`response_table`: ``R(|g|)``, the shape of ``g_abs``.

    The weak-shear response of the position-angle estimator is ``alpha = R(|g|) / |g|``.
    """
    g = np.asarray(g_abs, dtype=np.float64)
    return response_table(ellipticity, g.ravel()).mean(axis=0).reshape(g.shape)


#: ``|g|`` grid of :func:`response_curve`: steps of 0.001, far below any statistical error.
RESPONSE_G_GRID = np.linspace(0.0, 0.2, 201)


def response_curve(ellipticity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(|g|, R(|g|))`` on :data:`RESPONSE_G_GRID`: the table the estimator inverts.

    ``R`` (:func:`orientation_response`) rises monotonically from 0, so linear interpolation
    inverts it.
    """
    return RESPONSE_G_GRID, orientation_response(ellipticity, RESPONSE_G_GRID)


def estimate_shear(
    position_angle_deg: np.ndarray, curve: tuple[np.ndarray, np.ndarray]
) -> tuple[float, float]:
    """The shear from position angles alone (the position-angle estimator).

    With intrinsic orientations uniform, ``<exp(2i theta)> = alpha g`` and the estimator is
    ``g1 = <cos 2 theta> / alpha``, ``g2 = <sin 2 theta> / alpha``. Here ``alpha`` is not the
    weak-shear slope (infinite for a population that reaches q = 1, see
    :func:`orientation_response`) but the exact response at the estimate itself:
    ``alpha |g| = R(|g|)``, solved for ``|g|`` on the tabulated ``curve``, the direction being
    that of ``<exp(2i theta)>``. In the weak limit it is the linear estimator.

    Parameters
    ----------
    position_angle_deg : numpy.ndarray
        Measured (or true) angles, degrees; NaN (not measured) are left out.
    curve : tuple of numpy.ndarray
        :func:`response_curve` of the intrinsic population's ellipticities; a mean beyond its
        end gives its largest ``|g|``.

    Returns
    -------
    tuple of float
        ``(g1, g2)`` in the frame of the angles (module docstring); NaN if no angle is finite.
    """
    theta = np.deg2rad(np.asarray(position_angle_deg, dtype=np.float64))
    theta = theta[np.isfinite(theta)]
    if theta.size == 0:
        return float("nan"), float("nan")
    mean = complex(np.mean(np.exp(2j * theta)))
    target = abs(mean)
    if target == 0.0:
        return 0.0, 0.0
    g_grid, r_grid = curve
    modulus = float(np.interp(target, r_grid, g_grid))
    direction = mean / target
    return modulus * direction.real, modulus * direction.imag


def image_shear(sky_shear: tuple[float, float], jacobian: np.ndarray) -> tuple[float, float]:
    """GalSim's image-frame ``(g1, g2)`` of a sky-frame shear, for a conformal pixel grid.

    The shear's stretch axis (position angle ``arg(g)/2``) becomes an image angle through the
    cutout's Jacobian (:func:`~galpipe.science.orientation.position_angle_to_image_angle`); the
    modulus is kept (exact when the Jacobian is a rotation, possibly mirrored, times a scale).
    For the service's ``CD = diag(-s, s)`` it is ``-g``.
    """
    g = complex(*sky_shear)
    if g == 0:
        return 0.0, 0.0
    axis_pa = math.degrees(np.angle(g)) / 2.0
    axis_image = float(position_angle_to_image_angle(np.array(axis_pa), np.asarray(jacobian)))
    turned = abs(g) * np.exp(2j * math.radians(axis_image))
    return float(turned.real), float(turned.imag)


@dataclass(frozen=True)
class BiasFit:
    """``g_hat = (1 + m) g + c`` over both components (one ``m``; ``c`` per component).

    Attributes
    ----------
    m, c1, c2 : float
        Multiplicative bias and additive biases (dimensionless).
    m_err, c1_err, c2_err : float
        Their standard errors (bootstrap over galaxies; NaN from :func:`fit_bias` alone).
    """

    m: float
    c1: float
    c2: float
    m_err: float = float("nan")
    c1_err: float = float("nan")
    c2_err: float = float("nan")

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-ready values (NaN becomes None)."""
        return json_ready(asdict(self))

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Self:
        """The inverse of :meth:`to_json`."""
        return cls(**{k: nan_if_none(v) for k, v in values.items()})


def fit_bias(g_in: np.ndarray, g_hat: np.ndarray) -> BiasFit:
    """Least-squares ``g_hat = (1 + m) g_in + c`` of ``(K, 2)`` input and estimated shears.

    Both components share ``m``; each has its own ``c``. Rows with a NaN estimate are left out.
    """
    g_in = np.asarray(g_in, dtype=np.float64).reshape(-1, 2)
    g_hat = np.asarray(g_hat, dtype=np.float64).reshape(-1, 2)
    keep = np.all(np.isfinite(g_hat), axis=1)
    k = int(keep.sum())
    if k < 2:
        nan = float("nan")
        return BiasFit(nan, nan, nan)
    x = g_in[keep]
    y = (g_hat[keep] - x).T.ravel()  # residual g_hat - g = m g + c
    design = np.zeros((2 * k, 3))
    design[:, 0] = x.T.ravel()
    design[:k, 1] = 1.0
    design[k:, 2] = 1.0
    (m, c1, c2), *_ = np.linalg.lstsq(design, y, rcond=None)
    return BiasFit(float(m), float(c1), float(c2))


def bootstrap_bias(
    angles_deg: np.ndarray,
    g_in: np.ndarray,
    ellipticity: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    n_boot: int = 200,
    seed: int = 0,
) -> BiasFit:
    """:func:`fit_bias` of the estimates from ``(K, N)`` angles, errors by bootstrap.

    Parameters
    ----------
    angles_deg : numpy.ndarray
        ``(K, N)``: the angles of the same ``N`` images under each of the ``K`` shears.
    g_in : numpy.ndarray
        ``(K, 2)`` input shears, the angles' frame.
    ellipticity : numpy.ndarray
        ``(N,)`` intrinsic ``|eps|`` of the images: ``alpha`` of every estimate is that of the
        images it uses (a resample has its own ellipticity distribution, hence its own
        response; a fixed ``alpha`` would add the sampling of the ellipticities to the error).
    groups : numpy.ndarray, optional
        ``(N,)`` integer group of each image (a ring's members share one); groups are resampled
        whole and jointly across the shears, so shape noise cancels in the bootstrap as in the
        estimate. Default: every image its own group.
    n_boot : int
        Bootstrap resamples.
    seed : int
        Seeds the resampling.

    Returns
    -------
    BiasFit
        The fit on all images, with the bootstrap standard deviations as errors.
    """
    angles = np.asarray(angles_deg, dtype=np.float64)
    g_in = np.asarray(g_in, dtype=np.float64)
    n = angles.shape[1]
    group = np.arange(n) if groups is None else np.asarray(groups)
    labels, members = np.unique(group, return_inverse=True)
    order = np.argsort(members, kind="stable")
    starts = np.searchsorted(members[order], np.arange(labels.size))
    sizes = np.diff(np.append(starts, n))

    table = response_table(ellipticity, RESPONSE_G_GRID)

    def fit(index: np.ndarray) -> BiasFit:
        curve = (RESPONSE_G_GRID, table[index].mean(axis=0))
        estimates = np.array([estimate_shear(row[index], curve) for row in angles])
        return fit_bias(g_in, estimates)

    best = fit(np.arange(n))
    rng = np.random.default_rng(seed)
    draws = np.empty((n_boot, 3))
    for b in range(n_boot):
        chosen = rng.integers(0, labels.size, labels.size)
        index = np.concatenate([order[starts[c] : starts[c] + sizes[c]] for c in chosen])
        one = fit(index)
        draws[b] = (one.m, one.c1, one.c2)
    err = np.nanstd(draws, axis=0, ddof=1)
    return BiasFit(best.m, best.c1, best.c2, float(err[0]), float(err[1]), float(err[2]))


def ks_uniform(angle_deg: np.ndarray, period_deg: float = 180.0) -> tuple[float, float]:
    """Kolmogorov-Smirnov test of axial angles against uniform on ``[0, period)``.

    Returns
    -------
    tuple of float
        ``(D, p)``: the statistic and its p-value (exact/asymptotic as scipy chooses); NaN
        angles are left out.
    """
    values = np.mod(np.asarray(angle_deg, dtype=np.float64), period_deg)
    values = values[np.isfinite(values)] / period_deg
    result = stats.kstest(values, "uniform")
    return float(result.statistic), float(result.pvalue)


def grid_angle_bins(
    error_deg: np.ndarray, true_image_angle_deg: np.ndarray, n_bins: int = GRID_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Axial errors against the true angle to the pixel grid (image angle modulo 90 degrees).

    A square grid looks the same every 90 degrees; a method with a preferred direction on it
    errs more at some angles to the grid than at others.

    Parameters
    ----------
    error_deg : numpy.ndarray
        ``(N,)`` absolute axial errors, degrees; NaN left out.
    true_image_angle_deg : numpy.ndarray
        ``(N,)`` the true major axis as an image angle, degrees.
    n_bins : int
        Equal bins on [0, 90).

    Returns
    -------
    median_deg, median_err_deg, count : numpy.ndarray
        ``(n_bins,)`` per bin: median error, its standard error (``1.2533 * sigma / sqrt(n)``
        with ``sigma`` from the bin's interquartile range), and the number of errors.
    p_value : float
        Kruskal-Wallis test that all bins share one distribution (small: the error depends on
        the angle to the grid).
    """
    error = np.asarray(error_deg, dtype=np.float64)
    grid = np.mod(np.asarray(true_image_angle_deg, dtype=np.float64), 90.0)
    keep = np.isfinite(error) & np.isfinite(grid)
    index = np.minimum((grid[keep] / (90.0 / n_bins)).astype(int), n_bins - 1)
    samples = [error[keep][index == b] for b in range(n_bins)]
    count = np.array([s.size for s in samples])
    median = np.array([np.median(s) if s.size else np.nan for s in samples])
    iqr = np.array(
        [np.subtract(*np.percentile(s, [75, 25])) if s.size else np.nan for s in samples]
    )
    median_err = 1.2533 * (iqr / 1.349) / np.sqrt(np.maximum(count, 1))
    filled = [s for s in samples if s.size]
    p_value = float(stats.kruskal(*filled).pvalue) if len(filled) > 1 else float("nan")
    return median, median_err, count, p_value


# ---------------------------------------------------------------- orchestration


@dataclass(frozen=True)
class LensingConfig:
    """What the lensing validation renders.

    Attributes
    ----------
    n_isotropic : int
        Galaxies of the isotropy test (random intrinsic position angles).
    n_ring : int
        Intrinsic galaxies of the shear test, each rendered :data:`RING` times per input shear.
    seed : int
        Seeds both populations (the ring's with ``seed + 1``) and the bootstrap.
    snr_range : tuple of float
        S/N range of the galaxies (log-uniform; :mod:`galpipe.validation.population`).
    shears : tuple of tuple of float
        Sky-frame input shears of the response fit.
    n_boot : int
        Bootstrap resamples of the bias errors.
    """

    n_isotropic: int = 5000
    n_ring: int = 1000
    seed: int = 0
    snr_range: tuple[float, float] = (50.0, 200.0)
    shears: tuple[tuple[float, float], ...] = INPUT_SHEARS
    n_boot: int = 200

    def population(self, n: int, seed: int) -> PopulationConfig:
        """Isolated galaxies (no neighbours) of the truth population's shapes, at high S/N."""
        return PopulationConfig(
            n=n, seed=seed, snr_range=self.snr_range, sky=SkyConfig(neighbour_fraction=0.0)
        )


@dataclass(frozen=True)
class IsotropySummary:
    """Whether a method's angles have a preferred direction (one method).

    Attributes
    ----------
    n_measured : int
        Galaxies with an angle.
    ks_d, ks_p : float
        KS statistic and p-value of the position angles against uniform [0, 180).
    grid_median_deg, grid_median_err_deg : tuple of float
        Median axial error per bin of true image angle mod 90 (:data:`GRID_BINS` bins).
    grid_p : float
        Kruskal-Wallis p-value that the bins share one error distribution.
    median_err_deg, median_err_mirrored_deg : float
        Median axial error, as rendered and with the image mirrored east-west (WCS ``CD1_1``
        sign flipped), the same sky.
    mirror_max_diff_deg : float
        Largest axial difference between the two position angles of a galaxy.
    """

    n_measured: int
    ks_d: float
    ks_p: float
    grid_median_deg: tuple[float, ...]
    grid_median_err_deg: tuple[float, ...]
    grid_p: float
    median_err_deg: float
    median_err_mirrored_deg: float
    mirror_max_diff_deg: float

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-ready values (NaN becomes None)."""
        return json_ready(asdict(self))

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Self:
        """The inverse of :meth:`to_json`."""
        return cls(
            n_measured=values["n_measured"],
            grid_median_deg=tuple(nan_if_none(v) for v in values["grid_median_deg"]),
            grid_median_err_deg=tuple(nan_if_none(v) for v in values["grid_median_err_deg"]),
            **{
                k: nan_if_none(values[k])
                for k in (
                    "ks_d",
                    "ks_p",
                    "grid_p",
                    "median_err_deg",
                    "median_err_mirrored_deg",
                    "mirror_max_diff_deg",
                )
            },
        )


@dataclass(frozen=True)
class LensingSummary:
    """The lensing validation (:func:`run_lensing`); methods ``ours``, ``peer``, ``truth``.

    Attributes
    ----------
    isotropy : dict of str to IsotropySummary
        ``ours`` and ``peer`` on the isotropic population.
    bias : dict of str to BiasFit
        ``ours``, ``peer`` and ``truth`` (the true sheared angles: the estimator's own bias).
    alpha_weak : float
        ``R(|g|)/|g|`` of the ring population at ``|g| = 0.03``: the response ``alpha``.
    shears : tuple of tuple of float
        The input sky shears.
    n_isotropic, n_ring : int
        Galaxies of the two tests (the ring test renders ``RING * n_ring`` per shear).
    """

    isotropy: dict[str, IsotropySummary]
    bias: dict[str, BiasFit]
    alpha_weak: float
    shears: tuple[tuple[float, float], ...]
    n_isotropic: int
    n_ring: int

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-ready values (NaN becomes None)."""
        return json_ready(
            {
                "isotropy": {k: v.to_json() for k, v in self.isotropy.items()},
                "bias": {k: v.to_json() for k, v in self.bias.items()},
                "alpha_weak": self.alpha_weak,
                "shears": [list(s) for s in self.shears],
                "n_isotropic": self.n_isotropic,
                "n_ring": self.n_ring,
            }
        )

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Self:
        """The inverse of :meth:`to_json`."""
        return cls(
            isotropy={k: IsotropySummary.from_json(v) for k, v in values["isotropy"].items()},
            bias={k: BiasFit.from_json(v) for k, v in values["bias"].items()},
            alpha_weak=nan_if_none(values["alpha_weak"]),
            shears=tuple((float(a), float(b)) for a, b in values["shears"]),
            n_isotropic=values["n_isotropic"],
            n_ring=values["n_ring"],
        )


def _render_chunk(
    task: tuple[Sequence[TruthGalaxy], tuple[float, float]],
) -> tuple[np.ndarray, np.ndarray]:
    """Render (image-frame shear), serialise and decode a chunk (one process-pool task)."""
    truths, shear = task
    size = CUTOUT_SIZE_PX
    images = np.empty((len(truths), len(BANDS), size, size), dtype=np.float32)
    jacobians = np.empty((len(truths), 2, 2))
    for index, truth in enumerate(truths):
        cube = render_cutout(truth, CUTOUT_SIZE_PX, PIXSCALE_ARCSEC, BANDS, shear=shear)
        raw = cube_fits_bytes(
            cube, truth.ra, truth.dec, PIXSCALE_ARCSEC, BANDS, source_id=truth.source_id
        )
        decoded = decode_cutout(raw, cube.shape[-1], BANDS)
        images[index] = decoded.data
        jacobians[index] = decoded.jacobian
    return images, jacobians


def _render(
    truths: Sequence[TruthGalaxy], shear: tuple[float, float], workers: int
) -> tuple[np.ndarray, np.ndarray]:
    tasks = [
        (list(truths[s : s + _RENDER_CHUNK]), shear) for s in range(0, len(truths), _RENDER_CHUNK)
    ]
    parts = map_chunks(_render_chunk, tasks, workers)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _position_angles(
    images: np.ndarray, jacobians: np.ndarray, config: RadonConfig, peer_config: PeerConfig
) -> dict[str, np.ndarray]:
    """Ours and the peer's combined position angles (NaN: not measured)."""
    ours = measure_batch(images, config)
    peer = sep_orientation(images, peer_config, per_band=False)
    return {
        "ours": image_angle_to_position_angle(ours.angle_image_deg, jacobians),
        "peer": image_angle_to_position_angle(peer.angle_image_deg, jacobians),
    }


def _isotropy(
    config: LensingConfig, radon: RadonConfig, peer_config: PeerConfig, workers: int
) -> dict[str, IsotropySummary]:
    truths, _ = draw_truths(config.population(config.n_isotropic, config.seed))
    images, jacobians = _render(truths, (0.0, 0.0), workers)
    true_pa = np.array([t.position_angle_deg for t in truths])
    true_image = position_angle_to_image_angle(true_pa, jacobians)
    # The same sky through a mirrored grid: columns reversed (east right) and the Jacobian's
    # x column negated. Pixel centres are symmetric about the stamp centre, so this is exactly
    # what a renderer with CD1_1 > 0 would draw.
    mirrored_jac = jacobians * np.array([-1.0, 1.0])[None, None, :]
    normal = _position_angles(images, jacobians, radon, peer_config)
    mirrored = _position_angles(images[..., ::-1], mirrored_jac, radon, peer_config)
    result = {}
    for method in ("ours", "peer"):
        pa, pa_m = normal[method], mirrored[method]
        error = axial_difference(pa, true_pa)
        median, median_err, _, grid_p = grid_angle_bins(error, true_image)
        d, p = ks_uniform(pa)
        both = np.isfinite(pa) & np.isfinite(pa_m)
        result[method] = IsotropySummary(
            n_measured=int(np.isfinite(pa).sum()),
            ks_d=d,
            ks_p=p,
            grid_median_deg=tuple(float(v) for v in median),
            grid_median_err_deg=tuple(float(v) for v in median_err),
            grid_p=grid_p,
            median_err_deg=float(np.nanmedian(error)),
            median_err_mirrored_deg=float(np.nanmedian(axial_difference(pa_m, true_pa))),
            mirror_max_diff_deg=float(np.max(axial_difference(pa[both], pa_m[both])))
            if both.any()
            else float("nan"),
        )
    return result


def ring_truths(truths: Sequence[TruthGalaxy]) -> list[TruthGalaxy]:
    """Each truth :data:`RING` times, turned by ``180/RING`` degrees each time (ring order)."""
    step = 180.0 / RING
    return [
        dataclasses.replace(t, position_angle_deg=(t.position_angle_deg + k * step) % 180.0)
        for t in truths
        for k in range(RING)
    ]


def run_lensing(
    config: LensingConfig | None = None,
    radon: RadonConfig | None = None,
    peer_config: PeerConfig | None = None,
    workers: int = 1,
) -> LensingSummary:
    """Isotropy on a random population and the shear response on a ring population.

    The ring population is rendered once per input shear (sky frame, turned into GalSim's
    image frame by :func:`image_shear` with each cutout's Jacobian), measured by ours and the
    peer; the shear is estimated from each method's position angles and from the true sheared
    angles (:func:`sheared_position_angle`), and ``(m, c)`` fitted with bootstrap errors over
    intrinsic galaxies (a ring resampled whole).
    """
    cfg = config if config is not None else LensingConfig()
    radon_cfg = radon if radon is not None else RadonConfig()
    peer_cfg = peer_config if peer_config is not None else PeerConfig()
    isotropy = _isotropy(cfg, radon_cfg, peer_cfg, workers)

    base, _ = draw_truths(cfg.population(cfg.n_ring, cfg.seed + 1))
    truths = ring_truths(base)
    eps = intrinsic_ellipticity(np.array([t.axis_ratio for t in truths]))
    true_pa = np.array([t.position_angle_deg for t in truths])
    groups = np.repeat(np.arange(len(base)), RING)
    # render_cutout draws north up, east left: the service's CD = diag(-s, s).
    service_jacobian = np.diag([-PIXSCALE_ARCSEC, PIXSCALE_ARCSEC]) / 3600.0
    angles: dict[str, list[np.ndarray]] = {"ours": [], "peer": [], "truth": []}
    for shear in cfg.shears:
        images, jacobians = _render(truths, image_shear(shear, service_jacobian), workers)
        measured = _position_angles(images, jacobians, radon_cfg, peer_cfg)
        angles["ours"].append(measured["ours"])
        angles["peer"].append(measured["peer"])
        angles["truth"].append(sheared_position_angle(true_pa, eps, *shear))
    g_in = np.array(cfg.shears, dtype=np.float64)
    bias = {
        method: bootstrap_bias(
            np.stack(rows), g_in, eps, groups=groups, n_boot=cfg.n_boot, seed=cfg.seed
        )
        for method, rows in angles.items()
    }
    return LensingSummary(
        isotropy=isotropy,
        bias=bias,
        alpha_weak=float(orientation_response(eps, 0.03)) / 0.03,
        shears=tuple(cfg.shears),
        n_isotropic=cfg.n_isotropic,
        n_ring=cfg.n_ring,
    )
