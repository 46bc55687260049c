"""The whole validation run: population -> truth -> protocol -> floor -> Gaia -> lensing -> report.

:func:`run_validation` writes into ``out_dir``:

- ``report.md`` and the PNG figures (:mod:`galpipe.validation.report`);
- ``summary.json`` -- every number of the report, the distributions and the timings
  (:class:`~galpipe.validation.summary.ValidationSummary`);
- ``catalogue.ecsv`` -- the truth population as a synthetic-sky catalogue with the Gaia-like
  columns (``galpipe sky serve --catalog`` renders exactly these galaxies);
- ``galaxies.ecsv`` -- one row per truth galaxy: truth, every method's angle, our error and
  flags;
- ``protocol.npz`` -- one entry per augmented image: galaxy, subset, parameters, deviations,
  the peer's outcome;
- ``floor.npz`` -- the information floor (:mod:`galpipe.validation.oracle`): one entry per
  augmented image of the oracle's isolated galaxies, ours and the oracle side by side.

The fit for weak lensing (:mod:`galpipe.validation.lensing`: isotropy, and the shear
calibration bias of the angles) renders its own populations; its numbers are in
``summary.json`` and the report only. Either of its sizes 0 switches it off.

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

import numpy as np
from astropy.table import Table

from galpipe.science.core import RadonConfig
from galpipe.survey.layout import BANDS
from galpipe.synthetic.catalog import write_catalog
from galpipe.validation.gaia import GaiaSummary, gaia_agreement, load_gaia_columns
from galpipe.validation.lensing import LensingConfig, LensingSummary, run_lensing
from galpipe.validation.oracle import FloorResult, FloorSummary, floor_tables, run_floor
from galpipe.validation.parallel import default_workers
from galpipe.validation.peer import PeerConfig
from galpipe.validation.population import (
    PopulationConfig,
    TruthPopulation,
    make_population,
    render_neighbour_light,
)
from galpipe.validation.protocol import (
    ProtocolResult,
    ProtocolSummary,
    protocol_tables,
    run_protocol,
)
from galpipe.validation.report import write_report
from galpipe.validation.summary import Headline, RunConfig, Timing, ValidationSummary
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
    "FULL_AUGMENT",
    "FULL_TRUTH",
    "LENSING_GALAXIES",
    "LENSING_RINGS",
    "QUICK_AUGMENT",
    "QUICK_FLOOR_GALAXIES",
    "QUICK_LENSING_GALAXIES",
    "QUICK_LENSING_RINGS",
    "QUICK_TRUTH",
    "RunSizes",
    "resolve_sizes",
    "run_validation",
]

log = logging.getLogger(__name__)

#: Sizes of a full run: the truth galaxies, and the paper's number of augmented images.
FULL_TRUTH = 10_000
FULL_AUGMENT = 500_000
#: Sizes of ``--quick`` (the test suite): enough for the headline bin to hold ~40 galaxies.
QUICK_TRUTH = 400
QUICK_AUGMENT = 2000
#: Isolated galaxies the oracle measures (~1.3 s of CPU each at 8 images: ~2 min on 2 cores)
#: and augmented images per galaxy; ``--quick`` measures a few.
FLOOR_GALAXIES = 160
FLOOR_REPEATS = 8
QUICK_FLOOR_GALAXIES = 4
#: Fit for weak lensing: galaxies of the isotropy test, and intrinsic galaxies of the ring test
#: (each rendered 4 times under 6 shears: 24 stamps a ring). The full sizes are the lensing
#: module's defaults; ``--quick`` renders ~450 stamps, a few seconds, enough for every
#: statistic to be finite but not for tight bounds (tests/integration/validation/test_lensing.py
#: has those).
LENSING_GALAXIES = LensingConfig().n_isotropic
LENSING_RINGS = LensingConfig().n_ring
QUICK_LENSING_GALAXIES = 200
QUICK_LENSING_RINGS = 10
#: Where the Gaia values of a run come from, for the report.
_GAIA_SOURCE = (
    "Gaia-like columns of the synthetic catalogue (catalogue.ecsv), read through the ingest "
    "reader and its galaxies.extra JSON: posangle_sersic = true PA + N(0, 2°/e), uniform "
    "for e < 0.05; ellipticity_sersic = 1 − q + N(0, 0.03). A test of the comparison, not "
    "a statement about Gaia."
)


@dataclass(frozen=True)
class RunSizes:
    """How much a run measures.

    Attributes
    ----------
    n_truth : int
        Truth galaxies.
    n_augment : int
        Augmented images of the protocol.
    n_floor : int
        Isolated galaxies the oracle measures, :data:`FLOOR_REPEATS` augmented images each.
    n_lensing : int
        Galaxies of the lensing isotropy test.
    n_rings : int
        Rings of the lensing shear test.
    """

    n_truth: int
    n_augment: int
    n_floor: int
    n_lensing: int
    n_rings: int

    @property
    def lensing(self) -> bool:
        """Whether the run checks the fit for weak lensing (both its sizes above 0)."""
        return self.n_lensing > 0 and self.n_rings > 0


def resolve_sizes(
    n_truth: int | None = None,
    n_augment: int | None = None,
    n_floor: int | None = None,
    n_lensing: int | None = None,
    n_rings: int | None = None,
    *,
    quick: bool = False,
) -> RunSizes:
    """The sizes of a run: those given, and for the rest the quick or the full defaults.

    A size given explicitly always wins: ``quick`` only chooses the defaults
    (:data:`QUICK_TRUTH`, :data:`QUICK_AUGMENT`, :data:`QUICK_FLOOR_GALAXIES`,
    :data:`QUICK_LENSING_GALAXIES`, :data:`QUICK_LENSING_RINGS`; else :data:`FULL_TRUTH`,
    :data:`FULL_AUGMENT`, :data:`FLOOR_GALAXIES`, :data:`LENSING_GALAXIES`,
    :data:`LENSING_RINGS`).
    """
    if quick:
        defaults = RunSizes(
            QUICK_TRUTH,
            QUICK_AUGMENT,
            QUICK_FLOOR_GALAXIES,
            QUICK_LENSING_GALAXIES,
            QUICK_LENSING_RINGS,
        )
    else:
        defaults = RunSizes(
            FULL_TRUTH, FULL_AUGMENT, FLOOR_GALAXIES, LENSING_GALAXIES, LENSING_RINGS
        )
    return RunSizes(
        n_truth=defaults.n_truth if n_truth is None else n_truth,
        n_augment=defaults.n_augment if n_augment is None else n_augment,
        n_floor=defaults.n_floor if n_floor is None else n_floor,
        n_lensing=defaults.n_lensing if n_lensing is None else n_lensing,
        n_rings=defaults.n_rings if n_rings is None else n_rings,
    )


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished children, seconds.

    The pool's workers have finished when a stage returns, so this counts all the work: on a
    busy machine it, not the wall time, says how long the run takes on idle cores.
    """
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class _Stopwatch:
    """Wall time of each stage, and of the run, wall and CPU."""

    def __init__(self) -> None:
        self._started = self._lap_started = time.perf_counter()
        self._cpu_started = _cpu_seconds()
        self._stages: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        """``stage`` ends now; the next one starts."""
        now = time.perf_counter()
        self._stages[stage] = round(now - self._lap_started, 3)
        log.info("validate: %s done in %.1f s", stage, now - self._lap_started)
        self._lap_started = now

    def timing(self, workers: int) -> Timing:
        """The stages so far, and the run's wall and CPU time until now."""
        return Timing(
            stages_s=dict(self._stages),
            total_s=round(time.perf_counter() - self._started, 3),
            cpu_s=round(_cpu_seconds() - self._cpu_started, 3),
            workers=workers,
        )


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


