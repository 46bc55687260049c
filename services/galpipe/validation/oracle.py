"""The information floor: an oracle that knows the noiseless galaxy and fits only its angle.

The protocol's mean deviation (the paper: 6.17 deg) depends on the population as much as on the
method: after N at 10^3 photons -- most of them sky for a faint galaxy, since N resamples the
whole stamp -- the angle of a round galaxy is simply not in the image. To tell the method's
shortfall from the data's, the report measures the same augmented images with an estimator
that lacks nothing but the angle. For an isolated truth galaxy it

1. renders the noiseless cutout (GalSim, :func:`~galpipe.synthetic.render.render_cutout`,
   the population's own renderer) with the position angle offset by every ``delta`` of
   :data:`OFFSETS_DEG`;
2. pushes each template through the image's own R and B (:mod:`galpipe.validation.augment`), so
   that the interpolation and the blur are modelled exactly, and gives every pixel the
   expected mean and variance of the data: Gaussian sky noise propagated through R and B
   (Monte Carlo over :data:`NOISE_DRAWS` noise stamps), the sources' photon noise, and after
   N the clipping at zero and the resampling's Poisson variance
   (:func:`clipped_normal_moments`);
3. takes the offset of least ``chi^2 + sum log var`` (the Gaussian likelihood), refined by a
   parabola through the grid's minimum (:func:`best_offset_deg`).

Position angle, shape, size, flux, centre, PSF and noise levels are all the truth's; only the
angle is fitted. Its deviation ``|offset_aug - offset_orig|`` (the protocol's metric, R is in
the template) and its error ``|offset_aug|`` against the truth sit beside ours on the same
arrays. It is a reference, not a proven bound: the likelihood treats pixels as independent
(R and B correlate the noise) and Poisson counts as Gaussian, so where the noise is correlated
and no N is applied our measurement can score better. Where photons are few -- the case that
dominates the mean -- it is close to the best any method can do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
from scipy.special import ndtr

from galpipe.science.core import RadonConfig, measure_batch
from galpipe.science.features import axial_difference
from galpipe.science.orientation import image_angle_to_position_angle
from galpipe.survey.layout import BANDS, PIXSCALE_ARCSEC
from galpipe.synthetic.render import render_cutout
from galpipe.synthetic.rows import take_rows
from galpipe.synthetic.truth import TruthGalaxy
from galpipe.validation import augment
from galpipe.validation.parallel import map_chunks
from galpipe.validation.population import TruthPopulation
from galpipe.validation.protocol import operator_for
from galpipe.validation.stats import (
    AXIS_RATIO_EDGES,
    ErrorStats,
    bin_labels,
    binned_stats,
    error_stats,
    json_ready,
    nan_if_none,
    stats_list,
)

__all__ = [
    "FLOOR_METHODS",
    "GALAXIES_PER_TASK",
    "NOISE_DRAWS",
    "OFFSETS_DEG",
    "FloorMethod",
    "FloorResult",
    "FloorStandardErrors",
    "FloorStats",
    "FloorSummary",
    "angle_templates",
    "augmented_model",
    "best_offset_deg",
    "clipped_normal_moments",
    "floor_tables",
    "run_floor",
]

#: The methods side by side on the floor's images: ours (production), ours with neighbour
#: masking off (on isolated galaxies masking can only add false detections), the oracle.
FLOOR_METHODS = ("ours", "ours_nomask", "oracle")
#: Trial offsets from the true position angle, degrees: a 1-degree grid over the half turn.
OFFSETS_DEG: np.ndarray = np.arange(-90.0, 90.0, 1.0)
#: Noise stamps whose spread after R and B gives each pixel's sky noise.
NOISE_DRAWS = 64
#: Oracle galaxies per process-pool task.
GALAXIES_PER_TASK = 4
#: Mixed into every task's seed so the floor's draws differ from the protocol's.
_FLOOR_SALT = 0xF1008
#: Variance floor, in units of the band's sky variance, for pixels with no data (0 in both the
#: image and every template after a rotation): keeps their constant log term finite.
_VARIANCE_FLOOR_REL = 1e-6


def clipped_normal_moments(mean: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of ``max(X, 0)`` for ``X ~ Normal(mean, sigma^2)``, elementwise.

    Poisson resampling (:func:`~galpipe.validation.augment.poisson_resample`) clips the image at 0
    before drawing, so a sky pixel of mean ``m`` and noise ``sigma`` enters N with this mean.

    Parameters
    ----------
    mean : numpy.ndarray
        Mean of ``X`` (any flux unit).
    sigma : numpy.ndarray
        Standard deviation of ``X``, same unit, >= 0 (0: ``X`` is exactly ``mean``).

    Returns
    -------
    tuple of numpy.ndarray
        ``E[max(X, 0)]`` and ``Var[max(X, 0)]``, broadcast shape.
    """
    mean, sigma = np.broadcast_arrays(np.asarray(mean, float), np.asarray(sigma, float))
    safe = np.where(sigma > 0, sigma, 1.0)
    z = mean / safe
    cdf = ndtr(z)
    pdf = np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi)
    first = mean * cdf + sigma * pdf
    second = (mean * mean + sigma * sigma) * cdf + mean * sigma * pdf
    exact = np.clip(mean, 0.0, None)
    first = np.where(sigma > 0, first, exact)
    variance = np.where(sigma > 0, np.clip(second - first * first, 0.0, None), 0.0)
    return first, variance


