"""Dress rehearsal: the whole system end to end on this machine, stage by stage, as before a survey.

Run ``python bench/rehearsal.py --n 200000`` (the default; ``--quick`` for a smoke run of 2,000
galaxies). Every step is the real system, as ``galpipe demo`` runs it, but one stage at a time so
that each has a figure of its own:

1. **catalogue**: ``galpipe sky catalog`` writes ``--n`` synthetic galaxies (ECSV);
2. **sky**: ``galpipe sky serve --rate 0 --prerender`` (the sky's own rate limit lifted, every
   cutout rendered into its memory before it listens: :func:`galpipe.demo.processes.start_sky`,
   ``--workers`` render processes); meanwhile an embedded PostgreSQL starts and ``galpipe
   migrate``'s migrations run (``bench/_postgres.py``) and the Radon operator is loaded or built
   into the cache the workers read;
3. **ingest**: ``galpipe ingest`` (COPY in chunks, one fetch task per galaxy), no extra columns
   kept (as the demo ingests);
4. **fetch**: ``--fetch-workers`` ``galpipe fetch`` processes (the demo's environment,
   :func:`galpipe.demo.processes.worker_environment`, with the shared token bucket set far
   above reach: fetching is unlimited) store the cutouts in a **local object store** (a
   directory, as the demo's default; moto's S3 server would take a third of these two cores);
   the stage ends when every fetch task is terminal, polled from the database; the workers are
   then stopped (SIGTERM) and the sky too;
5. **radon**: ``--radon-workers`` ``galpipe radon`` processes measure the queued radon tasks,
   until every one is terminal;
6. **export**: ``galpipe export OUT --format parquet-dataset`` (HEALPix-tiled Parquet dataset);
7. **check**: ``galpipe check --json`` (every rule over every galaxy, ``--check-sample`` stored
   objects re-read and hashed); it must report no breach.

Printed per stage: wall time, galaxies/s over it and, for the worker stages, over their active
span (first to last completion, from ``tasks.updated_at``), CPU ms per galaxy of the stage's own
processes, their peak RSS (``VmHWM`` of a worker before it stops; ``ru_maxrss`` of a command),
and the fraction of the rehearsal's wall time. Then PostgreSQL's size per galaxy
(``pg_total_relation_size`` of each table / N, and ``pg_database_size``), the object store's and
the dataset's bytes per galaxy, and, when ``--n`` is below ``--extrapolate-to``, a linear
extrapolation of each stage's time (clearly labelled). Every child process imports a copy of
the ``galpipe`` package taken at the start (:func:`snapshot_code`), so one version of the code
runs throughout even in a checkout that changes meanwhile. The load average is printed with every
stage: this machine's cores may be shared. The last line is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg

from _postgres import embedded_postgres, migrated_database
from _proc import process_cpu_seconds, process_peak_rss_bytes
from galpipe.db.queue import task_counts
from galpipe.demo.processes import (
    ChildProcess,
    sigterm_as_interrupt,
    start_sky,
    start_workers,
    stop_all,
    worker_environment,
)
from galpipe.demo.progress import stage_done, terminal_count

#: Shared cutout requests/s (and burst) of the fetch workers: far above what they can reach.
UNLIMITED_RATE = 1_000_000.0
#: Stages whose time grows with the number of galaxies (the others are fixed set-up costs).
SCALING_STAGES = ("catalogue", "sky", "ingest", "fetch", "radon", "export", "check")
#: Stages with a galaxies/s figure.
THROUGHPUT_STAGES = ("ingest", "fetch", "radon", "export", "check")
# How often task counts are polled while workers run, and a progress line printed (seconds).
POLL_S = 1.0
LINE_EVERY_S = 30.0
# Settings printed with the figures: what PostgreSQL ran with.
SHOWN_SETTINGS = ("shared_buffers", "synchronous_commit", "max_wal_size", "work_mem")

# Bench-only SQL (the library's SQL stays under services/galpipe/db/).
#: Completions per pipeline and the span between the first and the last, seconds.
DONE_SPAN_SQL = """
SELECT pipeline, count(*), extract(epoch FROM max(updated_at) - min(updated_at))
FROM tasks WHERE state = 'done' GROUP BY 1
"""
TABLE_SIZES_SQL = """
SELECT c.relname, pg_total_relation_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
ORDER BY 2 DESC, 1
"""
DATABASE_SIZE_SQL = "SELECT pg_database_size(current_database())"


class RehearsalError(RuntimeError):
    """A stage failed or did not finish; the message names the stage and its log."""


@dataclass
class Stage:
    """What one stage took.

    Attributes
    ----------
    name : str
        Stage name (see the module docstring).
    wall_s : float
        Wall time, seconds.
    galaxies : int, optional
        Galaxies it handled (None for a set-up stage).
    active_s : float, optional
        Worker stages: seconds from the first completion to the last (``tasks.updated_at``).
    cpu_s : float, optional
        CPU seconds of the stage's own processes (workers, or the command).
    peak_rss_bytes : int, optional
        The largest peak RSS of one of its processes, bytes.
    load : float
        The 1-minute load average when the stage ended.
    """

    name: str
    wall_s: float
    galaxies: int | None = None
    active_s: float | None = None
    cpu_s: float | None = None
    peak_rss_bytes: int | None = None
    load: float = 0.0

    @property
    def per_s(self) -> float | None:
        """Galaxies per second of wall time."""
        return self.galaxies / self.wall_s if self.galaxies and self.wall_s > 0 else None

    @property
    def active_per_s(self) -> float | None:
        """Galaxies per second over the active span (one completion is its start)."""
        if not self.galaxies or not self.active_s or self.galaxies < 2:
            return None
        return (self.galaxies - 1) / self.active_s


# -- pure helpers ---------------------------------------------------------------------------------


def time_fractions(stages: Sequence[Stage], total_s: float) -> dict[str, float]:
    """Each stage's share of ``total_s`` (the rehearsal's wall time); ``other`` is the rest."""
    fractions = {s.name: s.wall_s / total_s for s in stages}
    fractions["other"] = max(0.0, 1.0 - sum(fractions.values()))
    return fractions


def extrapolate(stages: Sequence[Stage], n: int, target_n: int) -> dict[str, float]:
    """Seconds each stage would take for ``target_n`` galaxies, scaling linearly from ``n``.

    Stages of :data:`SCALING_STAGES` scale with the number of galaxies; the others (database,
    operator) are fixed costs and keep their time. A linear model: it ignores what grows faster
    (index depth, a cache that no longer fits in memory) and start-up costs that do not grow.
    """
    scale = target_n / n
    return {s.name: s.wall_s * (scale if s.name in SCALING_STAGES else 1.0) for s in stages}


def per_galaxy(sizes: Mapping[str, int], n: int) -> dict[str, float]:
    """``sizes`` (bytes) divided by ``n`` galaxies."""
    return {name: size / n for name, size in sizes.items()}


# -- processes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandRun:
    """One ``galpipe`` command run to completion."""

    wall_s: float
    cpu_s: float
    peak_rss_bytes: int
    returncode: int
    stdout: str
    log_path: Path


def snapshot_code(dest: Path) -> Path:
    """Copy the ``galpipe`` package under ``dest``; returns ``dest`` (for ``PYTHONPATH``).

    Every child process imports this copy, so the whole rehearsal runs one version of the code
    even if the checkout changes while it runs (a migration added, a module edited).
    """
    import galpipe

    package = Path(galpipe.__file__).parent
    shutil.copytree(package, dest / "galpipe", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def run_command(
    name: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path
) -> CommandRun:
    """``python -m galpipe.cli ARGV`` to completion: its wall time and its own resource use.

    Its standard output goes to ``LOG_DIR/NAME.out``, its errors to ``NAME.log``; ``os.wait4``
    gives the child's own CPU time and peak RSS.
    """
    out_path, log_path = log_dir / f"{name}.out", log_dir / f"{name}.log"
    started = time.monotonic()
    with open(out_path, "w", encoding="utf-8") as out, open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "galpipe.cli", *argv], stdout=out, stderr=log, env=dict(env)
        )
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return CommandRun(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_bytes=usage.ru_maxrss * 1024,  # kB on Linux
        returncode=proc.returncode,
        stdout=out_path.read_text(encoding="utf-8"),
        log_path=log_path,
    )


def checked(name: str, run: CommandRun) -> CommandRun:
    """``run``, or a RehearsalError naming the command and its log when it failed."""
    if run.returncode != 0:
        tail = run.log_path.read_text(encoding="utf-8").strip().splitlines()[-5:]
        raise RehearsalError(
            f"{name} exited with {run.returncode}; see {run.log_path}: " + " | ".join(tail)
        )
    return run


def command_stage(name: str, run: CommandRun, galaxies: int | None) -> Stage:
    return Stage(
        name,
        run.wall_s,
        galaxies=galaxies,
        cpu_s=run.cpu_s,
        peak_rss_bytes=run.peak_rss_bytes,
        load=os.getloadavg()[0],
    )


def done_spans(conn: psycopg.Connection) -> dict[str, tuple[int, float]]:
    """``{pipeline: (done tasks, seconds from the first completion to the last)}``."""
    rows = conn.execute(DONE_SPAN_SQL).fetchall()
    return {str(p): (int(n), float(span or 0.0)) for p, n, span in rows}


def run_workers(
    pipeline: str,
    workers: int,
    env: Mapping[str, str],
    url: str,
    expected: int,
    log_dir: Path,
    children: list[ChildProcess],
    timeout_s: float,
) -> tuple[Stage, dict[str, dict[str, int]]]:
    """``workers`` processes of ``pipeline`` until its ``expected`` tasks are all terminal.

    Progress is polled from the task counts; the workers are stopped with SIGTERM at the end
    (their CPU time and peak RSS read just before). Returns the stage and the final counts.

    Raises
    ------
    RehearsalError
        Every worker exited while work remained, or ``timeout_s`` passed.
    """
    started = time.monotonic()
    procs = start_workers(env, {pipeline: workers}, log_dir)[pipeline]
    children += procs
    last_line = started
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            counts = task_counts(conn)
            now = time.monotonic()
            if stage_done(counts, pipeline, expected):
                break
            if not any(p.alive for p in procs):
                raise RehearsalError(
                    f"{pipeline}: every worker exited with work left ({counts.get(pipeline)}); "
                    f"see {', '.join(str(p.log_path) for p in procs)}"
                )
            if now - started > timeout_s:
                raise RehearsalError(f"{pipeline}: not finished after {timeout_s:.0f} s: {counts}")
            if now - last_line >= LINE_EVERY_S:
                row = counts.get(pipeline, {})
                print(
                    f"  [{now - started:7.1f} s] {pipeline}: {terminal_count(row):,}/{expected:,} "
                    f"terminal {row}",
                    flush=True,
                )
                last_line = now
            time.sleep(POLL_S)
        wall = time.monotonic() - started
        cpu = sum(process_cpu_seconds(p.process.pid) for p in procs)
        rss = max(process_peak_rss_bytes(p.process.pid) for p in procs)
        codes = stop_all(procs)
        done, span = done_spans(conn).get(pipeline, (0, 0.0))
    bad = {name: code for name, code in codes.items() if code != 0}
    if bad:
        raise RehearsalError(f"{pipeline}: worker(s) exited with {bad}; logs in {log_dir}")
    stage = Stage(
        pipeline,
        wall,
        galaxies=done,
        active_s=span,
        cpu_s=cpu,
        peak_rss_bytes=rss,
        load=os.getloadavg()[0],
    )
    return stage, counts


def export_stage(
    tmp: Path, env: Mapping[str, str], log_dir: Path, result: dict[str, Any]
) -> tuple[Stage, int]:
    """``galpipe export --format parquet-dataset``; its stage and the rows exported.

    Should the dataset export fail, the failure is recorded (``dataset_export_error``: the
    rehearsal then exits 1) and the single-file Parquet export runs instead, so that the
    stages after it are still rehearsed.
    """
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    dataset = tmp / "dataset"
    argv = ["export", str(dataset), "--format", "parquet-dataset"]
    run = run_command("export", argv, env, log_dir)
    if run.returncode == 0:
        rows = pads.dataset(dataset, format="parquet", partitioning="hive").count_rows()
        result["export_format"] = "parquet-dataset"
        result["export_files"], result["export_bytes"] = tree_bytes(dataset)
    else:
        error = run.log_path.read_text(encoding="utf-8").strip().splitlines()[-1:]
        result["dataset_export_error"] = " ".join(error)[:2000]
        print(
            f"export: FAILED: galpipe export --format parquet-dataset exited with "
            f"{run.returncode}: {result['dataset_export_error']}\n"
            "export: falling back to the single-file Parquet export",
            flush=True,
        )
        single = tmp / "results.parquet"
        argv = ["export", str(single), "--format", "parquet"]
        run = checked("galpipe export (parquet)", run_command("export-parquet", argv, env, log_dir))
        rows = pq.read_metadata(single).num_rows
        result["export_format"] = "parquet (fallback)"
        result["export_files"], result["export_bytes"] = 1, single.stat().st_size
    result["export_rows"] = rows
    print(f"export: {run.stdout.strip()} in {run.wall_s:.1f} s", flush=True)
    return command_stage("export", run, rows), rows


def check_stage(
    env: Mapping[str, str], log_dir: Path, sample: int, result: dict[str, Any]
) -> Stage:
    """``galpipe check --json``: its stage; the verdict and breaches go into ``result``."""
    run = run_command("check", ["check", "--json", "--sample", str(sample)], env, log_dir)
    try:
        report = json.loads(run.stdout)
    except json.JSONDecodeError:  # it failed before judging: recorded, the figures still print
        error = run.log_path.read_text(encoding="utf-8").strip().splitlines()[:1]
        report = {"ok": False, "breaches": [f"no report (exit {run.returncode}): {error}"]}
    result["check_ok"] = bool(report.get("ok")) and run.returncode == 0
    result["check_breaches"] = report.get("breaches", [])
    result["check_objects_verified"] = report.get("objects_verified")
    print(f"check: ok={result['check_ok']} in {run.wall_s:.1f} s", flush=True)
    return command_stage("check", run, int(report.get("galaxies", 0)) or None)


# -- measurements -------------------------------------------------------------------------------


def database_sizes(url: str) -> tuple[dict[str, int], int]:
    """Bytes of each table of the schema (with its indexes and TOAST), and of the database."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = {str(name): int(size) for name, size in conn.execute(TABLE_SIZES_SQL)}
        row = conn.execute(DATABASE_SIZE_SQL).fetchone()
    return tables, int(row[0]) if row else 0


