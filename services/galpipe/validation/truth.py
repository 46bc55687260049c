"""Accuracy against the truth: every method on the truth population, errors binned.

Methods (keys of every table):

- ``ours`` -- :func:`galpipe.science.core.measure_batch` with the production configuration
  (``RadonConfig()``: the paper's peak estimator, neighbour masking on);
- ``ours_nomask`` -- the same with neighbour masking off (the paper's method as published);
- ``ours_moments`` -- the production configuration with ``estimator="moments"``: the
  second-moment angle from the sinogram's projection variances (SCIENCE.md step 5, ours;
  "validation decides which the combined PA uses"), per band and combined;
- ``peer`` -- SExtractor's second-moment angle (:mod:`galpipe.validation.peer`).

All of them get the same ``(N, 4, S, S)`` array (its SHA-256 is recorded). Image angles become
position angles east of north through each cutout's own WCS Jacobian
(:func:`galpipe.science.orientation.image_angle_to_position_angle`), per band and combined, and
are compared with the true position angle as axial errors in [0, 90] degrees.

Subsets: ``isolated`` (rendered without neighbours), ``neighbours`` (with at least one star or
companion in or near the stamp) and ``all``.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from galpipe.science.core import BatchMeasurement, RadonConfig, measure_batch
from galpipe.science.features import axial_difference
from galpipe.science.orientation import image_angle_to_position_angle
from galpipe.science.radon import RadonOperator
from galpipe.synthetic.truth import BANDS
from galpipe.validation.peer import PeerConfig, sep_orientation
from galpipe.validation.population import TruthPopulation, images_digest
from galpipe.validation.stats import (
    AXIS_RATIO_EDGES,
    SNR_EDGES,
    bin_labels,
    binned_stats,
    calibration,
    error_stats,
)

__all__ = [
    "HEADLINE_MAX_AXIS_RATIO",
    "HEADLINE_MIN_SNR",
    "METHODS",
    "SUBSETS",
    "TruthMeasurements",
    "headline_selection",
    "measure_truth",
    "subset_masks",
    "truth_tables",
]

METHODS: tuple[str, ...] = ("ours", "ours_nomask", "ours_moments", "peer")
SUBSETS: tuple[str, ...] = ("all", "isolated", "neighbours")
#: The headline selection (issue 6): elongated (q < 0.5) and bright (S/N > 50).
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
    ours_nomask : BatchMeasurement
        The same with neighbour masking off.
    ours_moments : BatchMeasurement
        The production configuration with the moments estimator combined.
    peer_image_angle_deg : numpy.ndarray
        ``(N,)`` the peer's combined image angle (the protocol's reference for the peer).
    images_sha256 : dict of str to str
        Method -> digest of the array it measured (all equal by construction; recorded).
    """

    position_angle_deg: dict[str, np.ndarray]
    band_position_angle_deg: dict[str, np.ndarray]
    ours: BatchMeasurement
    ours_nomask: BatchMeasurement
    ours_moments: BatchMeasurement
    peer_image_angle_deg: np.ndarray
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
) -> TruthMeasurements:
    """Measure the population with every method (module docstring)."""
    cfg = config if config is not None else RadonConfig()
    images = population.images
    digest = images_digest(images)
    ours = measure_batch(images, cfg, operator)
    ours_nomask = measure_batch(images, dataclasses.replace(cfg, mask_neighbours=False), operator)
    ours_moments = measure_batch(images, dataclasses.replace(cfg, estimator="moments"), operator)
    peer = sep_orientation(images, peer_config)
    jac = population.jacobians
    return TruthMeasurements(
        position_angle_deg={
            "ours": image_angle_to_position_angle(ours.angle_image_deg, jac),
            "ours_nomask": image_angle_to_position_angle(ours_nomask.angle_image_deg, jac),
            "ours_moments": image_angle_to_position_angle(ours_moments.angle_image_deg, jac),
            "peer": image_angle_to_position_angle(peer.angle_image_deg, jac),
        },
        band_position_angle_deg={
            "ours": image_angle_to_position_angle(ours.band_angle_image_deg, jac[:, None]),
            "ours_nomask": image_angle_to_position_angle(
                ours_nomask.band_angle_image_deg, jac[:, None]
            ),
            "ours_moments": image_angle_to_position_angle(
                ours_moments.band_moments_angle_deg, jac[:, None]
            ),
            "peer": image_angle_to_position_angle(peer.band_angle_image_deg, jac[:, None]),
        },
        ours=ours,
        ours_nomask=ours_nomask,
        ours_moments=ours_moments,
        peer_image_angle_deg=peer.angle_image_deg,
        images_sha256=dict.fromkeys(METHODS, digest),
    )


