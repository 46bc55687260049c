"""Benchmark of the radon pipeline: claim -> read -> decode -> measure -> write -> complete.

Run ``python bench/radon_pipeline.py`` (``--quick`` for a smoke run of about a minute). It starts
a private embedded PostgreSQL and, in a child process (so that it does not share this process's
GIL), moto's S3 server on 127.0.0.1. To keep the setup short, ``--distinct`` cutouts (256 by
default) are rendered with GalSim (the synthetic sky's default mix: Sersic galaxies, neighbours,
noise) and their bytes are stored again under every galaxy's own key: ``--n`` galaxies (8,192 by
default) have their own objects but only ``--distinct`` different contents. The objects are
stored once per store; every run gets a fresh migrated database staged as the fetch pipeline
leaves it (``galaxies`` rows, ``cutouts`` rows, queued radon tasks).

1. **Anchor "core"**: :func:`galpipe.science.core.measure_batch` alone, in this process, on the
   decoded cubes of the same ``--n`` galaxies, same configuration (the production default,
   neighbour masking on), chunks of ``--batch``.
2. **Local store** and **S3**: one :class:`~galpipe.pipelines.worker.Worker` in this process runs
   the production :class:`~galpipe.pipelines.radon.RadonPipeline` (batch ``--batch``, ``--threads``
   readers); galaxies/s = galaxies / wall time from the first claim to the last commit, after one
   warm-up batch (not counted); median of ``--repeats`` runs: ``local_per_s``, ``s3_per_s``. This
   process's CPU time per galaxy is printed beside it (moto's is not in it), and
   ``s3_cpu_bound_per_s``: the machine's cores over the CPU per galaxy of this process and moto
   together, which no overlap can beat while both share the machine.
3. **Read ceiling** (anchor of the S3 figure): the same objects read by ``--threads`` threads
   with the store's ``get`` (sha256 verified) and nothing else, and the S3 server's own CPU
   per request (moto runs in a child process of its own; on a 2-core machine it competes with
   the pipeline and PostgreSQL for the same cores, which a real S3 does not).
4. **Breakdown** on ``--profile-n`` galaxies per store, reads and decodes run serially in the
   main thread: once with a wall-clock timer around each phase's function, once under cProfile
   (whose per-call overhead inflates the Python-heavy phases, astropy's above all): claim,
   cutout rows, read, decode (FITS / WCS Jacobian), measure, PA conversion, row building,
   write, complete, in ms per galaxy.

The Radon operator is loaded (or built) before anything is timed; its build time is excluded.
Ratios: each pipeline rate against the core anchor (``*_over_core``: what the pipeline keeps of
the science core's speed) and against the 300/s target. The last line is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import multiprocessing
import os
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from prometheus_client import REGISTRY
from psycopg import sql
from psycopg.conninfo import make_conninfo

from _postgres import embedded_postgres
from _proc import process_cpu_seconds
from galpipe.db.connection import open_pool
from galpipe.db.cutouts import CutoutRecord, record_cutouts
from galpipe.db.galaxies import insert_galaxies
from galpipe.db.migrate import migrate
from galpipe.db.queue import TaskQueue
from galpipe.pipelines import radon as radon_module
from galpipe.pipelines import stored_cutouts as stored_cutouts_module
from galpipe.pipelines.radon import RadonPipeline
from galpipe.pipelines.stored_cutouts import decode_cutout
from galpipe.pipelines.worker import Worker
from galpipe.science.core import RadonConfig, measure_batch
from galpipe.science.features import axial_difference
from galpipe.science.radon import RadonOperator
from galpipe.storage import LocalObjectStore, ObjectStore, S3ObjectStore, make_s3_client
from galpipe.survey.layout import BANDS, LAYER, PIXSCALE_ARCSEC
from galpipe.survey.layout import CUTOUT_SIZE_PX as SIZE
from galpipe.synthetic import TruthGalaxy, cutout_fits_bytes, make_truths

TARGET_PER_S = 300.0
PUT_THREADS = 16
FIRST_ID = 10_000_000
DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}

# Bench-only fixture SQL (the library's SQL stays under services/galpipe/db/).
STATE_COUNTS_SQL = "SELECT state::text, count(*) FROM tasks WHERE pipeline = 'radon' GROUP BY 1"
COUNT_ROWS_SQL = "SELECT count(*) FROM radon_measurements"
COMBINED_PA_SQL = (
    "SELECT source_id, position_angle_deg FROM radon_measurements WHERE band = 'combined'"
)


# -- inputs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    """``distinct`` rendered cutouts; galaxy ``i`` of a run stores cutout ``i % distinct``."""

    truths: list[TruthGalaxy]
    blobs: list[bytes]

    def blob_for(self, i: int) -> bytes:
        return self.blobs[i % len(self.blobs)]

    def truth_pa_for(self, i: int) -> float:
        return self.truths[i % len(self.truths)].position_angle_deg


def render_corpus(distinct: int, seed: int = 11) -> Corpus:
    truths = make_truths(distinct, seed=seed)
    return Corpus(truths, [cutout_fits_bytes(t, SIZE, bands=BANDS) for t in truths])


def core_images(corpus: Corpus, n: int) -> np.ndarray:
    """The ``(n, 4, S, S)`` cubes the pipeline will see, decoded once per distinct cutout."""
    decoded = [decode_cutout(b, SIZE, BANDS).data for b in corpus.blobs]
    return np.stack([decoded[i % len(decoded)] for i in range(n)])


# -- S3 server (child process) ---------------------------------------------------------------------


def serve_moto(conn: Connection) -> None:
    """Child-process target: moto's S3 server on 127.0.0.1 until the parent says stop."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    conn.send(f"http://{host}:{port}")
    conn.recv()
    server.stop()


