"""SQL of the operator control plane: retry failed tasks, requeue for re-measurement, overview.

The two bulk actions take ``dry_run``: a dry run counts, with the very ``WHERE`` clause of the
change, the rows the change would touch, and changes nothing.

A task an operator sends back to the queue is new work, not a retry the queue scheduled:

- ``attempts = 0``: the retry policy (``TaskQueue.retry``) fails a task whose attempts exceed
  ``1 + max_retries``; a failed task has used them all, so without the reset its next
  transient error would fail it again at once;
- ``not_before = '-infinity'``: ready at once, and out of the partial index of delayed tasks
  (``tasks_delayed``), as a freshly enqueued task is;
- a new ``seq`` and ``enqueued_at = now()``: it joins the back of the FIFO, and the age of the
  head of the queue (``oldest_queued_age``, the queue-age alert) is not made hours or days old
  by tasks that sat finished or failed;
- ``last_error`` is kept by a retry (a queued task with an error is one that failed before;
  the next outcome overwrites or clears it) and cleared by a requeue (a done task has none).

The overview's counts by state are the one read that grows with the table (an index-only count
of ``tasks_state``, about 0.15 s per 10⁶ tasks): :func:`read_task_counts` takes them on their
own, so a caller can share one count among many overviews (the control plane refreshes it in
the background) while the cheap reads (pauses, ages, rates, breakers) are taken fresh.

The overview's queue part reuses the queue's and ``galpipe status``'s reads
(:func:`galpipe.db.queue.task_counts`, :func:`galpipe.db.queue.oldest_queued_age`,
:func:`galpipe.db.status.recent_done`, :func:`galpipe.db.status.pipeline_controls`,
:func:`galpipe.db.ratelimit.bucket_usages`) and reads breakers without creating any.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from galpipe.db.queue import STATES, oldest_queued_age, task_counts
from galpipe.db.ratelimit import BucketUsage, bucket_usages
from galpipe.db.status import RATE_WINDOW_SECONDS, database_now, pipeline_controls, recent_done

__all__ = [
    "MEASURED_PIPELINE",
    "BreakerState",
    "QueueOverview",
    "TaskCounts",
    "queue_overview",
    "read_task_counts",
    "requeue_for_version",
    "retry_failed",
]

#: The pipeline whose results ``radon_measurements`` holds, keyed by ``algo_version``.
MEASURED_PIPELINE = "radon"

# What a task sent back to the queue by an operator becomes (see the module's docstring).
_BACK_TO_QUEUE = (
    "state = 'queued', attempts = 0, not_before = '-infinity', seq = DEFAULT, "
    "enqueued_at = now(), updated_at = now()"
)

# Failed tasks of a pipeline whose last error contains the filter (case-insensitive; NULL: all).
# strpos, not LIKE: the operator's text is matched literally, '%' and '_' included.
_FAILED_WHERE = (
    "pipeline = %(pipeline)s AND state = 'failed' "
    "AND (%(error)s::text IS NULL OR strpos(lower(last_error), lower(%(error)s::text)) > 0)"
)
_RETRY_COUNT_SQL = "SELECT count(*) FROM tasks WHERE " + _FAILED_WHERE
_RETRY_SQL = "UPDATE tasks SET " + _BACK_TO_QUEUE + " WHERE " + _FAILED_WHERE

# Done measurement tasks of galaxies without a row of the version (optionally among some ids).
# The primary key (source_id, algo_version, band) answers each NOT EXISTS with one index probe.
_UNMEASURED_WHERE = (
    "t.pipeline = %(pipeline)s AND t.state = 'done' "
    "AND (%(ids)s::bigint[] IS NULL OR t.source_id = ANY(%(ids)s::bigint[])) "
    "AND NOT EXISTS (SELECT 1 FROM radon_measurements m "
    "WHERE m.source_id = t.source_id AND m.algo_version = %(version)s)"
)
_REQUEUE_COUNT_SQL = "SELECT count(*) FROM tasks t WHERE " + _UNMEASURED_WHERE
_REQUEUE_SQL = (
    "UPDATE tasks t SET " + _BACK_TO_QUEUE + ", last_error = NULL WHERE " + _UNMEASURED_WHERE
)

# Breakers as stored; a pipeline whose breaker was never used has no row, and none is made.
_BREAKERS_SQL = (
    "SELECT name, state::text, consecutive_failures, opened_at, last_error "
    "FROM breakers WHERE name = ANY(%(names)s)"
)


def _count_or_change(
    conn: psycopg.Connection, count_sql: str, change_sql: str, params: dict[str, Any], dry_run: bool
) -> int:
    if dry_run:
        row = conn.execute(count_sql, params).fetchone()  # type: ignore[arg-type]
        return int(row[0]) if row else 0
    return conn.execute(change_sql, params).rowcount  # type: ignore[arg-type]


def retry_failed(
    conn: psycopg.Connection,
    pipeline: str,
    *,
    error_contains: str | None = None,
    dry_run: bool,
) -> int:
    """Send ``pipeline``'s failed tasks back to the queue, or with ``dry_run`` count them.

    Parameters
    ----------
    conn
        Connection (the caller's transaction, if it holds one: the audit row commits with it).
    pipeline
        The tasks' pipeline.
    error_contains
        Only tasks whose ``last_error`` contains this text, case-insensitively, taken
        literally; ``None`` or empty: every failed task.
    dry_run
        Count the tasks the retry would queue, and change nothing.

    Returns
    -------
    int
        Tasks queued again (or that would be).
    """
    params = {"pipeline": pipeline, "error": error_contains or None}
    return _count_or_change(conn, _RETRY_COUNT_SQL, _RETRY_SQL, params, dry_run)


def requeue_for_version(
    conn: psycopg.Connection,
    pipeline: str,
    *,
    algo_version: str,
    source_ids: Sequence[int] | None = None,
    dry_run: bool,
) -> int:
    """Queue again the done measurement tasks of galaxies not yet measured under ``algo_version``.

    Results are keyed by ``(source_id, algo_version, band)``: the re-run adds the new version's
    rows beside the older versions' and never touches them, and a galaxy that already has rows
    of ``algo_version`` is not queued, so a repeated requeue measures nothing twice. The workers
    must run ``algo_version`` (their science configuration names it); this only chooses the
    galaxies. Tasks not ``done`` are left alone: queued and running ones are measured anyway,
    failed ones are :func:`retry_failed`'s.

    Parameters
    ----------
    conn
        Connection (the caller's transaction, if it holds one).
    pipeline
        Must be :data:`MEASURED_PIPELINE`, the pipeline whose results carry a version.
    algo_version
        The version the galaxies should have results of.
    source_ids
        Only these galaxies (still only those lacking the version); ``None``: every galaxy.
    dry_run
        Count the tasks the requeue would queue, and change nothing.

    Returns
    -------
    int
        Tasks queued again (or that would be).

    Raises
    ------
    ValueError
        If ``pipeline`` is not the measured pipeline or ``algo_version`` is empty.
    """
    if pipeline != MEASURED_PIPELINE:
        raise ValueError(
            f"requeue for a new algo_version applies to the {MEASURED_PIPELINE!r} pipeline, "
            f"not {pipeline!r}"
        )
    if not algo_version.strip():
        raise ValueError("algo_version must not be empty")
    params = {
        "pipeline": pipeline,
        "version": algo_version,
        "ids": None if source_ids is None else [int(i) for i in source_ids],
    }
    return _count_or_change(conn, _REQUEUE_COUNT_SQL, _REQUEUE_SQL, params, dry_run)


@dataclass(frozen=True)
class BreakerState:
    """A pipeline's circuit breaker as stored (its cooldown is the pipeline's policy's)."""

    name: str
    state: str
    consecutive_failures: int
    opened_at: datetime | None
    last_error: str | None


@dataclass(frozen=True)
class TaskCounts:
    """Tasks by pipeline and state, counted in one statement.

    Attributes
    ----------
    by_pipeline
        ``{pipeline: {state: count}}``, every state present, for each pipeline with tasks.
    taken_at
        The database's clock when they were counted.
    """

    by_pipeline: Mapping[str, Mapping[str, int]]
    taken_at: datetime

    def of(self, pipeline: str) -> dict[str, int]:
        """``pipeline``'s counts, every state of :data:`galpipe.db.queue.STATES` present."""
        counts = self.by_pipeline.get(pipeline, {})
        return {s: int(counts.get(s, 0)) for s in STATES}


def read_task_counts(conn: psycopg.Connection) -> TaskCounts:
    """Count every task by pipeline and state (index-only over ``tasks_state``)."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return TaskCounts(task_counts(conn), database_now(conn))


@dataclass(frozen=True)
class QueueOverview:
    """One pipeline's queue, breaker, bucket and pause, as the control plane's overview shows.

    Attributes
    ----------
    pipeline
        The pipeline (``tasks.pipeline``).
    counts
        Tasks by state, every state of :data:`galpipe.db.queue.STATES` present.
    counts_taken_at
        When they were counted (earlier than ``taken_at`` when a shared count was given).
    oldest_queued_seconds
        Age of the head of the queue, seconds; ``None`` when nothing is queued.
    done_recently, window_seconds
        Tasks that went to ``done`` in the last ``window_seconds``.
    paused, pause_reason, paused_since
        The database pause that workers honour, its reason and when it was set.
    breaker
        The pipeline's circuit breaker (named like the pipeline); ``None``: never used.
    rate_limit
        The pipeline's shared token bucket (named like the pipeline); ``None``: it has none.
    taken_at
        The database's clock when this was read.
    """

    pipeline: str
    counts: dict[str, int]
    counts_taken_at: datetime
    oldest_queued_seconds: float | None
    done_recently: int
    window_seconds: float
    paused: bool
    pause_reason: str | None
    paused_since: datetime | None
    breaker: BreakerState | None
    rate_limit: BucketUsage | None
    taken_at: datetime

    @property
    def rate_per_second(self) -> float:
        """Completions per second over the window."""
        return self.done_recently / self.window_seconds


def queue_overview(
    conn: psycopg.Connection,
    pipelines: Sequence[str],
    *,
    window_seconds: float = RATE_WINDOW_SECONDS,
    counts: TaskCounts | None = None,
) -> dict[str, QueueOverview]:
    """The queue part of the overview of each of ``pipelines``, from one snapshot.

    Parameters
    ----------
    conn
        An idle connection of the pool (autocommit): the reads run in one read-only
        repeatable-read transaction of their own, so ages, rates and pauses agree.
    pipelines
        The pipelines to report, whether or not they have tasks yet.
    window_seconds
        Window of the completion count, seconds (> 0).
    counts
        Counts by state already taken (:func:`read_task_counts`); ``None``: counted in the
        same snapshot as the rest.
    """
    if not window_seconds > 0:
        raise ValueError(f"window_seconds must be positive, got {window_seconds!r}")
    names = list(pipelines)
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        taken_at = database_now(conn)
        if counts is None:
            counts = TaskCounts(task_counts(conn), taken_at)
        ages = oldest_queued_age(conn, names)
        recent = recent_done(conn, names, window_seconds)
        controls = pipeline_controls(conn)
        buckets = {b.name: b for b in bucket_usages(conn)}
        breakers = {
            name: BreakerState(name, state, int(failures), opened_at, last_error)
            for name, state, failures, opened_at, last_error in conn.execute(
                _BREAKERS_SQL, {"names": names}
            ).fetchall()
        }
    overview = {}
    for name in names:
        control = controls.get(name)
        paused = bool(control and control.paused)
        overview[name] = QueueOverview(
            pipeline=name,
            counts=counts.of(name),
            counts_taken_at=counts.taken_at,
            oldest_queued_seconds=ages.get(name),
            done_recently=recent.get(name, 0),
            window_seconds=float(window_seconds),
            paused=paused,
            pause_reason=control.reason if control is not None and paused else None,
            paused_since=control.updated_at if control is not None and paused else None,
            breaker=breakers.get(name),
            rate_limit=buckets.get(name),
            taken_at=taken_at,
        )
    return overview
