"""Benchmark of the validation: accuracy vs truth, the paper's protocol, the peer, and run time.

Run ``python bench/validate.py`` for the full size (10,000 truth galaxies, 500,000
augmented images; goal: under 20 minutes on the 2-core machine), ``--quick`` for the test-suite
size, or ``--scale 0.1`` for a tenth of the full run (the time then extrapolates linearly: every
stage is linear in its size). It calls :func:`galpipe.validation.run.run_validation` once into
``--out`` (a temporary directory by default) and reports:

- ``truth_median_deg``: our median combined axial error vs truth, isolated galaxies with
  q < 0.5 and S/N > 50 (a test asserts < 2 deg);
- ``peer_truth_median_deg``: the same for the peer (sep second moments);
- ``aug_mean_deg`` / ``aug_median_deg``: the augmentation protocol's deviation (paper: 6.17 deg
  mean; goal: below it); ``aug_mean_nomask_deg`` / ``aug_median_nomask_deg`` the same for the
  paper's method (masking off) on a fifth of the images; ``aug_mean_headline_deg`` on the
  headline galaxies (isolated, q < 0.5, S/N > 50); ``aug_mean_unflagged_deg`` on the galaxies
  whose original measurement has no flag (what a catalogue user keeps);
  ``aug_mean_sampled_unflagged_deg`` / ``aug_mean_nomask_unflagged_deg`` the same galaxies on
  the images also measured with masking off, ours and the paper's method: what masking costs
  where the catalogue keeps the angle;
- ``truth_median_neighbours_q035_deg``: our median error vs truth for galaxies with
  neighbours and q in [0.2, 0.35), where masking matters most (goal: at most 2.0 deg);
- the neighbour oracle (:mod:`galpipe.validation.truth`: each neighbour's exact noiseless light
  subtracted, masking off; what perfect neighbour handling would reach):
  ``truth_median_neighbours_q035_oracle_deg`` its median error in that bin;
  ``aug_mean_neighbour_oracle_deg`` its protocol mean on the images also measured with masking
  off (beside ``aug_mean_sampled_deg``, ours on those images, and ``aug_mean_nomask_deg``);
  ``aug_mean_sampled_neighbours_deg`` / ``aug_mean_nomask_neighbours_deg`` /
  ``aug_mean_neighbour_oracle_neighbours_deg`` the three on the galaxies with neighbours;
- ``floor_aug_mean_deg`` / ``floor_ours_aug_mean_deg``: the protocol's mean deviation of an
  oracle that knows each galaxy's noiseless image and fits only the angle
  (:mod:`galpipe.validation.oracle`), and ours, on the same augmented images of isolated
  galaxies: how far the protocol's figure is the data's rather than the method's;
  ``floor_ours_nomask_aug_mean_deg`` ours with masking off on those images (what masking's
  false detections cost where there is nothing to mask);
  ``floor_aug_mean_low_counts_deg`` the oracle's on the images resampled to 10^3-10^4 photons;
- ``coverage_1sigma`` / ``coverage_2sigma``: fraction of galaxies within 1 and 2 reported
  sigma (0.683 / 0.954 if calibrated); ``coverage_by_axis_ratio`` / ``coverage_by_snr`` the
  same with the counts per bin of the truth tables;
- ``reliability_min_anisotropy`` / ``reliability_max_band_spread_deg``: the thresholds of the
  unreliable-angle rule chosen on truth (:mod:`galpipe.validation.reliability`), and
  ``reliability_purity`` / ``reliability_completeness`` as a detector of combined errors above
  ``reliability_bad_deg``; ``reliability_shipped_purity`` /
  ``reliability_shipped_completeness`` the same for the shipped ``Flag.UNRELIABLE`` (the
  thresholds of ``RadonConfig()``) on this run;
- ``peer_beaten_bins``: whether our truth median beats the peer's in every axis-ratio bin below
  0.7 (goal), per subset, on the galaxies both methods measured;
- fit for weak lensing (:mod:`galpipe.validation.lensing`, run after the validation, its
  time in ``lensing_s``): ``ks_p_isotropy`` (KS p of our position angles of an isotropic
  population against uniform), ``shear_m`` / ``shear_m_err``, ``shear_c`` / ``shear_c_err``
  (c1) and ``shear_c2`` / ``shear_c2_err`` of the shear estimated from our position angles alone
  (``g_hat = (1 + m) g + c``, bootstrap errors), ``peer_shear_m`` / ``peer_shear_c`` the
  peer's; ``--quick`` uses 2,000 + 100 rings, else 5,000 + 1,000 rings;
- ``elapsed_s``, ``stage_s`` and ``extrapolated_full_s`` (elapsed / scale; None with
  ``--quick``).

The last line is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from galpipe.validation.lensing import LensingConfig, LensingSummary, run_lensing
from galpipe.validation.parallel import default_workers
from galpipe.validation.run import FLOOR_GALAXIES, FULL_AUGMENT, FULL_TRUTH, run_validation
from galpipe.validation.summary import ValidationSummary
from galpipe.validation.truth import TruthSummary

PAPER_MEAN_DEG = 6.17
TARGET_FULL_S = 20 * 60.0
#: Axis-ratio bins (by their upper edge) where ours should beat the peer.
PEER_GOAL_MAX_Q = 0.7


def peer_beaten(truth: TruthSummary) -> dict[str, bool]:
    """Per subset: our median error below the peer's in every q bin with upper edge <= 0.7,
    on the galaxies both methods measured (the peer gives no angle for some hard ones)."""
    result = {}
    for subset, paired in truth.paired.items():
        wins = []
        for label, o, p in zip(truth.axis_ratio_bins, paired.ours, paired.peer, strict=True):
            upper = float(label.strip("[]()").split(",")[1])
            if upper <= PEER_GOAL_MAX_Q and not math.isnan(o.median_deg):
                wins.append(math.isnan(p.median_deg) or o.median_deg < p.median_deg)
        result[subset] = all(wins)
    return result


def coverage_bins(truth: TruthSummary, axis: str) -> dict[str, dict[str, Any]]:
    """Bin label -> n, fraction within 1 and 2 sigma of the combined angle, all galaxies;
    ``axis`` is ``"by_axis_ratio"`` or ``"by_snr"``."""
    labels = truth.axis_ratio_bins if axis == "by_axis_ratio" else truth.snr_bins
    return {
        label: {
            "n": c.n,
            "within_1sigma": _number(c.within_1sigma),
            "within_2sigma": _number(c.within_2sigma),
        }
        for label, c in zip(labels, getattr(truth.coverage["all"], axis), strict=True)
    }


def reliability_result(truth: TruthSummary) -> dict[str, Any]:
    """The chosen thresholds of the unreliable-angle rule and their purity and completeness
    as a detector of combined errors above ``reliability_bad_deg`` (None where no pair of
    thresholds is pure enough, or the spread is not used), and the purity and completeness
    of the shipped ``Flag.UNRELIABLE`` (None where nothing is flagged, or nothing is bad)."""
    rel = truth.reliability
    chosen = rel.chosen
    values: dict[str, Any] = {"reliability_bad_deg": rel.bad_deg}
    for key in ("min_anisotropy", "max_band_spread_deg", "purity", "completeness"):
        value = math.nan if chosen is None else float(getattr(chosen, key))
        # An infinite spread threshold (spread not used) is null too: JSON has no inf.
        values[f"reliability_{key}"] = value if math.isfinite(value) else None
    for key in ("purity", "completeness"):
        value = math.nan if rel.shipped is None else float(getattr(rel.shipped, key))
        values[f"reliability_shipped_{key}"] = value if math.isfinite(value) else None
    return values


def neighbours_q035_median(truth: TruthSummary, method: str = "ours") -> float:
    """A method's combined median error against truth for galaxies with neighbours and axis
    ratio in the first bin, [0.2, 0.35): where masking buys the most accuracy (degrees)."""
    return truth.tables["neighbours"][method]["combined"].by_axis_ratio[0].median_deg


def _number(value: float) -> float | None:
    """A result's value as JSON: NaN (nothing measured) as null."""
    return None if math.isnan(value) else value


