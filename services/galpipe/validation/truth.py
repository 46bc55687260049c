"""Accuracy against the truth: every method on the truth population, errors binned.

Methods (keys of every table):

- ``ours`` -- :func:`galpipe.science.core.measure_batch` with the production configuration
  (``RadonConfig()``: the paper's peak estimator, neighbour masking on);
- ``ours_nomask`` -- the same with neighbour masking off (the paper's method as published);
- ``ours_moments`` -- the production configuration with ``estimator="moments"``: the
  second-moment angle from the sinogram's projection variances (``docs/science.md``, "The
  second-moment angle (ours)"; compared here with the paper's peak), per band and combined;
- ``peer`` -- SExtractor's second-moment angle (:mod:`galpipe.validation.peer`);
- ``neighbour_oracle`` -- a reference, not a method: ours with masking off on each image minus
  the exact noiseless light of its neighbours
  (:func:`~galpipe.validation.population.render_neighbour_light`). It knows what no measurement
  can, every neighbour's light, and keeps their photon noise: the accuracy that perfect
  neighbour handling would reach. On an isolated galaxy it is ``ours_nomask``.

All of them but the neighbour oracle get the same ``(N, 4, S, S)`` array (its SHA-256 is recorded,
and that of the oracle's array). Image angles become
position angles east of north through each cutout's own WCS Jacobian
(:func:`galpipe.science.orientation.image_angle_to_position_angle`), per band and combined, and
are compared with the true position angle as axial errors in [0, 90] degrees.

Subsets: ``isolated`` (rendered without neighbours), ``neighbours`` (with at least one star or
companion in or near the stamp) and ``all``.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from galpipe.science.core import BatchMeasurement, Flag, RadonConfig, measure_batch
from galpipe.science.features import axial_difference
from galpipe.science.orientation import image_angle_to_position_angle
from galpipe.science.radon import RadonOperator
from galpipe.survey.layout import BANDS
from galpipe.validation.peer import PeerConfig, PeerOutcomes, sep_orientation
from galpipe.validation.population import (
    TruthPopulation,
    images_digest,
    render_neighbour_light,
)
from galpipe.validation.reliability import ReliabilitySummary, reliability_summary
from galpipe.validation.stats import (
    AXIS_RATIO_EDGES,
    SNR_EDGES,
    BinnedCalibration,
    Calibration,
    ErrorStats,
    bin_labels,
    binned_stats,
    calibration,
    error_stats,
    json_ready,
    stats_list,
)

__all__ = [
    "HEADLINE_MAX_AXIS_RATIO",
    "HEADLINE_MIN_SNR",
    "METHODS",
    "SUBSETS",
    "AngleErrors",
    "PairedErrors",
    "TruthHeadline",
    "TruthMeasurements",
    "TruthSummary",
    "headline_selection",
    "measure_truth",
    "subset_masks",
    "truth_tables",
]

METHODS: tuple[str, ...] = ("ours", "ours_nomask", "ours_moments", "peer", "neighbour_oracle")
SUBSETS: tuple[str, ...] = ("all", "isolated", "neighbours")
#: The headline selection: elongated (q < 0.5) and bright (S/N > 50).
HEADLINE_MAX_AXIS_RATIO = 0.5
HEADLINE_MIN_SNR = 50.0
COMBINED = "combined"


@dataclass(frozen=True)
class TruthMeasurements:
    """Every method's angles on the population; position angles east of north, degrees.

    Attributes
    ----------
    position_angle_deg : dict of str to numpy.ndarray
        Method -> ``(N,)`` combined position angle (NaN: not measured).
    band_position_angle_deg : dict of str to numpy.ndarray
        Method -> ``(N, 4)`` per band g, r, i, z.
    ours : BatchMeasurement
        The production measurement (image angles, errors, flags), kept for the protocol.
    config : RadonConfig
        The configuration ``ours`` was measured with (its ``Flag.UNRELIABLE`` thresholds
        are scored against the truth).
    ours_nomask : BatchMeasurement
        The same with neighbour masking off.
    ours_moments : BatchMeasurement
        The production configuration with the moments estimator combined.
    neighbour_oracle : BatchMeasurement
        Masking off, on the images minus their neighbours' exact light (module docstring).
    peer_image_angle_deg : numpy.ndarray
        ``(N,)`` the peer's combined image angle (the protocol's reference for the peer).
    peer_outcomes : PeerOutcomes
        How the peer's combined measurements ended (a failure of ``sep`` is not "no detection").
    images_sha256 : dict of str to str
        Method -> digest of the array it measured (all equal by construction; recorded).
    """

    position_angle_deg: dict[str, np.ndarray]
    band_position_angle_deg: dict[str, np.ndarray]
    ours: BatchMeasurement
    config: RadonConfig
    ours_nomask: BatchMeasurement
    ours_moments: BatchMeasurement
    neighbour_oracle: BatchMeasurement
    peer_image_angle_deg: np.ndarray
    peer_outcomes: PeerOutcomes
    images_sha256: dict[str, str]

    def errors_deg(self, true_pa_deg: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """Method -> band (g, r, i, z, combined) -> ``(N,)`` axial error against the truth."""
        result: dict[str, dict[str, np.ndarray]] = {}
        for method in METHODS:
            per_band = {
                band: axial_difference(self.band_position_angle_deg[method][:, b], true_pa_deg)
                for b, band in enumerate(BANDS)
            }
            per_band[COMBINED] = axial_difference(self.position_angle_deg[method], true_pa_deg)
            result[method] = per_band
        return result


def measure_truth(
    population: TruthPopulation,
    config: RadonConfig | None = None,
    peer_config: PeerConfig | None = None,
    operator: RadonOperator | None = None,
    neighbour_light: np.ndarray | None = None,
) -> TruthMeasurements:
    """Measure the population with every method (module docstring).

    ``neighbour_light`` is :func:`~galpipe.validation.population.render_neighbour_light` of
    the population, rendered here (one process) when not given.
    """
    cfg = config if config is not None else RadonConfig()
    images = population.images
    if neighbour_light is None:
        neighbour_light = render_neighbour_light(population.truths, images.shape[-1])
    if neighbour_light.shape != images.shape:
        raise ValueError(
            f"neighbour_light has shape {neighbour_light.shape}, the images {images.shape}: "
            "one stamp of neighbour light per image"
        )
    unmasked = dataclasses.replace(cfg, mask_neighbours=False)
    digest = images_digest(images)
    ours = measure_batch(images, cfg, operator)
    ours_nomask = measure_batch(images, unmasked, operator)
    ours_moments = measure_batch(images, dataclasses.replace(cfg, estimator="moments"), operator)
    cleaned = images - neighbour_light
    oracle = measure_batch(cleaned, unmasked, operator)
    peer = sep_orientation(images, peer_config)
    jac = population.jacobians
    measurements = {
        "ours": ours,
        "ours_nomask": ours_nomask,
        "ours_moments": ours_moments,
        "neighbour_oracle": oracle,
    }
    return TruthMeasurements(
        position_angle_deg={
            **{
                name: image_angle_to_position_angle(m.angle_image_deg, jac)
                for name, m in measurements.items()
            },
            "peer": image_angle_to_position_angle(peer.angle_image_deg, jac),
        },
        band_position_angle_deg={
            **{
                name: image_angle_to_position_angle(
                    m.band_moments_angle_deg if name == "ours_moments" else m.band_angle_image_deg,
                    jac[:, None],
                )
                for name, m in measurements.items()
            },
            "peer": image_angle_to_position_angle(peer.band_angle_image_deg, jac[:, None]),
        },
        ours=ours,
        config=cfg,
        ours_nomask=ours_nomask,
        ours_moments=ours_moments,
        neighbour_oracle=oracle,
        peer_image_angle_deg=peer.angle_image_deg,
        peer_outcomes=peer.outcomes(),
        images_sha256={
            **dict.fromkeys(METHODS, digest),
            "neighbour_oracle": images_digest(cleaned),
        },
    )


def subset_masks(population: TruthPopulation) -> dict[str, np.ndarray]:
    """Subset name -> ``(N,)`` bool selection."""
    isolated = population.n_neighbours == 0
    return {"all": np.ones(len(population), bool), "isolated": isolated, "neighbours": ~isolated}


def headline_selection(population: TruthPopulation) -> np.ndarray:
    """``(N,)`` bool: isolated galaxies with q < 0.5 and S/N > 50 (the headline selection)."""
    return (
        (population.n_neighbours == 0)
        & (population.axis_ratio < HEADLINE_MAX_AXIS_RATIO)
        & (population.snr > HEADLINE_MIN_SNR)
    )


@dataclass(frozen=True)
class AngleErrors:
    """Errors against the truth of one method's angle (one band, or combined) on one subset.

    Attributes
    ----------
    overall : ErrorStats
        Every galaxy of the subset.
    by_axis_ratio, by_snr : tuple of ErrorStats
        One per bin of :data:`~galpipe.validation.stats.AXIS_RATIO_EDGES` and
        :data:`~galpipe.validation.stats.SNR_EDGES`.
    grid : tuple of tuple of ErrorStats, optional
        The q x S/N grid (rows: axis-ratio bins, columns: S/N bins); the combined angle only.
    """

    overall: ErrorStats
    by_axis_ratio: tuple[ErrorStats, ...]
    by_snr: tuple[ErrorStats, ...]
    grid: tuple[tuple[ErrorStats, ...], ...] | None = None

    @classmethod
    def of(cls, errors: np.ndarray, q: np.ndarray, snr: np.ndarray, *, grid: bool) -> Self:
        """The statistics of ``(n,)`` errors of galaxies with axis ratios ``q`` and ``snr``."""
        return cls(
            overall=error_stats(errors),
            by_axis_ratio=tuple(binned_stats(errors, q, AXIS_RATIO_EDGES)),
            by_snr=tuple(binned_stats(errors, snr, SNR_EDGES)),
            grid=_grid(errors, q, snr) if grid else None,
        )

    def to_json(self) -> dict[str, Any]:
        """``overall``, ``by_axis_ratio``, ``by_snr`` and, for the combined angle, ``grid``."""
        values: dict[str, Any] = {
            "overall": self.overall.to_json(),
            "by_axis_ratio": [s.to_json() for s in self.by_axis_ratio],
            "by_snr": [s.to_json() for s in self.by_snr],
        }
        if self.grid is not None:
            values["grid"] = [[s.to_json() for s in row] for row in self.grid]
        return values

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Self:
        """The inverse of :meth:`to_json`."""
        grid = values.get("grid")
        return cls(
            overall=ErrorStats.from_json(values["overall"]),
            by_axis_ratio=stats_list(values["by_axis_ratio"]),
            by_snr=stats_list(values["by_snr"]),
            grid=None if grid is None else tuple(stats_list(row) for row in grid),
        )


def _grid(errors: np.ndarray, q: np.ndarray, snr: np.ndarray) -> tuple[tuple[ErrorStats, ...], ...]:
    """Stats on the q x S/N grid: rows are axis-ratio bins, columns S/N bins."""
    rows = []
    for lo, hi in itertools.pairwise(AXIS_RATIO_EDGES):
        last = hi == AXIS_RATIO_EDGES[-1]
        in_bin = (q >= lo) & ((q <= hi) if last else (q < hi))
        rows.append(tuple(binned_stats(errors[in_bin], snr[in_bin], SNR_EDGES)))
    return tuple(rows)


@dataclass(frozen=True)
class TruthHeadline:
    """Every method's combined error on :func:`headline_selection`, described by ``selection``."""

    selection: str
    ours: ErrorStats
    ours_nomask: ErrorStats
    ours_moments: ErrorStats
    peer: ErrorStats
    neighbour_oracle: ErrorStats

    def to_json(self) -> dict[str, Any]:
        """``selection`` and one entry per method."""
        return {
            "selection": self.selection,
            **{m: getattr(self, m).to_json() for m in METHODS},
        }

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Self:
        """The inverse of :meth:`to_json`."""
        return cls(
            selection=values["selection"],
            ours=ErrorStats.from_json(values["ours"]),
            ours_nomask=ErrorStats.from_json(values["ours_nomask"]),
            ours_moments=ErrorStats.from_json(values["ours_moments"]),
            peer=ErrorStats.from_json(values["peer"]),
            neighbour_oracle=ErrorStats.from_json(values["neighbour_oracle"]),
        )


