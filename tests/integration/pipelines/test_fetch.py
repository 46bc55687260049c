"""The fetch pipeline end to end: real PostgreSQL, the synthetic sky on loopback, S3 (moto) or disk.

The fleet tests start fetch worker *processes* through the production entry point
(``run_from_settings(Settings.from_env(...), build_fetch_pipeline)``), inject the service's
failures with the synthetic sky and check the outcome from the outside: the task table, the
``cutouts`` rows, the objects in the store (read back and hashed), the shared breaker as seen by
another process, and the synthetic sky's own request log. The focused tests run one worker in
this process, so they can look at one behaviour at a time.
"""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from prometheus_client import REGISTRY
from psycopg_pool import ConnectionPool

from galpipe.db.breaker import CLOSED, OPEN, BreakerPolicy, CircuitBreaker
from galpipe.db.connection import open_pool
from galpipe.db.cutouts import CutoutRecord, cutouts_for
from galpipe.db.galaxies import insert_galaxies
from galpipe.db.queue import RetryPolicy, TaskQueue
from galpipe.db.ratelimit import RateLimitPolicy, TokenBucket, bucket_usages
from galpipe.pipelines.fetch import (
    BREAKER_VIEW_SECONDS,
    TOKEN_BLOCK_SECONDS,
    FetchPipeline,
    build_fetch_pipeline,
)
from galpipe.pipelines.stored_cutouts import decode_cutout
from galpipe.pipelines.worker import Worker, run_from_settings
from galpipe.settings import Settings
from galpipe.storage import LocalObjectStore, ObjectStore, S3ObjectStore
from galpipe.survey.cutout import parse_cutout
from galpipe.survey.layout import BANDS
from galpipe.survey.legacysurvey import CutoutRequest, LegacySurveyClient
from galpipe.synthetic import (
    BlankRegion,
    FaultConfig,
    SyntheticSky,
    TruthGalaxy,
    make_truths,
    max_in_window,
    truth_for,
)

TERMINAL = ("done", "failed", "skipped")
NORTH_WITHOUT_I_DEC = 32.375  # FaultConfig's default: ls-dr10 north of this has no i band
CUTOUT_PATH = "/viewer/fits-cutout"

# The fleet tests' knobs. L is high enough that 2,000 galaxies (plus their retries and a 10-s
# outage) take well under a minute; everything that shares the limit is set to it.
RATE_LIMIT = 100.0
READ_TIMEOUT_S = 0.5
BURST = 1  # tokens: the bucket's capacity after an idle spell
# The fleet's shared bucket runs 5 % under the server's limit, as a deployment should: a
# request leaves its thread a few ms after its token is due, so a bucket at exactly L lets
# scheduler jitter crowd a 1-s window at the server past L.
BUCKET_RATE = 0.95 * RATE_LIMIT
JITTER_S = 0.05  # allowance for a request leaving after its token's due time (loaded host), s
TIMEOUT_HOLD_S = 0.6  # the server holds a "timeout" just longer than the client waits
MAX_RETRIES = 3
RETRY_DELAYS = (0.2, 0.4, 0.8)
FLEET_WORKERS = 2
FLEET_THREADS = 8
BREAKER_FAILURES = 12  # 0.27**12 ~ 1.5e-7: transient faults alone never open it
BREAKER_COOLDOWN_S = 2.0
OUTAGE_S = 10.0
PARSE_EVERY = 10  # stored cutouts parsed back: one in this many (every one is hashed)

# Blank sky for the fleet tests: a box answered as all-zero cubes (skipped at once) and a box
# answered with HTTP 500 (skipped once the retries are spent).
ZEROS_BOX = BlankRegion(100.0, 101.0, 0.0, 1.0, "zeros")
HTTP500_BOX = BlankRegion(200.0, 201.0, 0.0, 1.0, "http500")


# --------------------------------------------------------------------------------------------
# Helpers shared by the tests


def blank_truths(n_each: int, first_id: int = 1) -> list[TruthGalaxy]:
    """``n_each`` galaxies inside each blank box, with small ids (make_truths uses >= 2**40)."""
    truths = []
    for i in range(n_each):
        offset = (i + 0.5) / n_each
        truths.append(truth_for(first_id + i, ZEROS_BOX.ra_min + offset, 0.5))
        truths.append(truth_for(first_id + n_each + i, HTTP500_BOX.ra_min + offset, 0.5))
    return truths


