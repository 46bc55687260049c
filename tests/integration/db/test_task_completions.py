"""Completions per statement (migration 0016): the completion rates of ``galpipe status`` and
the control plane count what moved into ``done`` in the window, from a small table."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from galpipe.db.queue import TaskQueue, roll_up_task_counts
from galpipe.db.status import MAX_WINDOW_SECONDS, recent_done
from tests.integration.db.upgrade import migrate_up_to


def _completion_rows(conn: psycopg.Connection) -> list[tuple[str, int]]:
    return [
        (p, int(n))
        for p, n in conn.execute("SELECT pipeline, n FROM task_completions ORDER BY at, pipeline")
    ]


def _age_completions(conn: psycopg.Connection, interval: str) -> None:
    conn.execute("UPDATE task_completions SET at = at - %s::interval", (interval,))


def test_each_completing_statement_appends_one_row_and_nothing_else_does(
    pool: ConnectionPool, queue: TaskQueue, add_galaxies: Callable[..., list[int]]
) -> None:
    ids = add_galaxies(40)
    queue.enqueue("fetch", ids)
    claimed = [t.source_id for t in queue.claim_batch("fetch", 30, 30, "w")]
    queue.extend_lease("fetch", "w", 30.0)
    with pool.connection() as conn:
        assert _completion_rows(conn) == []  # enqueue, claim and lease moved nothing into done
        with conn.transaction():
            # complete() also queues the downstream radon tasks: inserts, not completions.
            queue.complete(conn, "fetch", "w", claimed[:20])
            queue.retry(conn, "fetch", "w", dict.fromkeys(claimed[20:25], "HTTP 503"))
        assert _completion_rows(conn) == [("fetch", 20)]
        # Touching rows already done is no completion.
        conn.execute("UPDATE tasks SET updated_at = now() WHERE state = 'done'")
        assert _completion_rows(conn) == [("fetch", 20)]
        # A rolled-back completion leaves no row.
        with conn.transaction(force_rollback=True):
            queue.complete(conn, "fetch", "w", claimed[25:])
        assert _completion_rows(conn) == [("fetch", 20)]
        assert recent_done(conn, ["fetch", "radon"]) == {"fetch": 20}


def test_recent_done_counts_the_window_and_the_rollup_keeps_an_hour(
    pool: ConnectionPool, queue: TaskQueue, add_galaxies: Callable[..., list[int]]
) -> None:
    ids = add_galaxies(30)
    queue.enqueue("fetch", ids)
    first = [t.source_id for t in queue.claim_batch("fetch", 10, 30, "w")]
    queue.complete(None, "fetch", "w", first)
    with pool.connection() as conn:
        _age_completions(conn, "2 minutes")
    later = [t.source_id for t in queue.claim_batch("fetch", 5, 30, "w")]
    queue.complete(None, "fetch", "w", later)
    with pool.connection() as conn:
        assert recent_done(conn, ["fetch"], 60.0) == {"fetch": 5}
        assert recent_done(conn, ["fetch"], 300.0) == {"fetch": 15}
        _age_completions(conn, "59 minutes")  # the first batch is now 61 minutes old
        with conn.transaction():
            roll_up_task_counts(conn)
        assert _completion_rows(conn) == [("fetch", 5)]
        assert recent_done(conn, ["fetch"], MAX_WINDOW_SECONDS) == {"fetch": 5}


@pytest.mark.parametrize("seconds", [0.0, -1.0, MAX_WINDOW_SECONDS + 1])
def test_a_window_the_table_cannot_answer_is_refused(pool: ConnectionPool, seconds: float) -> None:
    with pool.connection() as conn, pytest.raises(ValueError, match="completion window"):
        recent_done(conn, ["fetch"], seconds)


def test_the_migration_counts_the_last_hours_completions(fresh_database: str) -> None:
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        completions = migrate_up_to(conn, "task_completions")
        conn.execute(
            "INSERT INTO galaxies (source_id, ra, dec, catalog) "
            "SELECT g, 1.0, 2.0, 'init' FROM generate_series(1, 90) g"
        )
        # Done 10 s ago (30), 30 min ago (30) and 2 h ago (30); and tasks not done.
        conn.execute(
            "INSERT INTO tasks (pipeline, source_id, state, updated_at) "
            "SELECT 'radon', g, 'done', now() - (ARRAY[interval '10 s', interval '30 min', "
            "interval '2 h'])[1 + g % 3] FROM generate_series(1, 90) g"
        )
        conn.execute(
            "INSERT INTO tasks (pipeline, source_id, state) "
            "SELECT 'fetch', g, 'queued' FROM generate_series(1, 90) g"
        )
        with conn.transaction():
            conn.execute(completions.sql)  # type: ignore[arg-type]  # shipped migration file
        assert recent_done(conn, ["fetch", "radon"], 60.0) == {"radon": 30}
        assert recent_done(conn, ["fetch", "radon"], MAX_WINDOW_SECONDS) == {"radon": 60}
        # And the trigger follows from there.
        conn.execute("UPDATE tasks SET state = 'done' WHERE pipeline = 'fetch' AND source_id <= 7")
        assert recent_done(conn, ["fetch", "radon"], 60.0) == {"fetch": 7, "radon": 30}
