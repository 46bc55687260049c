"""The maintained task counts (migration 0015) equal an exact count of the tasks, always.

Every statement that moves tasks appends its net change per (pipeline, state) to
``task_state_deltas`` (statement-level triggers over transition tables); the rollup folds them
into ``task_state_counts``; ``task_counts`` reads counts plus pending deltas. The reference is
``TASK_COUNTS_SQL`` (a GROUP BY of the tasks themselves), read in the same snapshot.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from galpipe.db import control
from galpipe.db.connection import open_pool
from galpipe.db.queue import (
    STATES,
    TASK_COUNTS_SQL,
    RetryPolicy,
    TaskQueue,
    roll_up_task_counts,
    task_counts,
)
from galpipe.db.status import MAX_WINDOW_SECONDS, recent_done
from tests.integration.db.upgrade import migrate_up_to

Counts = dict[tuple[str, str], int]


def _exact(conn: psycopg.Connection) -> Counts:
    rows = conn.execute(TASK_COUNTS_SQL, {"ids": None}).fetchall()
    return {(p, s): int(n) for p, s, n in rows}


def _maintained(conn: psycopg.Connection) -> Counts:
    return {
        (p, s): n for p, by_state in task_counts(conn).items() for s, n in by_state.items() if n
    }


def _rolled_up(conn: psycopg.Connection) -> Counts:
    rows = conn.execute("SELECT pipeline, state::text, n FROM task_state_counts WHERE n <> 0")
    return {(p, s): int(n) for p, s, n in rows.fetchall()}


def _both_in_one_snapshot(conn: psycopg.Connection) -> tuple[Counts, Counts]:
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return _maintained(conn), _exact(conn)


def _pending(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM task_state_deltas").fetchone()
    return int(row[0]) if row else -1


@pytest.fixture
def wide_pool(database_url: str) -> Iterator[ConnectionPool]:
    """Enough connections for the concurrent workers, the producer and the observer."""
    pool = open_pool(database_url, max_size=8)
    yield pool
    pool.close()


def _worker(
    queue: TaskQueue, name: str, seed: int, rounds: int, errors: list[BaseException]
) -> None:
    """Claim and finish tasks at random: complete, retry, skip, fail, release, or lose the lease."""
    rng = random.Random(seed)
    try:
        for _ in range(rounds):
            pipeline = rng.choice(("fetch", "fetch", "radon"))
            # A lease of 0 s has expired by the next statement: recover_expired takes it back
            # and the owner's finishing statements then change nothing.
            lease = 0.0 if rng.random() < 0.15 else 30.0
            batch = queue.claim_batch(pipeline, rng.randint(1, 40), lease, name)
            ids = [t.source_id for t in batch]
            rng.shuffle(ids)
            cut = sorted(rng.sample(range(len(ids) + 1), 4)) if len(ids) >= 3 else [0, 0, 0, 0]
            done, retried, skipped = ids[: cut[0]], ids[cut[0] : cut[1]], ids[cut[1] : cut[2]]
            failed, rest = ids[cut[2] : cut[3]], ids[cut[3] :]
            # Lease recovery runs meanwhile on the same expired rows: it skips the ones this
            # transaction holds, so neither side waits on the other (no deadlock to suppress).
            with queue.pool.connection() as conn, conn.transaction():
                queue.complete(conn, pipeline, name, done)
                queue.retry(conn, pipeline, name, dict.fromkeys(retried, "HTTP 503"))
                queue.skip(conn, pipeline, name, dict.fromkeys(skipped, "no coverage"))
                queue.fail(conn, pipeline, name, dict.fromkeys(failed, "bad cutout"))
            if rest and rng.random() < 0.5:
                queue.release(pipeline, name, rest)
            elif rest:
                queue.extend_lease(pipeline, name, 30.0)  # moves no task: no delta
            if rng.random() < 0.1:
                # A transaction that rolls back leaves neither its moves nor their deltas.
                with queue.pool.connection() as conn, conn.transaction(force_rollback=True):
                    queue.complete(conn, pipeline, name, rest)
    except BaseException as exc:  # reported by the test, not lost in the thread
        errors.append(exc)


@pytest.mark.parametrize("seed", [7, 2026])
def test_counts_equal_an_exact_count_under_concurrent_claimers(
    wide_pool: ConnectionPool, add_galaxies: Callable[..., list[int]], seed: int
) -> None:
    queue = TaskQueue(wide_pool, RetryPolicy(max_retries=2, delays=(0.0, 0.05)))
    rng = random.Random(seed)
    ids = add_galaxies(1500)
    queue.enqueue("fetch", ids[:600])
    errors: list[BaseException] = []
    workers = [
        threading.Thread(target=_worker, args=(queue, f"w{i}", seed * 10 + i, 40, errors))
        for i in range(3)
    ]
    for w in workers:
        w.start()
    observed = 0
    seen: set[str] = set()  # the states the comparisons covered
    next_id = 600
    while any(w.is_alive() for w in workers):
        # The producer, the lease recovery, the operator and the monitor, meanwhile.
        if next_id < len(ids):
            queue.enqueue("fetch", ids[next_id : next_id + 100])
            queue.enqueue("radon", ids[next_id : next_id + 10])  # some already exist
            next_id += 100
        queue.recover_expired()
        with wide_pool.connection() as conn:
            if rng.random() < 0.3:
                with conn.transaction():
                    control.retry_failed(conn, rng.choice(("fetch", "radon")), dry_run=False)
            if rng.random() < 0.5:
                with conn.transaction():
                    roll_up_task_counts(conn)
            maintained, exact = _both_in_one_snapshot(conn)
            assert maintained == exact
            seen |= {s for _, s in exact}
            observed += 1
    for w in workers:
        w.join()
    assert not errors, errors
    with wide_pool.connection() as conn:
        maintained, exact = _both_in_one_snapshot(conn)
        assert maintained == exact
        seen |= {s for _, s in exact}
        # The mix moved tasks through every state, so the comparisons covered them all. (Not
        # only the last one: the operator's retry may have re-queued every failed task by then.)
        assert set(STATES) - {"running"} <= seen
        with conn.transaction():
            roll_up_task_counts(conn)
        assert _pending(conn) == 0
        assert _rolled_up(conn) == _exact(conn)
        # Nothing in this mix moves a task out of done: every done task is one completion.
        done = {p: n for (p, s), n in exact.items() if s == "done"}
        assert recent_done(conn, ["fetch", "radon"], MAX_WINDOW_SECONDS) == done
    assert observed >= 1


def test_each_statement_appends_one_delta_per_pipeline_and_state_it_changed(
    pool: ConnectionPool, queue: TaskQueue, add_galaxies: Callable[..., list[int]]
) -> None:
    ids = add_galaxies(600)
    queue.enqueue("fetch", ids)
    with pool.connection() as conn, conn.transaction():
        roll_up_task_counts(conn)
    batch = queue.claim_batch("fetch", 256, 30, "w")
    with pool.connection() as conn:
        deltas = conn.execute(
            "SELECT pipeline, state::text, delta FROM task_state_deltas ORDER BY delta"
        ).fetchall()
        assert deltas == [("fetch", "queued", -256), ("fetch", "running", 256)]
    assert queue.extend_lease("fetch", "w", 60) == 256
    with pool.connection() as conn:
        assert _pending(conn) == 2  # a lease extension moves no task
    # A completion moves fetch tasks and queues radon ones in one statement.
    queue.complete(None, "fetch", "w", [t.source_id for t in batch])
    with pool.connection() as conn:
        last = conn.execute(
            "SELECT pipeline, state::text, delta FROM task_state_deltas ORDER BY 1, 2, 3"
        ).fetchall()
        assert ("radon", "queued", 256) in last
        assert ("fetch", "done", 256) in last
        assert _pending(conn) == 5
        assert (
            _maintained(conn)
            == _exact(conn)
            == {
                ("fetch", "queued"): 344,
                ("fetch", "done"): 256,
                ("radon", "queued"): 256,
            }
        )


def test_rollup_is_idempotent(
    pool: ConnectionPool, queue: TaskQueue, add_galaxies: Callable[..., list[int]]
) -> None:
    ids = add_galaxies(50)
    queue.enqueue("fetch", ids)
    queue.claim_batch("fetch", 20, 30, "w")
    with pool.connection() as conn:
        before = _maintained(conn)
        with conn.transaction():
            assert roll_up_task_counts(conn) == 3
        with conn.transaction():
            assert roll_up_task_counts(conn) == 0
        assert _pending(conn) == 0
        assert _maintained(conn) == _rolled_up(conn) == before == _exact(conn)


def test_a_rollup_waits_for_no_other_and_loses_no_delta(
    pool: ConnectionPool, queue: TaskQueue, add_galaxies: Callable[..., list[int]]
) -> None:
    ids = add_galaxies(300)
    queue.enqueue("fetch", ids[:100])
    with pool.connection() as holder, pool.connection() as other:
        # One rollup in flight (its transaction open); a second returns at once, folding nothing.
        holder.execute("BEGIN")
        assert roll_up_task_counts(holder) == 1
        queue.enqueue("fetch", ids[100:200])  # committed while the first rollup is open
        with other.transaction():
            assert roll_up_task_counts(other) == 0
        assert _maintained(other) == _exact(other)
        holder.execute("COMMIT")
        # The delta committed after the first rollup's snapshot waits for the next one.
        assert _pending(other) == 1
        with other.transaction():
            assert roll_up_task_counts(other) == 1
        assert _rolled_up(other) == _exact(other) == {("fetch", "queued"): 200}


def test_many_rollups_at_once_fold_each_delta_once(
    wide_pool: ConnectionPool, add_galaxies: Callable[..., list[int]]
) -> None:
    queue = TaskQueue(wide_pool)
    ids = add_galaxies(2000)
    errors: list[BaseException] = []
    stop = threading.Event()

    def roll_up_until_stopped() -> None:
        try:
            while not stop.is_set():
                with wide_pool.connection() as conn, conn.transaction():
                    roll_up_task_counts(conn)
        except BaseException as exc:
            errors.append(exc)

    rollers = [threading.Thread(target=roll_up_until_stopped) for _ in range(3)]
    for r in rollers:
        r.start()
    try:
        for start in range(0, len(ids), 100):
            queue.enqueue("fetch", ids[start : start + 100])
            batch = queue.claim_batch("fetch", 60, 30, "w")
            queue.complete(None, "fetch", "w", [t.source_id for t in batch][:30])
    finally:
        stop.set()
        for r in rollers:
            r.join()
    assert not errors, errors
    with wide_pool.connection() as conn:
        with conn.transaction():
            roll_up_task_counts(conn)
        assert _rolled_up(conn) == _exact(conn)
        assert _exact(conn)[("fetch", "done")] == 600


def test_deletes_and_truncates_are_counted(
    pool: ConnectionPool, queue: TaskQueue, add_galaxies: Callable[..., list[int]]
) -> None:
    ids = add_galaxies(30)
    queue.enqueue("fetch", ids)
    queue.claim_batch("fetch", 10, 30, "w")
    with pool.connection() as conn:
        with conn.transaction():
            roll_up_task_counts(conn)
        conn.execute("DELETE FROM tasks WHERE source_id <= 15")
        conn.commit()
        assert _maintained(conn) == _exact(conn) == {("fetch", "queued"): 15}
        conn.execute("TRUNCATE tasks")
        conn.commit()
        assert _maintained(conn) == _exact(conn) == {}
    queue.enqueue("radon", ids[:4])
    with pool.connection() as conn:
        assert _maintained(conn) == {("radon", "queued"): 4}


def test_the_migration_counts_the_tasks_that_already_exist(fresh_database: str) -> None:
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        counts_migration = migrate_up_to(conn, "task_state_counts")
        # A queue in mid-run before the upgrade: every state, two pipelines.
        conn.execute(
            "INSERT INTO galaxies (source_id, ra, dec, catalog) "
            "SELECT g, 1.0, 2.0, 'init' FROM generate_series(1, 500) g"
        )
        conn.execute(
            "INSERT INTO tasks (pipeline, source_id, state, lease_owner, lease_expires) "
            "SELECT p, g, (ARRAY['queued','running','done','failed','skipped'])[1 + g % 5]"
            "::task_state, CASE WHEN g % 5 = 1 THEN 'w' END, "
            "CASE WHEN g % 5 = 1 THEN now() + interval '1 min' END "
            "FROM generate_series(1, 500) g, unnest(ARRAY['fetch', 'radon']) p "
            "WHERE p = 'fetch' OR g % 3 = 0"
        )
        with conn.transaction():
            conn.execute(counts_migration.sql)  # type: ignore[arg-type]  # shipped migration file
        exact = _exact(conn)
        assert len(exact) == 10
        assert _rolled_up(conn) == _maintained(conn) == exact
        assert _pending(conn) == 0
        # And the triggers follow from there.
        conn.execute("UPDATE tasks SET state = 'queued', lease_owner = NULL, lease_expires = NULL")
        assert (
            _maintained(conn)
            == _exact(conn)
            == {("fetch", "queued"): 500, ("radon", "queued"): 166}
        )