def ingest(pool: ConnectionPool, truths: Sequence[TruthGalaxy]) -> list[int]:
    """Insert the galaxies with the ingest SQL and queue their fetch tasks; return the ids."""
    rows = [(i, t.source_id, t.ra, t.dec, "{}") for i, t in enumerate(truths)]
    queue = TaskQueue(pool)
    with pool.connection() as conn, conn.transaction():
        outcome = insert_galaxies(conn, "test", rows)
        queued = queue.enqueue("fetch", [t.source_id for t in truths], conn=conn)
    assert outcome.inserted == queued == len(truths)
    return [t.source_id for t in truths]


@dataclass(frozen=True)
class TaskRow:
    state: str
    attempts: int
    last_error: str | None


def fetch_tasks(pool: ConnectionPool, pipeline: str = "fetch") -> dict[int, TaskRow]:
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT source_id, state::text, attempts, last_error FROM tasks WHERE pipeline = %s",
            (pipeline,),
        ).fetchall()
    return {sid: TaskRow(state, attempts, error) for sid, state, attempts, error in rows}


def all_cutouts(pool: ConnectionPool) -> dict[int, CutoutRecord]:
    with pool.connection() as conn:
        ids = [r[0] for r in conn.execute("SELECT source_id FROM cutouts").fetchall()]
        return cutouts_for(conn, ids)


def cutout_log(sky: SyntheticSky) -> list[dict[str, Any]]:
    """The sky's log entries of cutout requests (admin calls are not logged anyway)."""
    return [e for e in sky.log if e["path"].startswith(CUTOUT_PATH)]


def key_function(request: CutoutRequest) -> Callable[[int], str]:
    """The pipeline's deterministic key for ``request``, from a pipeline object never run."""
    pipeline = FetchPipeline.__new__(FetchPipeline)
    pipeline.client = LegacySurveyClient(request)
    return pipeline.object_key


def check_terminal_outcomes(
    pool: ConnectionPool,
    store: ObjectStore,
    request: CutoutRequest,
    truths: Sequence[TruthGalaxy],
    max_retries: int,
) -> dict[int, TaskRow]:
    """The assertions every fleet run must pass; returns the final fetch tasks."""
    tasks = fetch_tasks(pool)
    assert set(tasks) == {t.source_id for t in truths}
    unfinished = {sid: r for sid, r in tasks.items() if r.state not in TERMINAL}
    assert not unfinished, (
        f"{len(unfinished)} tasks not finished, e.g. {list(unfinished.items())[:3]}"
    )
    # Every try is counted, and none past the limit.
    assert max(r.attempts for r in tasks.values()) <= 1 + max_retries
    assert min(r.attempts for r in tasks.values()) >= 1
    # Terminal failures say why.
    for sid, row in tasks.items():
        if row.state in ("failed", "skipped"):
            assert row.last_error, f"task {sid} is {row.state} without a reason"
    done = {sid for sid, r in tasks.items() if r.state == "done"}
    cutouts = all_cutouts(pool)
    assert set(cutouts) == done
    # Each done galaxy's object is where the key says, and is the bytes that were recorded.
    by_id = {t.source_id: t for t in truths}
    object_key = key_function(request)
    for n, (sid, record) in enumerate(sorted(cutouts.items())):
        assert record.object_key == object_key(sid)
        data = store.get(record.object_key, record.sha256)  # raises unless the sha256 matches
        assert len(data) == record.nbytes
        north = by_id[sid].dec >= NORTH_WITHOUT_I_DEC
        assert record.missing_bands == ("i" if north else "")
        if n % PARSE_EVERY == 0:  # parsing costs ~2 ms; a sample shows the bytes are the cube
            cutout = parse_cutout(data, bands=request.bands, size=request.size)
            assert cutout.missing_bands == (("i",) if north else ())
    # The next stage is queued for exactly the fetched galaxies.
    assert set(fetch_tasks(pool, "radon")) == done
    return tasks


# --------------------------------------------------------------------------------------------
# Fleet: worker processes through the production entry point


def run_fetch_worker(env: dict[str, str]) -> None:
    """Child-process target: one fetch replica, configured like a pod, until SIGTERM."""
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    run_from_settings(Settings.from_env(env), build_fetch_pipeline)


