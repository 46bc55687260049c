"""``galpipe demo``: the whole system on one machine, in one command.

What :func:`run_demo` does, in order:

1. starts the synthetic sky (``galpipe sky serve --rate 0 --prerender``) as a child process on
   127.0.0.1 — its own rate limit is lifted for the demo — unless ``--cutout-url`` names a
   service; it renders while the next steps run;
2. starts an embedded PostgreSQL (unless ``--database-url``) and applies the migrations;
3. writes a synthetic catalogue (or reads ``--catalog``) and ingests it (fetch tasks queued);
4. builds (or loads) the Radon operator once, in a cache every worker then reads;
5. starts ``galpipe fetch`` and ``galpipe radon`` worker *processes*, configured only by
   ``GALPIPE_*`` variables as in a cluster, and shows their progress;
6. when every task of the demo's galaxies is terminal, stops the workers with SIGTERM, then
   the sky and the database;
7. writes ``galpipe-demo/``: the results catalogue joined with the truth (FITS, ECSV),
   figures and ``report.md`` (:mod:`galpipe.demo.report`).

Ctrl-C (or SIGTERM) at any point stops every child and the database before returning.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from psycopg_pool import ConnectionPool
from rich.console import Console
from rich.live import Live
from rich.table import Table as RichTable

from galpipe.db.connection import open_pool
from galpipe.db.demo_results import demo_results, task_counts
from galpipe.db.queue import STATES

if TYPE_CHECKING:  # the report module loads matplotlib; only the finished run needs it
    from galpipe.demo.report import AccuracyRow

PIPELINES = ("fetch", "radon")
TERMINAL_STATES = ("done", "failed", "skipped")
#: Cutout requests/s the demo's fetch workers share when the demo runs its own sky.
DEMO_FETCH_RATE = 1000.0
# Seconds a stopping worker gets to finish its batch before it is killed.
_STOP_GRACE_S = 10.0
# How often progress is polled (seconds), and the window of the displayed rate.
_POLL_S = 0.5
_RATE_WINDOW_S = 5.0
_SKY_LINE = re.compile(r"synthetic sky on (http://[^/\s]+)/viewer/fits-cutout")


class DemoError(RuntimeError):
    """The demo could not run; the message says which step and why."""


@dataclass(frozen=True)
class DemoOptions:
    """What ``galpipe demo`` was asked for (its command-line flags).

    Attributes
    ----------
    n : int
        Galaxies in the synthetic catalogue.
    out : pathlib.Path
        Output directory (catalogue, figures, report, logs, local object store).
    fetch_workers, radon_workers : int
        Worker processes per pipeline.
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
    fetch_workers: int = 2
    radon_workers: int = 1
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
        if self.fetch_workers < 1 or self.radon_workers < 1:
            raise DemoError(
                f"workers: need at least one per pipeline, got fetch={self.fetch_workers}, "
                f"radon={self.radon_workers}"
            )
        if self.fetch_rate is not None and not self.fetch_rate > 0:
            raise DemoError(f"--fetch-rate {self.fetch_rate}: expected requests/s > 0")


@dataclass
class DemoResult:
    """What a demo run did; :func:`run_demo` returns it (the CLI prints it).

    Times are seconds of wall clock; ``stage_seconds[p]`` runs from the workers' start to the
    moment the last task of pipeline ``p`` became terminal.
    """

    out: Path
    n_galaxies: int = 0
    wall_s: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    accuracy: list[AccuracyRow] = field(default_factory=list)
    accuracy_cut: AccuracyRow | None = None
    files: dict[str, Path] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def all_terminal(self) -> bool:
        """Every galaxy's fetch task, and every fetched galaxy's radon task, is terminal."""
        fetch = self.counts.get("fetch", {})
        radon = self.counts.get("radon", {})
        return (
            sum(fetch.get(s, 0) for s in TERMINAL_STATES) == self.n_galaxies
            and sum(radon.get(s, 0) for s in TERMINAL_STATES) == fetch.get("done", 0)
            and sum(radon.values()) == fetch.get("done", 0)
        )

    @property
    def ok(self) -> bool:
        return self.all_terminal and not self.problems

    def throughput(self, pipeline: str) -> float:
        """Terminal tasks of ``pipeline`` per second of its stage."""
        seconds = self.stage_seconds.get(pipeline, 0.0)
        done = sum(self.counts.get(pipeline, {}).get(s, 0) for s in TERMINAL_STATES)
        return done / seconds if seconds > 0 else float("nan")