def bench_result(summary: ValidationSummary) -> dict[str, Any]:
    """The benchmark's figures of a run (module docstring), JSON-ready but for the timings."""
    headline, protocol, floor = summary.headline, summary.protocol, summary.floor
    return {
        "truth_median_deg": _number(headline.truth_median_deg),
        "peer_truth_median_deg": _number(headline.peer_truth_median_deg),
        "aug_mean_deg": _number(headline.aug_mean_deg),
        "aug_median_deg": _number(headline.aug_median_deg),
        "peer_aug_mean_deg": _number(headline.peer_aug_mean_deg),
        "floor_aug_mean_deg": _number(headline.floor_aug_mean_deg),
        "floor_ours_aug_mean_deg": _number(headline.floor_ours_aug_mean_deg),
        "coverage_1sigma": _number(headline.coverage_1sigma),
        "coverage_2sigma": _number(headline.coverage_2sigma),
        "coverage_by_axis_ratio": coverage_bins(summary.truth, "by_axis_ratio"),
        "coverage_by_snr": coverage_bins(summary.truth, "by_snr"),
        **reliability_result(summary.truth),
        # The paper's method (masking off) on every 5th chunk of the same augmented images.
        "aug_mean_nomask_deg": _number(protocol.ours_nomask.overall.mean_deg),
        "truth_median_neighbours_q035_deg": _number(neighbours_q035_median(summary.truth)),
        # The neighbour oracle: every neighbour's exact light subtracted, masking off -- what
        # perfect neighbour handling would reach (same sampled images; = masking off when
        # isolated).
        "truth_median_neighbours_q035_oracle_deg": _number(
            neighbours_q035_median(summary.truth, "neighbour_oracle")
        ),
        "aug_mean_neighbour_oracle_deg": _number(protocol.neighbour_oracle.overall.mean_deg),
        "aug_mean_sampled_deg": _number(protocol.ours_sampled.overall.mean_deg),
        "aug_mean_sampled_neighbours_deg": _number(protocol.ours_sampled.neighbours.mean_deg),
        "aug_mean_nomask_neighbours_deg": _number(protocol.ours_nomask.neighbours.mean_deg),
        "aug_mean_neighbour_oracle_neighbours_deg": _number(
            protocol.neighbour_oracle.neighbours.mean_deg
        ),
        "aug_median_nomask_deg": _number(protocol.ours_nomask.overall.median_deg),
        "aug_mean_headline_deg": _number(protocol.ours.headline.mean_deg),
        "aug_mean_unflagged_deg": _number(protocol.ours.unflagged.mean_deg),
        # The same images for both: the chunks also measured with masking off.
        "aug_mean_sampled_unflagged_deg": _number(protocol.ours_sampled.unflagged.mean_deg),
        "aug_mean_nomask_unflagged_deg": _number(protocol.ours_nomask.unflagged.mean_deg),
        "floor_ours_nomask_aug_mean_deg": _number(floor.ours_nomask.deviation.overall.mean_deg),
        "floor_aug_mean_low_counts_deg": _number(floor.oracle.deviation.resample_low.mean_deg),
        "aug_mean_below_paper": headline.aug_mean_deg < PAPER_MEAN_DEG,
        "peer_beaten_bins": peer_beaten(summary.truth),
        "n_truth": headline.n_truth,
        "n_augment": headline.n_augment,
        "workers": summary.timing.workers,
        "elapsed_s": summary.timing.total_s,
        "stage_s": summary.timing.seconds(),
        "target_full_s": TARGET_FULL_S,
    }


