"""The task queue: one row per (pipeline, galaxy) in ``tasks``, claimed in FIFO batches.

State machine (``tasks.state``)::

    queued --claim--> running --complete--> done   (+ a task per route, same transaction)
                         |------retry-----> queued (not_before = now() + delay[attempt])
                         |                  or failed once attempts exceed 1 + max_retries
                         |------skip------> skipped (permanent, with reason; e.g. no coverage)
                         |------fail------> failed  (permanent, with reason)
                         |------release---> queued (SIGTERM: the attempt is given back)
                         '--lease expires-> queued (or failed past the attempt limit)

Every transition out of ``running`` is guarded by the lease owner, so a worker whose lease
expired and whose batch was re-claimed elsewhere changes nothing: its ``complete`` returns the
ids it still owned, and the caller writes results only for those. That is what makes each
task's result land exactly once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
from psycopg_pool import ConnectionPool

STATES = ("queued", "running", "done", "failed", "skipped")
_ENQUEUE_CHUNK = 100_000


@dataclass(frozen=True)
class Task:
    """A claimed task: the galaxy to work on and how many times it has been claimed."""

    pipeline: str
    source_id: int
    attempts: int
    seq: int


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how late a task that failed transiently is tried again.

    Parameters
    ----------
    max_retries
        Retries after the first attempt (paper: 3). A task is attempted at most
        ``1 + max_retries`` times.
    delays
        Seconds to wait before retry 1, 2, …; the last value repeats.
    """

    max_retries: int = 3
    delays: tuple[float, ...] = (30.0, 120.0, 600.0)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if not self.delays or any(d < 0 for d in self.delays):
            raise ValueError(f"delays must be non-empty and non-negative, got {self.delays}")


@dataclass(frozen=True)
class RetryOutcome:
    """What :meth:`TaskQueue.retry` did: ids queued again, and ids that ran out of attempts."""

    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