# -- child processes ----------------------------------------------------------------------------


class ChildProcess:
    """A ``galpipe`` child process whose output goes to a log file.

    It runs in a session of its own, so a Ctrl-C at the terminal reaches only the demo, which
    then stops its children in order (workers first, then the sky).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str],
        *,
        watch: re.Pattern[str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.match: re.Match[str] | None = None
        self._terminated = False
        self._closed = False
        self._matched = threading.Event()
        self._log: IO[str] = open(log_path, "w", encoding="utf-8")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "galpipe.cli", *argv],
            stdout=subprocess.PIPE if watch else self._log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
            text=True,
        )
        self._reader: threading.Thread | None = None
        if watch is not None:
            self._reader = threading.Thread(
                target=self._tee, args=(watch,), name=f"{name}-log", daemon=True
            )
            self._reader.start()

    def _tee(self, watch: re.Pattern[str]) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._log.write(line)
            self._log.flush()
            if self.match is None and (found := watch.search(line)):
                self.match = found
                self._matched.set()
        self._matched.set()

    def wait_for_match(self, timeout: float) -> re.Match[str]:
        """The first output line matching ``watch``; DemoError if it exits or times out first."""
        if not self._matched.wait(timeout) or self.match is None:
            code = self.process.poll()
            state = f"exited with {code}" if code is not None else f"silent for {timeout:.0f} s"
            raise DemoError(f"{self.name} {state}; see {self.log_path}")
        return self.match

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self) -> None:
        """Send SIGTERM once: a second one could land after Python restored the default
        handler during shutdown and kill a worker that was exiting cleanly."""
        if self.alive and not self._terminated:
            self._terminated = True
            self.process.send_signal(signal.SIGTERM)

    def stop(self, grace_s: float = _STOP_GRACE_S) -> int:
        """SIGTERM, wait up to ``grace_s``, then SIGKILL; returns the exit code."""
        self.terminate()
        try:
            code = self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            # SIGABRT first: with PYTHONFAULTHANDLER set, the child writes every thread's
            # stack to its log, which says where it hung.
            self.process.send_signal(signal.SIGABRT)
            try:
                code = self.process.wait(5.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                code = self.process.wait()
        if not self._closed:
            self._closed = True
            if self._reader is not None:
                self._reader.join(timeout=5)
            self._log.close()
        return code


def stop_all(children: Sequence[ChildProcess], grace_s: float = _STOP_GRACE_S) -> dict[str, int]:
    """Signal every child at once, then collect each (SIGKILL after ``grace_s``)."""
    for child in children:
        child.terminate()
    return {child.name: child.stop(grace_s) for child in children}


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C in the demo, so that both clean up the children."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- the stack ----------------------------------------------------------------------------------


def worker_environment(
    base: Mapping[str, str],
    *,
    database_url: str,
    object_store: str,
    cutout_url: str,
    fetch_rate: float,
    radon_cache_dir: Path,
    s3_endpoint_url: str | None = None,
) -> dict[str, str]:
    """``base`` with the ``GALPIPE_*`` variables that point a worker at the demo's stack.

    Retries are quick (1, 2, 4 s) and idle polling short so that a small run is not spent
    waiting; the health server is off (``GALPIPE_METRICS_PORT=0``) as many workers share the
    machine.
    """
    env = dict(base)
    env.update(
        {
            "GALPIPE_DATABASE_URL": database_url,
            "GALPIPE_OBJECT_STORE": object_store,
            "GALPIPE_CUTOUT_BASE_URL": cutout_url,
            "GALPIPE_FETCH_RATE_LIMIT": f"{fetch_rate:g}",
            "GALPIPE_FETCH_RATE_BURST": f"{max(1.0, min(fetch_rate, 100.0)):g}",
            "GALPIPE_FETCH_THREADS": "8",
            "GALPIPE_DB_POOL_SIZE": "10",
            "GALPIPE_RADON_CACHE_DIR": str(radon_cache_dir),
            "GALPIPE_RETRY_DELAYS": "1,2,4",
            "GALPIPE_LEASE_SECONDS": "60",
            "GALPIPE_POLL_MIN_SECONDS": "0.1",
            "GALPIPE_POLL_MAX_SECONDS": "0.5",
            "GALPIPE_METRICS_PORT": "0",
            "GALPIPE_LOG_LEVEL": "info",
            "PYTHONFAULTHANDLER": "1",
        }
    )
    if s3_endpoint_url:
        env["GALPIPE_S3_ENDPOINT_URL"] = s3_endpoint_url
    return env


def _timed(result: DemoResult, phase: str, started: float) -> None:
    result.phases[phase] = time.monotonic() - started


def _prepare_database(url: str | None, stack: contextlib.ExitStack) -> str:
    from galpipe.db.migrate import migrate

    if url is None:
        from galpipe.db.embedded import start_embedded_postgres

        # A short path of our own: the server's Unix socket lives in it (about 100 bytes max).
        home = Path(tempfile.mkdtemp(prefix="galpipe-demo-pg-"))
        stack.callback(shutil.rmtree, home, ignore_errors=True)
        server = start_embedded_postgres(home / "pgdata")
        stack.callback(server.cleanup)
        url = str(server.get_uri())
    migrate(url)
    return url


def _write_catalogue(options: DemoOptions, out: Path) -> tuple[Path, Any]:
    from astropy.table import Table

    from galpipe.synthetic.catalog import make_truths, truth_table

    if options.catalog is not None:
        path = options.catalog
        table = Table.read(path, format="ascii.ecsv")
        return path, table
    path = out / "catalog.ecsv"
    table = truth_table(make_truths(options.n, seed=options.seed))
    table.write(path, format="ascii.ecsv", overwrite=True)
    return path, table


def _load_operator(cache_dir: Path) -> Any:
    from galpipe.science.core import RadonConfig
    from galpipe.science.radon import RadonOperator

    config = RadonConfig()
    operator = RadonOperator.load_or_build(
        config.size, config.angles, config.order, cache_dir=cache_dir
    )
    return config, operator


# -- progress -----------------------------------------------------------------------------------


class Progress:
    """Counts per pipeline over time, and the rate of terminal tasks over the last seconds."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.history: dict[str, deque[tuple[float, int]]] = {p: deque() for p in PIPELINES}
        self.counts: dict[str, dict[str, int]] = {}
        self.finished_at: dict[str, float] = {}

    def update(self, counts: dict[str, dict[str, int]], now: float) -> None:
        self.counts = counts
        for pipeline in PIPELINES:
            terminal = sum(counts.get(pipeline, {}).get(s, 0) for s in TERMINAL_STATES)
            history = self.history[pipeline]
            history.append((now, terminal))
            while history and now - history[0][0] > _RATE_WINDOW_S:
                history.popleft()

    def rate(self, pipeline: str) -> float:
        history = self.history[pipeline]
        if len(history) < 2 or history[-1][0] <= history[0][0]:
            return 0.0
        return (history[-1][1] - history[0][1]) / (history[-1][0] - history[0][0])

    def table(self, n_galaxies: int) -> RichTable:
        elapsed = time.monotonic() - self.started
        table = RichTable(title=f"galpipe demo: {n_galaxies:,} galaxies, {elapsed:5.1f} s")
        table.add_column("pipeline")
        for state in STATES:
            table.add_column(state, justify="right")
        table.add_column("rate /s", justify="right")
        for pipeline in PIPELINES:
            row = self.counts.get(pipeline, dict.fromkeys(STATES, 0))
            table.add_row(
                pipeline, *(f"{row.get(s, 0):,}" for s in STATES), f"{self.rate(pipeline):6.1f}"
            )
        return table

    def line(self) -> str:
        parts = []
        for pipeline in PIPELINES:
            row = self.counts.get(pipeline, {})
            parts.append(
                f"{pipeline}: "
                + " ".join(f"{s} {row.get(s, 0)}" for s in STATES)
                + f" ({self.rate(pipeline):.1f}/s)"
            )
        return f"[{time.monotonic() - self.started:6.1f} s] " + " | ".join(parts)


