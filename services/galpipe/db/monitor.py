"""SQL of ``galpipe monitor`` beyond what ``galpipe status`` reads (:mod:`galpipe.db.status`).

Each query is cheap enough to run every poll (seconds apart) against a queue of millions:

- the oldest *ready* task per pipeline walks ``tasks_ready`` in FIFO order and skips delayed
  retries on the index's ``not_before`` column, so only the head row is read from the heap;
- sizes come from the catalogue (``pg_database_size``, ``pg_total_relation_size``), which stats
  files rather than reading rows;
- connections are one row per backend in ``pg_stat_activity``.
"""

from __future__ import annotations

import psycopg

#: One LIMIT 1 probe of ``tasks_ready`` per pipeline, like db.status's oldest queued but only
#: among due rows (``not_before`` is the index's INCLUDE column); the test reads its plan.
OLDEST_READY_SQL = """
SELECT p.pipeline, EXTRACT(EPOCH FROM now() - head.enqueued_at)::float8
FROM unnest(%(pipelines)s::text[]) AS p(pipeline)
CROSS JOIN LATERAL (
    SELECT t.enqueued_at FROM tasks t
    WHERE t.pipeline = p.pipeline AND t.state = 'queued' AND t.not_before <= now()
    ORDER BY t.seq
    LIMIT 1
) AS head
"""

_DATABASE_SIZE_SQL = "SELECT pg_database_size(current_database())"

# The tables of the schema galpipe migrated into (the first of the search path).
_RELATION_SIZES_SQL = """
SELECT c.relname, pg_total_relation_size(c.oid)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema()
ORDER BY 1
"""

_CONNECTIONS_SQL = """
SELECT coalesce(state, 'unknown'), count(*)
FROM pg_stat_activity
WHERE datname = current_database()
GROUP BY 1
"""


def oldest_ready_age(conn: psycopg.Connection, pipelines: list[str]) -> dict[str, float]:
    """Seconds since the oldest ready task of each pipeline was enqueued (pipelines with one).

    Ready means queued and due (``not_before <= now()``); a retry waiting out its delay is not
    ready. Age counts from ``enqueued_at``, the task's first enqueue, so a task that was
    retried keeps its age.
    """
    rows = conn.execute(OLDEST_READY_SQL, {"pipelines": pipelines}).fetchall()
    return {p: max(0.0, float(age)) for p, age in rows}


def database_size(conn: psycopg.Connection) -> int:
    """Bytes the current database takes on disk."""
    row = conn.execute(_DATABASE_SIZE_SQL).fetchone()
    assert row is not None
    return int(row[0])


def relation_sizes(conn: psycopg.Connection) -> dict[str, int]:
    """Bytes of each table of the galpipe schema, with its indexes and TOAST."""
    return {str(name): int(size) for name, size in conn.execute(_RELATION_SIZES_SQL).fetchall()}


def connections_by_state(conn: psycopg.Connection) -> dict[str, int]:
    """Connections to the current database by ``pg_stat_activity.state``."""
    return {str(state): int(n) for state, n in conn.execute(_CONNECTIONS_SQL).fetchall()}


def ping(conn: psycopg.Connection) -> None:
    """Raise :class:`psycopg.Error` unless the server answers a trivial query."""
    conn.execute("SELECT 1")