def lensing_result(lensing: LensingSummary) -> dict[str, Any]:
    """The benchmark's weak-lensing figures (module docstring)."""
    ours, peer = lensing.bias["ours"], lensing.bias["peer"]
    return {
        "ks_p_isotropy": _number(lensing.isotropy["ours"].ks_p),
        "shear_m": _number(ours.m),
        "shear_m_err": _number(ours.m_err),
        "shear_c": _number(ours.c1),
        "shear_c_err": _number(ours.c1_err),
        "shear_c2": _number(ours.c2),
        "shear_c2_err": _number(ours.c2_err),
        "peer_shear_m": _number(peer.m),
        "peer_shear_c": _number(peer.c1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the test-suite size")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", default=None, help="keep the report here")
    args = parser.parse_args(argv)
    if not 0 < args.scale <= 1:
        parser.error(f"--scale {args.scale}: expected a fraction in (0, 1]")
    # --quick leaves the sizes to the run's quick defaults; --scale sets them.
    sizes: dict[str, int | None] = dict.fromkeys(("n_truth", "n_augment", "n_floor"))
    if not args.quick:
        sizes = {
            "n_truth": max(1, round(FULL_TRUTH * args.scale)),
            "n_augment": round(FULL_AUGMENT * args.scale),
            "n_floor": round(FLOOR_GALAXIES * args.scale),
        }
    with tempfile.TemporaryDirectory(prefix="galpipe-validate-") as scratch:
        out = Path(args.out) if args.out else Path(scratch)
        # The lensing check runs below, sized and timed on its own: not twice.
        summary = run_validation(
            out, seed=args.seed, quick=args.quick, workers=args.workers, n_lensing=0, **sizes
        )
    result = bench_result(summary)
    started = time.perf_counter()
    # --quick: the integration test's sizes; else the defaults (5,000 isotropic, 1,000 rings).
    lensing_config = LensingConfig(seed=args.seed)
    if args.quick:
        lensing_config = LensingConfig(n_isotropic=2000, n_ring=100, seed=args.seed)
    lensing = run_lensing(
        lensing_config,
        workers=args.workers if args.workers is not None else default_workers(),
    )
    result.update(lensing_result(lensing))
    result["lensing_s"] = round(time.perf_counter() - started, 1)
    # Quick mode has another augmentations-per-galaxy ratio: no honest extrapolation.
    elapsed = summary.timing.total_s
    result["extrapolated_full_s"] = None if args.quick else round(elapsed / args.scale, 1)
    print(json.dumps(result, indent=2, sort_keys=True))
    print("RESULT " + json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