def _stage_done(counts: Mapping[str, Mapping[str, int]], pipeline: str, expected: int) -> bool:
    row = counts.get(pipeline, {})
    return sum(row.get(s, 0) for s in TERMINAL_STATES) >= expected and not (
        row.get("queued", 0) or row.get("running", 0)
    )


def watch_until_terminal(
    pool: ConnectionPool,
    source_ids: Sequence[int],
    workers: Mapping[str, Sequence[ChildProcess]],
    console: Console,
    *,
    timeout_s: float,
    live: bool,
) -> tuple[Progress, list[str]]:
    """Poll task counts until every task of ``source_ids`` is terminal (or trouble).

    Returns the progress record and the problems seen (a pipeline's workers all gone while it
    still has work, or the timeout).
    """
    started = time.monotonic()
    progress = Progress(started)
    problems: list[str] = []
    last_line = 0.0
    context: contextlib.AbstractContextManager[Any] = (
        Live(progress.table(len(source_ids)), console=console, refresh_per_second=4)
        if live
        else contextlib.nullcontext()
    )
    with context as display:
        while True:
            now = time.monotonic()
            with pool.connection() as conn:
                counts = task_counts(conn, source_ids)
            progress.update(counts, now)
            expected = {"fetch": len(source_ids), "radon": counts.get("fetch", {}).get("done", 0)}
            for pipeline in PIPELINES:
                # Radon cannot be finished before fetch is: fetch still queues radon tasks.
                upstream_done = pipeline == "fetch" or "fetch" in progress.finished_at
                if (
                    pipeline not in progress.finished_at
                    and upstream_done
                    and _stage_done(counts, pipeline, expected[pipeline])
                ):
                    progress.finished_at[pipeline] = now - started
            if display is not None:
                display.update(progress.table(len(source_ids)))
            elif now - last_line >= 5.0:
                console.print(progress.line(), highlight=False)
                last_line = now
            if all(p in progress.finished_at for p in PIPELINES):
                break
            for pipeline, children in workers.items():
                if pipeline not in progress.finished_at and not any(c.alive for c in children):
                    logs = ", ".join(str(c.log_path) for c in children)
                    problems.append(f"every {pipeline} worker exited early; see {logs}")
            if problems:
                break
            if now - started > timeout_s:
                problems.append(f"tasks still not terminal after {timeout_s:.0f} s")
                break
            time.sleep(_POLL_S)
    if not live:
        console.print(progress.line(), highlight=False)
    return progress, problems