class TaskQueue:
    """FIFO batch queue over the ``tasks`` table.

    Methods that finish tasks take the caller's connection so that the state change commits in
    the same transaction as the caller's result rows; pass ``conn=None`` to run on a pooled
    connection in a transaction of its own.

    Parameters
    ----------
    pool
        Connection pool on the galpipe database.
    policy
        Retry limits and delays.
    """

    def __init__(self, pool: ConnectionPool, policy: RetryPolicy | None = None) -> None:
        self.pool = pool
        self.policy = policy or RetryPolicy()

    @contextmanager
    def _transaction(self, conn: psycopg.Connection | None) -> Iterator[psycopg.Connection]:
        if conn is not None:
            with conn.transaction():
                yield conn
        else:
            with self.pool.connection() as own, own.transaction():
                yield own

    # -- producing ---------------------------------------------------------------------------

    def enqueue(
        self, pipeline: str, source_ids: Iterable[int], *, conn: psycopg.Connection | None = None
    ) -> int:
        """Queue ``pipeline`` tasks for galaxies, in the given order; existing tasks are kept.

        Idempotent: a (pipeline, galaxy) pair that already has a task, in any state, is left
        as it is. Returns the number of tasks newly queued.
        """
        ids = list(source_ids)
        queued = 0
        with self._transaction(conn) as c:
            for start in range(0, len(ids), _ENQUEUE_CHUNK):
                chunk = ids[start : start + _ENQUEUE_CHUNK]
                cur = c.execute(
                    "INSERT INTO tasks (pipeline, source_id) "
                    "SELECT %s, id FROM unnest(%s::bigint[]) WITH ORDINALITY AS u(id, ord) "
                    "ORDER BY ord ON CONFLICT DO NOTHING",
                    (pipeline, chunk),
                )
                queued += cur.rowcount
        return queued

    # -- claiming ----------------------------------------------------------------------------

    def claim_batch(self, pipeline: str, n: int, lease_seconds: float, owner: str) -> list[Task]:
        """Claim up to ``n`` ready tasks of ``pipeline`` in FIFO order for ``lease_seconds``.

        Ready means queued with ``not_before <= now()``. Rows other workers hold are skipped
        (``FOR UPDATE SKIP LOCKED``), so concurrent claims never block nor overlap. A paused
        pipeline yields nothing.
        """
        if n <= 0:
            raise ValueError(f"claim size must be positive, got {n}")
        with self.pool.connection() as conn:
            rows = conn.execute(
                """
                WITH picked AS (
                    SELECT source_id FROM tasks
                    WHERE pipeline = %(pipeline)s AND state = 'queued' AND not_before <= now()
                      AND NOT EXISTS (SELECT 1 FROM pipeline_control
                                      WHERE pipeline = %(pipeline)s AND paused)
                    ORDER BY seq
                    LIMIT %(n)s
                    FOR UPDATE SKIP LOCKED
                )
                UPDATE tasks t
                SET state = 'running', attempts = t.attempts + 1, lease_owner = %(owner)s,
                    lease_expires = now() + make_interval(secs => %(lease)s),
                    updated_at = now()
                FROM picked
                WHERE t.pipeline = %(pipeline)s AND t.source_id = picked.source_id
                RETURNING t.source_id, t.attempts, t.seq
                """,
                {"pipeline": pipeline, "n": n, "owner": owner, "lease": float(lease_seconds)},
            ).fetchall()
        rows.sort(key=lambda r: r[2])
        return [Task(pipeline, sid, attempts, seq) for sid, attempts, seq in rows]

    def extend_lease(self, pipeline: str, owner: str, lease_seconds: float) -> int:
        """Push back the lease of every task ``owner`` holds in ``pipeline``; return how many."""
        with self.pool.connection() as conn:
            cur = conn.execute(
                "UPDATE tasks SET lease_expires = now() + make_interval(secs => %s) "
                "WHERE pipeline = %s AND state = 'running' AND lease_owner = %s",
                (float(lease_seconds), pipeline, owner),
            )
            return cur.rowcount

    # -- finishing (in the caller's transaction) ------------------------------------------------

    def complete(
        self,
        conn: psycopg.Connection | None,
        pipeline: str,
        owner: str,
        source_ids: Sequence[int],
    ) -> list[int]:
        """Mark ``owner``'s running tasks done and queue their downstream tasks.

        One downstream task per route out of ``pipeline`` (``pipeline_routes``, see
        :mod:`galpipe.db.routes`), queued in the order of the done tasks; a galaxy that already
        has that task keeps it. Returns the ids that were still ``owner``'s (a lost lease drops
        the others); the caller stores results for exactly these, in the same transaction.
        """
        with self._transaction(conn) as c:
            rows = c.execute(
                """
                WITH done AS (
                    UPDATE tasks SET state = 'done', lease_owner = NULL, lease_expires = NULL,
                                     last_error = NULL, updated_at = now()
                    WHERE pipeline = %(pipeline)s AND source_id = ANY(%(ids)s)
                      AND state = 'running' AND lease_owner = %(owner)s
                    RETURNING source_id, seq
                ), next AS (
                    INSERT INTO tasks (pipeline, source_id)
                    SELECT r.downstream, done.source_id
                    FROM done JOIN pipeline_routes r ON r.upstream = %(pipeline)s
                    ORDER BY done.seq
                    ON CONFLICT DO NOTHING
                )
                SELECT source_id FROM done ORDER BY seq
                """,
                {"pipeline": pipeline, "ids": list(source_ids), "owner": owner},
            ).fetchall()
        return [r[0] for r in rows]

    def retry(
        self,
        conn: psycopg.Connection | None,
        pipeline: str,
        owner: str,
        errors: Mapping[int, str],
        min_delays: Mapping[int, float] | None = None,
    ) -> RetryOutcome:
        """Return transiently failed tasks to the queue after their delay, or fail them.

        ``min_delays`` lengthens a task's delay to at least that many seconds (a server's
        ``Retry-After``); the policy's delay still applies when it is longer.

        A task whose attempts exceed ``max_retries`` (it has had its first try and every retry)
        goes to ``failed``; ``last_error`` keeps the error either way.
        """
        if not errors:
            return RetryOutcome()
        with self._transaction(conn) as c:
            rows = c.execute(
                """
                UPDATE tasks t
                SET state = CASE WHEN t.attempts > %(max)s THEN 'failed'::task_state
                                 ELSE 'queued'::task_state END,
                    not_before = CASE WHEN t.attempts > %(max)s THEN t.not_before
                        ELSE now() + make_interval(secs => GREATEST(e.min_delay,
                            (%(delays)s::float8[])[LEAST(t.attempts, cardinality(%(delays)s))]))
                        END,
                    lease_owner = NULL, lease_expires = NULL, last_error = e.error,
                    updated_at = now()
                FROM unnest(%(ids)s::bigint[], %(errors)s::text[], %(min_delays)s::float8[])
                     AS e(source_id, error, min_delay)
                WHERE t.pipeline = %(pipeline)s AND t.source_id = e.source_id
                  AND t.state = 'running' AND t.lease_owner = %(owner)s
                RETURNING t.source_id, t.state::text
                """,
                {
                    "max": self.policy.max_retries,
                    "delays": list(self.policy.delays),
                    "ids": list(errors),
                    "errors": [str(e) for e in errors.values()],
                    "min_delays": [float((min_delays or {}).get(sid, 0.0)) for sid in errors],
                    "pipeline": pipeline,
                    "owner": owner,
                },
            ).fetchall()
        outcome = RetryOutcome()
        for sid, state in rows:
            (outcome.failed if state == "failed" else outcome.requeued).append(sid)
        return outcome

    def skip(
        self, conn: psycopg.Connection | None, pipeline: str, owner: str, reasons: Mapping[int, str]
    ) -> list[int]:
        """Finish tasks as ``skipped`` (a permanent, expected condition such as no coverage)."""
        return self._finish(conn, pipeline, owner, reasons, "skipped")

    def fail(
        self, conn: psycopg.Connection | None, pipeline: str, owner: str, reasons: Mapping[int, str]
    ) -> list[int]:
        """Finish tasks as ``failed`` at once (a permanent error; no retry)."""
        return self._finish(conn, pipeline, owner, reasons, "failed")

    def _finish(
        self,
        conn: psycopg.Connection | None,
        pipeline: str,
        owner: str,
        reasons: Mapping[int, str],
        state: str,
    ) -> list[int]:
        if not reasons:
            return []
        with self._transaction(conn) as c:
            rows = c.execute(
                """
                UPDATE tasks t
                SET state = %(state)s::task_state, lease_owner = NULL, lease_expires = NULL,
                    last_error = e.reason, updated_at = now()
                FROM unnest(%(ids)s::bigint[], %(reasons)s::text[]) AS e(source_id, reason)
                WHERE t.pipeline = %(pipeline)s AND t.source_id = e.source_id
                  AND t.state = 'running' AND t.lease_owner = %(owner)s
                RETURNING t.source_id
                """,
                {
                    "state": state,
                    "ids": list(reasons),
                    "reasons": [str(r) for r in reasons.values()],
                    "pipeline": pipeline,
                    "owner": owner,
                },
            ).fetchall()
        return [r[0] for r in rows]

    def release(
        self,
        pipeline: str,
        owner: str,
        source_ids: Sequence[int] | None = None,
        *,
        conn: psycopg.Connection | None = None,
    ) -> int:
        """Give ``owner``'s running tasks back to the queue unprocessed (graceful shutdown).

        The attempt is not counted: the task was never worked on. Returns how many.
        """
        with self._transaction(conn) as c:
            cur = c.execute(
                """
                UPDATE tasks SET state = 'queued', attempts = GREATEST(attempts - 1, 0),
                                 lease_owner = NULL, lease_expires = NULL, updated_at = now()
                WHERE pipeline = %(pipeline)s AND state = 'running' AND lease_owner = %(owner)s
                  AND (%(ids)s::bigint[] IS NULL OR source_id = ANY(%(ids)s))
                """,
                {
                    "pipeline": pipeline,
                    "owner": owner,
                    "ids": None if source_ids is None else list(source_ids),
                },
            )
            return cur.rowcount

    def recover_expired(self, pipeline: str | None = None) -> RetryOutcome:
        """Return tasks whose lease expired (their worker died) to the queue.

        They are ready at once; the lost attempt counts, so a galaxy that kills its worker
        every time ends ``failed`` after ``1 + max_retries`` attempts instead of looping.

        Rows another transaction holds are skipped (``FOR UPDATE SKIP LOCKED``), never waited
        for: an owner whose lease expired while it finishes locks its rows statement by
        statement, in no order recovery could share, and a recovery that waited on one of them
        while holding others could deadlock with it. A skipped row is either finished by its
        owner's commit or, after a rollback, taken back by the next recovery.
        """
        with self.pool.connection() as conn:
            rows = conn.execute(
                """
                WITH expired AS (
                    SELECT pipeline, source_id FROM tasks
                    WHERE state = 'running' AND lease_expires < now()
                      AND (%(pipeline)s::text IS NULL OR pipeline = %(pipeline)s)
                    FOR UPDATE SKIP LOCKED
                )
                UPDATE tasks AS t
                SET state = CASE WHEN t.attempts > %(max)s THEN 'failed'::task_state
                                 ELSE 'queued'::task_state END,
                    not_before = now(),
                    last_error = 'lease of ' || t.lease_owner || ' expired at attempt '
                                 || t.attempts,
                    lease_owner = NULL, lease_expires = NULL, updated_at = now()
                FROM expired AS e
                WHERE t.pipeline = e.pipeline AND t.source_id = e.source_id
                RETURNING t.source_id, t.state::text
                """,
                {"max": self.policy.max_retries, "pipeline": pipeline},
            ).fetchall()
        outcome = RetryOutcome()
        for sid, state in rows:
            (outcome.failed if state == "failed" else outcome.requeued).append(sid)
        return outcome

    # -- operator control and observation -----------------------------------------------------

    def pause(self, pipeline: str, reason: str = "paused by operator") -> None:
        """Stop every worker of ``pipeline`` from claiming (running batches finish)."""
        self._set_paused(pipeline, True, reason)

    def resume(self, pipeline: str) -> None:
        """Let workers of ``pipeline`` claim again."""
        self._set_paused(pipeline, False, None)

    def _set_paused(self, pipeline: str, paused: bool, reason: str | None) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO pipeline_control (pipeline, paused, reason) VALUES (%s, %s, %s) "
                "ON CONFLICT (pipeline) DO UPDATE SET paused = EXCLUDED.paused, "
                "reason = EXCLUDED.reason, updated_at = now()",
                (pipeline, paused, reason),
            )

    def ready_depth(self, pipeline: str, cap: int | None = None) -> int:
        """Ready tasks of ``pipeline``, exact or counted up to ``cap``.

        Parameters
        ----------
        pipeline
            Pipeline whose ready tasks are counted. A paused pipeline reports 0 so that it
            scales to zero.
        cap
            ``None``: the exact count (``READY_DEPTH_SQL``; the monitor's gauge). Otherwise
            count at most ``cap`` ready tasks (``READY_DEPTH_CAPPED_SQL``, the autoscaler's
            query): exact below it, and its cost bounded by it.
        """
        if cap is not None and cap < 1:
            raise ValueError(f"ready-depth cap must be positive, got {cap}")
        query = READY_DEPTH_SQL if cap is None else READY_DEPTH_CAPPED_SQL
        with self.pool.connection() as conn:
            row = conn.execute(query, {"pipeline": pipeline, "cap": cap}).fetchone()
        return int(row[0]) if row else 0


