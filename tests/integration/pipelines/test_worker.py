"""The worker loop against a real PostgreSQL: exactly-once draining, crashes, SIGTERM, probes."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from galpipe.db.connection import open_pool
from galpipe.db.queue import RetryPolicy, Task, TaskQueue
from galpipe.pipelines.base import Done, Fail, Outcome, Release, Retry, Skip
from galpipe.pipelines.worker import Worker
from galpipe.runtime.health import HealthServer
from galpipe.runtime.service import serve
from tests.probes import counts_now

RESULTS_DDL = """
CREATE TABLE IF NOT EXISTS test_results (
    id        bigserial PRIMARY KEY,
    source_id bigint NOT NULL,
    owner     text NOT NULL
)
"""


class RecordingPipeline:
    """Stores one row per done task, with no uniqueness, so a double would show."""

    name = "fetch"

    def __init__(
        self, batch_size: int = 256, delay_s: float = 0.0, owner: str = "", started: str = ""
    ) -> None:
        self.batch_size = batch_size
        self.delay_s = delay_s
        self.owner = owner
        self.started = started  # a file created when a batch's work begins, if named

    def process(self, tasks: Sequence[Task]) -> Sequence[Outcome]:
        if self.started:
            Path(self.started).touch()
        if self.delay_s:
            time.sleep(self.delay_s)
        return [Done(t.source_id, self.owner) for t in tasks]

    def store(self, conn: psycopg.Connection, done: Sequence[Done]) -> None:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO test_results (source_id, owner) VALUES (%s, %s)",
                [(d.source_id, d.result) for d in done],
            )


def run_worker_process(
    database_url: str, owner: str, batch_size: int, delay_s: float, lease_s: float
) -> None:
    """Child-process target: a real worker, until the queue is empty (or the batch is slow)."""
    pool = open_pool(database_url, max_size=2)
    queue = TaskQueue(pool, RetryPolicy(max_retries=3, delays=(0.1,)))
    worker = Worker(
        RecordingPipeline(batch_size, delay_s, owner),
        queue,
        owner=owner,
        lease_seconds=lease_s,
        poll_min_seconds=0.05,
        poll_max_seconds=0.2,
    )
    worker.run(stop_when_idle=delay_s == 0.0)
    pool.close()


def run_until_stopped(
    database_url: str, owner: str, delay_s: float, port: int = 0, started: str = ""
) -> None:
    """Child-process target: the production entry point, serving probes, until SIGTERM."""
    pool = open_pool(database_url, max_size=2)
    worker = Worker(
        RecordingPipeline(8, delay_s, owner, started),
        TaskQueue(pool),
        owner=owner,
        lease_seconds=30,
        poll_min_seconds=0.05,
        poll_max_seconds=0.2,
    )
    serve(worker, port=port, host="127.0.0.1")
    pool.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spawn(target, *args) -> multiprocessing.process.BaseProcess:
    proc = multiprocessing.get_context("spawn").Process(target=target, args=args)
    proc.start()
    return proc


def _wait_for(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _scalar(pool: ConnectionPool, sql: str, params: tuple = ()) -> int:
    with pool.connection() as conn:
        row = conn.execute(sql, params).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def results_table(pool: ConnectionPool) -> None:
    with pool.connection() as conn:
        conn.execute(RESULTS_DDL)


def test_four_processes_drain_20000_tasks_exactly_once(
    database_url: str, pool: ConnectionPool, queue: TaskQueue, add_galaxies, results_table
) -> None:
    ids = add_galaxies(20_000)
    assert queue.enqueue("fetch", ids) == 20_000
    procs = [_spawn(run_worker_process, database_url, f"w{i}", 256, 0.0, 60.0) for i in range(4)]
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    assert _scalar(pool, "SELECT count(*) FROM test_results") == 20_000
    assert _scalar(pool, "SELECT count(DISTINCT source_id) FROM test_results") == 20_000
    counts = counts_now(queue.pool)
    assert counts["fetch"]["done"] == 20_000
    assert counts["radon"]["queued"] == 20_000
    # Every worker took part: the queue really was shared, not drained by the first one.
    assert _scalar(pool, "SELECT count(DISTINCT owner) FROM test_results") == 4


def test_worker_processes_in_fifo_order(
    pool: ConnectionPool, queue: TaskQueue, add_galaxies, results_table
) -> None:
    ids = add_galaxies(100)
    order = ids[50:] + ids[:50]
    queue.enqueue("fetch", order)
    worker = Worker(RecordingPipeline(7, owner="solo"), queue, owner="solo")
    worker.run(stop_when_idle=True)
    with pool.connection() as conn:
        stored = [r[0] for r in conn.execute("SELECT source_id FROM test_results ORDER BY id")]
    assert stored == order


def test_sigkill_mid_batch_loses_nothing(
    database_url: str, pool: ConnectionPool, queue: TaskQueue, add_galaxies, results_table
) -> None:
    ids = add_galaxies(40)
    queue.enqueue("fetch", ids)
    # A slow worker with a 1-s lease claims a batch of 8 and is killed while processing it.
    victim = _spawn(run_worker_process, database_url, "victim", 8, 30.0, 1.0)
    _wait_for(
        lambda: _scalar(pool, "SELECT count(*) FROM tasks WHERE lease_owner = 'victim'") == 8,
        what="the victim to claim a batch",
    )
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(10)
    assert victim.exitcode == -signal.SIGKILL
    assert _scalar(pool, "SELECT count(*) FROM tasks WHERE state = 'running'") == 8
    time.sleep(1.2)  # let the lease run out
    # A healthy worker recovers the expired lease and drains everything.
    rescuer = _spawn(run_worker_process, database_url, "rescuer", 8, 0.0, 30.0)
    rescuer.join(60)
    assert rescuer.exitcode == 0
    assert _scalar(pool, "SELECT count(*) FROM test_results") == 40
    assert _scalar(pool, "SELECT count(DISTINCT source_id) FROM test_results") == 40
    assert _scalar(pool, "SELECT count(*) FROM test_results WHERE owner = 'victim'") == 0
    assert counts_now(queue.pool)["fetch"]["done"] == 40
    # The killed batch paid one attempt for the crash.
    assert _scalar(pool, "SELECT count(*) FROM tasks WHERE pipeline='fetch' AND attempts=2") == 8


def test_sigterm_finishes_the_batch_and_exits_zero(
    database_url: str,
    pool: ConnectionPool,
    queue: TaskQueue,
    add_galaxies,
    results_table,
    tmp_path: Path,
) -> None:
    ids = add_galaxies(16)
    queue.enqueue("fetch", ids)
    started = tmp_path / "started"
    proc = _spawn(run_until_stopped, database_url, "graceful", 1.5, 0, str(started))
    # Once the work has begun (a batch claimed but not yet begun is given back instead:
    # test_stop_between_claim_and_process_releases_the_batch below).
    _wait_for(started.exists, what="the worker to begin a batch")
    assert _scalar(pool, "SELECT count(*) FROM tasks WHERE lease_owner = 'graceful'") == 8
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGTERM)
    proc.join(20)
    assert proc.exitcode == 0
    # The batch in hand was finished and committed; nothing more was claimed.
    assert _scalar(pool, "SELECT count(*) FROM test_results") == 8
    counts = counts_now(queue.pool)["fetch"]
    assert counts["done"] == 8
    assert counts["queued"] == 8
    assert counts["running"] == 0


def test_sigterm_while_idle_exits_promptly(database_url: str) -> None:
    port = _free_port()
    proc = _spawn(run_until_stopped, database_url, "idle", 0.0, port)

    def answers() -> bool:
        try:
            return _get(f"http://127.0.0.1:{port}/readyz") == (200, "ok\n")
        except OSError:
            return False

    _wait_for(answers, what="the worker's /readyz")
    assert proc.is_alive()
    assert proc.pid is not None
    started = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    proc.join(10)
    assert proc.exitcode == 0
    assert time.monotonic() - started < 5.0


def test_stop_between_claim_and_process_releases_the_batch(
    pool: ConnectionPool, queue: TaskQueue, add_galaxies, results_table
) -> None:
    ids = add_galaxies(10)
    queue.enqueue("fetch", ids)
    worker = Worker(RecordingPipeline(4, owner="w"), queue, owner="w")
    claim = queue.claim_batch

    def claim_then_sigterm(*args, **kwargs):
        tasks = claim(*args, **kwargs)
        worker.request_stop()
        return tasks

    queue.claim_batch = claim_then_sigterm  # type: ignore[method-assign]
    worker.run()
    counts = counts_now(queue.pool)["fetch"]
    assert counts["queued"] == 10
    assert counts["running"] == 0
    assert worker.stats.outcomes == {"released": 4}
    # Released tasks keep their place and their attempt is given back.
    assert [t.source_id for t in claim("fetch", 4, 30, "next")] == ids[:4]
    assert _scalar(pool, "SELECT max(attempts) FROM tasks") == 1


class MixedPipeline:
    """Returns every kind of outcome, and forgets one task, to exercise the commit."""

    name = "fetch"
    batch_size = 10

    def process(self, tasks: Sequence[Task]) -> Sequence[Outcome]:
        out: list[Outcome] = []
        for t in tasks:
            kind = t.source_id % 5
            if kind == 0:
                out.append(Done(t.source_id))
            elif kind == 1:
                out.append(Retry(t.source_id, "HTTP 503"))
            elif kind == 2:
                out.append(Skip(t.source_id, "no coverage"))
            elif kind == 3:
                out.append(Fail(t.source_id, "not a FITS file"))
        out.append(Done(999_999))  # not claimed: must be ignored
        return out

    def store(self, conn: psycopg.Connection, done: Sequence[Done]) -> None:
        pass


def test_outcomes_are_committed_per_task(queue: TaskQueue, pool, add_galaxies) -> None:
    ids = add_galaxies(10)
    queue.enqueue("fetch", ids)
    worker = Worker(MixedPipeline(), queue, owner="mixed")
    assert worker.run_once() == 10
    with pool.connection() as conn:
        rows = dict(
            conn.execute(
                "SELECT source_id, state::text || ':' || coalesce(last_error, '') FROM tasks "
                "WHERE pipeline = 'fetch'"
            ).fetchall()
        )
    for sid in ids:
        expected = {
            0: "done:",
            1: "queued:HTTP 503",
            2: "skipped:no coverage",
            3: "failed:not a FITS file",
            4: "queued:pipeline returned no outcome for this task",
        }[sid % 5]
        assert rows[sid] == expected, sid
    assert counts_now(queue.pool)["radon"]["queued"] == 2


class ExplodingPipeline:
    name = "fetch"
    batch_size = 5

    def process(self, tasks: Sequence[Task]) -> Sequence[Outcome]:
        raise RuntimeError("decoder crashed")

    def store(self, conn: psycopg.Connection, done: Sequence[Done]) -> None:
        raise AssertionError("nothing is done")


def test_retries_honour_delays_and_the_maximum(queue: TaskQueue, pool, add_galaxies) -> None:
    (sid,) = add_galaxies(1)
    queue.enqueue("fetch", [sid])
    worker = Worker(ExplodingPipeline(), queue, owner="w", poll_min_seconds=0.01)
    began: list[float] = []
    ended: list[float] = []
    # fast_policy: 3 retries, delays 0.2, 0.4, 0.8 s.
    while counts_now(queue.pool)["fetch"]["failed"] == 0:
        start = time.monotonic()
        if worker.run_once():
            began.append(start)
            ended.append(time.monotonic())
        else:
            time.sleep(0.01)
    assert len(ended) == 4  # the first attempt and three retries
    # The delay runs from the failing transaction's now(), inside one attempt; the next claim
    # happens inside the next: so it lies between the end of one attempt and the start of the
    # next, with the attempts' own duration as the slack on either side.
    for k, delay in enumerate((0.2, 0.4, 0.8)):
        assert ended[k + 1] - began[k] >= delay
        assert began[k + 1] - ended[k] < delay + 0.5
    with pool.connection() as conn:
        state, attempts, error = conn.execute(
            "SELECT state::text, attempts, last_error FROM tasks WHERE source_id = %s", (sid,)
        ).fetchone()
    assert (state, attempts) == ("failed", 4)
    assert "decoder crashed" in error


def test_lost_lease_stores_nothing(queue: TaskQueue, pool, add_galaxies, results_table) -> None:
    ids = add_galaxies(3)
    queue.enqueue("fetch", ids)

    class SlowThenOvertaken(RecordingPipeline):
        def process(self, tasks: Sequence[Task]) -> Sequence[Outcome]:
            # While we work, our lease expires and another worker re-claims the batch.
            with pool.connection() as conn:
                conn.execute("UPDATE tasks SET lease_expires = now() - interval '1 s'")
            queue.recover_expired("fetch")
            assert len(queue.claim_batch("fetch", 10, 30, "other")) == 3
            return super().process(tasks)

    worker = Worker(SlowThenOvertaken(10, owner="slow"), queue, owner="slow")
    worker.run_once()
    assert worker.stats.outcomes == {"lost": 3}
    assert _scalar(pool, "SELECT count(*) FROM test_results") == 0
    assert _scalar(pool, "SELECT count(*) FROM tasks WHERE lease_owner = 'other'") == 3


def test_lease_is_renewed_while_processing(queue: TaskQueue, pool, add_galaxies) -> None:
    ids = add_galaxies(2)
    queue.enqueue("fetch", ids)
    worker = Worker(RecordingPipeline(2, delay_s=1.5), queue, owner="w", lease_seconds=0.6)
    with pool.connection() as conn:
        conn.execute(RESULTS_DDL)
    worker.run_once()
    # Without renewal the 0.6-s lease would have expired during the 1.5-s batch.
    assert worker.stats.outcomes == {"done": 2}


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_health_endpoints(queue: TaskQueue, add_galaxies, results_table) -> None:
    ids = add_galaxies(3)
    queue.enqueue("fetch", ids)
    worker = Worker(RecordingPipeline(3), queue, owner="probe")
    worker.run_once()
    server = HealthServer(worker.liveness, worker.readiness, host="127.0.0.1", port=0).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert _get(base + "/healthz") == (200, "ok\n")
        assert _get(base + "/readyz") == (200, "ok\n")
        status, body = _get(base + "/metrics")
        assert status == 200
        assert 'galpipe_tasks_finished_total{outcome="done",pipeline="fetch"}' in body
        assert _get(base + "/nope")[0] == 404
        worker.request_stop()
        assert _get(base + "/readyz") == (503, "stopping\n")
        worker.last_progress -= 10 * worker.lease_seconds
        status, body = _get(base + "/healthz")
        assert status == 503
        assert "no progress" in body
        queue.pool.close()
        status, body = _get(base + "/readyz")
        assert status == 503
        assert "database unreachable" in body
    finally:
        server.stop()


class PoliteServerPipeline:
    """A server that says 'come back in 1 s' for odd ids and a shutdown that releases even ids."""

    name = "fetch"
    batch_size = 4

    def process(self, tasks: Sequence[Task]) -> Sequence[Outcome]:
        return [
            Retry(t.source_id, "HTTP 429", delay_s=1.0)
            if t.source_id % 2
            else Release(t.source_id, "stopping")
            for t in tasks
        ]

    def store(self, conn: psycopg.Connection, done: Sequence[Done]) -> None:
        raise AssertionError("nothing is done")


def test_retry_after_and_release_outcomes(queue: TaskQueue, pool, add_galaxies) -> None:
    ids = add_galaxies(4)
    queue.enqueue("fetch", ids)
    worker = Worker(PoliteServerPipeline(), queue, owner="w")
    worker.run_once()
    assert worker.stats.outcomes == {"retry": 2, "released": 2}
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT source_id, attempts, not_before > now() + interval '0.8 s' FROM tasks "
            "ORDER BY source_id"
        ).fetchall()
    # Retry-After (1 s) outlasts the policy's 0.2-s delay; released tasks keep their attempt.
    assert rows == [(1, 1, True), (2, 0, False), (3, 1, True), (4, 0, False)]