@dataclass(frozen=True)
class PairedErrors:
    """Ours and the peer by axis-ratio bin, combined, on the galaxies *both* measured."""

    ours: tuple[ErrorStats, ...]
    peer: tuple[ErrorStats, ...]

    def to_json(self) -> dict[str, Any]:
        """``ours`` and ``peer``, a list of bins each."""
        return {
            "ours": [s.to_json() for s in self.ours],
            "peer": [s.to_json() for s in self.peer],
        }

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Self:
        """The inverse of :meth:`to_json`."""
        return cls(ours=stats_list(values["ours"]), peer=stats_list(values["peer"]))


@dataclass(frozen=True)
class TruthSummary:
    """Every truth table (the report renders a selection of it).

    Attributes
    ----------
    headline : TruthHeadline
        Each method's combined error on the headline selection.
    axis_ratio_bins, snr_bins : tuple of str
        Labels of the bins of every ``by_axis_ratio`` and ``by_snr``.
    tables : mapping
        Subset (:data:`SUBSETS`) -> method (:data:`METHODS`) -> band (g, r, i, z, combined)
        -> :class:`AngleErrors`.
    paired : mapping of str to PairedErrors
        Subset -> ours and the peer on the galaxies both measured: the peer gives no angle for
        some of the hardest galaxies, and its medians over the rest are not a like comparison.
    calibration : mapping
        Subset -> estimator (``ours_combined``, ``ours_band_fit``, ``ours_moments_combined``,
        ``ours_band_window``) -> :class:`~galpipe.validation.stats.Calibration`.
    coverage : mapping of str to BinnedCalibration
        Subset -> the combined angle's coverage (``ours_combined``) overall, by axis ratio
        and by S/N: where the reported sigma is too small and where too large.
    reliability : ReliabilitySummary
        All galaxies: how purely and completely
        :func:`galpipe.science.reliability.unreliable_angle` detects combined errors above
        :data:`~galpipe.validation.reliability.BAD_ERROR_DEG`, per pair of thresholds, the
        pair chosen, and the shipped ``Flag.UNRELIABLE`` of the measurement
        (:mod:`galpipe.validation.reliability`).
    images_sha256 : mapping of str to str
        Method -> digest of the array it measured.
    peer_outcomes : PeerOutcomes
        How the peer's combined measurements of the population ended.
    """

    headline: TruthHeadline
    axis_ratio_bins: tuple[str, ...]
    snr_bins: tuple[str, ...]
    tables: Mapping[str, Mapping[str, Mapping[str, AngleErrors]]]
    paired: Mapping[str, PairedErrors]
    calibration: Mapping[str, Mapping[str, Calibration]]
    coverage: Mapping[str, BinnedCalibration]
    reliability: ReliabilitySummary
    images_sha256: Mapping[str, str]
    peer_outcomes: PeerOutcomes

    def to_json(self) -> dict[str, Any]:
        """JSON-ready, one key per attribute."""
        return json_ready(
            {
                "headline": self.headline.to_json(),
                "axis_ratio_bins": self.axis_ratio_bins,
                "snr_bins": self.snr_bins,
                "tables": {
                    subset: {
                        method: {band: e.to_json() for band, e in bands.items()}
                        for method, bands in methods.items()
                    }
                    for subset, methods in self.tables.items()
                },
                "paired": {subset: p.to_json() for subset, p in self.paired.items()},
                "calibration": {
                    subset: {name: c.to_json() for name, c in estimators.items()}
                    for subset, estimators in self.calibration.items()
                },
                "coverage": {subset: c.to_json() for subset, c in self.coverage.items()},
                "reliability": self.reliability.to_json(),
                "images_sha256": dict(self.images_sha256),
                "peer_outcomes": self.peer_outcomes.to_json(),
            }
        )

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Self:
        """The inverse of :meth:`to_json` (mappings keep the order of ``values``)."""
        return cls(
            headline=TruthHeadline.from_json(values["headline"]),
            axis_ratio_bins=tuple(values["axis_ratio_bins"]),
            snr_bins=tuple(values["snr_bins"]),
            tables={
                subset: {
                    method: {band: AngleErrors.from_json(e) for band, e in bands.items()}
                    for method, bands in methods.items()
                }
                for subset, methods in values["tables"].items()
            },
            paired={s: PairedErrors.from_json(p) for s, p in values["paired"].items()},
            calibration={
                subset: {name: Calibration.from_json(c) for name, c in estimators.items()}
                for subset, estimators in values["calibration"].items()
            },
            coverage={s: BinnedCalibration.from_json(c) for s, c in values["coverage"].items()},
            reliability=ReliabilitySummary.from_json(values["reliability"]),
            images_sha256=dict(values["images_sha256"]),
            peer_outcomes=PeerOutcomes.from_json(values["peer_outcomes"]),
        )


