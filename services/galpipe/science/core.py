"""The paper's measurement of a batch of galaxies, end to end (section 3, steps 2-5).

:func:`measure_batch` runs, on ``(N, B, S, S)`` cutouts (bands g, r, i, z):

1. step 2 -- :func:`~galpipe.science.preprocess.sanitise_and_shift` (NaN/inf, min-shift);
2. (ours) neighbour masking, when ``RadonConfig.mask_neighbours`` -- the callable
   ``mask_neighbours(images, no_data) -> (masked, masked_fraction (N,), contaminated (N,))``,
   by default :func:`galpipe.science.neighbours.mask_neighbours`;
3. step 2 -- the circular mask;
4. step 3 -- the Radon operator (:class:`~galpipe.science.radon.RadonOperator`), in chunks of
   galaxies so that the sinograms of a large batch never sit in memory at once;
5. steps 4-5 -- pooling, the sinusoid fit, the window-drop error, the second-moment estimator,
   the anisotropy (:mod:`galpipe.science.features`);
6. (ours) the combined angle per galaxy: steps 3-5 once more on the band stack
   ``sum_b w_b I_b`` with ``w_b ∝ 1/sigma_b`` (the band's sky noise from the corners,
   :func:`~galpipe.science.sky.sky_level_and_noise`), over the bands that are neither blank
   nor point-like. The Radon transform is linear, so the stack's sinogram is the same sum of
   the bands' -- no extra transform. Each band weighted by its own 1/sigma is the
   signal-to-noise-optimal stack for a galaxy of flat spectrum in S/N; measuring the stack
   rather than averaging four noisier band angles keeps the estimator in its linear regime at
   low S/N (``docs/decisions.md``, "The combined angle measured on the band stack").

Which fields may be NaN, and when (nothing else is ever NaN):

- per band ``(N, B)``: every float field is NaN exactly where ``Flag.BAND_BLANK`` is set in
  ``band_flags`` (nothing to measure in that band);
- combined ``(N,)``: ``angle_image_deg``, ``angle_err_deg``, ``band_spread_deg`` and
  ``anisotropy`` are NaN exactly where ``Flag.NO_VALID_BAND`` is set in ``flags``.

Errors are finite and capped at 90 degrees. The combined angle uses the estimator named by
``RadonConfig.estimator`` ("peak": the paper's, from the pooled curve; "moments": the
second-moment angle) on the stack; its raw error is that fit's standard error, scaled up by the
Birge ratio where the per-band angles (same estimator) disagree with it beyond their errors,
and the reported ``angle_err_deg`` is that raw error calibrated with observables only
(:func:`galpipe.science.uncertainty.calibrated_angle_err`, constants fitted on the synthetic
truth population: ``RadonConfig.angle_err_calibration``).
``band_spread_deg`` is the weighted circular spread of the per-band angles. The window-drop
error is reported per band beside it.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import IntFlag
from typing import Literal

import numpy as np
import numpy.typing as npt

from galpipe.science import features
from galpipe.science import neighbours as neighbours_module
from galpipe.science.preprocess import (
    PreprocessedBatch,
    apply_circular_mask,
    sanitise_and_shift,
)
from galpipe.science.radon import (
    DEFAULT_ANGLES_DEG,
    DEFAULT_STAMP_SIZE,
    FoldedSinogram,
    RadonOperator,
)
from galpipe.science.reliability import unreliable_angle
from galpipe.science.sky import inverse_noise_weights, sky_level_and_noise
from galpipe.science.uncertainty import AngleErrCalibration, calibrated_angle_err

__all__ = [
    "ALGO_FAMILY",
    "BatchMeasurement",
    "FitSinograms",
    "Flag",
    "MaskNeighbours",
    "RadonConfig",
    "SinogramFits",
    "Stamps",
    "concatenate_stamps",
    "fit_sinograms",
    "measure_batch",
    "measure_prepared",
    "prepare_stamps",
]

#: Bump when the measurement changes in a way not captured by RadonConfig's fields.
#: v2: combined error scaled by the Birge ratio; v3: combined angle measured on the band stack;
#: v4: combined error calibrated on the synthetic truth (:mod:`galpipe.science.uncertainty`);
#: v5: the noise of a photon-counting sky (:mod:`galpipe.science.sky`) and the UNRELIABLE flag.
ALGO_FAMILY = "radon-v5"

#: A band's noise in the stack weights is at least this fraction of its peak above the sky
#: (:func:`~galpipe.science.sky.inverse_noise_weights`).
STACK_NOISE_FLOOR_REL = 1e-3

#: The neighbour-masking step: ``(N, B, S, S)`` float32, sanitised and min-shifted, before the
#: circular mask, and the bool ``(N, B, S, S)`` no-data pixels of the input
#: (``PreprocessedBatch.no_data``) -> (masked images, same shape; masked_fraction (N,) float32;
#: contaminated (N,)).
MaskNeighbours = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


class Flag(IntFlag):
    """Quality bits of a band (``band_flags``) or a galaxy (``flags``)."""

    #: The band holds no image: all pixels non-finite or all equal (a missing band is zeros).
    #: Per band: its float fields are NaN. Per galaxy: at least one band was blank.
    BAND_BLANK = 1
    #: The band had NaN/inf pixels (replaced by the band minimum); count in ``nonfinite_count``.
    NONFINITE_PIXELS = 2
    #: The fitted amplitude ``b`` is below ``min_significance`` times its standard error: the
    #: angle is not supported by the data. Per galaxy: set when every combined band has it.
    LOW_SIGNAL = 4
    #: Anisotropy ``b/a`` below ``min_anisotropy``: round, the angle is unreliable. Per galaxy:
    #: set when every combined band has it.
    ROUND = 8
    #: One pixel carries more than ``point_like_fraction`` of the band's flux (a hot pixel or a
    #: cosmic ray, not a galaxy): the band is measured but left out of the combination.
    POINT_LIKE = 16
    #: Per galaxy: no band could be combined; the combined float fields are NaN.
    NO_VALID_BAND = 32
    #: Per galaxy: neighbour masking found and masked other sources in the stamp.
    CONTAMINATED = 64
    #: Per galaxy only: the combined angle is not to be trusted -- the band stack's anisotropy
    #: ``b/a`` is below ``RadonConfig.unreliable_min_anisotropy`` or the band spread is above
    #: ``RadonConfig.unreliable_max_band_spread_deg``
    #: (:func:`galpipe.science.reliability.unreliable_angle`). The thresholds were chosen on
    #: the synthetic truth by ``galpipe validate`` (purity 0.71, completeness 0.74 as a
    #: detector of axial errors above 10 degrees on the full run). Never set with
    #: ``NO_VALID_BAND``: there is no angle to judge.
    UNRELIABLE = 128


@dataclass(frozen=True)
class RadonConfig:
    """Every choice of the measurement; :attr:`algo_version` names them all.

    Attributes
    ----------
    size : int
        Stamp side, pixels (paper: 40).
    angles_deg : tuple of float
        Projection angles, degrees (paper: 0, 1, ..., 180).
    order : int
        Spline order of the rotation (paper: 3, bicubic).
    pooling : {"max", "top"}
        Pooling whose curve gives the peak angle, error and anisotropy (step 4); both are the
        paper's. "top" (the mean of the brightest ``top_fraction`` of each column) by default:
        averaging a few values instead of taking the one brightest lowers the noise of the
        curve (``docs/decisions.md``, "Top-10 % average pooling by default").
    top_fraction : float
        x of the top-x% pooling (ours: 0.10).
    estimator : {"peak", "moments"}
        Per-band angle combined into the galaxy's angle: "peak" (the paper's sinusoid peak,
        default) or "moments" (second moments from the projection variance).
    mask_neighbours : bool
        Run neighbour masking before the circular mask (ours, on by default).
    windows_deg : tuple of float
        Half-widths of the window-drop error, degrees.
    min_anisotropy : float
        ``b/a`` below which a band is flagged ROUND.
    min_significance : float
        ``b / sigma_b`` below which a band is flagged LOW_SIGNAL.
    point_like_fraction : float
        Brightest-pixel share of a band's flux above which the band is POINT_LIKE.
    unreliable_min_anisotropy : float
        The band stack's ``b/a`` below which the galaxy is flagged UNRELIABLE (dimensionless,
        at least 0; 0 never flags on it).
    unreliable_max_band_spread_deg : float
        The band spread above which the galaxy is flagged UNRELIABLE, degrees (positive;
        ``inf`` never flags on it).
    neighbour_tag : str
        Names the neighbour-masking configuration in :attr:`algo_version`; empty means the
        default ``galpipe.science.neighbours.NeighbourConfig().tag``. Set it whenever
        ``measure_batch`` gets a non-default ``mask_neighbours`` callable.
    angle_err_calibration : AngleErrCalibration
        The constants mapping the combined angle's raw error to its calibrated uncertainty
        (:func:`galpipe.science.uncertainty.calibrated_angle_err`; fitted on the synthetic
        truth population). ``AngleErrCalibration.identity()`` keeps the raw error.
    """

    size: int = DEFAULT_STAMP_SIZE
    angles_deg: tuple[float, ...] = tuple(float(a) for a in DEFAULT_ANGLES_DEG)
    order: int = 3
    pooling: Literal["max", "top"] = "top"
    top_fraction: float = 0.10
    estimator: Literal["peak", "moments"] = "peak"
    mask_neighbours: bool = True
    windows_deg: tuple[float, ...] = features.DEFAULT_WINDOWS_DEG
    min_anisotropy: float = 0.005
    min_significance: float = 3.0
    point_like_fraction: float = 0.5
    # Chosen on the synthetic truth by ``galpipe validate`` (galpipe.validation.reliability).
    unreliable_min_anisotropy: float = 0.0125
    unreliable_max_band_spread_deg: float = 25.0
    neighbour_tag: str = ""
    angle_err_calibration: AngleErrCalibration = field(default_factory=AngleErrCalibration)

    def __post_init__(self) -> None:
        if self.size < 4:
            raise ValueError(f"size: expected a stamp side of at least 4 pixels, got {self.size}")
        if self.pooling not in ("max", "top"):
            raise ValueError(f"pooling: expected 'max' or 'top', got {self.pooling!r}")
        if self.estimator not in ("peak", "moments"):
            raise ValueError(f"estimator: expected 'peak' or 'moments', got {self.estimator!r}")
        if not 0.0 < self.top_fraction <= 1.0:
            raise ValueError(f"top_fraction: expected a value in (0, 1], got {self.top_fraction}")
        if len(self.angles_deg) < 4:
            raise ValueError(f"angles_deg: need at least 4 angles, got {len(self.angles_deg)}")
        # Written as "not (ok)" so that NaN is rejected too.
        if not self.unreliable_min_anisotropy >= 0.0:
            raise ValueError(
                "unreliable_min_anisotropy: expected a b/a of at least 0 (0 never flags), "
                f"got {self.unreliable_min_anisotropy}"
            )
        if not self.unreliable_max_band_spread_deg > 0.0:
            raise ValueError(
                "unreliable_max_band_spread_deg: expected a positive spread in degrees "
                f"(inf never flags), got {self.unreliable_max_band_spread_deg}"
            )

    @property
    def angles(self) -> np.ndarray:
        """The projection angles as a float64 array, degrees."""
        return np.asarray(self.angles_deg, dtype=np.float64)

    @property
    def algo_version(self) -> str:
        """A string that changes whenever any parameter changes, e.g.
        ``radon-v5+S=40+A=181+o=3+pool=top+top=0.10+est=peak+nbr=on:<neighbour tag>``
        ``+win=2,5,10,20+round=0.005+sig=3+pt=0.5+rel=0.0125,25+cal=<calibration tag>``.
        Non-default angle sets add a short hash of the angles."""
        angles = self.angles
        if np.array_equal(angles, DEFAULT_ANGLES_DEG):
            angle_part = f"A={angles.size}"
        else:
            digest = hashlib.sha1(angles.tobytes()).hexdigest()[:8]
            angle_part = f"A={angles.size}:{digest}"
        windows = ",".join(f"{w:g}" for w in self.windows_deg)
        neighbours = "off"
        if self.mask_neighbours:
            neighbours = f"on:{self.neighbour_tag or neighbours_module.NeighbourConfig().tag}"
        return (
            f"{ALGO_FAMILY}+S={self.size}+{angle_part}+o={self.order}+pool={self.pooling}"
            f"+top={self.top_fraction:.2f}+est={self.estimator}"
            f"+nbr={neighbours}+win={windows}"
            f"+round={self.min_anisotropy:g}+sig={self.min_significance:g}"
            f"+pt={self.point_like_fraction:g}"
            f"+rel={self.unreliable_min_anisotropy:g},{self.unreliable_max_band_spread_deg:g}"
            f"+cal={self.angle_err_calibration.tag}"
        )


@dataclass(frozen=True)
class BatchMeasurement:
    """The measurement of ``N`` galaxies in ``B`` bands. Angles in degrees, [0, 180).

    Per band, ``(N, B)``: ``angle_image_deg`` (the paper's peak angle, image convention),
    ``angle_err_fit_deg`` (fit standard error), ``angle_err_window_deg`` and
    ``angle_err_window_std_deg`` (the window-drop error's normal fit), ``angle_argmax_deg``
    (the pooled curve's discrete peak, as image angle: the check), ``sinusoid_a`` /
    ``sinusoid_b`` (curve units: flux per column), ``anisotropy`` (``b/a``),
    ``moments_angle_deg`` / ``moments_err_deg`` / ``moments_ellipticity`` (second moments),
    ``band_flags`` (:class:`Flag` bits), ``nonfinite_count``.

    Per galaxy, ``(N,)``: ``angle_image_deg``, ``angle_err_deg``, ``band_spread_deg``,
    ``anisotropy`` (the band stack's ``b/a``), ``n_bands``, ``flags``,
    ``masked_fraction``, ``contaminated``. NaN rules: module docstring.
    """

    band_angle_image_deg: np.ndarray
    band_angle_err_fit_deg: np.ndarray
    band_angle_err_window_deg: np.ndarray
    band_angle_err_window_std_deg: np.ndarray
    band_angle_argmax_deg: np.ndarray
    band_sinusoid_a: np.ndarray
    band_sinusoid_b: np.ndarray
    band_anisotropy: np.ndarray
    band_moments_angle_deg: np.ndarray
    band_moments_err_deg: np.ndarray
    band_moments_ellipticity: np.ndarray
    band_flags: np.ndarray
    nonfinite_count: np.ndarray
    angle_image_deg: np.ndarray
    angle_err_deg: np.ndarray
    band_spread_deg: np.ndarray
    anisotropy: np.ndarray
    n_bands: np.ndarray
    flags: np.ndarray
    masked_fraction: np.ndarray
    contaminated: np.ndarray
    algo_version: str = field(default="")


def _stack_weights(
    level: np.ndarray, sigma: np.ndarray, peak: np.ndarray, usable: np.ndarray
) -> np.ndarray:
    """``(N, B)`` band-stack weights ``∝ 1/sigma_b`` over the usable bands, summing to 1 (step 6).

    ``level``, ``sigma`` the bands' sky level and noise, ``peak`` their brightest pixel (same
    units); galaxies without a usable band get all-zero weights.
    """
    weight = inverse_noise_weights(sigma, peak - level, usable, STACK_NOISE_FLOOR_REL)
    total = weight.sum(axis=-1, keepdims=True)
    return weight / np.where(total > 0, total, 1.0)


def _pooled_curve(folded: FoldedSinogram, config: RadonConfig) -> np.ndarray:
    """The pooled curve of folded sinograms (step 4)."""
    if config.pooling == "max":
        return features.max_pool_folded(folded)
    return features.pool(folded.unfold(), "top", config.top_fraction)


def _sinograms_to_curves(
    images: np.ndarray,
    weights: np.ndarray,
    operator: RadonOperator,
    config: RadonConfig,
    chunk_size: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pooled and projection-variance curves of the bands, ``(N, B, A)``, and of the band
    stack with ``weights`` ``(N, B)``, ``(N, A)``; chunk by chunk. The stack's variance
    curve is only computed for the "moments" estimator (NaN otherwise): the bands' variance
    curves give their moments outputs, the stack's only the moments estimator's angle."""
    n, b = images.shape[:2]
    n_angles = operator.angles.size
    pooled = np.empty((n, b, n_angles), dtype=np.float64)
    variance = np.empty((n, b, n_angles), dtype=np.float64)
    stack_pooled = np.empty((n, n_angles), dtype=np.float64)
    stack_variance = np.full((n, n_angles), np.nan, dtype=np.float64)
    for start in range(0, n, chunk_size):  # chunks bound the memory of the sinograms
        stop = min(n, start + chunk_size)
        folded = operator.apply_folded(images[start:stop], circular=True)
        pooled[start:stop] = _pooled_curve(folded, config)
        variance[start:stop] = features.projection_variance_folded(folded)
        # The transform is linear: the stack's sinogram is the weighted sum of the bands'.
        w = weights[start:stop].astype(folded.even.dtype)
        stacked = FoldedSinogram(
            even=np.einsum("nb,nbak->nak", w, folded.even),
            odd=np.einsum("nb,nbak->nak", w, folded.odd),
            size=folded.size,
        )
        stack_pooled[start:stop] = _pooled_curve(stacked, config)
        if config.estimator == "moments":
            stack_variance[start:stop] = features.projection_variance_folded(stacked)
    return pooled, variance, stack_pooled, stack_variance


@dataclass(frozen=True)
class SinogramFits:
    """Steps 3-5 of a batch: the fits of its pooled and projection-variance curves.

    Attributes
    ----------
    peak, window, moments
        Per band ``(N, B)``: the pooled curve's sinusoid (the paper's peak) and window-drop
        error, and the projection variance's sinusoid (second moments).
    stack_peak
        Per galaxy ``(N,)``: the sinusoid of the band stack's pooled curve.
    stack_moments
        Per galaxy ``(N,)``: the sinusoid of the band stack's projection variance; only for
        the "moments" estimator (``None`` otherwise).
    """

    peak: features.SinusoidFit
    window: features.WindowError
    moments: features.SinusoidFit
    stack_peak: features.SinusoidFit
    stack_moments: features.SinusoidFit | None


#: Steps 3-5 of a batch: ``(images, weights, operator, config, chunk_size) -> SinogramFits``,
#: ``images`` float32 ``(N, B, S, S)`` after step 2 (circular mask applied), ``weights``
#: ``(N, B)`` the band-stack weights. :func:`fit_sinograms` on the CPU by default; the GPU
#: worker passes :class:`galpipe.gpu.sinograms.TorchSinogramFitter`.
FitSinograms = Callable[[np.ndarray, np.ndarray, RadonOperator, RadonConfig, int], SinogramFits]


def fit_sinograms(
    images: np.ndarray,
    weights: np.ndarray,
    operator: RadonOperator,
    config: RadonConfig,
    chunk_size: int,
) -> SinogramFits:
    """Steps 3-5 on the CPU: the transform, the pooling and the sinusoid fits.

    Parameters
    ----------
    images : numpy.ndarray
        float32 ``(N, B, S, S)`` stamps after step 2 (circular mask applied).
    weights : numpy.ndarray
        ``(N, B)`` band-stack weights (step 6).
    operator : RadonOperator
        The transform for ``config``.
    config : RadonConfig
        Pooling, estimator and windows.
    chunk_size : int
        Galaxies transformed at a time.

    Returns
    -------
    SinogramFits
    """
    pooled, variance, stack_pooled, stack_variance = _sinograms_to_curves(
        images, weights, operator, config, chunk_size
    )
    angles = operator.angles
    return SinogramFits(
        peak=features.fit_sinusoid(pooled, angles),
        window=features.window_drop_error(pooled, angles, config.windows_deg),
        moments=features.fit_sinusoid(variance, angles),
        stack_peak=features.fit_sinusoid(stack_pooled, angles),
        stack_moments=(
            features.fit_sinusoid(stack_variance, angles) if config.estimator == "moments" else None
        ),
    )


@dataclass(frozen=True)
class Stamps:
    """The batch after step 2, ready for the transform; per band ``(N, B)`` unless stated.

    ``images`` float32 ``(N, B, S, S)`` (sanitised, min-shifted, neighbours masked, circular
    mask applied); ``nonfinite_count``; ``blank`` (nothing to measure, also once masked to
    nothing); ``point_like``; ``usable`` (neither, so combined); ``weights`` (the band-stack
    weights, step 6); per galaxy ``(N,)``: ``masked_fraction``, ``contaminated``.
    """

    images: np.ndarray
    nonfinite_count: np.ndarray
    blank: np.ndarray
    point_like: np.ndarray
    usable: np.ndarray
    weights: np.ndarray
    masked_fraction: np.ndarray
    contaminated: np.ndarray


@dataclass(frozen=True)
class _BandFits:
    """Step 5 per band, ``(N, B)``: the pooled curve's sinusoid (``peak``) and window-drop
    error, the projection variance's sinusoid (``moments``), ``anisotropy`` (``b/a``), the
    peak's image ``angle_deg``, and the quality tests ``low_signal`` and ``round``."""

    peak: features.SinusoidFit
    window: features.WindowError
    moments: features.SinusoidFit
    anisotropy: np.ndarray
    angle_deg: np.ndarray
    low_signal: np.ndarray
    round: np.ndarray


@dataclass(frozen=True)
class _Combined:
    """Step 6 per galaxy, ``(N,)``: the band stack's angle, error and anisotropy (NaN where
    ``has_band`` is False) and the per-band angles' combination ``bands`` (spread, count)."""

    angle_deg: np.ndarray
    err_deg: np.ndarray
    anisotropy: np.ndarray
    bands: features.CombinedAngle
    has_band: np.ndarray


def _flag_bits(shape: tuple[int, ...], conditions: Mapping[Flag, npt.ArrayLike]) -> np.ndarray:
    """int32 :class:`Flag` bits of ``shape``, each flag set where its condition holds."""
    bits = np.zeros(shape, dtype=np.int32)
    for flag, condition in conditions.items():
        bits |= np.where(condition, int(flag), 0).astype(np.int32)
    return bits


def _checked_operator(
    images: np.ndarray, cfg: RadonConfig, operator: RadonOperator | None, chunk_size: int
) -> RadonOperator:
    """The operator for ``cfg`` (``operator``, or the cached one), once the arguments agree."""
    if images.ndim != 4 or images.shape[-2:] != (cfg.size, cfg.size):
        raise ValueError(
            f"images: expected shape (N, B, {cfg.size}, {cfg.size}) for config size {cfg.size}, "
            f"got {images.shape}"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive number of galaxies, got {chunk_size}")
    op = operator
    if op is None:
        op = RadonOperator.load_or_build(cfg.size, cfg.angles, cfg.order)
    if op.size != cfg.size or op.order != cfg.order or not np.array_equal(op.angles, cfg.angles):
        raise ValueError(
            f"operator: built for size {op.size}, order {op.order}, {op.angles.size} angles; "
            f"the config asks for size {cfg.size}, order {cfg.order}, {cfg.angles.size} angles"
        )
    return op


def _masked_neighbours(
    pre: PreprocessedBatch,
    sky: tuple[np.ndarray, np.ndarray],
    cfg: RadonConfig,
    mask_neighbours: MaskNeighbours | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 2 (ours): ``(images, masked_fraction, contaminated)`` after neighbour masking, or
    the images unchanged with nothing masked when ``cfg.mask_neighbours`` is off."""
    n = pre.images.shape[0]
    if not (cfg.mask_neighbours and n > 0):
        return pre.images, np.zeros(n, dtype=np.float32), np.zeros(n, dtype=bool)
    # The default masking reuses the sky just measured rather than sorting the corners again.
    masker = mask_neighbours or functools.partial(neighbours_module.mask_neighbours, sky=sky)
    masked, fraction, contaminated = masker(pre.images, pre.no_data)
    return (
        np.asarray(masked, dtype=np.float32),
        np.asarray(fraction, dtype=np.float32).reshape(n),
        np.asarray(contaminated, dtype=bool).reshape(n),
    )


def prepare_stamps(
    images: np.ndarray, cfg: RadonConfig, mask_neighbours: MaskNeighbours | None
) -> Stamps:
    """Step 2 (and ours: neighbour masking before the circular mask), and which bands count.

    The first half of :func:`measure_batch`, on the CPU; ``images``, ``cfg`` and
    ``mask_neighbours`` as there (``images`` already checked against ``cfg``).
    """
    pre = sanitise_and_shift(images)
    sky_level, sky_sigma = sky_level_and_noise(pre.images, pre.no_data)
    shifted, masked_fraction, contaminated = _masked_neighbours(
        pre, (sky_level, sky_sigma), cfg, mask_neighbours
    )
    stamps = apply_circular_mask(shifted)
    flux = stamps.sum(axis=(-2, -1), dtype=np.float64)
    brightest = stamps.max(axis=(-2, -1)).astype(np.float64)
    point_like = (flux > 0) & (brightest > cfg.point_like_fraction * flux)
    blank = pre.blank | ~(flux > 0)  # also blank once masked to nothing
    usable = ~blank & ~point_like
    return Stamps(
        images=stamps,
        nonfinite_count=pre.nonfinite_count,
        blank=blank,
        point_like=point_like,
        usable=usable,
        weights=_stack_weights(sky_level, sky_sigma, brightest, usable),
        masked_fraction=masked_fraction,
        contaminated=contaminated,
    )


def _fit_bands(sinogram_fits: SinogramFits, cfg: RadonConfig) -> _BandFits:
    """Step 5, per band: the quality tests and image angle of the sinusoid fits."""
    peak = sinogram_fits.peak
    anisotropy = features.sinusoid_anisotropy(peak)
    return _BandFits(
        peak=peak,
        window=sinogram_fits.window,
        moments=sinogram_fits.moments,
        anisotropy=anisotropy,
        angle_deg=features.peak_angle_to_image_angle(peak.theta0_deg),
        low_signal=peak.amplitude < cfg.min_significance * peak.amplitude_err,
        round=anisotropy < cfg.min_anisotropy,
    )


def _combine(
    fits: _BandFits, usable: np.ndarray, sinogram_fits: SinogramFits, cfg: RadonConfig
) -> _Combined:
    """Step 6 (ours): the band stack's angle, and how far the usable bands agree with it."""
    stack_fit = sinogram_fits.stack_peak
    if cfg.estimator == "peak":
        chosen_angle, chosen_err = fits.angle_deg, fits.peak.theta0_err_deg
        stack_angle = features.peak_angle_to_image_angle(stack_fit.theta0_deg)
        stack_err = stack_fit.theta0_err_deg
    else:
        stack_moments = sinogram_fits.stack_moments
        if stack_moments is None:
            raise ValueError("sinogram fits: the moments estimator needs the stack's moments fit")
        chosen_angle, chosen_err = fits.moments.theta0_deg, fits.moments.theta0_err_deg
        stack_angle, stack_err = stack_moments.theta0_deg, stack_moments.theta0_err_deg
    bands = features.combine_axial(chosen_angle, chosen_err, usable)
    has_band = bands.n_bands > 0
    birge = features.birge_ratio(chosen_angle, chosen_err, usable, stack_angle)
    return _Combined(
        angle_deg=np.where(has_band, stack_angle, np.nan),
        err_deg=np.where(
            has_band, np.minimum(birge * stack_err, features.MAX_ANGLE_ERR_DEG), np.nan
        ),
        anisotropy=np.where(has_band, features.sinusoid_anisotropy(stack_fit), np.nan),
        bands=bands,
        has_band=has_band,
    )


def _band_flags(stamps: Stamps, fits: _BandFits) -> np.ndarray:
    """int32 ``(N, B)`` :class:`Flag` bits of every band; a blank band gets no quality bit."""
    measured = ~stamps.blank
    return _flag_bits(
        stamps.blank.shape,
        {
            Flag.BAND_BLANK: stamps.blank,
            Flag.NONFINITE_PIXELS: stamps.nonfinite_count > 0,
            Flag.LOW_SIGNAL: measured & fits.low_signal,
            Flag.ROUND: measured & fits.round,
            Flag.POINT_LIKE: measured & stamps.point_like,
        },
    )


def _galaxy_flags(
    stamps: Stamps, fits: _BandFits, combined: _Combined, cfg: RadonConfig
) -> np.ndarray:
    """int32 ``(N,)`` :class:`Flag` bits of every galaxy (the rules: :class:`Flag`)."""
    # unreliable_angle is True where there is no angle; NO_VALID_BAND already says that.
    unreliable = combined.has_band & unreliable_angle(
        combined.anisotropy,
        combined.bands.spread_deg,
        min_anisotropy=cfg.unreliable_min_anisotropy,
        max_band_spread_deg=cfg.unreliable_max_band_spread_deg,
    )

    def every_combined_band(condition: np.ndarray) -> np.ndarray:
        return combined.has_band & np.all(condition | ~stamps.usable, axis=-1)

    return _flag_bits(
        stamps.contaminated.shape,
        {
            Flag.BAND_BLANK: stamps.blank.any(axis=-1),
            Flag.NONFINITE_PIXELS: (stamps.nonfinite_count > 0).any(axis=-1),
            Flag.POINT_LIKE: stamps.point_like.any(axis=-1) & ~stamps.blank.all(axis=-1),
            Flag.LOW_SIGNAL: every_combined_band(fits.low_signal),
            Flag.ROUND: every_combined_band(fits.round),
            Flag.NO_VALID_BAND: ~combined.has_band,
            Flag.CONTAMINATED: stamps.contaminated,
            Flag.UNRELIABLE: unreliable,
        },
    )


def _batch_measurement(
    stamps: Stamps, fits: _BandFits, combined: _Combined, cfg: RadonConfig
) -> BatchMeasurement:
    """The fields of :class:`BatchMeasurement`; per-band floats NaN where the band is blank."""

    def per_band(values: np.ndarray) -> np.ndarray:
        return np.where(stamps.blank, np.nan, values)

    return BatchMeasurement(
        band_angle_image_deg=per_band(fits.angle_deg),
        band_angle_err_fit_deg=per_band(fits.peak.theta0_err_deg),
        band_angle_err_window_deg=per_band(fits.window.mean_deg),
        band_angle_err_window_std_deg=per_band(fits.window.std_deg),
        band_angle_argmax_deg=per_band(features.peak_angle_to_image_angle(fits.window.peak_deg)),
        band_sinusoid_a=per_band(fits.peak.offset),
        band_sinusoid_b=per_band(fits.peak.amplitude),
        band_anisotropy=per_band(fits.anisotropy),
        band_moments_angle_deg=per_band(fits.moments.theta0_deg),
        band_moments_err_deg=per_band(fits.moments.theta0_err_deg),
        band_moments_ellipticity=per_band(features.sinusoid_anisotropy(fits.moments)),
        band_flags=_band_flags(stamps, fits),
        nonfinite_count=stamps.nonfinite_count,
        angle_image_deg=combined.angle_deg,
        angle_err_deg=calibrated_angle_err(
            combined.err_deg, combined.anisotropy, stamps.contaminated, cfg.angle_err_calibration
        ),
        band_spread_deg=combined.bands.spread_deg,
        anisotropy=combined.anisotropy,
        n_bands=combined.bands.n_bands.astype(np.int32),
        flags=_galaxy_flags(stamps, fits, combined, cfg),
        masked_fraction=stamps.masked_fraction,
        contaminated=stamps.contaminated,
        algo_version=cfg.algo_version,
    )


def measure_batch(
    images: np.ndarray,
    config: RadonConfig | None = None,
    operator: RadonOperator | None = None,
    mask_neighbours: MaskNeighbours | None = None,
    *,
    chunk_size: int = 256,
    sinogram_fitter: FitSinograms | None = None,
) -> BatchMeasurement:
    """Measure the orientation of a batch of galaxies (paper section 3, steps 2-5).

    Parameters
    ----------
    images : numpy.ndarray
        ``(N, B, S, S)`` cutouts, bands g, r, i, z, axes ``[..., row, col]`` (row 0 = FITS y=1).
    config : RadonConfig, optional
        The choices (default ``RadonConfig()``).
    operator : RadonOperator, optional
        The Radon operator for ``config`` (default: loaded from / built into the disk cache).
    mask_neighbours : callable, optional
        The neighbour-masking step (:data:`MaskNeighbours`); used only when
        ``config.mask_neighbours``; default :func:`galpipe.science.neighbours.mask_neighbours`.
    chunk_size : int
        Galaxies transformed at a time (memory: ~``chunk_size * B * S * A * 4`` bytes).
    sinogram_fitter : callable, optional
        Steps 3-5 (:data:`FitSinograms`); default :func:`fit_sinograms` (numpy, CPU). The GPU
        worker passes :class:`galpipe.gpu.sinograms.TorchSinogramFitter`.

    Returns
    -------
    BatchMeasurement
        Never raises for degenerate images (blank, NaN, constant, a hot pixel, round): the
        flags say what happened.
    """
    cfg = config if config is not None else RadonConfig()
    arr = np.asarray(images)
    op = _checked_operator(arr, cfg, operator, chunk_size)
    stamps = prepare_stamps(arr, cfg, mask_neighbours)  # step 2
    return measure_prepared(stamps, cfg, op, chunk_size=chunk_size, sinogram_fitter=sinogram_fitter)


def measure_prepared(
    stamps: Stamps,
    config: RadonConfig,
    operator: RadonOperator,
    *,
    chunk_size: int = 256,
    sinogram_fitter: FitSinograms | None = None,
) -> BatchMeasurement:
    """The second half of :func:`measure_batch`: steps 3-6 of stamps :func:`prepare_stamps`
    made, possibly in another process (the GPU worker prepares its batches in decode
    processes and measures them here). Arguments and result as :func:`measure_batch`'s.
    """
    fitter = sinogram_fitter or fit_sinograms
    sinogram_fits = fitter(stamps.images, stamps.weights, operator, config, chunk_size)
    fits = _fit_bands(sinogram_fits, config)  # step 5
    combined = _combine(fits, stamps.usable, sinogram_fits, config)
    return _batch_measurement(stamps, fits, combined, config)


def concatenate_stamps(parts: Sequence[Stamps]) -> Stamps:
    """One :class:`Stamps` of several batches' (in order), e.g. the decode processes' chunks.

    Raises
    ------
    ValueError
        If ``parts`` is empty.
    """
    if not parts:
        raise ValueError("parts: expected at least one batch of stamps")
    return Stamps(
        **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Stamps)}
    )