def _protocol_stage(
    out: Path,
    population: TruthPopulation,
    neighbour_light: np.ndarray,
    measured: TruthMeasurements,
    n_augment: int,
    seed: int,
    config: RadonConfig,
    peer_config: PeerConfig,
    workers: int,
) -> ProtocolSummary:
    """The paper's augmentation protocol on the population; writes ``protocol.npz``."""
    protocol = run_protocol(
        population.images,
        measured.ours.angle_image_deg,
        measured.peer_image_angle_deg,
        measured.ours_nomask.angle_image_deg,
        n_augment,
        seed,
        neighbour_light=neighbour_light,
        oracle_reference_deg=measured.neighbour_oracle.angle_image_deg,
        config=config,
        peer_config=peer_config,
        workers=workers,
    )
    _save_rows(out / "protocol.npz", protocol)
    return protocol_tables(
        protocol,
        population.axis_ratio,
        population.snr,
        subset_masks(population)["isolated"],
        headline_selection(population),
        unflagged=measured.ours.flags == 0,
    )


def _floor_stage(
    out: Path,
    population: TruthPopulation,
    n_floor: int,
    seed: int,
    config: RadonConfig,
    workers: int,
) -> FloorSummary:
    """The oracle beside ours on isolated galaxies; writes ``floor.npz``."""
    floor = run_floor(population, n_floor, FLOOR_REPEATS, seed, config=config, workers=workers)
    _save_rows(out / "floor.npz", floor)
    return floor_tables(floor, population.axis_ratio)