def fleet_env(
    database_url: str, sky: SyntheticSky, object_store: str, **extra: str
) -> dict[str, str]:
    """``GALPIPE_*`` variables of a fetch replica in the fleet tests."""
    env = {
        "GALPIPE_DATABASE_URL": database_url,
        "GALPIPE_OBJECT_STORE": object_store,
        "GALPIPE_CUTOUT_BASE_URL": sky.url,
        "GALPIPE_CUTOUT_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT_S),
        "GALPIPE_CUTOUT_CONNECT_TIMEOUT_SECONDS": "2",
        "GALPIPE_FETCH_RATE_LIMIT": str(BUCKET_RATE),
        "GALPIPE_FETCH_RATE_BURST": str(BURST),
        "GALPIPE_FETCH_THREADS": str(FLEET_THREADS),
        "GALPIPE_FETCH_BATCH_SIZE": "32",
        "GALPIPE_MAX_RETRIES": str(MAX_RETRIES),
        "GALPIPE_RETRY_DELAYS": ",".join(str(d) for d in RETRY_DELAYS),
        "GALPIPE_BREAKER_FAILURES": str(BREAKER_FAILURES),
        "GALPIPE_BREAKER_FAILURE_RATIO": "0.6",
        "GALPIPE_BREAKER_MIN_REQUESTS": "50",
        "GALPIPE_BREAKER_WINDOW_SECONDS": "5",
        "GALPIPE_BREAKER_COOLDOWN_SECONDS": str(BREAKER_COOLDOWN_S),
        "GALPIPE_BREAKER_PROBE_TIMEOUT_SECONDS": "5",
        "GALPIPE_DB_POOL_SIZE": str(FLEET_THREADS + 4),
        "GALPIPE_POLL_MIN_SECONDS": "0.05",
        "GALPIPE_POLL_MAX_SECONDS": "0.2",
        "GALPIPE_METRICS_PORT": "0",
        "GALPIPE_LOG_LEVEL": "warning",
    }
    env.update(extra)
    return env


@dataclass
class FleetRun:
    """What the parent saw while a fleet drained the queue."""

    wall_s: float
    breaker_states: list[tuple[float, str]] = field(default_factory=list)
    """``(unix time, state)`` samples of the shared breaker, read from this process."""
    outage: tuple[float, float] | None = None
    """Unix start and end of the injected outage."""


def run_fleet(
    pool: ConnectionPool,
    sky: SyntheticSky,
    env: dict[str, str],
    total: int,
    *,
    workers: int = FLEET_WORKERS,
    outage_after: int | None = None,
    timeout_s: float = 90.0,
) -> FleetRun:
    """Run ``workers`` replicas until every fetch task is terminal, then SIGTERM them.

    ``outage_after``: once that many tasks are done, the sky goes down for ``OUTAGE_S``.
    """
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(
            target=run_fetch_worker,
            args=({**env, "GALPIPE_WORKER_ID": f"fetch-{i}"},),
            name=f"fetch-{i}",
        )
        for i in range(workers)
    ]
    breaker = CircuitBreaker(pool, "fetch")
    run = FleetRun(wall_s=0.0)
    watching = threading.Event()

    def watch_breaker() -> None:
        while not watching.wait(0.05):
            run.breaker_states.append((time.time(), breaker.status().state))

    watcher = threading.Thread(target=watch_breaker, name="breaker-watch", daemon=True)
    started = time.monotonic()
    for proc in procs:
        proc.start()
    watcher.start()
    try:
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            states = [r.state for r in fetch_tasks(pool).values()]
            finished = sum(s in TERMINAL for s in states)
            if outage_after is not None and run.outage is None and finished >= outage_after:
                begin = time.time()
                sky.start_outage(OUTAGE_S)
                run.outage = (begin, begin + OUTAGE_S)
            if finished == total and (outage_after is None or run.outage is not None):
                break
            assert all(p.is_alive() for p in procs), "a fetch worker died"
            time.sleep(0.2)
        run.wall_s = time.monotonic() - started
    finally:
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join()
        watching.set()
        watcher.join()
    # A replica told to stop finishes its batch and exits 0 (a pod's graceful shutdown).
    assert [p.exitcode for p in procs] == [0] * workers
    return run


def fault_config(**extra: Any) -> FaultConfig:
    """The fleet's transient faults: 20 % 503, 5 % timeouts, 2 % corrupt bodies."""
    return FaultConfig(
        error_ratio=0.20,
        timeout_ratio=0.05,
        timeout_sleep_s=TIMEOUT_HOLD_S,
        corrupt_ratio=0.02,
        blank_regions=(ZEROS_BOX, HTTP500_BOX),
        seed=4,
        **extra,
    )