def _calibrations(
    errors: dict[str, dict[str, np.ndarray]], measured: TruthMeasurements, mask: np.ndarray
) -> dict[str, Calibration]:
    """Each uncertainty estimator's coverage on the galaxies of ``mask``."""
    ours = measured.ours
    band_errors = np.stack([errors["ours"][b][mask] for b in BANDS], axis=1)
    return {
        "ours_combined": calibration(errors["ours"][COMBINED][mask], ours.angle_err_deg[mask]),
        "ours_band_fit": calibration(band_errors, ours.band_angle_err_fit_deg[mask]),
        "ours_moments_combined": calibration(
            errors["ours_moments"][COMBINED][mask], measured.ours_moments.angle_err_deg[mask]
        ),
        "ours_band_window": calibration(band_errors, ours.band_angle_err_window_deg[mask]),
    }


def truth_tables(population: TruthPopulation, measured: TruthMeasurements) -> TruthSummary:
    """Every truth table (:class:`TruthSummary`)."""
    q, snr = population.axis_ratio, population.snr
    errors = measured.errors_deg(population.position_angle_deg)
    headline = headline_selection(population)
    both = np.isfinite(errors["ours"][COMBINED]) & np.isfinite(errors["peer"][COMBINED])
    tables: dict[str, dict[str, dict[str, AngleErrors]]] = {}
    paired: dict[str, PairedErrors] = {}
    calib: dict[str, dict[str, Calibration]] = {}
    coverage: dict[str, BinnedCalibration] = {}
    for subset, mask in subset_masks(population).items():
        pair = mask & both
        paired[subset] = PairedErrors(
            *(
                tuple(binned_stats(errors[m][COMBINED][pair], q[pair], AXIS_RATIO_EDGES))
                for m in ("ours", "peer")
            )
        )
        tables[subset] = {
            method: {
                band: AngleErrors.of(err[mask], q[mask], snr[mask], grid=band == COMBINED)
                for band, err in errors[method].items()
            }
            for method in METHODS
        }
        calib[subset] = _calibrations(errors, measured, mask)
        coverage[subset] = BinnedCalibration.of(
            errors["ours"][COMBINED][mask], measured.ours.angle_err_deg[mask], q[mask], snr[mask]
        )
    return TruthSummary(
        headline=TruthHeadline(
            f"isolated, q < {HEADLINE_MAX_AXIS_RATIO:g}, S/N > {HEADLINE_MIN_SNR:g}",
            *(error_stats(errors[m][COMBINED][headline]) for m in METHODS),
        ),
        axis_ratio_bins=tuple(bin_labels(AXIS_RATIO_EDGES)),
        snr_bins=tuple(bin_labels(SNR_EDGES)),
        tables=tables,
        paired=paired,
        calibration=calib,
        coverage=coverage,
        reliability=reliability_summary(
            errors["ours"][COMBINED],
            measured.ours.anisotropy,
            measured.ours.band_spread_deg,
            shipped_flagged=(measured.ours.flags & Flag.UNRELIABLE) != 0,
            shipped_min_anisotropy=measured.config.unreliable_min_anisotropy,
            shipped_max_band_spread_deg=measured.config.unreliable_max_band_spread_deg,
        ),
        images_sha256=measured.images_sha256,
        peer_outcomes=measured.peer_outcomes,
    )
