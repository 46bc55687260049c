"""The operator audit log (``audit_log``, migration 0007): append one record, read them back.

Every action of the control plane writes one row: who (the user and groups the cluster's
``TokenReview`` named), what (the action and the pipeline), on what (``target``: the
Kubernetes objects, filters and counts), why (``reason``, never empty), the state before and
after, and how it ended (``ok``, ``failed`` with the error, or ``dry_run``). The table refuses
``UPDATE``, ``DELETE`` and ``TRUNCATE``: a record once written stays as written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from galpipe.errors import InputError

__all__ = ["MAX_AUDIT_LIMIT", "RESULTS", "AuditRecord", "query_audit", "record_action"]

#: How an action ended: done, failed (``error`` says why), or only counted.
RESULTS = ("ok", "failed", "dry_run")
#: Most rows one :func:`query_audit` returns.
MAX_AUDIT_LIMIT = 1000


@dataclass(frozen=True)
class AuditRecord:
    """One operator action as the audit log keeps it.

    Attributes
    ----------
    user, groups
        The operator, as the cluster's ``TokenReview`` named them.
    action
        What was done: ``pause``, ``hold``, ``pin``, ``retry`` …
    reason
        Why, in the operator's words; never empty.
    result
        ``ok``, ``failed`` or ``dry_run`` (:data:`RESULTS`).
    pipeline
        The pipeline acted on (``None`` for an action on no pipeline).
    target
        What was acted on: Kubernetes object names, filters, counts.
    before, after
        The state the action changed, as it was before and after (JSON values).
    error
        Why a ``failed`` action failed.
    id, at
        The row's id and time, set by the database (``None`` before it is written).
    """

    user: str
    action: str
    reason: str
    result: str
    groups: tuple[str, ...] = ()
    pipeline: str | None = None
    target: Mapping[str, Any] = field(default_factory=dict)
    before: Any = None
    after: Any = None
    error: str | None = None
    id: int | None = None
    at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: ``at`` as ISO 8601, ``groups`` as a list."""
        return {
            "id": self.id,
            "at": self.at.isoformat() if self.at is not None else None,
            "user": self.user,
            "groups": list(self.groups),
            "action": self.action,
            "pipeline": self.pipeline,
            "target": dict(self.target),
            "reason": self.reason,
            "before": self.before,
            "after": self.after,
            "result": self.result,
            "error": self.error,
        }


def _json_or_null(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value)


def record_action(conn: psycopg.Connection, record: AuditRecord) -> AuditRecord:
    """Append ``record`` to the audit log; return it with the ``id`` and ``at`` it was given.

    Runs in the caller's transaction, if it holds one, so an action on the database and its
    record commit together.

    Raises
    ------
    InputError
        If the reason is empty or the result is not one of :data:`RESULTS`.
    """
    if not record.reason.strip():
        raise InputError(f"audit record of {record.action!r}: the reason must not be empty")
    if record.result not in RESULTS:
        raise InputError(
            f"audit record of {record.action!r}: result {record.result!r} is not one of {RESULTS}"
        )
    row = conn.execute(
        "INSERT INTO audit_log (user_name, groups, action, pipeline, target, reason, before, "
        "after, result, error) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "RETURNING id, at",
        (
            record.user,
            list(record.groups),
            record.action,
            record.pipeline,
            Jsonb(dict(record.target)),
            record.reason,
            _json_or_null(record.before),
            _json_or_null(record.after),
            record.result,
            record.error,
        ),
    ).fetchone()
    assert row is not None
    return replace(record, id=int(row[0]), at=row[1])


def query_audit(
    conn: psycopg.Connection,
    *,
    user: str | None = None,
    action: str | None = None,
    pipeline: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[AuditRecord]:
    """Audit records, newest first, that match every filter given.

    Parameters
    ----------
    conn
        Connection on the galpipe database.
    user, action, pipeline
        Exact matches (``None``: any).
    since
        Only records at or after this time (timezone-aware).
    limit
        Most records returned, 1 … :data:`MAX_AUDIT_LIMIT`.

    Raises
    ------
    InputError
        If ``limit`` is out of range.

    Notes
    -----
    Only the filters given enter the statement, so each query is a range scan of the index
    on that filter and ``at`` (``audit_log_user_at`` …), newest first.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_AUDIT_LIMIT:
        raise InputError(f"audit limit must be an integer in 1..{MAX_AUDIT_LIMIT}, got {limit!r}")
    conditions: list[sql.Composable] = []
    params: dict[str, Any] = {"limit": limit}
    for column, name, value in (
        ("user_name", "user", user),
        ("action", "action", action),
        ("pipeline", "pipeline", pipeline),
    ):
        if value is not None:
            conditions.append(
                sql.SQL("{} = {}").format(sql.Identifier(column), sql.Placeholder(name))
            )
            params[name] = value
    if since is not None:
        conditions.append(sql.SQL("at >= {}").format(sql.Placeholder("since")))
        params["since"] = since
    where = sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("true")
    query = sql.SQL(
        "SELECT id, at, user_name, groups, action, pipeline, target, reason, before, after, "
        "result, error FROM audit_log WHERE {where} ORDER BY at DESC, id DESC LIMIT {limit}"
    ).format(where=where, limit=sql.Placeholder("limit"))
    return [_record(row) for row in conn.execute(query, params).fetchall()]


def _record(row: Sequence[Any]) -> AuditRecord:
    rid, at, user, groups, action, pipeline, target, reason, before, after, result, error = row
    return AuditRecord(
        user=user,
        action=action,
        reason=reason,
        result=result,
        groups=tuple(groups or ()),
        pipeline=pipeline,
        target=target or {},
        before=before,
        after=after,
        error=error,
        id=int(rid),
        at=at,
    )
