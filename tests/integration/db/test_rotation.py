"""Rotation drill: the app role's password changes under a running worker loop.

A PostgreSQL server that asks for passwords; the app role's password in a file, as a mounted
Secret holds it; a worker-like loop of claims and completions through the production pool
(``pool_from_settings``). Mid-run the password is rotated the way Secrets Manager and External
Secrets do it: ``ALTER ROLE … PASSWORD``, the existing sessions terminated (as RDS rotation
effectively does), a spell in which the file still holds the old password, then the file
rewritten in place. No operation may fail twice in a row and no task may be lost or done twice.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from galpipe.db.embedded import start_embedded_postgres
from galpipe.db.migrate import migrate
from galpipe.db.queue import TaskQueue
from galpipe.runtime.database import pool_from_settings
from galpipe.settings import Settings, SettingsError

APP = "galpipe_app"
ADMIN_PASSWORD = "drill-admin-password"
TASKS = 600
#: Bounded waits of the drill (liveness, not timing): far above what each step takes.
_PATIENCE_S = 60.0


@dataclass
class Drill:
    """What the worker-like loop saw."""

    done: list[int] = field(default_factory=list)
    failures: int = 0
    worst_streak: int = 0
    errors: list[str] = field(default_factory=list)
    batches: int = 0


@pytest.fixture(scope="module")
def password_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database on a server that requires passwords; the admin conninfo."""
    server = start_embedded_postgres(
        tmp_path_factory.mktemp("rotation") / "pgdata", password=ADMIN_PASSWORD
    )
    admin = make_conninfo(server.get_uri(), password=ADMIN_PASSWORD)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE DATABASE galpipe_rotation")
    url = make_conninfo(admin, dbname="galpipe_rotation")
    migrate(url)
    yield url
    server.cleanup()


def _set_password(admin: str, password: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        verifier = conn.pgconn.encrypt_password(
            password.encode(), APP.encode(), b"scram-sha-256"
        ).decode()
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(APP), sql.Literal(verifier))
        )


def _write_secret(path: Path, password: str) -> None:
    """Replace the file atomically, as the kubelet swaps a mounted Secret's directory."""
    staged = path.with_name(path.name + ".new")
    staged.write_text(password + "\n", encoding="utf-8")
    os.replace(staged, path)


def _once_retried(drill: Drill, op: Callable[[], Any]) -> Any:
    """Run ``op``; after a database error, once more. Record the longest failure streak."""
    streak = 0
    while True:
        try:
            result = op()
        except psycopg.OperationalError as exc:
            streak += 1
            drill.failures += 1
            drill.worst_streak = max(drill.worst_streak, streak)
            drill.errors.append(f"{type(exc).__name__}: {exc}")
            if streak > 1:
                raise
            continue
        return result


def _worker(queue: TaskQueue, drill: Drill, stop: threading.Event) -> None:
    owner = "drill-worker"

    def claim() -> list[int]:
        queue.recover_expired("fetch")
        return [t.source_id for t in queue.claim_batch("fetch", 5, 5.0, owner)]

    def commit(ids: list[int]) -> list[int]:
        with queue.pool.connection() as conn, conn.transaction():
            return queue.complete(conn, "fetch", owner, ids)

    while not stop.is_set() and len(drill.done) < TASKS:
        try:
            ids: list[int] = _once_retried(drill, claim)
            if ids:
                drill.done.extend(_once_retried(drill, functools.partial(commit, ids)))
                drill.batches += 1
        except psycopg.OperationalError:
            return


def _wait_for(what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + _PATIENCE_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"drill: {what} did not happen within {_PATIENCE_S:.0f} s")
        time.sleep(0.01)


def test_a_password_rotation_under_load_fails_nothing_twice(
    password_server: str, tmp_path: Path
) -> None:
    admin = password_server
    secret = tmp_path / "password"
    _set_password(admin, "first-password")
    _write_secret(secret, "first-password")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("TRUNCATE tasks, galaxies CASCADE")
        conn.execute(
            "INSERT INTO galaxies (source_id, ra, dec, catalog) "
            "SELECT g, g * 0.01, 0, 'drill' FROM generate_series(1, %s) g",
            (TASKS,),
        )
        conn.execute(
            "INSERT INTO tasks (pipeline, source_id) "
            "SELECT 'fetch', g FROM generate_series(1, %s) g",
            (TASKS,),
        )
    settings = Settings.from_env(
        {
            # The URL names the role only: its password lives in the file.
            "GALPIPE_DATABASE_URL": make_conninfo(admin, user=APP, password=""),
            "GALPIPE_DATABASE_PASSWORD_FILE": str(secret),
            "GALPIPE_DB_POOL_SIZE": "3",
        }
    )
    drill, stop = Drill(), threading.Event()
    with pool_from_settings(settings, timeout_s=_PATIENCE_S) as pool:
        worker = threading.Thread(target=_worker, args=(TaskQueue(pool), drill, stop))
        worker.start()
        try:
            _wait_for("a tenth of the tasks", lambda: len(drill.done) >= TASKS // 10)
            _set_password(admin, "second-password")
            with psycopg.connect(admin, autocommit=True) as conn:
                ended = conn.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                    "FROM pg_stat_activity WHERE usename = %s",
                    (APP,),
                ).fetchone()
            assert ended is not None
            assert ended[0] >= 1
            # The file still holds the old password: new connections are refused until the
            # rotated Secret reaches the pod.
            _wait_for(
                "a refused connection", lambda: pool.get_stats().get("connections_errors", 0) > 0
            )
            done_before = len(drill.done)
            _write_secret(secret, "second-password")
            _wait_for("all tasks done", lambda: len(drill.done) >= TASKS or not worker.is_alive())
        finally:
            stop.set()
            worker.join(_PATIENCE_S)
    assert drill.worst_streak <= 1, drill.errors
    assert len(drill.done) == TASKS
    assert len(drill.done) > done_before, "nothing was done after the rotation"
    assert sorted(drill.done) == list(range(1, TASKS + 1)), "a task was lost or done twice"
    with psycopg.connect(admin) as conn:
        # Each fetch commit also queued its radon task (the route migration 0010 seeds).
        assert conn.execute(
            "SELECT pipeline, state::text, count(*) FROM tasks GROUP BY 1, 2 ORDER BY 1"
        ).fetchall() == [("fetch", "done", TASKS), ("radon", "queued", TASKS)]
        # The sessions after the rotation authenticated with the new password: the old one is
        # refused now.
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(make_conninfo(admin, user=APP, password="first-password"))


def test_a_missing_password_file_is_named_at_start_up(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "GALPIPE_DATABASE_URL": "postgresql://galpipe_app@db.example:5432/galpipe",
            "GALPIPE_DATABASE_PASSWORD_FILE": str(tmp_path / "absent"),
        }
    )
    with pytest.raises(
        SettingsError, match=r"GALPIPE_DATABASE_PASSWORD_FILE=.*absent.*cannot read"
    ):
        pool_from_settings(settings)


def test_an_empty_password_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("\n", encoding="utf-8")
    settings = Settings.from_env(
        {
            "GALPIPE_DATABASE_URL": "postgresql://galpipe_app@db.example:5432/galpipe",
            "GALPIPE_DATABASE_PASSWORD_FILE": str(secret),
        }
    )
    with pytest.raises(SettingsError, match="the file is empty"):
        pool_from_settings(settings)
