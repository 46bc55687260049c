"""SQL of ``galpipe monitor`` beyond what ``galpipe status`` and the queue read.

The oldest *ready* task per pipeline is :func:`galpipe.db.queue.oldest_queued_age` with
``ready_only``. Each query here is cheap enough to run every poll (seconds apart) against a
queue of millions:

- sizes come from the catalogue (``pg_database_size``, ``pg_total_relation_size``), which stats
  files rather than reading rows;
- connections are one row per backend in ``pg_stat_activity``.
"""

from __future__ import annotations

import psycopg

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
