"""Bring a fresh database to the schema just before one migration (upgrade tests)."""

from __future__ import annotations

import psycopg

from galpipe.db.migrate import Migration, load_migrations


def migrate_up_to(conn: psycopg.Connection, name: str) -> Migration:
    """Apply every shipped migration before the one called ``name`` (autocommit ``conn``, one
    transaction each); return that one, for the test to apply over the state it prepares."""
    migrations = load_migrations()
    (target,) = [m for m in migrations if m.name == name]
    for m in migrations:
        if m.version < target.version:
            with conn.transaction():
                conn.execute(m.sql)  # type: ignore[arg-type]  # shipped migration files
    return target
