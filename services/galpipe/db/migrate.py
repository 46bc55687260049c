"""Plain-SQL versioned migrations, applied under a Postgres advisory lock.

Files ``migrations/NNNN_name.sql`` are applied in order, each in its own transaction together
with its row in ``schema_migrations``. The whole run holds a session advisory lock, so many
pods may run ``galpipe migrate`` at once: one applies, the others wait and then find nothing
left to do.

Expand/contract: a migration that the previous release's code runs on unchanged (a new table,
column with a default, index, grant, comment) says so in its first comment lines::

    -- compatible-with-previous: yes

and ``schema_migrations.compatible`` records it. An older galpipe that meets a database ahead of
it (a rollback) then verifies instead of refusing: every migration it ships must be applied with
its checksum, and every one it does not know must be recorded compatible. A contracting change
(drop, rename, a new NOT NULL without default) ships without the header, so an older release
refuses it, naming the migration (docs/decisions.md, expand/contract migrations).
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
# The header of an expand-only migration, in the comment lines that open the file.
_COMPATIBLE = re.compile(r"^--\s*compatible-with-previous:\s*yes\s*$", re.IGNORECASE)


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

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"

    @property
    def compatible(self) -> bool:
        """True if the file's opening comments mark it ``compatible-with-previous: yes``."""
        for line in self.sql.splitlines():
            if not line.startswith("--"):
                break
            if _COMPATIBLE.match(line.strip()):
                return True
        return False


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

    A database ahead of this code (migrations it does not ship) is verified, not migrated:
    if every unknown migration is recorded compatible and every shipped one is applied
    unchanged, nothing is applied and ``[]`` is returned.

    Raises
    ------
    MigrationError
        If an applied migration's checksum differs from the shipped file, or the database
        holds a migration this code does not know that is not marked compatible with the
        previous release (the message names it).
    """
    migrations = load_migrations()
    applied_now: list[int] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            _ensure_history_table(conn)
            rows = conn.execute(
                "SELECT version, name, checksum, compatible FROM schema_migrations"
            ).fetchall()
            applied = {version: (name, checksum, ok) for version, name, checksum, ok in rows}
            for m in migrations:
                if m.version in applied and applied[m.version][1] != m.checksum:
                    raise MigrationError(
                        f"migration {m.filename} was changed after it was applied; write a new "
                        "migration instead"
                    )
            known = {m.version for m in migrations}
            unknown = sorted(set(applied) - known)
            if unknown:
                _verify_ahead(migrations, applied, unknown)
                return []
            for m in migrations:
                if m.version in applied:
                    continue
                with conn.transaction():
                    conn.execute(m.sql)  # type: ignore[arg-type]  # trusted file shipped with galpipe
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum, compatible) "
                        "VALUES (%s, %s, %s, %s)",
                        (m.version, m.name, m.checksum, m.compatible),
                    )
                log.info("applied migration %s", m.filename)
                applied_now.append(m.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return applied_now


def _ensure_history_table(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Create ``schema_migrations``, or add the ``compatible`` column an older galpipe lacked.

    Rows written before the column existed read ``false``: never assumed compatible.
    """
    conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               version    integer PRIMARY KEY,
               name       text NOT NULL,
               checksum   text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now(),
               compatible boolean NOT NULL DEFAULT false)"""
    )
    exists = conn.execute(
        "SELECT 1 FROM pg_attribute WHERE attrelid = 'schema_migrations'::regclass "
        "AND attname = 'compatible' AND NOT attisdropped"
    ).fetchone()
    if exists is None:
        conn.execute(
            "ALTER TABLE schema_migrations ADD COLUMN compatible boolean NOT NULL DEFAULT false"
        )


def _verify_ahead(
    migrations: list[Migration], applied: dict[int, tuple[str, str, bool]], unknown: list[int]
) -> None:
    """Accept a database ahead of this code only if this code can run on it unchanged."""
    refused = [f"{v:04d}_{applied[v][0]}.sql" for v in unknown if not applied[v][2]]
    if refused:
        raise MigrationError(
            f"database has migrations {', '.join(refused)} that this galpipe does not ship and "
            "that are not marked compatible with the previous release (an expand-only change); "
            "this code cannot run on that schema: upgrade galpipe, or restore the database to a "
            "point before them (docs/runbook.md, rolling back a release)"
        )
    missing = [m.filename for m in migrations if m.version not in applied]
    if missing:
        raise MigrationError(
            f"database lacks {', '.join(missing)} that this galpipe ships, yet holds newer "
            f"migrations {unknown}: its history is not one this code can verify"
        )
    log.warning(
        "database is ahead of this galpipe: migrations %s are newer and recorded compatible "
        "with the previous release; every migration shipped here is applied unchanged, so "
        "nothing was applied",
        ", ".join(f"{v:04d}_{applied[v][0]}.sql" for v in unknown),
    )
