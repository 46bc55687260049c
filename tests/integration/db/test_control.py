"""The control plane's SQL against a real PostgreSQL: retry, requeue (dry runs too), overview."""

from __future__ import annotations

import pytest
from psycopg_pool import ConnectionPool

from galpipe.db.breaker import CircuitBreaker
from galpipe.db.control import queue_overview, requeue_for_version, retry_failed
from galpipe.db.queue import TaskQueue, oldest_queued_age
from galpipe.db.ratelimit import RateLimitPolicy, TokenBucket
from tests.probes import counts_now


def _tasks(pool: ConnectionPool, pipeline: str) -> dict[int, tuple]:
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT source_id, state::text, attempts, not_before = '-infinity', last_error, seq "
            "FROM tasks WHERE pipeline = %s",
            (pipeline,),
        ).fetchall()
    return {r[0]: r[1:] for r in rows}


def _fail(queue: TaskQueue, pipeline: str, errors: dict[int, str]) -> None:
    """Claim every ready task of ``pipeline`` and fail those in ``errors`` permanently."""
    claimed = queue.claim_batch(pipeline, 1000, 60, "w")
    assert set(errors) <= {t.source_id for t in claimed}
    queue.fail(None, pipeline, "w", errors)
    queue.release(pipeline, "w")


def test_retry_sends_failed_tasks_back_as_new_work(queue: TaskQueue, add_galaxies) -> None:
    ids = add_galaxies(6)
    queue.enqueue("fetch", ids)
    _fail(queue, "fetch", {1: "HTTP 503 from survey", 2: "Timeout reading", 3: "http 503 again"})
    queue.enqueue("radon", [4])
    _fail(queue, "radon", {4: "HTTP 503 from survey"})  # another pipeline: never touched
    before = _tasks(queue.pool, "fetch")
    assert before[1][:2] == ("failed", 1)

    with queue.pool.connection() as conn:
        assert retry_failed(conn, "fetch", error_contains="503", dry_run=True) == 2
        assert _tasks(queue.pool, "fetch") == before  # a dry run changes nothing
        assert retry_failed(conn, "fetch", error_contains="503", dry_run=False) == 2
        assert retry_failed(conn, "fetch", error_contains="503", dry_run=False) == 0

    after = _tasks(queue.pool, "fetch")
    for sid in (1, 3):
        state, attempts, ready_now, last_error, seq = after[sid]
        assert (state, attempts, ready_now) == ("queued", 0, True)
        assert last_error == before[sid][3]  # kept until the next outcome
        assert seq > max(s[4] for s in before.values())  # the back of the FIFO
    assert after[2] == before[2]  # a timeout did not match the filter
    assert _tasks(queue.pool, "radon")[4][0] == "failed"
    # Queued again, they are claimed like fresh tasks, and the queue's age is not inflated.
    with queue.pool.connection() as conn:
        assert oldest_queued_age(conn, ["fetch"])["fetch"] < 60
    claimed = queue.claim_batch("fetch", 10, 60, "w2")
    # The released tasks keep their place; the retried ones come after them.
    assert [t.source_id for t in claimed][:3] == [4, 5, 6]
    assert {t.source_id for t in claimed[3:]} == {1, 3}
    assert {t.attempts for t in claimed if t.source_id in (1, 3)} == {1}


def test_retry_without_filter_takes_every_failed_task(queue: TaskQueue, add_galaxies) -> None:
    ids = add_galaxies(4)
    queue.enqueue("fetch", ids)
    _fail(queue, "fetch", {1: "a", 2: "b"})
    with queue.pool.connection() as conn:
        assert retry_failed(conn, "fetch", dry_run=True) == 2
        assert retry_failed(conn, "fetch", error_contains="", dry_run=True) == 2
        assert retry_failed(conn, "fetch", error_contains="%", dry_run=True) == 0
        assert retry_failed(conn, "fetch", dry_run=False) == 2
    assert counts_now(queue.pool)["fetch"]["failed"] == 0


def _measure(pool: ConnectionPool, sid: int, version: str) -> None:
    with pool.connection() as conn:
        conn.execute(
            "INSERT INTO radon_measurements (source_id, algo_version, band, flags) "
            "VALUES (%s, %s, 'combined', 0)",
            (sid, version),
        )


def _measured_everything(queue: TaskQueue, ids: list[int], version: str) -> None:
    queue.enqueue("radon", ids)
    claimed = queue.claim_batch("radon", len(ids), 60, "w")
    queue.complete(None, "radon", "w", [t.source_id for t in claimed])
    for sid in ids:
        _measure(queue.pool, sid, version)