def angle_templates(
    truth: TruthGalaxy,
    size: int,
    pixscale: float = PIXSCALE_ARCSEC,
    offsets_deg: np.ndarray = OFFSETS_DEG,
) -> np.ndarray:
    """The noiseless cutout of ``truth`` turned to every trial offset.

    Parameters
    ----------
    truth : TruthGalaxy
        An isolated galaxy (its neighbours, if any, are left out).
    size : int
        Stamp side, pixels.
    pixscale : float
        Arcsec per pixel.
    offsets_deg : numpy.ndarray
        ``(D,)`` offsets added to the true position angle (east of north), degrees.

    Returns
    -------
    numpy.ndarray
        ``(D, B, S, S)`` float32 nanomaggies, bands g, r, i, z: exactly what the population
        renders, without noise, at position angle ``truth + offset``.
    """
    return np.stack(
        [
            render_cutout(
                dataclasses.replace(
                    truth,
                    position_angle_deg=(truth.position_angle_deg + float(offset)) % 180.0,
                    neighbours=(),
                ),
                size,
                pixscale,
                noise=False,
            )
            for offset in offsets_deg
        ]
    )


def best_offset_deg(
    image: np.ndarray,
    model_mean: np.ndarray,
    model_var: np.ndarray,
    offsets_deg: np.ndarray = OFFSETS_DEG,
) -> float:
    """The trial offset of greatest Gaussian likelihood, refined between grid points.

    Parameters
    ----------
    image : numpy.ndarray
        ``(B, S, S)`` the data.
    model_mean, model_var : numpy.ndarray
        ``(D, B, S, S)`` each pixel's expected value and variance under each trial offset,
        variance > 0.
    offsets_deg : numpy.ndarray
        ``(D,)`` the trial offsets, an evenly spaced grid over one half turn, degrees.

    Returns
    -------
    float
        The offset minimising ``sum (image - mean)^2 / var + log var``, degrees: the grid's
        minimum moved by the vertex of the parabola through it and its two (circular)
        neighbours, at most half a step.
    """
    cost = (np.square(image[None] - model_mean) / model_var + np.log(model_var)).sum(axis=(1, 2, 3))
    best = int(np.argmin(cost))
    n = cost.size
    left, centre, right = cost[(best - 1) % n], cost[best], cost[(best + 1) % n]
    curvature = left - 2.0 * centre + right
    shift = 0.5 * (left - right) / curvature if curvature > 0 else 0.0
    step = float(offsets_deg[1] - offsets_deg[0])
    return float(offsets_deg[best] + step * np.clip(shift, -0.5, 0.5))