# -- observation: what status, the monitor and the demo read -------------------------------------

#: Tasks by (pipeline, state), counted. Without ``ids`` (NULL) the filter folds away when the
#: statement is planned and the counts read ``tasks_state`` index-only (it is deduplicated: a few
#: MB per million tasks); with them, only the tasks of those galaxies are counted.
#: :func:`task_counts` uses it for the tasks of given galaxies; the count of every task, whose
#: cost grows with the table, is :data:`MAINTAINED_TASK_COUNTS_SQL`.
TASK_COUNTS_SQL = """
SELECT pipeline, state::text, count(*) FROM tasks
WHERE %(ids)s::bigint[] IS NULL OR source_id = ANY(%(ids)s)
GROUP BY 1, 2
"""

#: Tasks by (pipeline, state) from the counts the triggers of migration 0015 maintain: the
#: counts up to the last rollup plus the deltas appended since, in one statement (one snapshot:
#: a rollup moves deltas into counts in one transaction, so they are seen once). Its cost is that
#: of the few rows per (pipeline, state) and the deltas since the last rollup, not the table's.
#: A (pipeline, state) whose count fell to zero is left out, as a GROUP BY of the tasks would.
MAINTAINED_TASK_COUNTS_SQL = """
SELECT pipeline, state::text, sum(n)::bigint FROM (
    SELECT pipeline, state, n FROM task_state_counts
    UNION ALL
    SELECT pipeline, state, delta FROM task_state_deltas
) AS maintained
GROUP BY pipeline, state
HAVING sum(n) <> 0
"""

