"""Task routes on a real PostgreSQL: completion queues every route, add backfills, remove stops."""

from __future__ import annotations

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from galpipe.db.queue import TaskQueue
from galpipe.db.routes import PIPELINES, RouteError, add_route, remove_route, routes
from galpipe.errors import InputError


def _edges(pool: ConnectionPool) -> list[tuple[str, str]]:
    with pool.connection() as conn:
        return [(r.upstream, r.downstream) for r in routes(conn)]


def _task_ids(pool: ConnectionPool, pipeline: str) -> list[int]:
    """The ``pipeline`` tasks' galaxies, in queue order."""
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT source_id FROM tasks WHERE pipeline = %s ORDER BY seq", (pipeline,)
        ).fetchall()
    return [r[0] for r in rows]


def _finish_fetch(queue: TaskQueue, ids: list[int]) -> list[int]:
    """Claim every queued fetch task and complete those in ``ids``; return them in queue order."""
    claimed = queue.claim_batch("fetch", 1000, 60, "w")
    done = queue.complete(None, "fetch", "w", [t.source_id for t in claimed if t.source_id in ids])
    queue.release("fetch", "w")
    return done


def test_the_migration_seeds_fetch_to_radon(pool: ConnectionPool) -> None:
    assert _edges(pool) == [("fetch", "radon")]


def test_completing_fetch_queues_every_route_in_its_transaction(
    pool: ConnectionPool, queue: TaskQueue, add_galaxies
) -> None:
    ids = add_galaxies(6)
    with pool.connection() as conn:
        assert add_route(conn, "fetch", "morphology") == 0  # nothing done yet
    queue.enqueue("fetch", ids[::-1])
    claimed = [t.source_id for t in queue.claim_batch("fetch", 6, 60, "w")]

    # A completion that rolls back queues neither downstream task.
    with pool.connection() as conn, conn.transaction():
        assert queue.complete(conn, "fetch", "w", claimed[:2]) == claimed[:2]
        assert len(_task_ids_in(conn, "morphology")) == 2  # visible inside it
        raise psycopg.Rollback()  # as when storing the result rows fails
    assert _task_ids(pool, "radon") == _task_ids(pool, "morphology") == []

    assert queue.complete(None, "fetch", "w", claimed) == claimed
    # Both downstream queues follow the fetch order.
    assert _task_ids(pool, "radon") == _task_ids(pool, "morphology") == claimed


def _task_ids_in(conn: psycopg.Connection, pipeline: str) -> list[int]:
    rows = conn.execute("SELECT source_id FROM tasks WHERE pipeline = %s", (pipeline,)).fetchall()
    return [r[0] for r in rows]


def test_add_route_backfills_exactly_the_done_galaxies_without_a_task(
    pool: ConnectionPool, queue: TaskQueue, add_galaxies
) -> None:
    ids = add_galaxies(8)
    queue.enqueue("fetch", ids)
    done = _finish_fetch(queue, ids[:5])
    # One done galaxy already has its morphology task, and a not-done one has one too.
    queue.enqueue("morphology", [done[0], ids[7]])
    with pool.connection() as conn:
        assert add_route(conn, "fetch", "morphology") == 4
    assert _task_ids(pool, "morphology") == [done[0], ids[7], *done[1:]]
    # Idempotent: the route exists once, and a second backfill finds nothing to queue.
    with pool.connection() as conn:
        assert add_route(conn, "fetch", "morphology") == 0
    assert _edges(pool) == [("fetch", "morphology"), ("fetch", "radon")]
    # A galaxy done since (with its task queued by completion) is not queued twice.
    queue.claim_batch("fetch", 1, 60, "w")
    queue.complete(None, "fetch", "w", [ids[5]])
    with pool.connection() as conn:
        assert add_route(conn, "fetch", "morphology") == 0
    assert sorted(_task_ids(pool, "morphology")) == sorted([*done, ids[5], ids[7]])


def test_add_route_commits_with_the_callers_transaction(
    pool: ConnectionPool, queue: TaskQueue, add_galaxies
) -> None:
    ids = add_galaxies(3)
    queue.enqueue("fetch", ids)
    _finish_fetch(queue, ids)
    with pool.connection() as conn, conn.transaction():
        assert add_route(conn, "fetch", "morphology") == 3
        raise psycopg.Rollback()  # as when its audit record fails
    assert _edges(pool) == [("fetch", "radon")]
    assert _task_ids(pool, "morphology") == []


def test_remove_route_stops_new_tasks_and_keeps_the_old(
    pool: ConnectionPool, queue: TaskQueue, add_galaxies
) -> None:
    ids = add_galaxies(4)
    queue.enqueue("fetch", ids)
    with pool.connection() as conn:
        add_route(conn, "fetch", "morphology")
    _finish_fetch(queue, ids[:2])
    with pool.connection() as conn:
        assert remove_route(conn, "fetch", "morphology")
        assert not remove_route(conn, "fetch", "morphology")  # gone already
    _finish_fetch(queue, ids[2:])
    assert sorted(_task_ids(pool, "morphology")) == ids[:2]
    assert sorted(_task_ids(pool, "radon")) == ids  # the other route goes on


def test_no_route_queues_nothing(pool: ConnectionPool, queue: TaskQueue, add_galaxies) -> None:
    ids = add_galaxies(3)
    queue.enqueue("fetch", ids)
    with pool.connection() as conn:
        remove_route(conn, "fetch", "radon")
    assert _finish_fetch(queue, ids) == ids
    with pool.connection() as conn:
        assert conn.execute("SELECT count(*) FROM tasks WHERE pipeline <> 'fetch'").fetchone() == (
            0,
        )


@pytest.mark.parametrize(
    ("upstream", "downstream", "named"),
    [("fetch", "morphologie", "'morphologie'"), ("fech", "radn", "'fech', 'radn'")],
)
def test_unknown_pipelines_are_refused_by_name(
    pool: ConnectionPool, upstream: str, downstream: str, named: str
) -> None:
    with pool.connection() as conn:
        for call in (add_route, remove_route):
            with pytest.raises(RouteError, match=f"unknown pipeline {named}") as info:
                call(conn, upstream, downstream)
            assert isinstance(info.value, InputError)
            assert ", ".join(PIPELINES) in str(info.value)
    assert _edges(pool) == [("fetch", "radon")]


def test_a_pipeline_cannot_route_to_itself_or_close_a_cycle(pool: ConnectionPool) -> None:
    with pool.connection() as conn:
        with pytest.raises(RouteError, match="cannot queue itself"):
            add_route(conn, "radon", "radon")
        add_route(conn, "radon", "morphology")
        with pytest.raises(RouteError, match="cycle morphology -> fetch -> radon -> morphology"):
            add_route(conn, "morphology", "fetch")
        conn.commit()
    assert _edges(pool) == [("fetch", "radon"), ("radon", "morphology")]
