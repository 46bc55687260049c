"""SQL of ``galpipe status``: queue counts, queue age, recent completions, pauses, buckets.

Every query reads an index or a small table:

- counts by (pipeline, state) read ``tasks_state`` index-only (it is deduplicated: a few MB per
  million tasks);
- the oldest queued task is the head of the FIFO, the first ``tasks_ready`` entry per pipeline
  (``seq`` follows ``enqueued_at``: both are assigned at insert);
- completions in the last window are done tasks with a recent ``updated_at``; see
  :data:`RECENT_DONE_SQL` for its cost;
- ``pipeline_control``, ``breakers`` and ``rate_limits`` hold one row per pipeline, breaker or
  bucket.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from galpipe.db.ratelimit import BucketUsage

_COUNTS_SQL = "SELECT pipeline, state::text, count(*) FROM tasks GROUP BY 1, 2"

# One LIMIT 1 probe of tasks_ready per pipeline (a loose index scan), not a scan of the queue.
_OLDEST_QUEUED_SQL = """
SELECT p.pipeline, EXTRACT(EPOCH FROM now() - head.enqueued_at)::float8
FROM unnest(%(pipelines)s::text[]) AS p(pipeline)
CROSS JOIN LATERAL (
    SELECT t.enqueued_at FROM tasks t
    WHERE t.pipeline = p.pipeline AND t.state = 'queued'
    ORDER BY t.seq
    LIMIT 1
) AS head
"""

#: Done tasks per pipeline whose ``updated_at`` lies in the last ``%(seconds)s`` seconds. No
#: index covers ``updated_at``, so this visits every done row (a parallel scan, measured at
#: 0.15 s for 1.2 M tasks); a partial index ``tasks (pipeline, updated_at) WHERE state = 'done'``
#: turns it into a range scan of the recent rows, used as is. ``now()`` (stable, unlike
#: ``clock_timestamp()``) is what lets the bound be an index condition.
RECENT_DONE_SQL = """
SELECT pipeline, count(*) FROM tasks
WHERE pipeline = ANY(%(pipelines)s) AND state = 'done'
  AND updated_at >= now() - make_interval(secs => %(seconds)s)
GROUP BY pipeline
"""

_CONTROL_SQL = "SELECT pipeline, paused, reason, updated_at FROM pipeline_control ORDER BY 1"

_BREAKER_NAMES_SQL = "SELECT name FROM breakers ORDER BY name"

# Tokens brought up to now as TokenBucket.usage() does, for every bucket at once.
_BUCKETS_SQL = """
SELECT name, rate, burst,
       LEAST(burst, tokens + rate
             * GREATEST(0, EXTRACT(EPOCH FROM clock_timestamp() - updated_at)::float8)),
       granted
FROM rate_limits ORDER BY name
"""


@dataclass(frozen=True)
class PipelineControl:
    """A row of ``pipeline_control``: whether workers of ``pipeline`` may claim."""

    pipeline: str
    paused: bool
    reason: str | None
    updated_at: datetime


def task_counts(conn: psycopg.Connection) -> dict[str, dict[str, int]]:
    """Tasks by pipeline and state (only the states present)."""
    counts: dict[str, dict[str, int]] = {}
    for pipeline, state, n in conn.execute(_COUNTS_SQL).fetchall():
        counts.setdefault(pipeline, {})[state] = int(n)
    return counts


def oldest_queued_age(conn: psycopg.Connection, pipelines: list[str]) -> dict[str, float]:
    """Seconds since the head of each pipeline's queue was enqueued (pipelines with one)."""
    rows = conn.execute(_OLDEST_QUEUED_SQL, {"pipelines": pipelines}).fetchall()
    return {p: max(0.0, float(age)) for p, age in rows}


def recent_done(
    conn: psycopg.Connection, pipelines: list[str], seconds: float = 60.0
) -> dict[str, int]:
    """Tasks of each pipeline that went to ``done`` in the last ``seconds`` (absent: none)."""
    rows = conn.execute(
        RECENT_DONE_SQL, {"pipelines": pipelines, "seconds": float(seconds)}
    ).fetchall()
    return {p: int(n) for p, n in rows}


def pipeline_controls(conn: psycopg.Connection) -> dict[str, PipelineControl]:
    """Every ``pipeline_control`` row, by pipeline."""
    return {
        p: PipelineControl(p, bool(paused), reason, at)
        for p, paused, reason, at in conn.execute(_CONTROL_SQL).fetchall()
    }


def breaker_names(conn: psycopg.Connection) -> list[str]:
    """Names of the breakers that exist (a breaker row is created on first use)."""
    return [str(r[0]) for r in conn.execute(_BREAKER_NAMES_SQL).fetchall()]


def bucket_usages(conn: psycopg.Connection) -> list[BucketUsage]:
    """Every shared token bucket, with its tokens brought up to now."""
    return [
        BucketUsage(str(name), float(rate), float(burst), float(tokens), int(granted))
        for name, rate, burst, tokens, granted in conn.execute(_BUCKETS_SQL).fetchall()
    ]


def database_now(conn: psycopg.Connection) -> datetime:
    """The database's clock, the time every age above is measured against."""
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]