@contextmanager
def moto_server() -> Iterator[tuple[str, int | None]]:
    """moto's S3 server in a child process: yields its endpoint and the child's pid."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=serve_moto, args=(child,), name="moto-s3", daemon=True)
    proc.start()
    try:
        if not parent.poll(60.0):
            raise RuntimeError("moto server did not start within 60 s")
        yield parent.recv(), proc.pid
    finally:
        if proc.is_alive():
            parent.send("stop")
            proc.join(10.0)
        if proc.is_alive():
            proc.kill()
            proc.join()


def s3_store(endpoint: str) -> S3ObjectStore:
    os.environ.update(DUMMY_AWS_ENV)
    import boto3

    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    client = make_s3_client(endpoint, session=session)
    bucket = f"galpipe-bench-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return S3ObjectStore(client, bucket)


# -- staging ---------------------------------------------------------------------------------------


def fresh_database(admin_url: str, name: str) -> str:
    """Create and migrate database ``name``; return its connection string."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(admin_url, dbname=name)
    migrate(url)
    return url


def store_objects(store: ObjectStore, corpus: Corpus, n: int) -> list[CutoutRecord]:
    """Store ``n`` galaxies' cutouts (ids ``FIRST_ID`` onwards); return their cutouts rows."""

    def put(i: int) -> CutoutRecord:
        sid = FIRST_ID + i
        key = f"cutouts/bench/{sid}.fits"
        stored = store.put(key, corpus.blob_for(i))
        return CutoutRecord(
            sid, LAYER, BANDS, "", SIZE, PIXSCALE_ARCSEC, "bench", key, stored.sha256, stored.nbytes
        )

    with ThreadPoolExecutor(PUT_THREADS) as executor:
        return list(executor.map(put, range(n)))


def stage(url: str, records: Sequence[CutoutRecord], corpus: Corpus) -> dict[int, float]:
    """Leave the galaxies of ``records`` as the fetch pipeline would (rows, queued radon
    tasks; the objects are already stored); return their true PA by source id."""
    n = len(records)
    rng = np.random.default_rng(n)
    ids = [r.source_id for r in records]
    ra = rng.uniform(0.0, 360.0, n)
    dec = rng.uniform(-20.0, 50.0, n)
    pool = open_pool(url, max_size=1, name="bench-stage")
    try:
        with pool.connection() as conn, conn.transaction():
            galaxies = [(i, ids[i], float(ra[i]), float(dec[i]), "{}") for i in range(n)]
            insert_galaxies(conn, "bench", galaxies)
            record_cutouts(conn, records)
            TaskQueue(pool).enqueue("radon", ids, conn=conn)
        with pool.connection() as conn:
            conn.execute("VACUUM ANALYZE")
    finally:
        pool.close()
    return {sid: corpus.truth_pa_for(sid - FIRST_ID) for sid in ids}