def check_rate_and_blanks(
    sky: SyntheticSky, tasks: dict[int, TaskRow], blanks: Sequence[TruthGalaxy]
) -> list[dict[str, Any]]:
    """Server-side checks every fleet run passes; returns the cutout request log."""
    log = cutout_log(sky)
    times = sorted(e["time"] for e in log)
    span = times[-1] - times[0]
    print(
        json.dumps(
            {
                "requests": len(log),
                "span_s": round(span, 1),
                "mean_rate": round(len(log) / span, 1),
                "max_per_1s": max_in_window(times, 1.0),
                "rate_limit_429": sum(e["fault"] == "rate-limit" for e in log),
                "states": {s: sum(r.state == s for r in tasks.values()) for s in TERMINAL},
            }
        )
    )
    # The server saw every attempt the table counts (a timeout is logged on arrival too).
    assert len(log) == sum(r.attempts for r in tasks.values())
    # The shared bucket held the whole fleet to the limit, by the server's own log: it grants
    # at most burst + L * t tokens in t seconds, and a request leaves a few ms after its grant
    # (thread wake-up on a loaded machine), which may crowd one more into a 1-s window.
    admitted = [e["time"] for e in log if e["fault"] != "rate-limit"]
    assert max_in_window(admitted, 1.0) <= RATE_LIMIT
    assert max_in_window(times, 1.0) <= RATE_LIMIT + BURST + math.ceil(RATE_LIMIT * JITTER_S)
    # Those crowded windows are the sky's own 429s: rare, and retried like any 429.
    assert sum(e["fault"] == "rate-limit" for e in log) <= 5 + 0.01 * len(log)
    # The injected faults all happened, so the retries above were really exercised.
    faults = {e["fault"] for e in log}
    assert {"error", "timeout", "corrupt", "blank"} <= faults
    for truth in blanks:
        row = tasks[truth.source_id]
        if ZEROS_BOX.contains(truth.ra, truth.dec):
            # Blank planes are an answer: skipped as soon as one arrives. Faults before it are
            # retried like any other; only a galaxy that drew one on every try fails.
            if row.state == "skipped":
                assert (row.last_error or "").startswith("no coverage")
            else:
                assert (row.state, row.attempts) == ("failed", 1 + MAX_RETRIES), (truth, row)
        else:
            # HTTP 500 is retried to the limit; if the last try drew another fault instead of
            # the 500, the galaxy fails with that fault as its reason.
            assert row.attempts == 1 + MAX_RETRIES, (truth, row)
            assert row.state in ("skipped", "failed"), (truth, row)
            if row.state == "skipped":
                assert "HTTP 500" in (row.last_error or "")
    return log


@pytest.fixture
def sky_factory() -> Iterator[Callable[..., SyntheticSky]]:
    """Start synthetic skies on 127.0.0.1; every one is stopped at teardown."""
    started: list[SyntheticSky] = []

    def start(truths: Sequence[TruthGalaxy], **kwargs: Any) -> SyntheticSky:
        sky = SyntheticSky(truths, **kwargs)
        started.append(sky)
        return sky.start()

    yield start
    for sky in started:
        sky.stop()


N_FLEET_S3 = 2000