def test_requeue_queues_only_galaxies_lacking_the_version(queue: TaskQueue, add_galaxies) -> None:
    ids = add_galaxies(6)
    _measured_everything(queue, ids[:5], "v1")
    _measure(queue.pool, 2, "v2")  # already measured under the new version
    queue.enqueue("radon", [6])  # still queued: it will be measured anyway
    before = _tasks(queue.pool, "radon")

    with queue.pool.connection() as conn:
        assert requeue_for_version(conn, "radon", algo_version="v2", dry_run=True) == 4
        assert _tasks(queue.pool, "radon") == before
        assert (
            requeue_for_version(
                conn, "radon", algo_version="v2", source_ids=[1, 2, 3], dry_run=True
            )
            == 2
        )
        assert (
            requeue_for_version(conn, "radon", algo_version="v2", source_ids=[1, 2], dry_run=False)
            == 1
        )
        assert requeue_for_version(conn, "radon", algo_version="v2", dry_run=False) == 3
        # Nothing is queued twice: the requeued tasks are no longer done.
        assert requeue_for_version(conn, "radon", algo_version="v2", dry_run=False) == 0

    after = _tasks(queue.pool, "radon")
    assert {sid for sid, row in after.items() if row[0] == "queued"} == {1, 3, 4, 5, 6}
    assert after[2] == before[2]
    assert after[1][:4] == ("queued", 0, True, None)
    # The older version's results are untouched.
    with queue.pool.connection() as conn:
        rows = conn.execute(
            "SELECT algo_version, count(*) FROM radon_measurements GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert rows == [("v1", 5), ("v2", 1)]


def test_requeue_refuses_other_pipelines_and_an_empty_version(pool: ConnectionPool) -> None:
    with pool.connection() as conn:
        with pytest.raises(ValueError, match="radon"):
            requeue_for_version(conn, "fetch", algo_version="v2", dry_run=True)
        with pytest.raises(ValueError, match="algo_version"):
            requeue_for_version(conn, "radon", algo_version=" ", dry_run=True)


def test_requeue_keeps_results_one_per_version(queue: TaskQueue, add_galaxies) -> None:
    """A galaxy re-measured under v2 gets v2 rows; its v1 rows and any v2 rows stay single."""
    ids = add_galaxies(2)
    _measured_everything(queue, ids, "v1")
    with queue.pool.connection() as conn:
        assert requeue_for_version(conn, "radon", algo_version="v2", dry_run=False) == 2
    claimed = queue.claim_batch("radon", 10, 60, "w")
    assert sorted(t.source_id for t in claimed) == ids
    queue.complete(None, "radon", "w", ids)
    for sid in ids:
        _measure(queue.pool, sid, "v2")
    with queue.pool.connection() as conn:
        assert requeue_for_version(conn, "radon", algo_version="v2", dry_run=True) == 0
        assert requeue_for_version(conn, "radon", algo_version="v1", dry_run=True) == 0


def test_overview_reports_queue_pause_breaker_and_bucket(queue: TaskQueue, add_galaxies) -> None:
    ids = add_galaxies(5)
    queue.enqueue("fetch", ids)
    claimed = queue.claim_batch("fetch", 2, 60, "w")
    queue.complete(None, "fetch", "w", [claimed[0].source_id])
    queue.pause("fetch", "survey maintenance")
    breaker = CircuitBreaker(queue.pool, "fetch")
    breaker.record_failure("w", "HTTP 503")
    TokenBucket(queue.pool, "fetch", RateLimitPolicy(rate=5.0, burst=10.0)).configure()

    with queue.pool.connection() as conn:
        overview = queue_overview(conn, ["fetch", "radon", "newpipe"])

    fetch = overview["fetch"]
    assert fetch.counts == {"queued": 3, "running": 1, "done": 1, "failed": 0, "skipped": 0}
    assert fetch.oldest_queued_seconds is not None
    assert fetch.oldest_queued_seconds >= 0
    assert fetch.done_recently == 1
    assert fetch.rate_per_second == pytest.approx(1 / 60)
    assert (fetch.paused, fetch.pause_reason) == (True, "survey maintenance")
    assert fetch.paused_since is not None
    assert fetch.paused_since <= fetch.taken_at
    assert fetch.breaker is not None
    assert (fetch.breaker.state, fetch.breaker.consecutive_failures) == ("closed", 1)
    assert fetch.breaker.last_error == "HTTP 503"
    assert fetch.rate_limit is not None
    assert fetch.rate_limit.rate == 5.0

    radon = overview["radon"]
    assert radon.counts["queued"] == 1
    assert not radon.paused
    assert radon.breaker is None
    assert radon.rate_limit is None
    empty = overview["newpipe"]
    assert set(empty.counts.values()) == {0}
    assert empty.oldest_queued_seconds is None
    # Reading made no breaker row for the pipelines that have none.
    with queue.pool.connection() as conn:
        assert conn.execute("SELECT count(*) FROM breakers").fetchone() == (1,)