# -- running -----------------------------------------------------------------------------------


class PhaseTimers:
    """Wall time per phase, by wrapping the functions the pipeline calls (serial runs only)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, name: str, phase: str) -> None:
        original = getattr(owner, name)
        had_own = name in vars(owner)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                self.seconds[phase] = self.seconds.get(phase, 0.0) + elapsed

        setattr(owner, name, timed)
        self._undo.append(
            (lambda: setattr(owner, name, original)) if had_own else (lambda: delattr(owner, name))
        )

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()


class SerialExecutor:
    """Stands in for the pipeline's thread pool so that cProfile sees the reads and decodes."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # the pipeline sees it when it asks for the result
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True) -> None:
        pass


def phase_seconds() -> dict[str, float]:
    """The worker's own wall-time sums by phase (claim, process, commit), all runs so far."""
    return {
        phase: REGISTRY.get_sample_value(
            "galpipe_batch_seconds_sum", {"pipeline": "radon", "phase": phase}
        )
        or 0.0
        for phase in ("claim", "process", "commit")
    }


@dataclass
class RunResult:
    per_s: float
    counted: int
    wall_s: float
    cpu_ms: float
    phases_ms: dict[str, float]
    median_err_deg: float
    breakdown_ms: dict[str, float] | None = None


def run_pipeline(
    url: str,
    store: ObjectStore,
    truth: dict[int, float],
    operator: RadonOperator,
    config: RadonConfig,
    args: argparse.Namespace,
    *,
    mode: str = "timed",
) -> RunResult:
    """One worker over the staged queue: a warm-up batch, then the measured rest.

    ``mode`` is "timed" (the production pipeline as it is), "timers" (reads and decodes in
    the main thread, each phase's function wrapped in a timer) or "cprofile" (the same under
    cProfile, whose per-call overhead inflates Python-heavy phases).
    """
    pool = open_pool(url, max_size=4, name="bench-radon")
    pipeline = RadonPipeline(
        pool=pool,
        store=store,
        config=config,
        operator=operator,
        batch_size=args.batch,
        threads=args.threads,
    )
    queue = TaskQueue(pool)
    worker = Worker(pipeline, queue, owner="bench-radon", poll_min_seconds=0.01)
    timers = PhaseTimers()
    try:
        if mode != "timed":
            pipeline.reader._executor.shutdown()
            pipeline.reader._executor = SerialExecutor()  # type: ignore[assignment]
        worker.run(max_batches=1)  # warm-up: connections, caches, lazy imports
        warm = worker.stats.claimed
        if mode == "timers":
            for owner, name, phase in (
                (queue, "claim_batch", "claim"),
                (queue, "complete", "complete"),
                (stored_cutouts_module, "cutouts_for", "cutout_rows"),
                (store, "get", "read"),
                (stored_cutouts_module, "decode_cutout", "decode"),
                (stored_cutouts_module, "sky_jacobian", "wcs_jacobian"),
                (pipeline, "_measure", "measure_step"),
                (radon_module, "measure_batch", "measure"),
                (radon_module, "image_angle_to_position_angle", "pa_conversion"),
                (radon_module, "record_measurements", "write"),
                (worker, "_commit", "commit_all"),
            ):
                timers.wrap(owner, name, phase)
        before = phase_seconds()
        profiler = cProfile.Profile() if mode == "cprofile" else None
        cpu_start, start = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        worker.run(stop_when_idle=True)
        if profiler:
            profiler.disable()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        timers.restore()
        after = phase_seconds()
        counted = worker.stats.claimed - warm
        with pool.connection() as conn:
            states = dict(conn.execute(STATE_COUNTS_SQL).fetchall())
            rows = conn.execute(COUNT_ROWS_SQL).fetchone()
            combined = conn.execute(COMBINED_PA_SQL).fetchall()
    finally:
        timers.restore()
        pipeline.close()
        pool.close()
    if states != {"done": len(truth)} or rows != (5 * len(truth),):
        raise RuntimeError(f"run incomplete: task states {states}, measurement rows {rows}")
    errors = [axial_difference(pa, truth[sid]) for sid, pa in combined if pa is not None]
    breakdown = None
    if profiler:
        breakdown = derived_phases(profiled_seconds(profiler), counted)
    elif mode == "timers":
        breakdown = derived_phases({**timers.seconds, "total": wall}, counted)
    return RunResult(
        per_s=counted / wall,
        counted=counted,
        wall_s=wall,
        cpu_ms=1e3 * cpu / counted,
        phases_ms={k: 1e3 * (after[k] - before[k]) / counted for k in after},
        median_err_deg=float(np.median(errors)),
        breakdown_ms=breakdown,
    )


