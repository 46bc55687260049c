"""The audit log against a real PostgreSQL: written as given, filtered, and append-only."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from galpipe.db.audit import AuditRecord, query_audit, record_action
from galpipe.errors import InputError


def _record(**overrides) -> AuditRecord:
    fields = {
        "user": "alice",
        "groups": ("system:authenticated", "galpipe-operators"),
        "action": "pause",
        "pipeline": "fetch",
        "target": {"deployment": "galpipe-fetch"},
        "reason": "survey maintenance",
        "before": {"paused": False},
        "after": {"paused": True},
        "result": "ok",
    }
    fields.update(overrides)
    return AuditRecord(**fields)


def test_a_record_reads_back_as_written(pool: ConnectionPool) -> None:
    with pool.connection() as conn:
        written = record_action(conn, _record(error=None))
        (read,) = query_audit(conn)
    assert written.id is not None
    assert written.at is not None
    assert read == written
    assert read.to_json() == {
        "id": written.id,
        "at": written.at.isoformat(),
        "user": "alice",
        "groups": ["system:authenticated", "galpipe-operators"],
        "action": "pause",
        "pipeline": "fetch",
        "target": {"deployment": "galpipe-fetch"},
        "reason": "survey maintenance",
        "before": {"paused": False},
        "after": {"paused": True},
        "result": "ok",
        "error": None,
    }


def test_a_failed_record_keeps_its_error_and_null_states(pool: ConnectionPool) -> None:
    with pool.connection() as conn:
        record_action(conn, _record(result="failed", after=None, error="409 Conflict"))
        (read,) = query_audit(conn)
        (raw,) = conn.execute("SELECT after IS NULL, error FROM audit_log").fetchall()
    assert (read.result, read.after, read.error) == ("failed", None, "409 Conflict")
    assert raw == (True, "409 Conflict")


def test_filters_combine_and_newest_comes_first(pool: ConnectionPool) -> None:
    with pool.connection() as conn:
        first = record_action(conn, _record())
        record_action(conn, _record(user="bob", action="hold", pipeline="radon"))
        record_action(conn, _record(action="resume"))
        last = record_action(conn, _record(user="bob", action="pause", pipeline="radon"))

        assert [r.id for r in query_audit(conn)] == sorted(
            [r.id for r in query_audit(conn)], reverse=True
        )
        assert query_audit(conn)[0].id == last.id
        assert {(r.user, r.action) for r in query_audit(conn, user="bob")} == {
            ("bob", "hold"),
            ("bob", "pause"),
        }
        assert [r.action for r in query_audit(conn, pipeline="fetch")] == ["resume", "pause"]
        assert [r.id for r in query_audit(conn, user="alice", action="pause")] == [first.id]
        assert [r.id for r in query_audit(conn, user="bob", action="pause", pipeline="radon")] == [
            last.id
        ]
        assert len(query_audit(conn, limit=2)) == 2
        # Every row was written in this instant's past: all are since a minute ago, none later.
        assert last.at is not None
        assert len(query_audit(conn, since=last.at - timedelta(minutes=1))) == 4
        assert query_audit(conn, since=last.at + timedelta(seconds=1)) == []


def test_user_filter_is_the_operator_not_the_database_role(pool: ConnectionPool) -> None:
    with pool.connection() as conn:
        role = conn.execute("SELECT current_user").fetchone()[0]
        record_action(conn, _record(user="carol"))
        assert query_audit(conn, user=role) == []
        assert [r.user for r in query_audit(conn, user="carol")] == ["carol"]


@pytest.mark.parametrize("reason", ["", "   ", "\t\n"])
def test_an_empty_reason_is_refused_in_python_and_in_the_schema(
    pool: ConnectionPool, reason: str
) -> None:
    with pool.connection() as conn:
        with pytest.raises(InputError, match="reason"):
            record_action(conn, _record(reason=reason))
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO audit_log (user_name, action, reason, result) "
                "VALUES ('alice', 'pause', %s, 'ok')",
                (reason,),
            )


def test_an_unknown_result_is_refused(pool: ConnectionPool) -> None:
    with pool.connection() as conn:
        with pytest.raises(InputError, match="result 'denied'"):
            record_action(conn, _record(result="denied"))
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO audit_log (user_name, action, reason, result) "
                "VALUES ('alice', 'pause', 'why', 'denied')"
            )


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET reason = 'rewritten'",
        "UPDATE audit_log SET reason = 'rewritten' WHERE false",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ],
)
def test_the_log_is_append_only(pool: ConnectionPool, statement: str) -> None:
    with pool.connection() as conn:
        record_action(conn, _record())
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(statement)  # type: ignore[arg-type]
        (read,) = query_audit(conn)
    assert read.reason == "survey maintenance"


@pytest.mark.parametrize("limit", [0, -1, 1001, True, 2.5])
def test_a_limit_out_of_range_is_refused(pool: ConnectionPool, limit) -> None:
    with pool.connection() as conn, pytest.raises(InputError, match="limit"):
        query_audit(conn, limit=limit)


def test_each_filter_reads_its_index(pool: ConnectionPool) -> None:
    with pool.connection() as conn:
        conn.execute("SET enable_seqscan = off")
        for column, index in [
            ("user_name", "audit_log_user_at"),
            ("action", "audit_log_action_at"),
            ("pipeline", "audit_log_pipeline_at"),
        ]:
            plan = "\n".join(
                r[0]
                for r in conn.execute(
                    f"EXPLAIN SELECT * FROM audit_log WHERE {column} = 'x' "  # type: ignore[arg-type]
                    "ORDER BY at DESC LIMIT 10"
                ).fetchall()
            )
            assert index in plan, plan
