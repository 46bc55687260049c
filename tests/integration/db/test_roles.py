"""The database roles: each does its job through galpipe's own code, and nothing more.

The database is owned by a migrator role that runs the migrations, as in a deployment
(docs/deploy-aws.md): the app role (workers, monitor, control, ingest) and the scaler role
(KEDA's ready-depth query) connect as themselves. The embedded server trusts local
connections, so no passwords are involved here (the rotation drill has them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

from galpipe.db import check, control, monitor, status
from galpipe.db.audit import AuditRecord, query_audit, record_action
from galpipe.db.breaker import CircuitBreaker
from galpipe.db.connection import open_pool
from galpipe.db.cutout_packs import CutoutPack, record_packs
from galpipe.db.cutouts import CutoutRecord, cutouts_for, record_cutouts
from galpipe.db.galaxies import insert_galaxies
from galpipe.db.measurements import MeasurementRecord, record_measurements
from galpipe.db.migrate import migrate
from galpipe.db.queue import (
    READY_DEPTH_CAPPED_SQL,
    TASK_COUNTS_SQL,
    RetryPolicy,
    TaskQueue,
    ready_depth_query,
    roll_up_task_counts,
    task_counts,
)
from galpipe.db.ratelimit import RateLimitPolicy, TokenBucket
from galpipe.db.routes import add_route, remove_route, routes

MIGRATOR, APP, SCALER = "galpipe_migrator", "galpipe_app", "galpipe_scaler"

#: What each role may do on each relation of the schema. A table added without a line here
#: fails test_every_relation_has_exactly_the_privileges_decided: a new table's migration
#: decides its grants.
EXPECTED = {
    APP: {
        "galaxies": {"SELECT", "INSERT"},
        "tasks": {"SELECT", "INSERT", "UPDATE"},
        "pipeline_control": {"SELECT", "INSERT", "UPDATE"},
        "rate_limits": {"SELECT", "INSERT", "UPDATE"},
        "breakers": {"SELECT", "INSERT", "UPDATE"},
        "cutouts": {"SELECT", "INSERT", "UPDATE"},
        "cutout_packs": {"SELECT", "INSERT"},
        "radon_measurements": {"SELECT", "INSERT", "UPDATE"},
        "galaxy_states": {"SELECT"},
        "audit_log": {"SELECT", "INSERT"},
        "pipeline_routes": {"SELECT", "INSERT", "DELETE"},
        "models": {"SELECT", "INSERT"},
        "morphology_predictions": {"SELECT", "INSERT", "UPDATE"},
        "photoz_predictions": {"SELECT", "INSERT", "UPDATE"},
        # Its statements on tasks append deltas (migration 0015's triggers run as the writer);
        # only the rollup, a function of the owner's, folds them into the counts.
        "task_state_deltas": {"SELECT", "INSERT"},
        "task_state_counts": {"SELECT"},
        "task_completions": {"SELECT", "INSERT"},
    },
    SCALER: {"tasks": {"SELECT"}, "pipeline_control": {"SELECT"}},
}
_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


@pytest.fixture(scope="module")
def role_database(pg_server) -> Iterator[str]:
    """A database owned by the migrator role and migrated by it; its admin conninfo."""
    admin = pg_server.get_uri()
    name = "galpipe_roles_test"
    with psycopg.connect(admin, autocommit=True) as conn:
        if (
            conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (MIGRATOR,)).fetchone()
            is None
        ):
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEROLE").format(sql.Identifier(MIGRATOR))
            )
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(MIGRATOR)
            )
        )
    migrate(make_conninfo(admin, dbname=name, user=MIGRATOR))
    yield make_conninfo(admin, dbname=name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _as(role_database: str, role: str) -> str:
    return make_conninfo(role_database, user=role)


@pytest.fixture
def app_pool(role_database: str) -> Iterator[ConnectionPool]:
    pool = open_pool(_as(role_database, APP), max_size=2)
    yield pool
    pool.close()


def test_the_migrator_owns_every_relation_of_the_schema(role_database: str) -> None:
    with psycopg.connect(role_database) as conn:
        owners: dict[str, str] = dict(
            conn.execute(
                "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'S', 'i')"
            ).fetchall()
        )
    assert owners
    assert set(owners.values()) == {MIGRATOR}, owners


def test_every_relation_has_exactly_the_privileges_decided(role_database: str) -> None:
    with psycopg.connect(role_database) as conn:
        relations = [
            r
            for (r,) in conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'p')"
            )
        ]
        for role in (APP, SCALER):
            granted = {}
            for relation in relations:
                held = {
                    p
                    for p in _PRIVILEGES
                    if conn.execute(
                        "SELECT has_table_privilege(%s, %s, %s)", (role, relation, p)
                    ).fetchone()
                    == (True,)
                }
                if held:
                    granted[relation] = held
            assert granted == EXPECTED[role], role
    assert "schema_migrations" in relations


def test_the_app_role_does_the_workers_monitors_and_controls_job(
    app_pool: ConnectionPool,
) -> None:
    queue = TaskQueue(app_pool, RetryPolicy(max_retries=1, delays=(0.0,)))
    with app_pool.connection() as conn:
        # Ingest: COPY into a temporary stage, then insert; then the fetch tasks.
        rows = [(i, 1000 + i, 10.0 + i, -5.0, json.dumps({"k": i})) for i in range(6)]
        assert insert_galaxies(conn, "roles-test", rows).inserted == 6
    ids = [1000 + i for i in range(6)]
    queue.enqueue("fetch", ids)
    assert queue.ready_depth("fetch") == 6
    batch = queue.claim_batch("fetch", 6, 60.0, "w1")
    assert len(batch) == 6
    assert queue.extend_lease("fetch", "w1", 60.0) == 6
    with app_pool.connection() as conn, conn.transaction():
        assert queue.complete(conn, "fetch", "w1", ids[:3]) == ids[:3]
        # The first two in one pack (migration 0014), the third its own object.
        record_packs(conn, [CutoutPack("p/1.pack", 7, 5, "1" * 64, 18, 2)])
        records = [
            CutoutRecord(sid, "ls-dr10", "griz", "", 40, 0.262, "south", f"k/{sid}", "0" * 64, 9)
            for sid in ids[:3]
        ]
        packed = [replace(r, pack_key="p/1.pack", pack_offset=9 * i) for i, r in enumerate(records)]
        record_cutouts(conn, [*packed[:2], records[2]])
        queue.retry(conn, "fetch", "w1", {ids[3]: "timeout"}, {})
        queue.skip(conn, "fetch", "w1", {ids[4]: "no coverage"})
        queue.fail(conn, "fetch", "w1", {ids[5]: "bad"})
    with app_pool.connection() as conn:
        assert set(cutouts_for(conn, ids[:3])) == set(ids[:3])
    radon = queue.claim_batch("radon", 3, 60.0, "w2")
    with app_pool.connection() as conn, conn.transaction():
        queue.complete(conn, "radon", "w2", [t.source_id for t in radon])
        record_measurements(
            conn,
            [
                MeasurementRecord(source_id=t.source_id, algo_version="v", band="r", flags=0)
                for t in radon
            ],
        )
        # A re-measurement updates its row in place.
        record_measurements(
            conn, [MeasurementRecord(source_id=ids[0], algo_version="v", band="r", flags=1)]
        )
    queue.recover_expired("fetch")
    queue.pause("radon", "roles test")
    queue.resume("radon")
    TokenBucket(app_pool, "roles-test", RateLimitPolicy(rate=100.0, burst=10.0)).acquire(1)
    breaker = CircuitBreaker(app_pool, "roles-test")
    assert breaker.allow("w1")
    breaker.record_failure("w1", "boom")
    breaker.status()
    with app_pool.connection() as conn:
        # The monitor, status and check read what they read.
        assert monitor.database_size(conn) > 0
        monitor.relation_sizes(conn)
        monitor.connections_by_state(conn)
        status.pipeline_controls(conn)
        status.breaker_names(conn)
        assert check.galaxy_count(conn) == 6
        check.galaxies_without_task(conn, "fetch", 3)
        conn.execute("SELECT count(*) FROM galaxy_states").fetchone()
        # The control plane: retry, requeue, counts, and its audit record.
        with conn.transaction():
            assert control.retry_failed(conn, "fetch", dry_run=False) == 1
            control.requeue_for_version(conn, "radon", algo_version="w", dry_run=True)
            record_action(conn, AuditRecord(user="ops", action="retry", reason="test", result="ok"))
        control.read_task_counts(conn)
        # Status's maintained counts: the app role folds the deltas and reads the sum.
        with conn.transaction():
            assert roll_up_task_counts(conn) > 0
        counted = conn.execute(TASK_COUNTS_SQL, {"ids": None}).fetchall()
        assert {
            (p, s): n for p, counts in task_counts(conn).items() for s, n in counts.items() if n
        } == {(p, s): n for p, s, n in counted}
        control.queue_overview(conn, ["fetch", "radon"])
        assert [r.action for r in query_audit(conn, user="ops")] == ["retry"]
        # The operator's routes: add (its table lock and backfill), list, remove.
        with conn.transaction():
            assert add_route(conn, "fetch", "morphology") == 3
            assert {(r.upstream, r.downstream) for r in routes(conn)} == {
                ("fetch", "morphology"),
                ("fetch", "radon"),
            }
            assert remove_route(conn, "fetch", "morphology")


@pytest.mark.parametrize(
    "statement",
    [
        "DROP TABLE tasks",
        "ALTER TABLE tasks ADD COLUMN x integer",
        "CREATE TABLE intruder (x integer)",
        "CREATE INDEX ON tasks (attempts)",
        "TRUNCATE tasks",
        "DELETE FROM tasks",
        "DELETE FROM galaxies",
        "UPDATE galaxies SET catalog = 'x'",
        "UPDATE audit_log SET reason = 'x'",
        "DELETE FROM task_state_deltas",
        "DELETE FROM task_completions",
        "UPDATE task_completions SET n = 0",
        "UPDATE task_state_counts SET n = 0",
        "INSERT INTO task_state_counts (pipeline, state, n) VALUES ('fetch', 'done', 1)",
        "SELECT * FROM schema_migrations",
        "INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'x', 'x')",
        "CREATE ROLE intruder",
    ],
)
def test_the_app_role_cannot_change_the_schema_or_erase_records(
    role_database: str, statement: str
) -> None:
    with (
        psycopg.connect(_as(role_database, APP), autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(statement)  # type: ignore[arg-type]  # literal test statements


def test_the_scaler_role_runs_the_charts_query(role_database: str) -> None:
    with psycopg.connect(_as(role_database, SCALER)) as conn:
        (depth,) = conn.execute(ready_depth_query("fetch", 6001)).fetchone() or (None,)
        (bound,) = conn.execute(
            READY_DEPTH_CAPPED_SQL, {"pipeline": "fetch", "cap": 6001}
        ).fetchone() or (None,)
    assert isinstance(depth, int)
    assert depth == bound


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM galaxies",
        "SELECT * FROM cutouts",
        "SELECT * FROM audit_log",
        "SELECT * FROM schema_migrations",
        "SELECT * FROM task_state_counts",
        "SELECT * FROM task_completions",
        "SELECT roll_up_task_state_counts()",
        "SELECT prune_task_completions()",
        "UPDATE tasks SET attempts = 0",
        "INSERT INTO pipeline_control (pipeline, paused) VALUES ('fetch', true)",
        "UPDATE pipeline_control SET paused = false",
        "DELETE FROM tasks",
        "DROP TABLE tasks",
        "CREATE TABLE intruder (x integer)",
    ],
)
def test_the_scaler_role_can_only_read_its_two_tables(role_database: str, statement: str) -> None:
    with (
        psycopg.connect(_as(role_database, SCALER), autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(statement)  # type: ignore[arg-type]  # literal test statements


def test_only_the_migrator_migrates(role_database: str) -> None:
    """``galpipe migrate`` as the app role fails on the history table, not half-way."""
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="schema_migrations"):
        migrate(_as(role_database, APP))
    assert migrate(_as(role_database, MIGRATOR)) == []