# -- profile ---------------------------------------------------------------------------------------

# (phase, function name, file suffix or suffixes); cumulative time of the function, so nested
# phases are subtracted from their parents below.
_PROFILED = (
    ("claim", "claim_batch", "galpipe/db/queue.py"),
    ("cutout_rows", "cutouts_for", "galpipe/db/cutouts.py"),
    ("read", "get", ("galpipe/storage/local.py", "galpipe/storage/s3.py")),
    ("decode", "decode_cutout", "galpipe/pipelines/stored_cutouts.py"),
    ("wcs_jacobian", "sky_jacobian", "galpipe/science/orientation.py"),
    ("measure", "measure_batch", "galpipe/science/core.py"),
    ("pa_conversion", "image_angle_to_position_angle", "galpipe/science/orientation.py"),
    ("measure_step", "_measure", "galpipe/pipelines/radon.py"),
    ("write", "record_measurements", "galpipe/db/measurements.py"),
    ("complete", "complete", "galpipe/db/queue.py"),
    ("commit_all", "_commit", "galpipe/pipelines/worker.py"),
    ("total", "run", "galpipe/pipelines/worker.py"),
)


def profiled_seconds(profiler: cProfile.Profile) -> dict[str, float]:
    """Cumulative seconds of each pipeline phase's function in a cProfile run."""
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    seconds = dict.fromkeys((p for p, _, _ in _PROFILED), 0.0)
    for (filename, _line, func), (_cc, _nc, _tt, cumulative, _callers) in stats.items():
        for phase, name, suffix in _PROFILED:
            if func == name and filename.replace(os.sep, "/").endswith(suffix):
                seconds[phase] += cumulative
    return seconds


def derived_phases(seconds: dict[str, float], n: int) -> dict[str, float]:
    """ms per galaxy of each phase, nested phases taken out of their parents."""
    ms = {k: 1e3 * seconds.get(k, 0.0) / n for k, _, _ in _PROFILED}
    ms["decode_fits"] = ms["decode"] - ms["wcs_jacobian"]
    ms["row_building"] = ms["measure_step"] - ms["measure"] - ms["pa_conversion"]
    ms["commit_other"] = ms["commit_all"] - ms["write"] - ms["complete"]
    ms["loop_other"] = ms["total"] - sum(ms[k] for k, _ in _REPORTED[:-1])
    return ms


_REPORTED = (
    ("claim", "claim (SKIP LOCKED batch)"),
    ("cutout_rows", "cutouts rows"),
    ("read", "read (object store get + sha256)"),
    ("decode_fits", "decode: astropy FITS open"),
    ("wcs_jacobian", "decode: WCS Jacobian"),
    ("measure", "measure (science core)"),
    ("pa_conversion", "PA conversion"),
    ("row_building", "row building"),
    ("write", "write (radon_measurements)"),
    ("complete", "complete (tasks)"),
    ("commit_other", "commit: other + COMMIT"),
    ("loop_other", "worker loop, lease thread, rest"),
)


