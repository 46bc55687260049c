"""SQL of ``galpipe status`` beyond the queue's own counts and ages, and the buckets' usage.

Counts by state and the oldest queued task are :func:`galpipe.db.queue.task_counts` and
:func:`galpipe.db.queue.oldest_queued_age`; the buckets are
:func:`galpipe.db.ratelimit.bucket_usages`. Every query here reads an index or a small table:

- completions in the last window are the rows of ``task_completions`` (one per completing
  statement, migration 0016) in it; see :data:`RECENT_DONE_SQL`;
- ``pipeline_control`` and ``breakers`` hold one row per pipeline or breaker.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

#: Completions are counted over this window, seconds, by ``galpipe status`` and the control
#: plane's overview alike; a rate is the count divided by it.
RATE_WINDOW_SECONDS = 60.0

#: The longest window :func:`recent_done` counts, seconds: ``task_completions`` keeps an hour.
MAX_WINDOW_SECONDS = 3600.0

#: Tasks per pipeline that went to ``done`` in the last ``%(seconds)s`` seconds: the
#: ``task_completions`` rows in the window (an index range scan of about one row per
#: completing statement, whatever the completion rate; see docs/capacity.md,
#: "The task table at 10⁷ rows"). ``now()`` (stable, unlike ``clock_timestamp()``) is what
#: lets the bound be an index condition.
RECENT_DONE_SQL = """
SELECT pipeline, sum(n) FROM task_completions
WHERE at >= now() - make_interval(secs => %(seconds)s) AND pipeline = ANY(%(pipelines)s)
GROUP BY pipeline
"""

_CONTROL_SQL = "SELECT pipeline, paused, reason, updated_at FROM pipeline_control ORDER BY 1"

_BREAKER_NAMES_SQL = "SELECT name FROM breakers ORDER BY name"


@dataclass(frozen=True)
class PipelineControl:
    """A row of ``pipeline_control``: whether workers of ``pipeline`` may claim."""

    pipeline: str
    paused: bool
    reason: str | None
    updated_at: datetime


def recent_done(
    conn: psycopg.Connection, pipelines: list[str], seconds: float = RATE_WINDOW_SECONDS
) -> dict[str, int]:
    """Tasks of each pipeline that went to ``done`` in the last ``seconds`` (absent: none).

    Raises
    ------
    ValueError
        If ``seconds`` is not in (0, :data:`MAX_WINDOW_SECONDS`].
    """
    if not 0.0 < seconds <= MAX_WINDOW_SECONDS:
        raise ValueError(
            f"completion window {seconds} s: expected (0, {MAX_WINDOW_SECONDS:g}] seconds "
            "(task_completions keeps an hour)"
        )
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


def database_now(conn: psycopg.Connection) -> datetime:
    """The database's clock (``now()``), the time every queue age is measured against."""
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]
