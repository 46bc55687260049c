"""Plain-SQL versioned migrations, applied under a Postgres advisory lock.

Files ``migrations/NNNN_name.sql`` are applied in order, each in its own transaction together
with its row in ``schema_migrations``. The whole run holds a session advisory lock, so many
pods may run ``galpipe migrate`` at once: one applies, the others wait and then find nothing
left to do.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from galpipe.errors import ServiceError

log = logging.getLogger(__name__)

# An arbitrary constant shared by every galpipe process: the advisory lock key of migrations.
MIGRATION_LOCK_KEY = 0x6A1_91BE
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(ServiceError, RuntimeError):
    """The database holds a migration history that this code does not recognise."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """The migrations shipped in the package, in version order."""
    found = []
    for entry in resources.files("galpipe.db.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {versions}")
    return found


def migrate(conninfo: str) -> list[int]:
    """Apply every pending migration; return the versions this call applied.

    Raises
    ------
    MigrationError
        If an applied migration's checksum differs from the shipped file, or the database is at
        a version this code does not know (a newer galpipe migrated it).
    """
    migrations = load_migrations()
    applied_now: list[int] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version    integer PRIMARY KEY,
                       name       text NOT NULL,
                       checksum   text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            rows = conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
            applied: dict[int, str] = dict(rows)
            known = {m.version: m for m in migrations}
            unknown = sorted(set(applied) - set(known))
            if unknown:
                raise MigrationError(
                    f"database has migrations {unknown} that this galpipe does not ship; "
                    "upgrade galpipe before running it against this database"
                )
            for m in migrations:
                if m.version in applied:
                    if applied[m.version] != m.checksum:
                        raise MigrationError(
                            f"migration {m.version:04d}_{m.name}.sql was changed after it was "
                            "applied; write a new migration instead"
                        )
                    continue
                with conn.transaction():
                    conn.execute(m.sql)  # type: ignore[arg-type]  # trusted file shipped with galpipe
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) "
                        "VALUES (%s, %s, %s)",
                        (m.version, m.name, m.checksum),
                    )
                log.info("applied migration %04d_%s", m.version, m.name)
                applied_now.append(m.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return applied_now
