"""The whole validation run: population -> truth -> protocol -> floor -> Gaia -> report.

:func:`run_validation` writes into ``out_dir``:

- ``report.md`` and the PNG figures (:mod:`galpipe.validation.report`);
- ``summary.json`` -- every number of the report, the distributions and the timings;
- ``catalogue.ecsv`` -- the truth population as a synthetic-sky catalogue with the Gaia-like
  columns (``galpipe sky serve --catalog`` renders exactly these galaxies);
- ``galaxies.ecsv`` -- one row per truth galaxy: truth, every method's angle, our error and
  flags;
- ``protocol.npz`` -- one entry per augmented image: galaxy, subset, parameters, deviations;
- ``floor.npz`` -- the information floor (:mod:`galpipe.validation.oracle`): one entry per
  augmented image of the oracle's isolated galaxies, ours and the oracle side by side.

Identical arguments (the worker count included) give identical files, except the ``timing_s``
entry of ``summary.json`` and the Markdown's timing lines. Another worker count draws the same
augmentations (every chunk has its own seed); the angles then agree to ~1e-12 degree, not
bitwise (:mod:`galpipe.validation.parallel`).
"""

from __future__ import annotations

import dataclasses
import logging
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from galpipe.science.core import RadonConfig
from galpipe.synthetic.catalog import write_catalog
from galpipe.synthetic.truth import BANDS
from galpipe.validation.gaia import gaia_agreement, load_gaia_columns
from galpipe.validation.oracle import FloorResult, floor_tables, run_floor
from galpipe.validation.parallel import default_workers
from galpipe.validation.peer import PeerConfig
from galpipe.validation.population import PopulationConfig, TruthPopulation, make_population
from galpipe.validation.protocol import ProtocolResult, protocol_tables, run_protocol
from galpipe.validation.report import write_report
from galpipe.validation.truth import (
    TruthMeasurements,
    headline_selection,
    measure_truth,
    subset_masks,
    truth_tables,
)

__all__ = [
    "FLOOR_GALAXIES",
    "FLOOR_REPEATS",
    "QUICK_AUGMENT",
    "QUICK_FLOOR_GALAXIES",
    "QUICK_TRUTH",
    "Summary",
    "run_validation",
]

log = logging.getLogger(__name__)

#: Sizes of ``--quick`` (the test suite): enough for the headline bin to hold ~40 galaxies.
QUICK_TRUTH = 400
QUICK_AUGMENT = 2000
#: Isolated galaxies the oracle measures (~1.3 s of CPU each at 8 images: ~2 min on 2 cores)
#: and augmented images per galaxy; ``--quick`` measures a few.
FLOOR_GALAXIES = 160
FLOOR_REPEATS = 8
QUICK_FLOOR_GALAXIES = 4