def print_breakdown(label: str, ms: dict[str, float]) -> None:
    total = ms["total"]
    print(f"{label}: {total:.2f} ms/galaxy in all, serial reads and decodes")
    for key, text in sorted(_REPORTED, key=lambda kv: -ms[kv[0]]):
        print(f"  {text:<36} {ms[key]:7.3f} ms/galaxy  {100 * ms[key] / total:5.1f} %")


# -- main ------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--n", type=int, default=8192, help="galaxies per timed run")
    parser.add_argument("--distinct", type=int, default=256, help="distinct rendered cutouts")
    parser.add_argument("--batch", type=int, default=256, help="tasks per claim")
    parser.add_argument("--threads", type=int, default=16, help="concurrent object reads")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs (median counts)")
    parser.add_argument("--profile-n", type=int, default=2048, help="galaxies per profile run")
    parser.add_argument("--cache-dir", type=Path, default=None, help="operator cache directory")
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["local", "s3", "profile"],
        help="parts to skip",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.distinct, args.profile_n = min(args.n, 1024), 64, min(args.profile_n, 512)
    return args


@dataclass(frozen=True)
class Context:
    operator: RadonOperator
    config: RadonConfig
    args: argparse.Namespace
    core_per_s: float
    s3_server_pid: int | None = None