#: Fold the pending deltas into the counts (migration 0015's function; one rollup at a time,
#: a concurrent call returns 0 at once), and drop the completions older than an hour
#: (migration 0016's). Returns the number of delta rows folded first.
ROLL_UP_TASK_COUNTS_SQL = "SELECT roll_up_task_state_counts(), prune_task_completions()"

#: One LIMIT 1 probe of ``tasks_ready`` per pipeline (a loose index scan), not a scan of the
#: queue: the head of the FIFO (``seq`` follows ``enqueued_at``: both are assigned at insert).
#: With ``ready_only`` the probe skips delayed retries on the index's INCLUDE column
#: ``not_before``, so only the head row is read from the heap.
OLDEST_QUEUED_SQL = """
SELECT p.pipeline, EXTRACT(EPOCH FROM now() - head.enqueued_at)::float8
FROM unnest(%(pipelines)s::text[]) AS p(pipeline)
CROSS JOIN LATERAL (
    SELECT t.enqueued_at FROM tasks t
    WHERE t.pipeline = p.pipeline AND t.state = 'queued'
      AND (NOT %(ready_only)s OR t.not_before <= now())
    ORDER BY t.seq
    LIMIT 1
) AS head
"""


def task_counts(
    conn: psycopg.Connection, source_ids: Sequence[int] | None = None
) -> dict[str, dict[str, int]]:
    """Tasks by pipeline and state, every state present (zero when none).

    Parameters
    ----------
    conn
        Connection (the caller's transaction, if it holds one).
    source_ids
        Count only the tasks of these galaxies (counted, ``TASK_COUNTS_SQL``); ``None``: every
        task, from the maintained counts (``MAINTAINED_TASK_COUNTS_SQL``), exact in the
        connection's snapshot.

    Returns
    -------
    dict
        ``{pipeline: {state: count}}`` for each pipeline with at least one task counted.
    """
    if source_ids is None:
        rows = conn.execute(MAINTAINED_TASK_COUNTS_SQL).fetchall()
    else:
        rows = conn.execute(TASK_COUNTS_SQL, {"ids": list(source_ids)}).fetchall()
    result: dict[str, dict[str, int]] = {}
    for pipeline, state, n in rows:
        result.setdefault(pipeline, dict.fromkeys(STATES, 0))[state] = int(n)
    return result