def test_fleet_on_s3_survives_faults_and_an_outage(
    database_url: str,
    sky_factory: Callable[..., SyntheticSky],
    s3_client,
    bucket: str,
    moto_endpoint: str,
) -> None:
    """The fleet's scenario: 2,000 galaxies, 20 % 503, 5 % timeouts, 2 % corrupt, a 10-s outage."""
    blanks = blank_truths(5)
    truths = make_truths(N_FLEET_S3 - len(blanks), seed=11) + blanks
    sky = sky_factory(truths, faults=fault_config(), rate=RATE_LIMIT)
    rendered = time.monotonic()
    sky.prerender(workers=2)
    print(f"prerendered {len(truths)} cutouts in {time.monotonic() - rendered:.1f} s")
    pool = open_pool(database_url, max_size=4)
    try:
        ingest(pool, truths)
        prefix = "galpipe"
        env = fleet_env(
            database_url,
            sky,
            f"s3://{bucket}/{prefix}",
            GALPIPE_S3_ENDPOINT_URL=moto_endpoint,
        )
        run = run_fleet(pool, sky, env, len(truths), outage_after=len(truths) // 4)
        print(f"fleet drained the queue in {run.wall_s:.1f} s")
        store = S3ObjectStore(s3_client, bucket, prefix)
        request = CutoutRequest(base_url=sky.url)
        tasks = check_terminal_outcomes(pool, store, request, truths, MAX_RETRIES)
        log = check_rate_and_blanks(sky, tasks, blanks)

        # No object stored twice: the bucket holds exactly one key per cutouts row.
        pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        keys = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
        rows = all_cutouts(pool)
        assert len(keys) == len(set(keys)) == len(rows)
        assert set(keys) == {f"{prefix}/{r.object_key}" for r in rows.values()}

        # The breaker opened during the outage, and closed by itself after it. It may open
        # again at the very end: the last requests of a run are mostly the HTTP-500 box's
        # retries, which always fail, and with nothing left to fetch no probe closes it.
        assert run.outage is not None
        begin, end = run.outage
        during = [s for t, s in run.breaker_states if begin <= t <= end]
        assert OPEN in during
        closed_at = [t for t, s in run.breaker_states if t > end and s == CLOSED]
        assert closed_at, "the breaker never closed after the outage"
        # A probe goes out once per cooldown and passes unless it draws a transient fault.
        assert closed_at[0] - end <= 5 * BREAKER_COOLDOWN_S, closed_at[0] - end
        # While it was open only probes went out: a handful of 503s, not ~L per second.
        outage_hits = [e for e in log if e["fault"] == "outage"]
        in_flight = FLEET_WORKERS * FLEET_THREADS
        probes = math.ceil(OUTAGE_S / BREAKER_COOLDOWN_S) + 1
        # Before it opens: the failures that open it plus what was in flight (twice over: a
        # thread may have its next token already); then one probe per cooldown. Without the
        # breaker the fleet would have sent about L * OUTAGE_S = 1,000.
        assert len(outage_hits) <= BREAKER_FAILURES + 2 * in_flight + probes, len(outage_hits)
        done = sum(r.state == "done" for r in tasks.values())
        print(
            json.dumps(
                {
                    "galaxies": len(truths),
                    "wall_s": round(run.wall_s, 1),
                    "requests": len(log),
                    "done": done,
                    "failed": sum(r.state == "failed" for r in tasks.values()),
                    "skipped": sum(r.state == "skipped" for r in tasks.values()),
                    "outage_requests": len(outage_hits),
                    "max_per_1s": max_in_window([e["time"] for e in log], 1.0),
                    "breaker_after_outage_s": [
                        (round(t - end, 1), s)
                        for (_, before), (t, s) in itertools.pairwise(run.breaker_states)
                        if s != before and t > end
                    ],
                }
            )
        )
        # Transient faults are rare enough that nearly every galaxy makes it.
        assert done >= 0.97 * (len(truths) - len(blanks))
    finally:
        pool.close()


def test_fleet_on_a_local_store(
    database_url: str, sky_factory: Callable[..., SyntheticSky], tmp_path: Path
) -> None:
    """The same checks with the local object store, without an outage, on fewer galaxies."""
    blanks = blank_truths(3)
    truths = make_truths(300, seed=12) + blanks
    sky = sky_factory(truths, faults=fault_config(), rate=RATE_LIMIT)
    root = tmp_path / "objects"
    pool = open_pool(database_url, max_size=4)
    try:
        ingest(pool, truths)
        env = fleet_env(database_url, sky, root.as_uri())
        run_fleet(pool, sky, env, len(truths))
        store = LocalObjectStore(root)
        tasks = check_terminal_outcomes(
            pool, store, CutoutRequest(base_url=sky.url), truths, MAX_RETRIES
        )
        check_rate_and_blanks(sky, tasks, blanks)
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        assert files == sorted(r.object_key for r in all_cutouts(pool).values())
    finally:
        pool.close()


# --------------------------------------------------------------------------------------------
# Focused tests: one worker in this process


@dataclass
class Rig:
    """One fetch worker and what it talks to, in this process."""

    pool: ConnectionPool
    queue: TaskQueue
    pipeline: FetchPipeline
    worker: Worker
    store: ObjectStore
    breaker: CircuitBreaker

    def drive(self, ids: Sequence[int], timeout_s: float = 20.0) -> dict[int, TaskRow]:
        """Run batches until every task of ``ids`` is terminal; return the tasks."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            tasks = fetch_tasks(self.pool)
            if all(tasks[i].state in TERMINAL for i in ids):
                return tasks
            if self.worker.run_once() == 0:
                time.sleep(0.02)
        raise AssertionError(f"tasks not finished after {timeout_s} s: {fetch_tasks(self.pool)}")


@pytest.fixture
def rig_factory(database_url: str, tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []
    pool = open_pool(database_url, max_size=10)

    def make(
        sky: SyntheticSky,
        *,
        layer: str = "ls-dr10",
        threads: int = 4,
        max_retries: int = 3,
        cooldown_s: float = 30.0,
        breaker_failures: int = 5,
        breaker_failure_ratio: float = 0.5,
        invvar: bool = False,
    ) -> Rig:
        stop = threading.Event()
        request = CutoutRequest(base_url=sky.url, layer=layer, invvar=invvar)
        client = LegacySurveyClient(request, read_timeout=READ_TIMEOUT_S)
        bucket = TokenBucket(pool, "fetch", RateLimitPolicy(RATE_LIMIT, BURST))
        bucket.configure()
        policy = BreakerPolicy(
            failures=breaker_failures,
            failure_ratio=breaker_failure_ratio,
            cooldown_seconds=cooldown_s,
        )
        breaker = CircuitBreaker(pool, "fetch", policy)
        store = LocalObjectStore(tmp_path / "objects")
        pipeline = FetchPipeline(
            pool=pool,
            client=client,
            store=store,
            bucket=bucket,
            breaker=breaker,
            owner="rig",
            threads=threads,
            max_retries=max_retries,
            stop=stop,
        )
        queue = TaskQueue(pool, RetryPolicy(max_retries=max_retries, delays=(0.05,)))
        worker = Worker(pipeline, queue, owner="rig", lease_seconds=60.0, stop_event=stop)
        rig = Rig(pool, queue, pipeline, worker, store, breaker)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.pipeline.close()
        rig.pipeline.client.close()
    pool.close()


def test_a_429_delays_the_task_by_its_retry_after(
    rig_factory: Callable[..., Rig], sky_factory: Callable[..., SyntheticSky]
) -> None:
    truth = truth_for(7, 30.0, 5.0)
    # The server's own limit, one request per 2 s: the test spends it, so the worker's request
    # is answered 429 with Retry-After: 2, far longer than the policy's 0.05-s retry delay.
    sky = sky_factory([truth], rate=0.5)
    rig = rig_factory(sky)
    ingest(rig.pool, [truth])
    spent = requests.get(
        sky.url + CUTOUT_PATH, params=CutoutRequest().params(truth.ra, truth.dec), timeout=5
    )
    assert spent.status_code == 200
    tasks = rig.drive([7])
    assert tasks[7] == TaskRow("done", 2, None)
    spent_log, throttled, retried = cutout_log(sky)
    assert spent_log["status"] == 200
    assert (throttled["status"], throttled["fault"]) == (429, "rate-limit")
    assert retried["status"] == 200
    assert retried["time"] - throttled["time"] >= 2.0


def test_corrupt_and_truncated_bodies_are_retried_until_a_good_one_arrives(
    rig_factory: Callable[..., Rig], sky_factory: Callable[..., SyntheticSky]
) -> None:
    truths = [truth_for(100 + i, 40.0 + i, -10.0) for i in range(12)]
    faults = FaultConfig(corrupt_ratio=0.2, truncated_ratio=0.2, seed=3)
    sky = sky_factory(truths, faults=faults, rate=0)
    # Enough retries that no galaxy draws a bad body on every try (0.4**9 ~ 3e-4), and a
    # breaker that a run of bad bodies does not open (that is not an outage).
    rig = rig_factory(sky, max_retries=8, breaker_failures=100, breaker_failure_ratio=1.0)
    ids = ingest(rig.pool, truths)
    tasks = rig.drive(ids)
    assert {r.state for r in tasks.values()} == {"done"}
    log = cutout_log(sky)
    bad = [e for e in log if e["fault"] in ("corrupt", "truncated")]
    assert {e["fault"] for e in bad} == {"corrupt", "truncated"}
    # Each bad answer cost exactly one extra attempt, and none of its bytes was kept.
    assert sum(r.attempts for r in tasks.values()) == len(ids) + len(bad) == len(log)
    for sid, record in all_cutouts(rig.pool).items():
        data = rig.store.get(record.object_key, record.sha256)
        cutout = parse_cutout(data, bands="griz", size=40)
        assert cutout.header["SURVEY"] == record.survey
        assert record.nbytes == len(data)
        assert sid in ids


def test_the_north_i_band_gap_is_recorded_not_fatal(
    rig_factory: Callable[..., Rig], sky_factory: Callable[..., SyntheticSky]
) -> None:
    north, south = truth_for(21, 150.0, 40.0), truth_for(22, 150.0, 10.0)
    sky = sky_factory([north, south], rate=0)
    rig = rig_factory(sky)
    tasks = rig.drive(ingest(rig.pool, [north, south]))
    assert tasks[21].state == tasks[22].state == "done"
    cutouts = all_cutouts(rig.pool)
    assert cutouts[21].missing_bands == "i"
    assert cutouts[22].missing_bands == ""
    data = rig.store.get(cutouts[21].object_key, cutouts[21].sha256)
    cube = parse_cutout(data, bands="griz", size=40).data
    assert not cube[2].any()
    assert cube[[0, 1, 3]].any()


def test_the_inverse_variance_is_fetched_kept_and_read_as_each_pixels_error(
    rig_factory: Callable[..., Rig], sky_factory: Callable[..., SyntheticSky]
) -> None:
    north, south = truth_for(23, 150.0, 40.0), truth_for(24, 150.0, 10.0)
    truths = [north, south] + [truth_for(200 + i, 60.0 + i, -20.0) for i in range(10)]
    # Bodies cut in half lose the whole inverse-variance HDU: retried like any short body.
    faults = FaultConfig(truncated_ratio=0.3, truncate_mode="short", seed=5)
    sky = sky_factory(truths, faults=faults, rate=0)
    rig = rig_factory(sky, invvar=True, max_retries=8, breaker_failures=100)
    ids = ingest(rig.pool, truths)
    tasks = rig.drive(ids)
    assert {r.state for r in tasks.values()} == {"done"}
    log = cutout_log(sky)
    assert all("invvar=" in e["path"] for e in log)
    assert any(e["fault"] == "truncated" for e in log)
    for truth in (north, south):
        record = all_cutouts(rig.pool)[truth.source_id]
        decoded = decode_cutout(rig.store.get(record.object_key, record.sha256), 40)
        assert decoded.error_source == "invvar"
        assert decoded.errors is not None
        for index, band in enumerate(BANDS):
            if truth is north and band == "i":
                assert np.isinf(decoded.errors[index]).all()  # no exposure: no data
            else:
                np.testing.assert_allclose(decoded.errors[index], truth.sky_sigma[band], rtol=1e-6)


def test_an_unknown_layer_fails_at_once(
    rig_factory: Callable[..., Rig], sky_factory: Callable[..., SyntheticSky]
) -> None:
    truth = truth_for(31, 10.0, 10.0)
    sky = sky_factory([truth], rate=0)
    rig = rig_factory(sky, layer="ls-dr99")
    tasks = rig.drive(ingest(rig.pool, [truth]))
    assert tasks[31].state == "failed"
    assert tasks[31].attempts == 1
    assert "ls-dr99" in (tasks[31].last_error or "")
    assert len(cutout_log(sky)) == 1


def test_stopping_while_the_breaker_is_open_gives_the_batch_back(
    rig_factory: Callable[..., Rig], sky_factory: Callable[..., SyntheticSky]
) -> None:
    truths = [truth_for(40 + i, 60.0 + i, 0.0) for i in range(3)]
    sky = sky_factory(truths, rate=0)
    rig = rig_factory(sky, cooldown_s=60.0)
    ids = ingest(rig.pool, truths)
    for _ in range(rig.breaker.policy.failures):
        rig.breaker.record_failure("elsewhere", "HTTP 503 (outage seen by another replica)")
    assert rig.breaker.status().state == OPEN

    batch = threading.Thread(target=rig.worker.run_once, name="batch")
    batch.start()
    deadline = time.monotonic() + 10
    while any(r.state != "running" for r in fetch_tasks(rig.pool).values()):
        assert time.monotonic() < deadline, "the worker never claimed the batch"
        time.sleep(0.02)
    time.sleep(0.3)  # the pipeline's threads are now waiting on the breaker
    assert batch.is_alive()
    rig.worker.request_stop()
    batch.join(timeout=5)
    assert not batch.is_alive()

    tasks = fetch_tasks(rig.pool)
    assert {sid: (r.state, r.attempts) for sid, r in tasks.items()} == dict.fromkeys(
        ids, ("queued", 0)
    )
    assert rig.worker.stats.outcomes == {"released": len(ids)}
    assert cutout_log(sky) == []
    assert rig.breaker.status().state == OPEN


def test_a_500_on_the_last_attempt_during_an_outage_fails_not_skips(
    rig_factory: Callable[..., Rig], sky_factory: Callable[..., SyntheticSky]
) -> None:
    # Three 500s in a row open the breaker (failures=3): the fourth attempt is its probe, which
    # fails too, so the last answer came while the service was failing. That is no evidence of
    # missing sky: the galaxy is failed (an operator may retry it), not skipped.
    _, http500 = blank_truths(1, first_id=61)
    sky = sky_factory([http500], faults=FaultConfig(blank_regions=(HTTP500_BOX,)), rate=0)
    rig = rig_factory(sky, cooldown_s=0.2, breaker_failures=3)
    tasks = rig.drive(ingest(rig.pool, [http500]))
    row = tasks[http500.source_id]
    assert (row.state, row.attempts) == ("failed", 4)
    assert "while the cutout service was failing (breaker open)" in (row.last_error or "")
    assert rig.breaker.status().state == OPEN


def test_blank_sky_is_skipped_with_a_reason(
    rig_factory: Callable[..., Rig], sky_factory: Callable[..., SyntheticSky]
) -> None:
    blanks = blank_truths(1, first_id=51)
    zeros, http500 = blanks
    sky = sky_factory(blanks, faults=FaultConfig(blank_regions=(ZEROS_BOX, HTTP500_BOX)), rate=0)
    rig = rig_factory(sky)
    tasks = rig.drive(ingest(rig.pool, blanks))
    # All-zero planes: skipped at the first answer, nothing stored.
    assert (tasks[zeros.source_id].state, tasks[zeros.source_id].attempts) == ("skipped", 1)
    assert "every band of 'griz' is blank" in (tasks[zeros.source_id].last_error or "")
    # HTTP 500 on every attempt: taken as no data there once the retries are spent.
    assert (tasks[http500.source_id].state, tasks[http500.source_id].attempts) == ("skipped", 4)
    assert "HTTP 500" in (tasks[http500.source_id].last_error or "")
    assert all_cutouts(rig.pool) == {}
    assert fetch_tasks(rig.pool, "radon") == {}


# --------------------------------------------------------------------------------------------
# Production wiring: build_fetch_pipeline


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_production_wiring_names_the_bucket_and_breaker_and_applies_the_settings(
    database_url: str, pool: ConnectionPool, tmp_path: Path
) -> None:
    settings = Settings.from_env(
        {
            "GALPIPE_DATABASE_URL": database_url,
            "GALPIPE_OBJECT_STORE": (tmp_path / "objects").as_uri(),
            "GALPIPE_FETCH_RATE_LIMIT": "7.5",
            "GALPIPE_FETCH_RATE_BURST": "3",
            "GALPIPE_BREAKER_FAILURES": "2",
            "GALPIPE_BREAKER_FAILURE_RATIO": "0.25",
            "GALPIPE_BREAKER_MIN_REQUESTS": "40",
            "GALPIPE_BREAKER_WINDOW_SECONDS": "120",
            "GALPIPE_BREAKER_COOLDOWN_SECONDS": "15",
            "GALPIPE_BREAKER_PROBE_TIMEOUT_SECONDS": "45",
        }
    )
    pipeline = build_fetch_pipeline(settings, pool, threading.Event())
    try:
        bucket, breaker = pipeline.bucket, pipeline.breaker
        assert bucket.name == breaker.name == FetchPipeline.name == "fetch"
        assert bucket.policy == RateLimitPolicy(rate=7.5, burst=3.0)
        assert bucket.block_seconds == TOKEN_BLOCK_SECONDS
        assert breaker.policy == BreakerPolicy(
            failures=2,
            failure_ratio=0.25,
            min_requests=40,
            window_seconds=120.0,
            cooldown_seconds=15.0,
            probe_timeout_seconds=45.0,
        )
        assert breaker.view_seconds == BREAKER_VIEW_SECONDS
        # The shared row took the pipeline's name and policy before the first draw.
        with pool.connection() as conn:
            assert [(u.name, u.rate, u.burst) for u in bucket_usages(conn)] == [("fetch", 7.5, 3.0)]

        # Waits and refusals reach the process's metrics through the observers.
        waits = _sample("galpipe_rate_limit_wait_seconds_count", bucket="fetch")
        bucket.acquire()
        assert _sample("galpipe_rate_limit_wait_seconds_count", bucket="fetch") == waits + 1
        for _ in range(2):
            breaker.record_failure("w", "HTTP 503")
        refusals = _sample("galpipe_breaker_rejections_total", breaker="fetch")
        assert not breaker.allow("w")
        assert _sample("galpipe_breaker_rejections_total", breaker="fetch") == refusals + 1
    finally:
        pipeline.close()
        pipeline.client.close()
