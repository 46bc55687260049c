"""Migrations: applied once under the advisory lock, however many processes race."""

from __future__ import annotations

import multiprocessing
import re

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from galpipe.db import migrate as migrate_module
from galpipe.db.migrate import MigrationError, load_migrations, migrate


@pytest.fixture
def empty_database(pg_server):
    admin = pg_server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS galpipe_migrate_test WITH (FORCE)")
        conn.execute("CREATE DATABASE galpipe_migrate_test")
    yield make_conninfo(admin, dbname="galpipe_migrate_test")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS galpipe_migrate_test WITH (FORCE)")


def _migrate_in_child(url: str, results) -> None:
    results.put(migrate(url))


def test_many_processes_migrate_at_once(empty_database: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_migrate_in_child, args=(empty_database, results)) for _ in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    applied = [results.get(timeout=5) for _ in procs]
    versions = [m.version for m in load_migrations()]
    # Exactly one process applied everything; the others found nothing to do.
    assert sorted(applied, key=len) == [[], [], [], versions]
    with psycopg.connect(empty_database) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (len(versions),)
        assert conn.execute("SELECT to_regclass('tasks')").fetchone() == ("tasks",)


def test_a_changed_migration_is_refused(empty_database: str, monkeypatch) -> None:
    migrate(empty_database)
    original = load_migrations()
    edited = [migrate_module.Migration(m.version, m.name, m.sql + "\n-- edited") for m in original]
    monkeypatch.setattr(migrate_module, "load_migrations", lambda: edited)
    with pytest.raises(MigrationError, match="was changed after it was applied"):
        migrate(empty_database)


def _record_future(url: str, *, compatible: bool) -> None:
    """Record a migration 9999 that this code does not ship, as a newer release would."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum, compatible) "
            "VALUES (9999, 'future', 'x', %s)",
            (compatible,),
        )


def test_a_newer_incompatible_migration_is_refused_by_name(empty_database: str) -> None:
    migrate(empty_database)
    _record_future(empty_database, compatible=False)
    with pytest.raises(MigrationError, match=r"9999_future\.sql.*not marked compatible"):
        migrate(empty_database)


def test_a_newer_compatible_migration_is_verified_not_refused(empty_database: str) -> None:
    migrate(empty_database)
    _record_future(empty_database, compatible=True)
    with psycopg.connect(empty_database) as conn:
        before = conn.execute("SELECT * FROM schema_migrations ORDER BY version").fetchall()
    assert migrate(empty_database) == []
    with psycopg.connect(empty_database) as conn:
        after = conn.execute("SELECT * FROM schema_migrations ORDER BY version").fetchall()
    assert after == before


def test_verifying_still_refuses_a_changed_migration(empty_database: str) -> None:
    migrate(empty_database)
    _record_future(empty_database, compatible=True)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(MigrationError, match=r"0001_foundation\.sql was changed"):
        migrate(empty_database)


def test_the_previous_release_verifies_a_compatible_newest_migration(
    empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The older image's view: it ships every migration but the newest."""
    migrate(empty_database)
    *older, newest = load_migrations()
    monkeypatch.setattr(migrate_module, "load_migrations", lambda: older)
    if newest.compatible:
        assert migrate(empty_database) == []
    else:
        with pytest.raises(MigrationError, match=re.escape(newest.filename)):
            migrate(empty_database)


def test_an_older_release_refuses_a_database_with_an_incompatible_migration(
    empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Release 0001..0003 meets a database that has 0004 (recorded before the header existed)."""
    migrate(empty_database)
    older = [m for m in load_migrations() if m.version <= 3]
    monkeypatch.setattr(migrate_module, "load_migrations", lambda: older)
    with pytest.raises(MigrationError, match=r"0004_status_index\.sql"):
        migrate(empty_database)


def test_the_compatible_header_is_recorded(empty_database: str) -> None:
    migrate(empty_database)
    header = re.compile(r"^-- compatible-with-previous: yes$", re.MULTILINE)
    expected = {m.version: bool(header.search(m.sql.split("\n\n")[0])) for m in load_migrations()}
    with psycopg.connect(empty_database) as conn:
        recorded: dict[int, bool] = dict(
            conn.execute("SELECT version, compatible FROM schema_migrations").fetchall()
        )
    assert recorded == expected
    assert any(expected.values()), "no migration marked compatible: the verify path is untested"


def test_a_history_table_without_the_column_gains_it(empty_database: str) -> None:
    """A database migrated by a galpipe that predates ``compatible``: rows read false."""
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
            "checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
    first = load_migrations()[0]
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute(first.sql)
        conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
            (first.version, first.name, first.checksum),
        )
    assert first.version not in migrate(empty_database)
    with psycopg.connect(empty_database) as conn:
        assert conn.execute(
            "SELECT compatible FROM schema_migrations WHERE version = %s", (first.version,)
        ).fetchone() == (False,)


def test_schema_rejects_impossible_coordinates(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO galaxies VALUES (1, 360.0, 0, 'x')")
        conn.rollback()
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO galaxies VALUES (1, 10.0, -90.5, 'x')")


def test_the_combined_error_column_describes_the_band_stack(empty_database: str) -> None:
    migrate(empty_database)
    with psycopg.connect(empty_database) as conn:
        (comment,) = conn.execute(
            "SELECT col_description('radon_measurements'::regclass, attnum) FROM pg_attribute "
            "WHERE attrelid = 'radon_measurements'::regclass AND attname = 'angle_err_deg'"
        ).fetchone()
    assert "Birge ratio" in comment
    assert "calibrated on synthetic truth" in comment
    assert "1/sigma^2" not in comment