def roll_up_task_counts(conn: psycopg.Connection) -> int:
    """Fold the task-state deltas appended since the last rollup into the maintained counts.

    Idempotent and safe to call from many processes at once: one rollup runs at a time, and a
    call that finds one running returns 0 at once (that one folds the deltas). Counts read by
    :func:`task_counts` are exact with or without it; it keeps the deltas they add up short.
    It also drops the completions older than an hour (``task_completions``, the rates of
    :func:`galpipe.db.status.recent_done`), so that table stays an hour long.

    Parameters
    ----------
    conn
        Connection; the rollup commits with the caller's transaction (or at once in autocommit).

    Returns
    -------
    int
        Delta rows folded (0 when none were pending or another rollup held the lock).
    """
    row = conn.execute(ROLL_UP_TASK_COUNTS_SQL).fetchone()
    return int(row[0]) if row else 0


def oldest_queued_age(
    conn: psycopg.Connection, pipelines: Sequence[str], *, ready_only: bool = False
) -> dict[str, float]:
    """Seconds since the head of each pipeline's queue was enqueued (pipelines with one).

    Parameters
    ----------
    conn
        Connection (the caller's transaction, if it holds one).
    pipelines
        Pipelines to probe.
    ready_only
        Only queued tasks that are due (``not_before <= now()``): a retry waiting out its
        delay is not ready. Age counts from ``enqueued_at``, the task's first enqueue, so a
        task that was retried keeps its age.
    """
    rows = conn.execute(
        OLDEST_QUEUED_SQL, {"pipelines": list(pipelines), "ready_only": ready_only}
    ).fetchall()
    return {p: max(0.0, float(age)) for p, age in rows}


# The exact ready depth: the monitor's gauge (galpipe_tasks_ready) and TaskQueue.ready_depth.
# Ready = queued minus queued-but-delayed: exact (one snapshot, not_before NOT NULL), and the two
# counts read only index postings (tasks_state, then the partial tasks_delayed, whose predicate
# is repeated here so the planner can use it). The measurement is in docs/decisions.md,
# "The ready-depth query: queued minus delayed". The CASE skips both counts while paused. Its
# cost grows with the queue (427 ms at 10^7 queued: docs/capacity.md), so the autoscaler reads
# READY_DEPTH_CAPPED_SQL instead.
READY_DEPTH_SQL = """
SELECT CASE
    WHEN EXISTS (SELECT 1 FROM pipeline_control WHERE pipeline = %(pipeline)s AND paused) THEN 0
    ELSE (SELECT count(*) FROM tasks WHERE pipeline = %(pipeline)s AND state = 'queued')
       - (SELECT count(*) FROM tasks
          WHERE pipeline = %(pipeline)s AND state = 'queued'
            AND not_before > '-infinity' AND not_before > now())
END
"""