def subset_masks(population: TruthPopulation) -> dict[str, np.ndarray]:
    """Subset name -> ``(N,)`` bool selection."""
    isolated = population.n_neighbours == 0
    return {"all": np.ones(len(population), bool), "isolated": isolated, "neighbours": ~isolated}


def headline_selection(population: TruthPopulation) -> np.ndarray:
    """``(N,)`` bool: isolated galaxies with q < 0.5 and S/N > 50 (the issue's criterion)."""
    return (
        (population.n_neighbours == 0)
        & (population.axis_ratio < HEADLINE_MAX_AXIS_RATIO)
        & (population.snr > HEADLINE_MIN_SNR)
    )


def _grid(errors: np.ndarray, q: np.ndarray, snr: np.ndarray) -> list[list[dict[str, Any]]]:
    """Stats on the q x S/N grid: rows are axis-ratio bins, columns S/N bins."""
    rows = []
    for lo, hi in itertools.pairwise(AXIS_RATIO_EDGES):
        last = hi == AXIS_RATIO_EDGES[-1]
        in_bin = (q >= lo) & ((q <= hi) if last else (q < hi))
        rows.append([s.as_dict() for s in binned_stats(errors[in_bin], snr[in_bin], SNR_EDGES)])
    return rows


def truth_tables(population: TruthPopulation, measured: TruthMeasurements) -> dict[str, Any]:
    """Every truth table as JSON-ready data (the report renders a selection of it).

    Returns
    -------
    dict
        ``headline`` (method -> stats on :func:`headline_selection`), ``tables`` (subset ->
        method -> band -> ``overall`` / ``by_axis_ratio`` / ``by_snr`` stats, and ``grid`` for
        the combined angle), ``paired`` (subset -> ours / peer -> combined ``by_axis_ratio``
        stats on the galaxies *both* measured: the peer gives no angle for some of the
        hardest galaxies, and its medians over the rest are not a like comparison),
        ``calibration`` (subset -> estimator -> 1 and 2 sigma coverage), the bin labels and the
        image digests.
    """
    q, snr = population.axis_ratio, population.snr
    errors = measured.errors_deg(population.position_angle_deg)
    headline = headline_selection(population)
    tables: dict[str, Any] = {}
    paired: dict[str, Any] = {}
    calib: dict[str, Any] = {}
    both = np.isfinite(errors["ours"][COMBINED]) & np.isfinite(errors["peer"][COMBINED])
    for subset, mask in subset_masks(population).items():
        pair = mask & both
        paired[subset] = {
            method: [
                s.as_dict()
                for s in binned_stats(errors[method][COMBINED][pair], q[pair], AXIS_RATIO_EDGES)
            ]
            for method in ("ours", "peer")
        }
        tables[subset] = {}
        for method in METHODS:
            tables[subset][method] = {}
            for band, err in errors[method].items():
                entry: dict[str, Any] = {
                    "overall": error_stats(err[mask]).as_dict(),
                    "by_axis_ratio": [
                        s.as_dict() for s in binned_stats(err[mask], q[mask], AXIS_RATIO_EDGES)
                    ],
                    "by_snr": [s.as_dict() for s in binned_stats(err[mask], snr[mask], SNR_EDGES)],
                }
                if band == COMBINED:
                    entry["grid"] = _grid(err[mask], q[mask], snr[mask])
                tables[subset][method][band] = entry
        ours = measured.ours
        calib[subset] = {
            "ours_combined": calibration(
                errors["ours"][COMBINED][mask], ours.angle_err_deg[mask]
            ).as_dict(),
            "ours_band_fit": calibration(
                np.stack([errors["ours"][b][mask] for b in BANDS], axis=1),
                ours.band_angle_err_fit_deg[mask],
            ).as_dict(),
            "ours_moments_combined": calibration(
                errors["ours_moments"][COMBINED][mask], measured.ours_moments.angle_err_deg[mask]
            ).as_dict(),
            "ours_band_window": calibration(
                np.stack([errors["ours"][b][mask] for b in BANDS], axis=1),
                ours.band_angle_err_window_deg[mask],
            ).as_dict(),
        }
    return {
        "headline": {
            "selection": f"isolated, q < {HEADLINE_MAX_AXIS_RATIO:g}, S/N > {HEADLINE_MIN_SNR:g}",
            **{m: error_stats(errors[m][COMBINED][headline]).as_dict() for m in METHODS},
        },
        "axis_ratio_bins": bin_labels(AXIS_RATIO_EDGES),
        "snr_bins": bin_labels(SNR_EDGES),
        "tables": tables,
        "paired": paired,
        "calibration": calib,
        "images_sha256": measured.images_sha256,
    }