def measure_store(
    kind: str, store: ObjectStore, admin: str, corpus: Corpus, ctx: Context
) -> dict[str, Any]:
    """The timed runs (and the read-ceiling and breakdown runs) of one store; RESULT entries."""
    args = ctx.args
    out: dict[str, Any] = {}
    start = time.perf_counter()
    # Every run reads the same objects (stored once); each gets a fresh database.
    records = store_objects(store, corpus, max(args.n, args.profile_n) + args.batch)
    print(f"{kind}: stored {len(records)} objects in {time.perf_counter() - start:.1f} s")
    runs = 0

    def run(n: int, mode: str = "timed") -> RunResult:
        nonlocal runs
        runs += 1
        url = fresh_database(admin, f"bench_{kind}_{runs}")
        truth = stage(url, records[: n + args.batch], corpus)
        return run_pipeline(url, store, truth, ctx.operator, ctx.config, args, mode=mode)

    timed = [run(args.n) for _ in range(args.repeats)]
    for i, r in enumerate(timed):
        phases = ", ".join(f"{k} {v:.2f}" for k, v in r.phases_ms.items())
        print(
            f"{kind} #{i + 1}: {r.counted} galaxies in {r.wall_s:.1f} s = {r.per_s:,.0f} "
            f"galaxies/s; this process's CPU {r.cpu_ms:.2f} ms/galaxy; worker phases "
            f"ms/galaxy: {phases}; median |PA - truth| {r.median_err_deg:.2f} deg"
        )
    per_s = statistics.median(r.per_s for r in timed)
    print(
        f"{kind}: {per_s:,.0f} galaxies/s (median of {args.repeats}) = "
        f"{per_s / TARGET_PER_S:.2f}x the {TARGET_PER_S:.0f}/s target, "
        f"{per_s / ctx.core_per_s:.2f}x the core anchor"
    )
    out[f"{kind}_per_s"] = round(per_s, 1)
    out[f"{kind}_runs_per_s"] = [round(r.per_s, 1) for r in timed]
    out[f"{kind}_over_core"] = round(per_s / ctx.core_per_s, 3)
    out[f"{kind}_over_target"] = round(per_s / TARGET_PER_S, 3)
    out[f"{kind}_cpu_ms_per_galaxy"] = round(statistics.median(r.cpu_ms for r in timed), 3)
    out[f"{kind}_median_err_deg"] = round(timed[0].median_err_deg, 3)

    if kind == "s3" and ctx.s3_server_pid is not None:
        keys = [(r.object_key, r.sha256) for r in records[: args.n]]
        server_cpu = process_cpu_seconds(ctx.s3_server_pid)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.threads) as readers:
            list(readers.map(lambda key: store.get(*key), keys))
        reads_per_s = len(keys) / (time.perf_counter() - t0)
        server_ms = (process_cpu_seconds(ctx.s3_server_pid) - server_cpu) / len(keys) * 1e3
        print(
            f"{kind} read ceiling: {len(keys)} gets by {args.threads} threads and nothing else: "
            f"{reads_per_s:,.0f} objects/s; the S3 server (moto) used {server_ms:.2f} ms CPU per "
            f"get; the pipeline kept {per_s / reads_per_s:.2f}x of the read ceiling"
        )
        out["s3_reads_per_s"] = round(reads_per_s, 1)
        out["s3_server_cpu_ms_per_get"] = round(server_ms, 3)
        out["s3_over_read_ceiling"] = round(per_s / reads_per_s, 3)
        # The worker and moto share this machine's cores: even with perfect overlap (and
        # PostgreSQL's CPU left out) it cannot finish galaxies faster than this.
        cpu_ms = out[f"{kind}_cpu_ms_per_galaxy"] + server_ms
        bound = (os.cpu_count() or 1) * 1e3 / cpu_ms
        print(
            f"{kind} CPU bound of this machine: {os.cpu_count()} cores / ({cpu_ms:.2f} ms per "
            f"galaxy: this process + moto) = {bound:,.0f} galaxies/s; the pipeline ran at "
            f"{per_s / bound:.2f}x of it"
        )
        out["s3_cpu_bound_per_s"] = round(bound, 1)

    if "profile" not in args.skip:
        for mode, label in (("timers", "phase timers"), ("cprofile", "cProfile")):
            serial = run(args.profile_n, mode)
            assert serial.breakdown_ms is not None
            print_breakdown(f"{kind} breakdown, {label}", serial.breakdown_ms)
            out[f"{kind}_{mode}_ms"] = {
                key: round(serial.breakdown_ms[key], 3) for key, _ in _REPORTED
            }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    result: dict[str, Any] = {"quick": args.quick, "n": args.n, "batch": args.batch}
    result["cpus"] = os.cpu_count()
    cache_dir = args.cache_dir or Path(tempfile.gettempdir()) / "galpipe-bench-cache"
    t0 = time.perf_counter()
    config = RadonConfig(size=SIZE)
    operator = RadonOperator.load_or_build(
        SIZE, np.asarray(config.angles_deg), config.order, cache_dir=cache_dir
    )
    print(f"operator: load/build {time.perf_counter() - t0:.1f} s (excluded) from {cache_dir}")
    t0 = time.perf_counter()
    corpus = render_corpus(args.distinct)
    print(
        f"rendered {args.distinct} distinct cutouts in {time.perf_counter() - t0:.1f} s; "
        f"each run stores them again under every galaxy's key ({args.n} objects)"
    )

    images = core_images(corpus, args.n)
    measure_batch(images[: args.batch], config, operator)  # warm-up, as the pipeline gets
    core_runs = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        measure_batch(images, config, operator, chunk_size=args.batch)
        core_runs.append(args.n / (time.perf_counter() - t0))
    core_per_s = statistics.median(core_runs)
    del images
    print(
        f"anchor core: measure_batch alone on the same cubes: {core_per_s:,.0f} galaxies/s "
        f"(median of {[round(r) for r in core_runs]})"
    )
    result["core_per_s"] = round(core_per_s, 1)
    result["core_runs_per_s"] = [round(r, 1) for r in core_runs]

    with (
        embedded_postgres("galpipe-bench-radon-") as (admin, tmp),
        moto_server() as (endpoint, moto_pid),
    ):
        ctx = Context(operator, config, args, core_per_s, moto_pid)
        stores: dict[str, Callable[[], ObjectStore]] = {
            "local": lambda: LocalObjectStore(tmp / "objects"),
            "s3": lambda: s3_store(endpoint),
        }
        for kind, make_store in stores.items():
            if kind not in args.skip:
                result.update(measure_store(kind, make_store(), admin, corpus, ctx))
    targets = [result[k] >= TARGET_PER_S for k in ("local_per_s", "s3_per_s") if k in result]
    result["targets_met"] = bool(targets) and all(targets)
    result["bench_wall_s"] = round(time.monotonic() - started, 1)
    print("RESULT " + json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
