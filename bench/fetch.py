"""Benchmark of the fetch pipeline against the synthetic sky: rate use, and speed unlimited.

Run ``python bench/fetch.py`` (``--quick`` for a smoke run of about a minute). It starts a private
embedded PostgreSQL and, in this process, the synthetic sky on 127.0.0.1; fetch replicas are
separate processes started through the production entry point
(``run_from_settings(Settings.from_env(...), build_fetch_pipeline)``), as a pod runs them.

1. **Rate use**: the sky answers 20 % of requests with 503 and admits
   5 requests/s (its own sliding-window limit; its cutouts pre-rendered, so that rendering does
   not delay the arrival stamps); the shared token bucket runs 1.5 % under that (4.925/s: a
   bucket at exactly the limit puts the span of every 6 arrivals at 1.000 s, and arrival
   jitter of a few ms then turns about one request in six into a 429); two replicas share it.
   Over a window of ``--rate-seconds`` (>= 60 s) after a warm-up, the sky's own log gives the
   requests sent and the cutouts served: ``rate_use`` = requests / (limit x window), target
   >= 0.98; ``success_per_s`` = cutouts served per second, target >= 0.95 x limit x
   (1 - failure ratio) = 3.8/s, and its ratio to the paper's 3.7/s.
2. **Unlimited**: the sky's limit lifted, every cutout pre-rendered so the sky is
   not the bottleneck, the bucket set far above reach, one replica writing to a local object
   store: ``unlimited_per_s`` = galaxies done / (last commit - first request), target >= 300/s.
   A second, diagnostic run with ``synchronous_commit = off`` for the whole database shows what
   waiting for the WAL flush of the per-request bucket and breaker commits costs; the replica's
   CPU per galaxy shows whether one process is CPU-bound.
3. **Profile** of one replica's work, serially in this process under cProfile: where the time
   of one galaxy goes (bucket, breaker, HTTP, FITS checks, store, commit).

The last line is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import multiprocessing
import os
import pstats
import signal
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from _postgres import embedded_postgres
from _proc import process_cpu_seconds
from galpipe.db.breaker import CircuitBreaker
from galpipe.db.connection import open_pool
from galpipe.db.galaxies import insert_galaxies
from galpipe.db.migrate import migrate
from galpipe.db.queue import RetryPolicy, TaskQueue
from galpipe.db.ratelimit import RateLimitPolicy, TokenBucket
from galpipe.pipelines.fetch import (
    BREAKER_VIEW_SECONDS,
    TOKEN_BLOCK_SECONDS,
    FetchPipeline,
    build_fetch_pipeline,
)
from galpipe.pipelines.worker import Worker, run_from_settings
from galpipe.settings import Settings
from galpipe.storage import LocalObjectStore
from galpipe.survey.legacysurvey import CutoutRequest, LegacySurveyClient
from galpipe.synthetic import FaultConfig, SyntheticSky, TruthGalaxy, make_truths

PAPER_SUCCESS_PER_S = 3.7  # the paper's successful galaxies/s at a 5/s limit
TARGET_RATE_USE = 0.98
TARGET_SUCCESS_FRACTION = 0.95  # of limit x (1 - failure ratio)
TARGET_UNLIMITED_PER_S = 300.0
CUTOUT_PATH = "/viewer/fits-cutout"
STOP_TIMEOUT_S = 60.0

# Bench-only fixture SQL (the library's SQL stays under services/galpipe/db/).
COUNT_DONE_SQL = "SELECT count(*) FROM tasks WHERE pipeline = 'fetch' AND state = 'done'"
COMMIT_SPAN_SQL = "SELECT count(*), extract(epoch FROM max(fetched_at)) FROM cutouts"
STATE_COUNTS_SQL = "SELECT state::text, count(*) FROM tasks WHERE pipeline = 'fetch' GROUP BY 1"


# -- fetch replica (child process) -----------------------------------------------------------


def run_replica(env: dict[str, str]) -> None:
    """Child-process target: one fetch replica configured by ``env`` until SIGTERM."""
    run_from_settings(Settings.from_env(env), build_fetch_pipeline)


def replica_env(url: str, sky: SyntheticSky, store_url: str, **extra: str) -> dict[str, str]:
    """``GALPIPE_*`` variables of a replica; ``extra`` overrides (``GALPIPE_`` is prepended)."""
    env = {
        "GALPIPE_DATABASE_URL": url,
        "GALPIPE_OBJECT_STORE": store_url,
        "GALPIPE_CUTOUT_BASE_URL": sky.url,
        "GALPIPE_METRICS_PORT": "0",
        "GALPIPE_LOG_LEVEL": "warning",
        "GALPIPE_POLL_MIN_SECONDS": "0.05",
        "GALPIPE_POLL_MAX_SECONDS": "0.5",
    }
    env.update({f"GALPIPE_{k}": v for k, v in extra.items()})
    return env


class Replicas:
    """Fetch replica processes, stopped with SIGTERM (a pod's graceful shutdown) on exit."""

    def __init__(self, envs: Sequence[dict[str, str]]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.procs = [
            ctx.Process(
                target=run_replica,
                args=({**env, "GALPIPE_WORKER_ID": f"bench-{i}"},),
                name=f"fetch-{i}",
            )
            for i, env in enumerate(envs)
        ]

    def __enter__(self) -> Replicas:
        for proc in self.procs:
            proc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            proc.join(STOP_TIMEOUT_S)
            if proc.is_alive():
                proc.kill()
                proc.join()

    def check_alive(self) -> None:
        dead = [p.name for p in self.procs if not p.is_alive()]
        if dead:
            raise RuntimeError(f"fetch replica(s) {dead} exited early")


# -- setup ------------------------------------------------------------------------------------


def fresh_database(admin_url: str, name: str) -> str:
    """Create and migrate database ``name``; return its connection string."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(admin_url, dbname=name)
    migrate(url)
    return url


def ingest(url: str, truths: Sequence[TruthGalaxy]) -> None:
    """Insert the galaxies with the ingest SQL and queue their fetch tasks, in one transaction."""
    rows = [(i, t.source_id, t.ra, t.dec, "{}") for i, t in enumerate(truths)]
    pool = open_pool(url, max_size=1, name="bench-ingest")
    try:
        with pool.connection() as conn, conn.transaction():
            insert_galaxies(conn, "bench", rows)
            TaskQueue(pool).enqueue("fetch", [t.source_id for t in truths], conn=conn)
    finally:
        pool.close()


def cutout_times(sky: SyntheticSky) -> list[dict[str, Any]]:
    """The sky's log of cutout requests, in arrival order."""
    return sorted(
        (e for e in sky.log if e["path"].startswith(CUTOUT_PATH)), key=lambda e: e["time"]
    )


def wait_for(predicate: Any, timeout_s: float, replicas: Replicas, poll_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        replicas.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s")
        time.sleep(poll_s)


def state_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {str(state): int(n) for state, n in conn.execute(STATE_COUNTS_SQL).fetchall()}


# -- (a) rate use -----------------------------------------------------------------------------


def rate_use(admin_url: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Benchmark (a): requests and successes per second at a 5/s limit with 20 % failures."""
    limit, ratio, window = args.rate, args.failure_ratio, args.rate_seconds
    bucket_rate = limit * args.bucket_fraction
    # Enough galaxies that the queue never runs dry during warm-up + window (+ margin).
    n = math.ceil(limit * (args.warmup_seconds + window + 30))
    url = fresh_database(admin_url, "bench_rate")
    truths = make_truths(n, seed=1)
    ingest(url, truths)
    faults = FaultConfig(error_ratio=ratio, seed=5)
    with SyntheticSky(truths, faults=faults, rate=limit) as sky:
        # Rendering on request would hold the GIL of the process that also timestamps the
        # arrivals; the real service stamps them on machines of its own.
        sky.prerender(workers=os.cpu_count() or 1)
        env = replica_env(
            url,
            sky,
            (tmp / "rate-objects").as_uri(),
            FETCH_RATE_LIMIT=str(bucket_rate),
            FETCH_RATE_BURST="1",
            FETCH_THREADS=str(args.rate_threads),
            FETCH_BATCH_SIZE=str(args.rate_batch),
            RETRY_DELAYS="2,4,8",
        )
        print(
            f"(a) rate use: {args.rate_replicas} replicas x {args.rate_threads} threads, batch "
            f"{args.rate_batch}; sky limit {limit:g}/s, bucket {bucket_rate:g}/s (burst 1), "
            f"{ratio:.0%} answered 503; window {window:g} s after {args.warmup_seconds:g} s "
            "warm-up",
            flush=True,
        )
        with Replicas([env] * args.rate_replicas) as replicas:
            wait_for(lambda: bool(cutout_times(sky)), 120.0, replicas)
            first = cutout_times(sky)[0]["time"]
            start = first + args.warmup_seconds
            end = start + window
            wait_for(lambda: time.time() > end + 1.0, window + 60.0, replicas, poll_s=0.5)
        log = cutout_times(sky)
    counts = state_counts(url)
    in_window = [e for e in log if start <= e["time"] < end]
    served = [e for e in in_window if e["status"] == 200]
    throttled = sum(e["fault"] == "rate-limit" for e in log)
    requests_per_s = len(in_window) / window
    # Pacing: how far each run of limit+1 consecutive arrivals spans beyond the sky's 1-s
    # window (negative: the sky saw more than its limit in a second and answered 429).
    k = int(limit)
    arrivals = [e["time"] for e in in_window]
    slack_ms = sorted((arrivals[i + k] - arrivals[i] - 1.0) * 1e3 for i in range(len(arrivals) - k))
    result = {
        "rate_use": round(requests_per_s / limit, 4),
        "success_per_s": round(len(served) / window, 3),
        "requests_per_s": round(requests_per_s, 3),
        "observed_failure_ratio": round(1 - len(served) / max(1, len(in_window)), 4),
        "server_429": throttled,
        "pacing_slack_ms_p5": round(slack_ms[len(slack_ms) // 20], 1) if slack_ms else None,
        "pacing_slack_ms_p50": round(slack_ms[len(slack_ms) // 2], 1) if slack_ms else None,
        "rate_window_s": window,
        "rate_limit": limit,
        "rate_bucket": bucket_rate,
        "failure_ratio": ratio,
        "rate_states": counts,
        "rate_served_total": sum(e["status"] == 200 for e in log),
    }
    target_success = TARGET_SUCCESS_FRACTION * limit * (1 - ratio)
    print(
        f"  {len(in_window)} requests in {window:g} s = {requests_per_s:.3f}/s; rate use "
        f"{result['rate_use']:.3f} (target >= {TARGET_RATE_USE}); {len(served)} cutouts served "
        f"= {result['success_per_s']:.3f}/s (target >= {target_success:.2f}/s: "
        f"{result['success_per_s'] / target_success:.3f}x; paper {PAPER_SUCCESS_PER_S}/s: "
        f"{result['success_per_s'] / PAPER_SUCCESS_PER_S:.3f}x); server 429s {throttled}; "
        f"{k + 1} consecutive arrivals span 1 s + {result['pacing_slack_ms_p50']} ms (median), "
        f"+ {result['pacing_slack_ms_p5']} ms (5th percentile); tasks {counts}",
        flush=True,
    )
    # Every cutout the sky served was stored and recorded (SIGTERM lets a batch finish).
    if counts.get("done", 0) != result["rate_served_total"]:
        raise RuntimeError(
            f"rate use: the sky served {result['rate_served_total']} cutouts but "
            f"{counts.get('done', 0)} tasks are done"
        )
    result["success_ratio_vs_target"] = round(result["success_per_s"] / target_success, 4)
    result["success_ratio_vs_paper"] = round(result["success_per_s"] / PAPER_SUCCESS_PER_S, 4)
    return result


# -- (b) unlimited ----------------------------------------------------------------------------


@dataclass(frozen=True)
class UnlimitedRun:
    """One replica draining the queue with the limit lifted."""

    label: str
    galaxies: int
    elapsed_s: float
    replica_cpu_s: float
    sky_cpu_s: float

    @property
    def per_s(self) -> float:
        return self.galaxies / self.elapsed_s


def unlimited_run(
    admin_url: str,
    db_name: str,
    sky: SyntheticSky,
    truths: Sequence[TruthGalaxy],
    args: argparse.Namespace,
    store_dir: Path,
    *,
    label: str,
    async_commit: bool = False,
) -> UnlimitedRun:
    """Queue ``truths`` in a fresh database and let one replica drain it against ``sky``."""
    url = fresh_database(admin_url, db_name)
    if async_commit:
        # Diagnostic only: commits stop waiting for the WAL flush (every statement of the
        # database, the task commits too), to show what the per-request commits cost.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(
                    sql.Identifier(db_name)
                )
            )
    ingest(url, truths)
    sky.clear_log()
    env = replica_env(
        url,
        sky,
        store_dir.as_uri(),
        FETCH_RATE_LIMIT="1000000",
        FETCH_RATE_BURST="1000000",
        FETCH_THREADS=str(args.threads),
        FETCH_BATCH_SIZE=str(args.batch),
        DB_POOL_SIZE=str(args.threads + 4),
    )

    def done() -> int:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(COUNT_DONE_SQL).fetchone()
        return int(row[0]) if row else 0

    sky_cpu = time.process_time()
    with Replicas([env]) as replicas:
        wait_for(lambda: done() >= len(truths), 600.0, replicas, poll_s=0.2)
        replica_cpu = sum(process_cpu_seconds(p.pid) for p in replicas.procs if p.pid)
    sky_cpu = time.process_time() - sky_cpu
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(COMMIT_SPAN_SQL).fetchone()
    stored, last_commit = (int(row[0]), float(row[1])) if row else (0, math.nan)
    run = UnlimitedRun(
        label, stored, last_commit - cutout_times(sky)[0]["time"], replica_cpu, sky_cpu
    )
    print(
        f"  {label:<34} {stored} galaxies in {run.elapsed_s:6.2f} s (first request to last "
        f"commit) = {run.per_s:7,.1f}/s ({run.per_s / TARGET_UNLIMITED_PER_S:.3f}x target "
        f"{TARGET_UNLIMITED_PER_S:g}/s); CPU per galaxy: replica "
        f"{replica_cpu / stored * 1e3:.2f} ms, sky {sky_cpu / stored * 1e3:.2f} ms",
        flush=True,
    )
    return run


def unlimited(admin_url: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Benchmark (b): one replica, limit lifted, pre-rendered sky, local object store.

    A second run, with asynchronous commit for the whole database, is a diagnostic: the gap
    between the two is what waiting for the WAL flush of each committed statement costs.
    """
    n = args.unlimited_galaxies
    truths = make_truths(n, seed=2)
    with SyntheticSky(truths, rate=0) as sky:
        t0 = time.monotonic()
        sky.prerender(workers=os.cpu_count() or 1)
        print(
            f"(b) unlimited: {n} cutouts pre-rendered in {time.monotonic() - t0:.1f} s; one "
            f"replica x {args.threads} threads, batch {args.batch}, local object store, "
            f"{os.cpu_count()} CPUs shared with the sky and PostgreSQL",
            flush=True,
        )
        main = unlimited_run(
            admin_url, "bench_unlimited", sky, truths, args, tmp / "unlimited", label="as built"
        )
        diagnostic = unlimited_run(
            admin_url,
            "bench_unlimited_async",
            sky,
            truths,
            args,
            tmp / "unlimited-async",
            label="diagnostic: synchronous_commit=off",
            async_commit=True,
        )
        renders = sky.renders
    if renders:
        print(f"  (the sky rendered {renders} cutouts on request)", flush=True)
    return {
        "unlimited_per_s": round(main.per_s, 1),
        "unlimited_ratio_vs_target": round(main.per_s / TARGET_UNLIMITED_PER_S, 4),
        "unlimited_galaxies": main.galaxies,
        "unlimited_elapsed_s": round(main.elapsed_s, 2),
        "unlimited_threads": args.threads,
        "unlimited_batch": args.batch,
        "unlimited_replica_cpu_ms_per_galaxy": round(main.replica_cpu_s / main.galaxies * 1e3, 3),
        "unlimited_sky_cpu_ms_per_galaxy": round(main.sky_cpu_s / main.galaxies * 1e3, 3),
        "unlimited_async_commit_per_s": round(diagnostic.per_s, 1),
        "unlimited_async_commit_replica_cpu_ms_per_galaxy": round(
            diagnostic.replica_cpu_s / diagnostic.galaxies * 1e3, 3
        ),
    }


# -- (c) profile --------------------------------------------------------------------------------


class _InlineExecutor:
    """Runs ``map`` in the calling thread, so that cProfile sees the pipeline's work."""

    def map(self, fn: Any, items: Iterable[Any]) -> Iterator[Any]:
        return map(fn, items)

    def shutdown(self, wait: bool = True) -> None:
        return None


# Functions whose cumulative time is reported per galaxy: (label, file suffix, function name).
PROFILE_PARTS = (
    ("claim (per galaxy)", "db/queue.py", "claim_batch"),
    ("breaker.allow", "db/breaker.py", "allow"),
    ("bucket.acquire", "db/ratelimit.py", "acquire"),
    ("client.fetch (HTTP + checks)", "survey/legacysurvey.py", "fetch"),
    ("  classify_response (FITS checks)", "survey/legacysurvey.py", "classify_response"),
    ("  astropy WCS (deferred: built on first use)", "survey/cutout.py", "_build_wcs"),
    ("breaker.record_success", "db/breaker.py", "record_success"),
    ("store put + read-back (_keep)", "pipelines/fetch.py", "_keep"),
    ("  LocalObjectStore.put (fsync)", "galpipe/storage/local.py", "put"),
    ("commit (per galaxy)", "galpipe/pipelines/worker.py", "_commit"),
)


def profile(admin_url: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """cProfile of one replica's loop run serially in this process; ms per galaxy by part."""
    n = args.profile_galaxies
    url = fresh_database(admin_url, "bench_profile")
    truths = make_truths(n, seed=3)
    ingest(url, truths)
    pool = open_pool(url, max_size=4, name="bench-profile")
    with SyntheticSky(truths, rate=0) as sky:
        sky.prerender(workers=os.cpu_count() or 1)
        client = LegacySurveyClient(CutoutRequest(base_url=sky.url))
        pipeline = FetchPipeline(
            pool=pool,
            client=client,
            store=LocalObjectStore(tmp / "profile-objects"),
            bucket=TokenBucket(
                pool, "fetch", RateLimitPolicy(1e6, 1e6), block_seconds=TOKEN_BLOCK_SECONDS
            ),
            breaker=CircuitBreaker(pool, "fetch", view_seconds=BREAKER_VIEW_SECONDS),
            owner="profile",
            batch_size=args.batch,
            threads=1,
        )
        pipeline.close()
        pipeline._executor = _InlineExecutor()  # type: ignore[assignment]
        worker = Worker(pipeline, TaskQueue(pool, RetryPolicy()), owner="profile")
        profiler = cProfile.Profile()
        t0 = time.perf_counter()
        profiler.enable()
        while worker.run_once():
            pass
        profiler.disable()
        wall = time.perf_counter() - t0
        pipeline.breaker.flush()
        client.close()
    pool.close()
    stats = pstats.Stats(profiler)
    per_galaxy_ms = wall / n * 1e3
    print(
        f"(c) profile: one replica's loop serially in this process, {n} galaxies in "
        f"{wall:.2f} s = {per_galaxy_ms:.2f} ms per galaxy (cumulative ms per galaxy):",
        flush=True,
    )
    parts: dict[str, float] = {}
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for label, suffix, func in PROFILE_PARTS:
        cumulative = sum(
            ct
            for (path, _, name), (_, _, _, ct, _) in table.items()
            if name == func and path.endswith(suffix)
        )
        parts[label.strip()] = round(cumulative / n * 1e3, 3)
        print(f"  {label:<36} {cumulative / n * 1e3:7.3f} ms", flush=True)
    buffer = io.StringIO()
    pstats.Stats(profiler, stream=buffer).sort_stats("tottime").print_stats(12)
    top = [line for line in buffer.getvalue().splitlines() if line.strip()][-13:]
    print("  top functions by own time:")
    for line in top:
        print("   " + line[:150])
    return {"profile_ms_per_galaxy": round(per_galaxy_ms, 3), "profile_parts_ms": parts}


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows, fewer galaxies")
    parser.add_argument("--rate", type=float, default=5.0, help="limit of (a), requests/s")
    parser.add_argument(
        "--bucket-fraction",
        type=float,
        default=0.985,
        help="bucket rate of (a) as a fraction of the sky's hard limit: the margin that "
        "absorbs arrival jitter against a sliding 1-s window (the rate-use target is 0.98)",
    )
    parser.add_argument("--failure-ratio", type=float, default=0.2, help="503 ratio of (a)")
    parser.add_argument("--rate-seconds", type=float, default=60.0, help="window of (a), s")
    parser.add_argument("--warmup-seconds", type=float, default=5.0, help="before the window")
    parser.add_argument("--rate-replicas", type=int, default=2)
    parser.add_argument("--rate-threads", type=int, default=8)
    parser.add_argument("--rate-batch", type=int, default=32)
    parser.add_argument("--unlimited-galaxies", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=16, help="threads of the (b) replica")
    parser.add_argument("--batch", type=int, default=128, help="batch of the (b) replica")
    parser.add_argument("--profile-galaxies", type=int, default=500)
    parser.add_argument("--skip", choices=("rate", "unlimited", "profile"), action="append")
    args = parser.parse_args(argv)
    if args.quick:
        args.rate_seconds = min(args.rate_seconds, 15.0)
        args.unlimited_galaxies = min(args.unlimited_galaxies, 800)
        args.profile_galaxies = min(args.profile_galaxies, 200)
    args.skip = set(args.skip or ())
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    result: dict[str, Any] = {"quick": args.quick, "cpus": os.cpu_count()}
    with embedded_postgres("galpipe-bench-fetch-") as (admin, tmp):
        if "rate" not in args.skip:
            result.update(rate_use(admin, args, tmp))
        if "unlimited" not in args.skip:
            result.update(unlimited(admin, args, tmp))
        if "profile" not in args.skip:
            result.update(profile(admin, args, tmp))
    result["bench_wall_s"] = round(time.monotonic() - started, 1)
    print("RESULT " + json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