def _gaia_stage(
    out: Path, catalogue: Path, population: TruthPopulation, measured: TruthMeasurements
) -> GaiaSummary:
    """Every method against the catalogue's Gaia-like angles; writes ``galaxies.ecsv``."""
    ids, gaia_pa, gaia_e = load_gaia_columns(catalogue)
    order = {int(sid): i for i, sid in enumerate(ids)}
    rows = np.array([order.get(int(sid), -1) for sid in population.source_id])
    found = rows >= 0
    pa_gaia = np.where(found, gaia_pa[np.maximum(rows, 0)], np.nan)
    e_gaia = np.where(found, gaia_e[np.maximum(rows, 0)], np.nan)
    gaia = gaia_agreement(
        {**measured.position_angle_deg, "truth": population.position_angle_deg},
        pa_gaia,
        e_gaia,
        source=_GAIA_SOURCE,
    )
    _galaxy_table(population, measured, pa_gaia, e_gaia).write(
        out / "galaxies.ecsv", format="ascii.ecsv", overwrite=True
    )
    return gaia


def _lensing_stage(
    sizes: RunSizes, seed: int, config: RadonConfig, peer_config: PeerConfig, workers: int
) -> LensingSummary:
    """Isotropy and the shear calibration bias of ours and the peer (their own populations)."""
    lensing_config = LensingConfig(n_isotropic=sizes.n_lensing, n_ring=sizes.n_rings, seed=seed)
    return run_lensing(lensing_config, config, peer_config, workers=workers)


def _command(out: Path, sizes: RunSizes, seed: int, quick: bool) -> str:
    """The ``galpipe validate`` command line that repeats a run."""
    return (
        f"galpipe validate {out} --n-truth {sizes.n_truth} --n-augment {sizes.n_augment} "
        f"--n-floor {sizes.n_floor} --lensing-galaxies {sizes.n_lensing} "
        f"--lensing-rings {sizes.n_rings} --seed {seed}" + (" --quick" if quick else "")
    )


def run_validation(
    out_dir: str | Path,
    n_truth: int | None = None,
    n_augment: int | None = None,
    seed: int = 0,
    quick: bool = False,
    workers: int | None = None,
    n_floor: int | None = None,
    n_lensing: int | None = None,
    n_rings: int | None = None,
) -> ValidationSummary:
    """Run the whole validation and write the report directory (module docstring).

    Parameters
    ----------
    out_dir : str or pathlib.Path
        Created if missing; files in it are overwritten.
    n_truth, n_augment, n_floor : int, optional
        Truth galaxies, augmented images of the protocol, and isolated galaxies the oracle
        measures (:data:`FLOOR_REPEATS` augmented images each). A size given always wins;
        one not given is the quick or the full default (:func:`resolve_sizes`).
    n_lensing, n_rings : int, optional
        Galaxies of the lensing isotropy test and rings of its shear test
        (:mod:`galpipe.validation.lensing`); either 0 switches the lensing check off. Defaults
        as for the other sizes.
    seed : int
        Seeds the population, the augmentations and the lensing populations.
    quick : bool
        The defaults of the sizes not given are the test suite's: seconds, not minutes.
    workers : int, optional
        Processes for rendering, the protocol, the floor and the lensing check; default every
        core this process may use.

    Returns
    -------
    ValidationSummary
        What ``summary.json`` holds.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sizes = resolve_sizes(n_truth, n_augment, n_floor, n_lensing, n_rings, quick=quick)
    n_workers = workers if workers is not None else default_workers()
    clock = _Stopwatch()
    config, peer_config = RadonConfig(), PeerConfig()

    population_config = PopulationConfig(n=sizes.n_truth, seed=seed)
    population = make_population(population_config, workers=n_workers)
    neighbour_light = render_neighbour_light(
        population.truths, population_config.size, population_config.pixscale, n_workers
    )
    catalogue = write_catalog(out / "catalogue.ecsv", population.truths, gaia_sersic=True)
    clock.lap("population")
    measured = measure_truth(population, config, peer_config, neighbour_light=neighbour_light)
    truth = truth_tables(population, measured)
    clock.lap("truth")
    protocol = _protocol_stage(
        out,
        population,
        neighbour_light,
        measured,
        sizes.n_augment,
        seed,
        config,
        peer_config,
        n_workers,
    )
    clock.lap("protocol")
    floor = _floor_stage(out, population, sizes.n_floor, seed, config, n_workers)
    clock.lap("floor")
    gaia = _gaia_stage(out, catalogue, population, measured)
    clock.lap("gaia")
    lensing = None
    if sizes.lensing:
        lensing = _lensing_stage(sizes, seed, config, peer_config, n_workers)
        clock.lap("lensing")

    summary = ValidationSummary(
        headline=Headline.of(truth, protocol, floor, n_truth=sizes.n_truth),
        config=RunConfig(
            algo_version=config.algo_version,
            peer=peer_config.tag,
            seed=seed,
            quick=quick,
            command=_command(out, sizes, seed, quick),
        ),
        population=population_config.describe(),
        truth=truth,
        protocol=protocol,
        floor=floor,
        gaia=gaia,
        lensing=lensing,
        timing=clock.timing(n_workers),
    )
    write_report(summary, out)
    return summary