def _start_sky(catalog_path: Path, n_galaxies: int, options: DemoOptions) -> ChildProcess:
    """``galpipe sky serve`` on a free loopback port, rate limit lifted, catalogue pre-rendered.

    The cache holds the whole catalogue so that every request is answered from memory.
    """
    argv = [
        *("sky", "serve", "--catalog", str(catalog_path)),
        *("--host", "127.0.0.1", "--port", "0", "--rate", "0", "--prerender"),
        *("--cache-size", str(max(10_000, 2 * n_galaxies))),
        *options.sky_args,
    ]
    log_path = options.out.resolve() / "logs" / "sky.log"
    return ChildProcess("sky", argv, log_path, os.environ, watch=_SKY_LINE)


def _start_workers(
    env: Mapping[str, str], options: DemoOptions, log_dir: Path
) -> dict[str, list[ChildProcess]]:
    """``galpipe fetch`` and ``galpipe radon`` processes, each with its own lease owner name."""
    wanted = {"fetch": options.fetch_workers, "radon": options.radon_workers}
    workers: dict[str, list[ChildProcess]] = {}
    for pipeline in PIPELINES:
        workers[pipeline] = [
            ChildProcess(
                f"{pipeline}-{i}",
                [pipeline],
                log_dir / f"{pipeline}-{i}.log",
                {**env, "GALPIPE_WORKER_ID": f"demo-{pipeline}-{i}-{os.getpid()}"},
            )
            for i in range(1, wanted[pipeline] + 1)
        ]
    return workers


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
    out = options.out.resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    result = DemoResult(out=out)
    children: list[ChildProcess] = []
    with _sigterm_as_interrupt(), contextlib.ExitStack() as stack:
        stack.callback(lambda: stop_all(children))
        step = time.monotonic()
        catalog_path, truth = _write_catalogue(options, out)
        source_ids = [int(s) for s in truth["source_id"]]
        result.n_galaxies = len(source_ids)
        _timed(result, "catalogue", step)

        sky = None if options.cutout_url else _start_sky(catalog_path, len(source_ids), options)
        if sky is not None:
            children.append(sky)
        step = time.monotonic()
        database_url = _prepare_database(options.database_url, stack)
        pool = open_pool(database_url, max_size=2)
        stack.callback(pool.close)
        # Exit callbacks run last-in first-out: the children stop before the database does.
        stack.callback(lambda: stop_all(children))
        _timed(result, "database", step)

        step = time.monotonic()
        from galpipe.catalog import ingest_catalog

        summary = ingest_catalog(
            pool, catalog_path, keep=[], catalog_name=f"galpipe-demo-{catalog_path.stem}"
        )
        _timed(result, "ingest", step)
        if summary.rejected:
            result.problems.append(f"ingest rejected {summary.rejected} row(s)")

        step = time.monotonic()
        cache_dir = _radon_cache_dir()
        config, operator = _load_operator(cache_dir)
        _timed(result, "radon operator", step)

        step = time.monotonic()
        if sky is not None:
            cutout_url = sky.wait_for_match(timeout=120 + 0.05 * len(source_ids)).group(1)
            console.print(
                f"synthetic sky on {cutout_url} — its rate limit is LIFTED for the demo "
                f"(--rate 0); fetch workers share {options.fetch_rate or DEMO_FETCH_RATE:g} "
                "requests/s",
                highlight=False,
            )
        else:
            cutout_url = str(options.cutout_url)
        _timed(result, "sky ready", step)

        from galpipe.settings import Settings

        fetch_rate = options.fetch_rate or (
            DEMO_FETCH_RATE if sky is not None else Settings.from_env().fetch_rate_limit
        )
        object_store = options.object_store or (out / "objects").as_uri()
        env = worker_environment(
            os.environ,
            database_url=database_url,
            object_store=object_store,
            cutout_url=cutout_url,
            fetch_rate=fetch_rate,
            radon_cache_dir=cache_dir,
            s3_endpoint_url=options.s3_endpoint_url,
        )
        step = time.monotonic()
        workers = _start_workers(env, options, out / "logs")
        children += [c for group in workers.values() for c in group]
        console.print(
            f"{result.n_galaxies:,} galaxies queued; {options.fetch_workers} fetch and "
            f"{options.radon_workers} radon worker process(es); store {object_store}",
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
        _timed(result, "workers", step)
        result.stage_seconds = dict(progress.finished_at)
        result.problems += problems
        worker_children = [c for group in workers.values() for c in group]
        codes = stop_all(worker_children)
        result.problems += [
            f"{name} exited with {code}; see {out / 'logs' / (name + '.log')}"
            for name, code in codes.items()
            if code != 0
        ]
        if sky is not None:
            sky.stop()

        step = time.monotonic()
        with pool.connection() as conn:
            result.counts = task_counts(conn, source_ids)
            rows = demo_results(conn, source_ids, config.algo_version)
        _write_outputs(result, rows, truth, operator, object_store, options)
        _timed(result, "report", step)
        result.wall_s = time.monotonic() - started
        _write_report(result, options, object_store, cutout_url, fetch_rate)
    return result


def _radon_cache_dir() -> Path:
    from galpipe.science.radon import default_cache_dir
    from galpipe.settings import Settings

    configured = Settings.from_env().radon_cache_dir
    return Path(configured) if configured else default_cache_dir()


def _write_outputs(
    result: DemoResult,
    rows: list[dict[str, Any]],
    truth: Any,
    operator: Any,
    object_store: str,
    options: DemoOptions,
) -> None:
    from galpipe.demo import report

    has_truth = "position_angle" in truth.colnames and "axis_ratio" in truth.colnames
    table = report.results_catalogue(rows, truth if has_truth else None)
    fits_path, ecsv_path = report.write_catalogue(table, result.out)
    result.files.update({"catalogue (FITS)": fits_path, "catalogue (ECSV)": ecsv_path})
    for row in rows:
        for pipeline in PIPELINES:
            error = row[f"{pipeline}_error"]
            if row[f"{pipeline}_state"] in ("failed", "skipped") and error:
                key = f"{pipeline} {row[f'{pipeline}_state']}: {_reason(error)}"
                result.failures[key] = result.failures.get(key, 0) + 1
    if not has_truth:
        return
    errors = np.asarray(table["pa_error_deg"], dtype=np.float64)
    q = np.asarray(table["true_axis_ratio"], dtype=np.float64)
    result.accuracy = report.accuracy_by_axis_ratio(errors, q)
    snr = np.asarray(table["snr_r"], dtype=np.float64)
    cut = (q < 0.6) & (snr > 30)
    result.accuracy_cut = report.accuracy_by_axis_ratio(errors[cut], q[cut], ((0.0, 0.6),))[-1]
    measured = np.isfinite(errors)
    if not measured.any():
        return
    result.files["recovered vs true PA"] = report.plot_pa_recovery(
        table, result.out / "pa_recovery.png"
    )
    result.files["error histograms"] = report.plot_error_histograms(
        table, result.out / "pa_error_histograms.png"
    )
    gallery = _gallery(table, operator, object_store, options)
    if gallery:
        result.files["gallery"] = report.plot_gallery(gallery, result.out / "gallery.png")


def _reason(error: str) -> str:
    """An error message without ids and numbers, so that equal causes group together."""
    return re.sub(r"\d+", "N", error.splitlines()[0])[:120]


def _gallery(table: Any, operator: Any, object_store: str, options: DemoOptions) -> list[Any]:
    from galpipe.demo import report
    from galpipe.pipelines.radon import decode_cutout
    from galpipe.storage.store import open_object_store

    store = open_object_store(object_store, endpoint_url=options.s3_endpoint_url)
    by_id = {int(r["source_id"]): r for r in table}
    cubes, meta = [], []
    for sid in report.pick_gallery(table, options.gallery):
        row = by_id[sid]
        try:
            cube = decode_cutout(store.get(str(row["object_key"])), operator.size).data
        except Exception:  # a gallery without one galaxy is still a gallery
            continue
        cubes.append(cube)
        meta.append(
            {
                "source_id": sid,
                "true_pa_deg": float(row["true_position_angle"]),
                "measured_pa_deg": float(row["position_angle_deg"]),
                "axis_ratio": float(row["true_axis_ratio"]),
            }
        )
    if not cubes:
        return []
    return report.gallery_items(np.stack(cubes), operator, meta)


def _write_report(
    result: DemoResult,
    options: DemoOptions,
    object_store: str,
    cutout_url: str,
    fetch_rate: float,
) -> None:
    from galpipe.demo import report

    sections = [("Run", _run_markdown(result, options, object_store, cutout_url, fetch_rate))]
    sections.append(("Tasks", _counts_markdown(result)))
    if result.accuracy:
        body = report.accuracy_markdown(result.accuracy)
        cut = result.accuracy_cut
        if cut is not None:
            body += (
                f"\n\nAxis ratio < 0.6 and r-band S/N > 30: n = {cut.n}, median axial error "
                f"{cut.median:.2f}°, 95th percentile {cut.p95:.2f}°."
            )
        body += (
            "\n\nAxial error: |measured − true| of the position angle east of north, wrapped to "
            "[0°, 90°]; combined griz measurement; only measured galaxies."
        )
        sections.append(("Accuracy against the truth", body))
    figures = [
        f"![{label}]({path.name})" for label, path in result.files.items() if path.suffix == ".png"
    ]
    if figures:
        sections.append(("Figures", "\n\n".join(figures)))
    files = [f"- [{label}]({path.name})" for label, path in result.files.items()]
    files.append("- [logs](logs/) of every process")
    sections.append(("Files", "\n".join(files)))
    report_path = report.write_markdown_report(
        result.out / "report.md", sections, "galpipe demo report"
    )
    result.files["report"] = report_path


def _run_markdown(
    result: DemoResult,
    options: DemoOptions,
    object_store: str,
    cutout_url: str,
    fetch_rate: float,
) -> str:
    sky = (
        f"the demo's synthetic sky at {cutout_url} (its own rate limit LIFTED for the demo)"
        if options.cutout_url is None
        else cutout_url
    )
    lines = [
        f"- galaxies: {result.n_galaxies:,}; workers: {options.fetch_workers} fetch, "
        f"{options.radon_workers} radon (separate processes)",
        f"- database: {'embedded PostgreSQL' if options.database_url is None else 'external'}; "
        f"object store: `{object_store}`",
        f"- cutouts: {sky}; shared fetch rate {fetch_rate:g} requests/s",
        f"- wall time: {result.wall_s:.1f} s ("
        + ", ".join(f"{k} {v:.1f} s" for k, v in result.phases.items())
        + ")",
        "- status: "
        + ("every task terminal" if result.all_terminal else "NOT every task is terminal")
        + ("" if not result.problems else "; problems: " + "; ".join(result.problems)),
    ]
    return "\n".join(lines)


def _counts_markdown(result: DemoResult) -> str:
    from galpipe.demo import report

    rows = []
    for pipeline in PIPELINES:
        row = result.counts.get(pipeline, {})
        rows.append(
            (
                pipeline,
                *(row.get(s, 0) for s in STATES),
                result.stage_seconds.get(pipeline, float("nan")),
                result.throughput(pipeline),
            )
        )
    body = report.markdown_table(("pipeline", *STATES, "stage (s)", "galaxies/s"), rows)
    if result.failures:
        body += "\n\nFailures and skips by reason:\n\n" + "\n".join(
            f"- {n} × {reason}" for reason, n in sorted(result.failures.items())
        )
    return body


def print_summary(result: DemoResult, console: Console) -> None:
    """The end-of-run summary: counts, throughput per stage, accuracy, files."""
    table = RichTable(title="tasks")
    table.add_column("pipeline")
    for state in STATES:
        table.add_column(state, justify="right")
    table.add_column("stage s", justify="right")
    table.add_column("galaxies/s", justify="right")
    for pipeline in PIPELINES:
        row = result.counts.get(pipeline, {})
        table.add_row(
            pipeline,
            *(f"{row.get(s, 0):,}" for s in STATES),
            f"{result.stage_seconds.get(pipeline, float('nan')):.1f}",
            f"{result.throughput(pipeline):.1f}",
        )
    console.print(table)
    for reason, n in sorted(result.failures.items()):
        console.print(f"  {n} × {reason}", highlight=False)
    if result.accuracy:
        acc = RichTable(title="axial error of the position angle vs truth (degrees)")
        for name in ("axis ratio", "n", "median", "mean", "68th pct", "95th pct"):
            acc.add_column(name, justify="right")
        for r in result.accuracy:
            acc.add_row(r.label, str(r.n), *(f"{v:.2f}" for v in (r.median, r.mean, r.p68, r.p95)))
        console.print(acc)
        if result.accuracy_cut is not None:
            cut = result.accuracy_cut
            console.print(
                f"axis ratio < 0.6 and S/N > 30: n={cut.n}, median {cut.median:.2f}°",
                highlight=False,
            )
    console.print(
        f"wall time {result.wall_s:.1f} s: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in result.phases.items()),
        highlight=False,
    )
    for problem in result.problems:
        console.print(f"[red]problem:[/red] {problem}")
    console.print(f"report: {result.files.get('report', result.out / 'report.md')}")