@dataclass(frozen=True)
class Summary:
    """The headline numbers of a run (the whole of it is in ``summary.json``).

    Attributes
    ----------
    out_dir : pathlib.Path
        The report directory.
    truth_median_deg, peer_truth_median_deg : float
        Median combined axial error vs truth, isolated galaxies with q < 0.5 and S/N > 50,
        ours and the peer (degrees).
    aug_mean_deg, aug_median_deg : float
        Mean and median deviation of our angle over the augmentation protocol (degrees).
    peer_aug_mean_deg, peer_aug_median_deg : float
        The same for the peer.
    floor_aug_mean_deg, floor_ours_aug_mean_deg : float
        The protocol's mean deviation of the oracle (:mod:`galpipe.validation.oracle`) and of
        ours, on the same augmented images of the oracle's isolated galaxies (degrees).
    coverage_1sigma, coverage_2sigma : float
        Fraction of all galaxies whose combined error is within 1 and 2 reported sigma.
    n_truth, n_augment : int
        Sizes of the run.
    elapsed_s : float
        Wall time of the run, seconds.
    """

    out_dir: Path
    truth_median_deg: float
    peer_truth_median_deg: float
    aug_mean_deg: float
    aug_median_deg: float
    peer_aug_mean_deg: float
    peer_aug_median_deg: float
    floor_aug_mean_deg: float
    floor_ours_aug_mean_deg: float
    coverage_1sigma: float
    coverage_2sigma: float
    n_truth: int
    n_augment: int
    elapsed_s: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready values (the path as text)."""
        values = dataclasses.asdict(self)
        values["out_dir"] = str(self.out_dir)
        return values


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished children, seconds.

    The pool's workers have finished when a stage returns, so this counts all the work: on a
    busy machine it, not the wall time, says how long the run takes on idle cores.
    """
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _nan_if_none(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _galaxy_table(
    population: TruthPopulation,
    measured: TruthMeasurements,
    gaia_pa: np.ndarray,
    gaia_e: np.ndarray,
) -> Table:
    """One row per truth galaxy: truth, each method's position angle, our error and flags."""
    truths = population.truths
    table = Table()
    table["source_id"] = population.source_id
    table["axis_ratio"] = population.axis_ratio
    table["snr"] = population.snr
    table["half_light_radius"] = [t.half_light_radius_arcsec for t in truths]
    table["sersic_n"] = [t.sersic_n for t in truths]
    table["psf_fwhm"] = [t.psf_fwhm_arcsec for t in truths]
    table["n_neighbours"] = population.n_neighbours
    table["true_position_angle"] = population.position_angle_deg
    for method, pa in measured.position_angle_deg.items():
        table[f"pa_{method}"] = pa
        for b, band in enumerate(BANDS):
            table[f"pa_{method}_{band}"] = measured.band_position_angle_deg[method][:, b]
    table["pa_ours_err"] = measured.ours.angle_err_deg
    table["flags_ours"] = measured.ours.flags
    table["masked_fraction"] = measured.ours.masked_fraction
    table["posangle_sersic"] = gaia_pa
    table["ellipticity_sersic"] = gaia_e
    for name in table.colnames:
        if name.startswith(("pa_", "true_position", "posangle")):
            table[name].unit = "deg"
    table.meta["comments"] = [
        "galpipe validate: position angles east of north (deg); snr = r-band half-light S/N"
    ]
    return table


def _save_rows(path: Path, result: ProtocolResult | FloorResult) -> None:
    np.savez_compressed(
        path, **{f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    )


def run_validation(
    out_dir: str | Path,
    n_truth: int = 10_000,
    n_augment: int = 500_000,
    seed: int = 0,
    quick: bool = False,
    workers: int | None = None,
    n_floor: int = FLOOR_GALAXIES,
) -> Summary:
    """Run the whole validation and write the report directory (module docstring).

    Parameters
    ----------
    out_dir : str or pathlib.Path
        Created if missing; files in it are overwritten.
    n_truth : int
        Truth galaxies (the issue: 10,000).
    n_augment : int
        Augmented images of the protocol (the paper: 500,000).
    seed : int
        Seeds the population and the augmentations.
    quick : bool
        Use :data:`QUICK_TRUTH` galaxies, :data:`QUICK_AUGMENT` images and
        :data:`QUICK_FLOOR_GALAXIES` oracle galaxies (for tests).
    workers : int, optional
        Processes for rendering, the protocol and the floor; default every core this process
        may use.
    n_floor : int
        Isolated galaxies measured by the oracle, :data:`FLOOR_REPEATS` augmented images each.

    Returns
    -------
    Summary
    """
    started = time.perf_counter()
    cpu_started = _cpu_seconds()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if quick:
        n_truth, n_augment, n_floor = QUICK_TRUTH, QUICK_AUGMENT, QUICK_FLOOR_GALAXIES
    n_workers = workers if workers is not None else default_workers()
    timing: dict[str, float] = {}
    config = RadonConfig()
    peer_config = PeerConfig()

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timing[name] = round(now - since, 3)
        log.info("validate: %s done in %.1f s", name, now - since)
        return now

    population_config = PopulationConfig(n=n_truth, seed=seed)
    population = make_population(population_config, workers=n_workers)
    catalogue = write_catalog(out / "catalogue.ecsv", population.truths, gaia_sersic=True)
    mark = lap("population", started)

    measured = measure_truth(population, config, peer_config)
    truth = truth_tables(population, measured)
    mark = lap("truth", mark)

    protocol = run_protocol(
        population.images,
        measured.ours.angle_image_deg,
        measured.peer_image_angle_deg,
        measured.ours_nomask.angle_image_deg,
        n_augment,
        seed,
        config=config,
        peer_config=peer_config,
        workers=n_workers,
    )
    isolated = subset_masks(population)["isolated"]
    protocol_summary = protocol_tables(
        protocol,
        population.axis_ratio,
        population.snr,
        isolated,
        headline_selection(population),
        unflagged=measured.ours.flags == 0,
    )
    _save_rows(out / "protocol.npz", protocol)
    mark = lap("protocol", mark)

    floor = run_floor(population, n_floor, FLOOR_REPEATS, seed, config=config, workers=n_workers)
    floor_summary = floor_tables(floor, population.axis_ratio)
    _save_rows(out / "floor.npz", floor)
    mark = lap("floor", mark)

    ids, gaia_pa, gaia_e = load_gaia_columns(catalogue)
    order = {int(sid): i for i, sid in enumerate(ids)}
    rows = np.array([order.get(int(sid), -1) for sid in population.source_id])
    found = rows >= 0
    pa_gaia = np.where(found, gaia_pa[np.maximum(rows, 0)], np.nan)
    e_gaia = np.where(found, gaia_e[np.maximum(rows, 0)], np.nan)
    gaia = gaia_agreement(
        {**measured.position_angle_deg, "truth": population.position_angle_deg}, pa_gaia, e_gaia
    )
    gaia["source"] = (
        "Gaia-like columns of the synthetic catalogue (catalogue.ecsv), read through the ingest "
        "reader and its galaxies.extra JSON: posangle_sersic = true PA + N(0, 2°/e), uniform "
        "for e < 0.05; ellipticity_sersic = 1 − q + N(0, 0.03). A test of the comparison, not "
        "a statement about Gaia."
    )
    _galaxy_table(population, measured, pa_gaia, e_gaia).write(
        out / "galaxies.ecsv", format="ascii.ecsv", overwrite=True
    )
    mark = lap("gaia", mark)

    calibration_all = truth["calibration"]["all"]["ours_combined"]
    head = truth["headline"]
    summary = Summary(
        out_dir=out,
        truth_median_deg=_nan_if_none(head["ours"]["median_deg"]),
        peer_truth_median_deg=_nan_if_none(head["peer"]["median_deg"]),
        aug_mean_deg=_nan_if_none(protocol_summary["ours"]["overall"]["mean_deg"]),
        aug_median_deg=_nan_if_none(protocol_summary["ours"]["overall"]["median_deg"]),
        peer_aug_mean_deg=_nan_if_none(protocol_summary["peer"]["overall"]["mean_deg"]),
        peer_aug_median_deg=_nan_if_none(protocol_summary["peer"]["overall"]["median_deg"]),
        floor_aug_mean_deg=_nan_if_none(
            floor_summary["oracle"]["deviation"]["overall"]["mean_deg"]
        ),
        floor_ours_aug_mean_deg=_nan_if_none(
            floor_summary["ours"]["deviation"]["overall"]["mean_deg"]
        ),
        coverage_1sigma=_nan_if_none(calibration_all["within_1sigma"]),
        coverage_2sigma=_nan_if_none(calibration_all["within_2sigma"]),
        n_truth=n_truth,
        n_augment=n_augment,
        elapsed_s=0.0,
    )
    timing["total"] = round(time.perf_counter() - started, 3)
    timing["cpu"] = round(_cpu_seconds() - cpu_started, 3)
    summary = dataclasses.replace(summary, elapsed_s=timing["total"])
    command = (
        f"galpipe validate {out} --n-truth {n_truth} --n-augment {n_augment} "
        f"--n-floor {n_floor} --seed {seed}"
    )
    document = {
        "headline": {
            k: v for k, v in summary.as_dict().items() if k not in ("out_dir", "elapsed_s")
        },
        "config": {
            "algo_version": config.algo_version,
            "peer": peer_config.tag,
            "seed": seed,
            "quick": quick,
            "command": command + (" --quick" if quick else ""),
        },
        "population": population_config.describe(),
        "truth": truth,
        "protocol": protocol_summary,
        "floor": floor_summary,
        "gaia": gaia,
        "timing_s": {**timing, "workers": n_workers},
    }
    write_report(_json_safe(document), out)
    return summary


def _json_safe(value: Any) -> Any:
    """NaN floats to None, numpy scalars to Python (JSON has neither)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
