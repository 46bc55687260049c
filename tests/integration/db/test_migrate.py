"""Migrations: applied once under the advisory lock, however many processes race."""

from __future__ import annotations

import multiprocessing

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


def test_a_newer_database_is_refused(empty_database: str) -> None:
    migrate(empty_database)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'future', 'x')"
        )
    with pytest.raises(MigrationError, match=r"\[9999\].*upgrade galpipe"):
        migrate(empty_database)


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
    assert "1/sigma^2" not in comment