def tree_bytes(root: Path) -> tuple[int, int]:
    """Files under ``root`` and their bytes."""
    files = total = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            files += 1
            total += (Path(dirpath) / name).stat().st_size
    return files, total


def load_operator(cache_dir: Path) -> None:
    """Load (or build, once) the default Radon operator into the cache the workers read."""
    from galpipe.science.core import RadonConfig
    from galpipe.science.radon import RadonOperator

    config = RadonConfig()
    RadonOperator.load_or_build(config.size, config.angles, config.order, cache_dir=cache_dir)


def radon_cache_dir() -> Path:
    """Where the workers find the operator: ``GALPIPE_RADON_CACHE_DIR`` or the default cache."""
    from galpipe.science.radon import default_cache_dir
    from galpipe.settings import Settings

    configured = Settings.from_env().radon_cache_dir
    return Path(configured) if configured else default_cache_dir()


# -- report -------------------------------------------------------------------------------------


def _mib(nbytes: int | None) -> str:
    return "" if nbytes is None else f"{nbytes / 2**20:,.0f}"


def print_stages(stages: Sequence[Stage], fractions: Mapping[str, float]) -> None:
    header = (
        f"{'stage':<10} {'wall s':>9} {'galaxies':>9} {'gal/s':>9} {'active/s':>9} "
        f"{'CPU ms/gal':>10} {'peak RSS MiB':>12} {'share':>6} {'load':>5}"
    )
    print(header)
    print("-" * len(header))
    for s in stages:
        cpu_ms = s.cpu_s / s.galaxies * 1e3 if s.cpu_s is not None and s.galaxies else None
        print(
            f"{s.name:<10} {s.wall_s:9.1f} {'' if s.galaxies is None else f'{s.galaxies:,}':>9} "
            f"{'' if s.per_s is None else f'{s.per_s:,.1f}':>9} "
            f"{'' if s.active_per_s is None else f'{s.active_per_s:,.1f}':>9} "
            f"{'' if cpu_ms is None else f'{cpu_ms:.2f}':>10} {_mib(s.peak_rss_bytes):>12} "
            f"{fractions[s.name]:6.1%} {s.load:5.1f}"
        )
    print(
        f"{'other':<10} {'':>9} {'':>9} {'':>9} {'':>9} {'':>10} {'':>12} {fractions['other']:6.1%}"
    )


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="galaxies (default 200000)")
    parser.add_argument("--quick", action="store_true", help="smoke run: at most 2,000 galaxies")
    parser.add_argument("--seed", type=int, default=7, help="seeds the synthetic catalogue")
    parser.add_argument("--fetch-workers", type=int, default=2, help="fetch processes")
    parser.add_argument("--radon-workers", type=int, default=2, help="radon processes")
    parser.add_argument("--render-workers", type=int, default=2, help="sky prerender processes")
    parser.add_argument("--check-sample", type=int, default=1000, help="objects check re-reads")
    parser.add_argument(
        "--stage-timeout", type=float, default=7200.0, help="longest a worker stage may take, s"
    )
    parser.add_argument(
        "--extrapolate-to", type=int, default=200_000, help="galaxies of the labelled estimate"
    )
    parser.add_argument(
        "--log-dir", type=Path, default=None, help="logs of every process (default: a new temp dir)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.n = min(args.n, 2000)
    if args.n < 2:
        parser.error("--n must be at least 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="galpipe-rehearsal-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(
        f"dress rehearsal: {args.n:,} galaxies on {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at start; logs in {log_dir}",
        flush=True,
    )
    stages: list[Stage] = []
    children: list[ChildProcess] = []
    result: dict[str, Any] = {"quick": args.quick, "n": args.n, "cpus": os.cpu_count()}
    with (
        sigterm_as_interrupt(),
        embedded_postgres("galpipe-rehearsal-") as (admin, tmp),
        contextlib.ExitStack() as stack,
    ):
        stack.callback(stop_all, children)  # whatever happens, no child outlives the run
        code = snapshot_code(tmp / "code")
        base_env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(code), os.environ.get("PYTHONPATH", "")]).rstrip(
                os.pathsep
            ),
            GALPIPE_LOG_LEVEL="info",
            PYTHONFAULTHANDLER="1",
        )

        catalog = tmp / "catalog.ecsv"
        argv = ["sky", "catalog", "--n", str(args.n), "--out", str(catalog)]
        run = checked(
            "sky catalog",
            run_command("catalogue", [*argv, "--seed", str(args.seed)], base_env, log_dir),
        )
        stages.append(command_stage("catalogue", run, None))

        sky_started = time.monotonic()
        sky = start_sky(
            catalog,
            log_dir,
            cache_size=args.n + 1000,
            extra_args=("--workers", str(args.render_workers)),
            env=base_env,
        )
        children.append(sky)

        t0 = time.monotonic()
        url, settings = migrated_database(admin, "galpipe_rehearsal", SHOWN_SETTINGS)
        # The migrated, empty database: what the galaxies add is measured from it.
        _, empty_database = database_sizes(url)
        stages.append(Stage("database", time.monotonic() - t0, load=os.getloadavg()[0]))
        result["postgres_settings"] = settings

        t0 = time.monotonic()
        cache_dir = radon_cache_dir()
        load_operator(cache_dir)
        stages.append(Stage("operator", time.monotonic() - t0, load=os.getloadavg()[0]))

        sky_url = sky.wait_until_ready(timeout_s=args.stage_timeout)
        # The prerender ran beside the database and operator: only its remaining wait is
        # this stage's share of the wall time; its full time is reported beside.
        sky_wait = time.monotonic() - t0 - stages[-1].wall_s
        stages.append(Stage("sky", max(0.0, sky_wait), load=os.getloadavg()[0]))
        result["sky_ready_s"] = round(time.monotonic() - sky_started, 1)
        result["sky_ready_ms_per_galaxy"] = round(result["sky_ready_s"] / args.n * 1e3, 3)
        print(
            f"sky on {sky_url} after {result['sky_ready_s']} s ({args.n:,} cutouts pre-rendered by "
            f"{args.render_workers} processes; its rate limit lifted)",
            flush=True,
        )

        store_dir = tmp / "objects"
        env = worker_environment(
            base_env,
            database_url=url,
            object_store=store_dir.as_uri(),
            cutout_url=sky_url,
            fetch_rate=UNLIMITED_RATE,
            radon_cache_dir=cache_dir,
        )
        env["GALPIPE_FETCH_RATE_BURST"] = f"{UNLIMITED_RATE:g}"

        argv = [
            "ingest",
            str(catalog),
            "--keep",
            "",
            "--no-progress",
            "--catalog-name",
            "rehearsal",
        ]
        run = checked("galpipe ingest", run_command("ingest", argv, env, log_dir))
        with psycopg.connect(url, autocommit=True) as conn:
            queued = task_counts(conn).get("fetch", {}).get("queued", 0)
        if queued != args.n:
            raise RehearsalError(f"ingest queued {queued} fetch tasks for {args.n} galaxies")
        stages.append(command_stage("ingest", run, args.n))
        print(f"ingest: {args.n:,} galaxies in {run.wall_s:.1f} s", flush=True)

        sky_cpu = process_cpu_seconds(sky.process.pid)
        fetch, counts = run_workers(
            "fetch", args.fetch_workers, env, url, args.n, log_dir, children, args.stage_timeout
        )
        stages.append(fetch)
        sky_cpu = process_cpu_seconds(sky.process.pid) - sky_cpu
        result["sky_cpu_ms_per_fetch"] = round(sky_cpu / max(1, fetch.galaxies or 0) * 1e3, 3)
        result["sky_peak_rss_bytes"] = process_peak_rss_bytes(sky.process.pid)
        sky.stop()
        result["fetch_counts"] = counts.get("fetch", {})
        print(f"fetch: {result['fetch_counts']} in {fetch.wall_s:.1f} s", flush=True)

        fetched = result["fetch_counts"].get("done", 0)
        radon, counts = run_workers(
            "radon", args.radon_workers, env, url, fetched, log_dir, children, args.stage_timeout
        )
        stages.append(radon)
        result["radon_counts"] = counts.get("radon", {})
        print(f"radon: {result['radon_counts']} in {radon.wall_s:.1f} s", flush=True)

        export, exported = export_stage(tmp, env, log_dir, result)
        stages.append(export)
        stages.append(check_stage(env, log_dir, args.check_sample, result))

        total = time.monotonic() - started
        tables, database = database_sizes(url)
        store_files, store_bytes = tree_bytes(store_dir)

    fractions = time_fractions(stages, total)
    print()
    print(f"== dress rehearsal: {args.n:,} galaxies, {total:,.1f} s in all ({os.cpu_count()} CPUs)")
    print_stages(stages, fractions)
    n = args.n
    growth = database - empty_database
    print(
        f"\nPostgreSQL: database {database / 2**20:,.1f} MiB = {database / n:,.0f} bytes/galaxy; "
        f"{growth / n:,.0f} bytes/galaxy over the migrated empty database "
        f"({empty_database / 2**20:,.1f} MiB)"
    )
    for name, size in tables.items():
        if size >= 64 * 1024:
            print(f"  {name:<24} {size / 2**20:9.1f} MiB {size / n:9,.0f} bytes/galaxy")
    print(
        f"object store (local directory): {store_files:,} objects, {store_bytes / 2**20:,.1f} MiB "
        f"= {store_bytes / max(1, fetched):,.0f} bytes/fetched galaxy"
    )
    print(
        f"export ({result['export_format']}): {result['export_files']} files, "
        f"{result['export_bytes'] / 2**20:,.1f} MiB = "
        f"{result['export_bytes'] / max(1, exported):,.0f} bytes/row"
    )
    if n < args.extrapolate_to:
        estimate = extrapolate(stages, n, args.extrapolate_to)
        print(
            f"\nEXTRAPOLATED (linear in N from {n:,}, not measured) to {args.extrapolate_to:,} "
            f"galaxies: {sum(estimate.values()) / 60:,.1f} min; "
            + ", ".join(f"{k} {v / 60:.1f} min" for k, v in estimate.items())
        )
        result["extrapolated_to"] = args.extrapolate_to
        result["extrapolated_s"] = {k: round(v, 1) for k, v in estimate.items()}
    if not result["check_ok"]:
        print(f"galpipe check reported breaches: {result['check_breaches']}")
    if "dataset_export_error" in result:
        print(f"galpipe export --format parquet-dataset FAILED: {result['dataset_export_error']}")

    result["wall_s"] = round(total, 1)
    result["stages"] = {
        s.name: {
            **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(s).items()},
            "per_s": None if s.per_s is None else round(s.per_s, 1),
            "active_per_s": None if s.active_per_s is None else round(s.active_per_s, 1),
            "s_per_galaxy": None if not s.galaxies else round(s.wall_s / s.galaxies, 6),
            "fraction": round(fractions[s.name], 4),
        }
        for s in stages
    }
    result["time_fractions"] = {k: round(v, 4) for k, v in fractions.items()}
    result["db_bytes"] = database
    result["db_bytes_per_galaxy"] = round(database / n, 1)
    result["db_empty_bytes"] = empty_database
    result["db_growth_bytes_per_galaxy"] = round(growth / n, 1)
    result["table_bytes_per_galaxy"] = {k: round(v, 1) for k, v in per_galaxy(tables, n).items()}
    result["store_objects"] = store_files
    result["store_bytes_per_galaxy"] = round(store_bytes / max(1, fetched), 1)
    result["log_dir"] = str(log_dir)
    print("RESULT " + json.dumps(result, sort_keys=True), flush=True)
    failed = not result["check_ok"] or "dataset_export_error" in result
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