def augmented_model(
    templates: np.ndarray,
    image: np.ndarray,
    params: augment.AugmentationParams,
    sky_sigma: np.ndarray,
    gain: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's mean and variance of one augmented image under each trial offset.

    Parameters
    ----------
    templates : numpy.ndarray
        ``(D, B, S, S)`` from :func:`angle_templates`.
    image : numpy.ndarray
        ``(B, S, S)`` the original cutout (N's scale depends on its clipped flux after R, B).
    params : AugmentationParams
        The one image's augmentations (``len(params) == 1``).
    sky_sigma : numpy.ndarray
        ``(B,)`` the bands' Gaussian sky noise per pixel, same unit as the images.
    gain : float
        Photons (electrons) per image unit of the sources' Poisson noise.
    rng : numpy.random.Generator
        Draws the unit-noise stamps that measure how R and B shrink the noise (unused when
        neither applies).

    Returns
    -------
    tuple of numpy.ndarray
        ``(D, B, S, S)`` mean and variance (module docstring, step 2).
    """
    n_offsets = templates.shape[0]
    size = image.shape[-1]
    sigma = np.asarray(sky_sigma, dtype=np.float64)[:, None, None]
    model = templates
    scene = image[None]
    # Unit noise in every band: R and B treat the bands alike, so all B * NOISE_DRAWS stamps
    # sample the one map of how much of the sky variance survives.
    transformed = bool(params.apply_rotation[0] or params.apply_blur[0])
    shape = (NOISE_DRAWS, *image.shape) if transformed else (0, *image.shape)
    unit_noise = rng.standard_normal(shape).astype(np.float32)
    no_data = None
    if params.apply_rotation[0]:
        alpha = float(params.alpha_deg[0])
        model = augment.rotate(model, np.full(n_offsets, alpha))
        scene = augment.rotate(scene, alpha)
        unit_noise = augment.rotate(unit_noise, np.full(NOISE_DRAWS, alpha))
        no_data = augment.rotation_no_data(np.array([alpha]), size)[0]
    if params.apply_blur[0]:
        width = float(params.blur_sigma_px[0])

        def mask(n: int) -> np.ndarray | None:
            return None if no_data is None else np.broadcast_to(no_data, (n, size, size))

        model = augment.blur(model, width, mask(n_offsets))
        scene = augment.blur(scene, width, mask(1))
        unit_noise = augment.blur(unit_noise, width, mask(NOISE_DRAWS))
    shrink = np.ones((size, size))
    if transformed:
        shrink = unit_noise.astype(np.float64).var(axis=(0, 1))
    model = model.astype(np.float64)
    # The sky's variance and the sources' photon noise, both shrunk by R and B alike.
    variance = (sigma * sigma + np.clip(model, 0.0, None) / gain) * shrink
    if params.apply_resample[0]:
        flux = float(np.clip(scene, 0.0, None).sum())
        scale = float(params.total_counts[0]) / flux if flux > 0 else 0.0
        mean, clipped_var = clipped_normal_moments(model, np.sqrt(variance))
        poisson = mean / scale if scale > 0 else np.zeros_like(mean)
        variance = clipped_var + poisson
        model = mean
    floor = _VARIANCE_FLOOR_REL * (sigma * sigma)[None]
    return model, np.maximum(variance, floor)


#: The original image: no augmentation (the oracle's reference angle).
_UNAUGMENTED = augment.AugmentationParams(
    apply_rotation=np.zeros(1, dtype=bool),
    apply_blur=np.zeros(1, dtype=bool),
    apply_resample=np.zeros(1, dtype=bool),
    alpha_deg=np.zeros(1),
    blur_sigma_px=np.zeros(1),
    total_counts=np.ones(1),
)


@dataclass(frozen=True)
class FloorResult:
    """One row per augmented image of the oracle's galaxies; arrays of shape ``(M,)``.

    Attributes
    ----------
    galaxy_index : numpy.ndarray
        Index of the truth galaxy in the population.
    apply_resample, total_counts : numpy.ndarray
        Whether N was applied, and its photons.
    deviation_ours_deg, deviation_ours_nomask_deg, deviation_oracle_deg : numpy.ndarray
        The protocol's deviation of each method (ours; ours with neighbour masking off, the
        paper's method; the oracle), degrees in [0, 90].
    error_ours_deg, error_ours_nomask_deg, error_oracle_deg : numpy.ndarray
        Each method's axial error against the true position angle on the augmented image.
    """

    galaxy_index: np.ndarray
    apply_resample: np.ndarray
    total_counts: np.ndarray
    deviation_ours_deg: np.ndarray
    deviation_ours_nomask_deg: np.ndarray
    deviation_oracle_deg: np.ndarray
    error_ours_deg: np.ndarray
    error_ours_nomask_deg: np.ndarray
    error_oracle_deg: np.ndarray

    def __len__(self) -> int:
        return int(self.galaxy_index.size)


@dataclass(frozen=True)
class _Task:
    index: int
    seed: int
    galaxy_index: np.ndarray  # (g,)
    truths: tuple[TruthGalaxy, ...]
    images: np.ndarray  # (g, B, S, S)
    jacobians: np.ndarray  # (g, 2, 2)
    repeats: int
    config: RadonConfig
    pixscale: float


def _run_task(task: _Task) -> dict[str, np.ndarray]:
    """Augment ``repeats`` images per galaxy; measure them with ours and with the oracle."""
    rng = np.random.default_rng(np.random.SeedSequence([task.seed, _FLOOR_SALT, task.index]))
    n_galaxies, _, size, _ = task.images.shape
    local = np.repeat(np.arange(n_galaxies), task.repeats)
    params = augment.sample_augmentations(local.size, rng)
    augmented = augment.apply_augmentations(task.images[local], params, rng)
    cfg = task.config
    operator = operator_for(cfg.size, cfg.angles_deg, cfg.order)
    ours: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    unmasked = dataclasses.replace(cfg, mask_neighbours=False)
    for method, method_cfg in (("ours", cfg), ("ours_nomask", unmasked)):
        reference = measure_batch(task.images, method_cfg, operator).angle_image_deg
        measured = measure_batch(augmented, method_cfg, operator).angle_image_deg
        ours[method] = (measured - params.angle_shift_deg, reference[local])
    truth_pa = np.array([t.position_angle_deg for t in task.truths])
    oracle_orig = np.empty(n_galaxies)
    oracle_aug = np.empty(local.size)
    for g, truth in enumerate(task.truths):
        templates = angle_templates(truth, size, task.pixscale)
        sigma = np.array([truth.sky_sigma[band] for band in BANDS])
        gain = truth.gain_e_per_nmgy
        mean, var = augmented_model(templates, task.images[g], _UNAUGMENTED, sigma, gain, rng)
        oracle_orig[g] = best_offset_deg(task.images[g].astype(np.float64), mean, var)
        for j in np.flatnonzero(local == g):
            one = take_rows(params, np.array([j]))
            mean, var = augmented_model(templates, task.images[g], one, sigma, gain, rng)
            oracle_aug[j] = best_offset_deg(augmented[j].astype(np.float64), mean, var)
    rows = {
        "galaxy_index": task.galaxy_index[local],
        "apply_resample": params.apply_resample,
        "total_counts": params.total_counts,
        "deviation_oracle_deg": axial_difference(oracle_aug, oracle_orig[local]),
        "error_oracle_deg": axial_difference(oracle_aug, np.zeros_like(oracle_aug)),
    }
    for method, (measured, reference) in ours.items():
        pa = image_angle_to_position_angle(measured, task.jacobians[local])
        rows[f"deviation_{method}_deg"] = axial_difference(measured, reference)
        rows[f"error_{method}_deg"] = axial_difference(pa, truth_pa[local])
    return rows


def run_floor(
    population: TruthPopulation,
    n_galaxies: int,
    repeats: int,
    seed: int,
    *,
    config: RadonConfig | None = None,
    workers: int = 1,
    pixscale: float = PIXSCALE_ARCSEC,
) -> FloorResult:
    """Ours and the oracle on ``repeats`` augmented images of each of the first ``n_galaxies``
    isolated galaxies of ``population`` (a random sample: the population is drawn at random).

    Parameters
    ----------
    population : TruthPopulation
        The truth population (its isolated galaxies are used).
    n_galaxies : int
        Oracle galaxies, >= 0; fewer if the population has fewer isolated galaxies.
    repeats : int
        Augmented images per galaxy, >= 1, the protocol's draws (random subset of R, B, N).
    seed : int
        Seeds the draws (with the task index: independent of the number of workers).
    config : RadonConfig, optional
        Our measurement; production default.
    workers : int
        Processes.
    pixscale : float
        Arcsec per pixel of the population's cutouts.

    Returns
    -------
    FloorResult
    """
    if n_galaxies < 0 or repeats < 1:
        raise ValueError(
            f"floor: need n_galaxies >= 0 and repeats >= 1; got {n_galaxies}, {repeats}"
        )
    cfg = config if config is not None else RadonConfig()
    chosen = np.flatnonzero(population.n_neighbours == 0)[:n_galaxies]
    tasks = [
        _Task(
            index=index,
            seed=seed,
            galaxy_index=rows,
            truths=tuple(population.truths[i] for i in rows),
            images=np.ascontiguousarray(population.images[rows]),
            jacobians=population.jacobians[rows],
            repeats=repeats,
            config=cfg,
            pixscale=pixscale,
        )
        for index, rows in enumerate(
            chosen[start : start + GALAXIES_PER_TASK]
            for start in range(0, chosen.size, GALAXIES_PER_TASK)
        )
    ]
    parts = map_chunks(_run_task, tasks, workers)
    names = [f.name for f in dataclasses.fields(FloorResult)]
    if not parts:
        empty = {name: np.empty(0) for name in names}
        empty["galaxy_index"] = np.empty(0, dtype=np.int64)
        empty["apply_resample"] = np.empty(0, dtype=bool)
        return FloorResult(**empty)
    return FloorResult(**{name: np.concatenate([p[name] for p in parts]) for name in names})


def _galaxy_means(values: np.ndarray, galaxy: np.ndarray) -> np.ndarray:
    """Mean of ``values`` per galaxy (``galaxy``: 0..G-1 per row)."""
    counts = np.bincount(galaxy)
    return np.bincount(galaxy, weights=values) / np.where(counts > 0, counts, 1)


def _standard_error(per_galaxy: np.ndarray) -> float:
    """Standard error of the mean over galaxies; NaN with fewer than two."""
    if per_galaxy.size < 2:
        return float("nan")
    return float(np.std(per_galaxy, ddof=1) / np.sqrt(per_galaxy.size))


@dataclass(frozen=True)
class FloorStats:
    """One method's deviations (or errors) on the floor's images, by selection.

    Attributes
    ----------
    overall : ErrorStats
        Every image.
    by_axis_ratio : tuple of ErrorStats
        By the galaxy's axis-ratio bin.
    resample_low, resample_high, no_resample : ErrorStats
        Images resampled by N to 10^3-10^4 photons, to 10^4-10^5, and not resampled.
    """

    overall: ErrorStats
    by_axis_ratio: tuple[ErrorStats, ...]
    resample_low: ErrorStats
    resample_high: ErrorStats
    no_resample: ErrorStats

    def to_json(self) -> dict[str, Any]:
        """One key per attribute."""
        return {
            "overall": self.overall.to_json(),
            "by_axis_ratio": [d.to_json() for d in self.by_axis_ratio],
            "resample_low": self.resample_low.to_json(),
            "resample_high": self.resample_high.to_json(),
            "no_resample": self.no_resample.to_json(),
        }

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Self:
        """The inverse of :meth:`to_json`."""
        return cls(
            overall=ErrorStats.from_json(values["overall"]),
            by_axis_ratio=stats_list(values["by_axis_ratio"]),
            resample_low=ErrorStats.from_json(values["resample_low"]),
            resample_high=ErrorStats.from_json(values["resample_high"]),
            no_resample=ErrorStats.from_json(values["no_resample"]),
        )


@dataclass(frozen=True)
class FloorMethod:
    """One method on the floor's images: the protocol's deviation, and the error vs truth."""

    deviation: FloorStats
    error: FloorStats

    def to_json(self) -> dict[str, Any]:
        """``deviation`` and ``error``."""
        return {"deviation": self.deviation.to_json(), "error": self.error.to_json()}

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Self:
        """The inverse of :meth:`to_json`."""
        return cls(FloorStats.from_json(values["deviation"]), FloorStats.from_json(values["error"]))


@dataclass(frozen=True)
class FloorStandardErrors:
    """Standard errors of the mean deviations over galaxies, degrees (NaN with < 2 galaxies)."""

    ours: float
    oracle: float
    ours_minus_oracle: float

    def to_json(self) -> dict[str, Any]:
        """One key per attribute (NaN becomes None)."""
        return json_ready(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Self:
        """The inverse of :meth:`to_json`."""
        return cls(
            ours=nan_if_none(values["ours"]),
            oracle=nan_if_none(values["oracle"]),
            ours_minus_oracle=nan_if_none(values["ours_minus_oracle"]),
        )


@dataclass(frozen=True)
class FloorSummary:
    """The oracle beside ours.

    Attributes
    ----------
    n_galaxies, n_images : int
        The floor's isolated galaxies and their augmented images.
    axis_ratio_bins : tuple of str
        Labels of every ``by_axis_ratio``.
    offsets_deg : str
        The oracle's grid of trial angles, in words.
    deviation_ours_minus_oracle_deg : float
        Mean paired difference of the deviations, ours minus the oracle's (NaN: no image).
    deviation_mean_se_deg : FloorStandardErrors
        Standard errors of the mean deviations and of that difference, over galaxies.
    ours, ours_nomask, oracle : FloorMethod
        Each method of :data:`FLOOR_METHODS`.
    """

    n_galaxies: int
    n_images: int
    axis_ratio_bins: tuple[str, ...]
    offsets_deg: str
    deviation_ours_minus_oracle_deg: float
    deviation_mean_se_deg: FloorStandardErrors
    ours: FloorMethod
    ours_nomask: FloorMethod
    oracle: FloorMethod

    def methods(self) -> dict[str, FloorMethod]:
        """Method name (:data:`FLOOR_METHODS`) -> its statistics."""
        return {"ours": self.ours, "ours_nomask": self.ours_nomask, "oracle": self.oracle}

    def to_json(self) -> dict[str, Any]:
        """JSON-ready, one key per attribute (the methods by name)."""
        return json_ready(
            {
                "n_galaxies": self.n_galaxies,
                "n_images": self.n_images,
                "axis_ratio_bins": self.axis_ratio_bins,
                "offsets_deg": self.offsets_deg,
                "deviation_ours_minus_oracle_deg": self.deviation_ours_minus_oracle_deg,
                "deviation_mean_se_deg": self.deviation_mean_se_deg.to_json(),
                **{name: method.to_json() for name, method in self.methods().items()},
            }
        )

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Self:
        """The inverse of :meth:`to_json`."""
        return cls(
            n_galaxies=values["n_galaxies"],
            n_images=values["n_images"],
            axis_ratio_bins=tuple(values["axis_ratio_bins"]),
            offsets_deg=values["offsets_deg"],
            deviation_ours_minus_oracle_deg=nan_if_none(values["deviation_ours_minus_oracle_deg"]),
            deviation_mean_se_deg=FloorStandardErrors.from_json(values["deviation_mean_se_deg"]),
            ours=FloorMethod.from_json(values["ours"]),
            ours_nomask=FloorMethod.from_json(values["ours_nomask"]),
            oracle=FloorMethod.from_json(values["oracle"]),
        )


def floor_tables(result: FloorResult, axis_ratio: np.ndarray) -> FloorSummary:
    """The oracle beside ours (:class:`FloorSummary`).

    Parameters
    ----------
    result : FloorResult
    axis_ratio : numpy.ndarray
        ``(N,)`` the population's true axis ratios (indexed by ``result.galaxy_index``).
    """
    q = axis_ratio[result.galaxy_index]
    resampled = result.apply_resample
    low = resampled & (result.total_counts < 1.0e4)

    def stats(values: np.ndarray) -> FloorStats:
        return FloorStats(
            overall=error_stats(values),
            by_axis_ratio=tuple(binned_stats(values, q, AXIS_RATIO_EDGES)),
            resample_low=error_stats(values[low]),
            resample_high=error_stats(values[resampled & ~low]),
            no_resample=error_stats(values[~resampled]),
        )

    # Images of one galaxy share its noise and shape: the standard errors are over galaxies.
    _, galaxy = np.unique(result.galaxy_index, return_inverse=True)
    ours = _galaxy_means(result.deviation_ours_deg, galaxy)
    oracle = _galaxy_means(result.deviation_oracle_deg, galaxy)
    methods = {
        method: FloorMethod(
            deviation=stats(getattr(result, f"deviation_{method}_deg")),
            error=stats(getattr(result, f"error_{method}_deg")),
        )
        for method in FLOOR_METHODS
    }
    return FloorSummary(
        n_galaxies=int(np.unique(result.galaxy_index).size),
        n_images=len(result),
        axis_ratio_bins=tuple(bin_labels(AXIS_RATIO_EDGES)),
        offsets_deg=f"{OFFSETS_DEG[0]:g} to {OFFSETS_DEG[-1]:g} step "
        f"{OFFSETS_DEG[1] - OFFSETS_DEG[0]:g}, parabola-refined",
        deviation_ours_minus_oracle_deg=float(np.mean(ours - oracle)) if ours.size else np.nan,
        deviation_mean_se_deg=FloorStandardErrors(
            ours=_standard_error(ours),
            oracle=_standard_error(oracle),
            ours_minus_oracle=_standard_error(ours - oracle),
        ),
        ours=methods["ours"],
        ours_nomask=methods["ours_nomask"],
        oracle=methods["oracle"],
    )