# The KEDA ScaledObject's query: charts/galpipe/files/ready-depth.sql holds this text and the
# chart puts the pipeline's name and its cap in place of the parameters, as ready_depth_query
# does; tests/deploy/test_chart_contract.py keeps the two equal and EXPLAINs the rendered query.
# KEDA asks for ceil(depth / targetQueryValue) replicas, at most maxReplicaCount, so a depth past
# maxReplicaCount x targetQueryValue changes nothing: the count stops at the cap
# (ready_depth_cap: one more, so that "at the cap" shows), and is exact below it.
# READY_DEPTH_SQL's ready = queued - delayed, with the queued count cut at cap + delayed:
# min(queued, cap + delayed) - delayed is min(ready, cap). The queued rows are read from the
# deduplicated tasks_state index, index-only, and the Limit ends the scan; the delayed ones from
# the partial tasks_delayed (retries waiting out their delay: few, bounded by the retry rate
# times the longest delay), counted in the same snapshot and statement both times. Reading
# tasks_ready instead and testing not_before on each entry costs about 2.5x more per entry
# (docs/capacity.md).
READY_DEPTH_CAPPED_SQL = """
SELECT CASE
    WHEN EXISTS (SELECT 1 FROM pipeline_control WHERE pipeline = %(pipeline)s AND paused) THEN 0
    ELSE (SELECT count(*) FROM (
              SELECT 1 FROM tasks WHERE pipeline = %(pipeline)s AND state = 'queued'
              LIMIT %(cap)s + (SELECT count(*) FROM tasks
                               WHERE pipeline = %(pipeline)s AND state = 'queued'
                                 AND not_before > '-infinity' AND not_before > now())) AS queued)
       - (SELECT count(*) FROM tasks
          WHERE pipeline = %(pipeline)s AND state = 'queued'
            AND not_before > '-infinity' AND not_before > now())
END
"""


def ready_depth_cap(max_replicas: int, target_per_replica: float) -> int:
    """The count past which the autoscaler's answer no longer changes, plus one.

    Parameters
    ----------
    max_replicas
        The ScaledObject's ``maxReplicaCount``.
    target_per_replica
        The trigger's ``targetQueryValue``: ready tasks per replica.

    Returns
    -------
    int
        ``floor(max_replicas * target_per_replica) + 1``: KEDA asks for
        ``ceil(depth / target_per_replica)`` replicas, which reaches ``max_replicas`` at
        ``max_replicas * target_per_replica``; the chart renders the same arithmetic.
    """
    if max_replicas < 1 or target_per_replica <= 0:
        raise ValueError(
            f"maxReplicaCount {max_replicas} and targetQueryValue {target_per_replica} "
            "must both be positive"
        )
    return math.floor(max_replicas * target_per_replica) + 1


#: Pipeline names the chart accepts (values.schema.json): safe to inline between quotes.
PIPELINE_NAME = re.compile(r"^[a-z][a-z0-9]*$")


def ready_depth_query(pipeline: str, cap: int) -> str:
    """``READY_DEPTH_CAPPED_SQL`` with ``pipeline`` and ``cap`` inlined, for KEDA.

    KEDA's PostgreSQL trigger takes a bare query; the Helm chart renders this exact text from
    ``charts/galpipe/files/ready-depth.sql`` for every pipeline, with the cap
    :func:`ready_depth_cap` gives for that pipeline's autoscaling values.

    Raises
    ------
    ValueError
        If ``pipeline`` is not a lower-case name (``[a-z][a-z0-9]*``), which could not be
        inlined safely, or ``cap`` is not a positive integer.
    """
    if not PIPELINE_NAME.fullmatch(pipeline):
        raise ValueError(f"pipeline name {pipeline!r} must match {PIPELINE_NAME.pattern}")
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise ValueError(f"ready-depth cap must be a positive integer, got {cap!r}")
    return (
        READY_DEPTH_CAPPED_SQL.replace("%(pipeline)s", f"'{pipeline}'")
        .replace("%(cap)s", str(cap))
        .strip()
    )
