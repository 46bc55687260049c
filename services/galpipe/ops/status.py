"""``galpipe status``: what every pipeline, breaker and rate limit is doing now.

Per pipeline: tasks queued, running, done, failed and skipped, the age of the oldest queued
task, completions over the last minute (done tasks updated in the last 60 s) as a rate, and
whether an operator paused it (and why). Then each circuit breaker's state and each shared
token bucket's use. ``--json`` prints the same as one JSON object, for scripts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from psycopg_pool import ConnectionPool
from rich.console import Console
from rich.table import Table

from galpipe.db import status as db
from galpipe.db.breaker import BreakerPolicy, BreakerStatus, CircuitBreaker
from galpipe.db.queue import STATES, oldest_queued_age, roll_up_task_counts, task_counts
from galpipe.db.ratelimit import BucketUsage, bucket_usages
from galpipe.pipelines import fetch
from galpipe.settings import Settings

__all__ = [
    "PipelineStatus",
    "SystemStatus",
    "breaker_policies",
    "collect_status",
    "render_status",
]


@dataclass(frozen=True)
class PipelineStatus:
    """One pipeline's queue.

    Attributes
    ----------
    name
        Pipeline name (``tasks.pipeline``).
    counts
        Tasks by state, every state of :data:`galpipe.db.queue.STATES` present.
    oldest_queued_seconds
        Age of the head of the queue, seconds; ``None`` when nothing is queued.
    done_last_minute
        Tasks that went to ``done`` in the last :data:`galpipe.db.status.RATE_WINDOW_SECONDS`.
    rate_per_second
        ``done_last_minute / RATE_WINDOW_SECONDS``, tasks per second.
    paused, pause_reason, paused_since
        The operator's pause (``galpipe pause``), its reason and when it was set.
    """

    name: str
    counts: dict[str, int]
    oldest_queued_seconds: float | None
    done_last_minute: int
    rate_per_second: float
    paused: bool
    pause_reason: str | None = None
    paused_since: datetime | None = None


@dataclass(frozen=True)
class SystemStatus:
    """Everything ``galpipe status`` shows, as of ``taken_at`` (the database's clock)."""

    taken_at: datetime
    pipelines: list[PipelineStatus] = field(default_factory=list)
    breakers: list[BreakerStatus] = field(default_factory=list)
    rate_limits: list[BucketUsage] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: times as ISO 8601 strings, durations and rates in seconds."""

        def plain(value: Any) -> Any:
            if isinstance(value, datetime):
                return value.isoformat()
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, list):
                return [plain(v) for v in value]
            return value

        return {
            "taken_at": self.taken_at.isoformat(),
            "rate_window_seconds": db.RATE_WINDOW_SECONDS,
            "pipelines": {p.name: plain(asdict(p)) for p in self.pipelines},
            "breakers": {b.name: plain(asdict(b)) for b in self.breakers},
            "rate_limits": {
                b.name: {**asdict(b), "backlog_seconds": b.backlog_seconds}
                for b in self.rate_limits
            },
        }


def collect_status(
    pool: ConnectionPool, settings: Settings, *, window_seconds: float = db.RATE_WINDOW_SECONDS
) -> SystemStatus:
    """Read the status of every pipeline, breaker and bucket.

    Parameters
    ----------
    pool
        Connection pool on the galpipe database.
    settings
        The breakers' policies (window, cooldown), to report each breaker as the pipeline it
        serves sees it (:func:`breaker_policies`).
    window_seconds
        Window of the completion rate, seconds.

    Notes
    -----
    The queue queries run in one read-only transaction, so counts, ages and pauses agree with
    each other; breakers are read through :meth:`CircuitBreaker.status` afterwards. Counts by
    state are the maintained ones (:func:`galpipe.db.queue.task_counts`); the deltas appended
    since the last rollup are folded first, in a transaction of their own (the monitor, which
    calls this every poll, keeps them few; exact either way).
    """
    with pool.connection() as conn:
        with conn.transaction():
            roll_up_task_counts(conn)
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            taken_at = db.database_now(conn)
            counts = task_counts(conn)
            controls = db.pipeline_controls(conn)
            names = sorted(set(counts) | set(controls))
            ages = oldest_queued_age(conn, names)
            recent = db.recent_done(conn, names, window_seconds)
            buckets = bucket_usages(conn)
            breaker_names = db.breaker_names(conn)
    pipelines = []
    for name in names:
        control = controls.get(name)
        paused = bool(control and control.paused)
        done_recently = recent.get(name, 0)
        pipelines.append(
            PipelineStatus(
                name=name,
                counts={s: counts.get(name, {}).get(s, 0) for s in STATES},
                oldest_queued_seconds=ages.get(name),
                done_last_minute=done_recently,
                rate_per_second=done_recently / window_seconds,
                paused=paused,
                pause_reason=control.reason if control and paused else None,
                paused_since=control.updated_at if control and paused else None,
            )
        )
    policies = breaker_policies(settings)
    breakers = [CircuitBreaker(pool, n, policies.get(n)).status() for n in breaker_names]
    return SystemStatus(taken_at, pipelines, breakers, buckets)


def breaker_policies(settings: Settings) -> dict[str, BreakerPolicy]:
    """The policy of each pipeline's breaker, by breaker name (the pipeline's name).

    A breaker no pipeline here configures is read with :class:`BreakerPolicy`'s defaults.
    """
    return {fetch.FetchPipeline.name: fetch.breaker_policy(settings)}


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def render_status(status: SystemStatus, console: Console) -> None:
    """Print ``status`` as rich tables: pipelines, breakers, rate limits."""
    pipelines = Table(title=f"Pipelines at {status.taken_at:%Y-%m-%d %H:%M:%S %Z}")
    pipelines.add_column("pipeline")
    for state in STATES:
        pipelines.add_column(state, justify="right")
    pipelines.add_column("oldest queued", justify="right")
    pipelines.add_column("done/min", justify="right")
    pipelines.add_column("rate /s", justify="right")
    pipelines.add_column("paused")
    for p in status.pipelines:
        pause = f"[red]paused[/red]: {p.pause_reason}" if p.paused else "no"
        pipelines.add_row(
            p.name,
            *(f"{p.counts[s]:,}" for s in STATES),
            _age(p.oldest_queued_seconds),
            f"{p.done_last_minute:,}",
            f"{p.rate_per_second:.2f}",
            pause,
        )
    console.print(pipelines)

    breakers = Table(title="Circuit breakers")
    for name in ("breaker", "state", "failures in a row", "window fail/req", "reopens at"):
        breakers.add_column(name)
    breakers.add_column("last error", overflow="fold")
    colours = {"closed": "green", "open": "red", "half_open": "yellow"}
    for b in status.breakers:
        breakers.add_row(
            b.name,
            f"[{colours.get(b.state, 'white')}]{b.state}[/]",
            str(b.consecutive_failures),
            f"{b.window_failures}/{b.window_requests}",
            f"{b.reopens_at:%H:%M:%S}" if b.reopens_at else "-",
            b.last_error or "",
        )
    console.print(breakers if status.breakers else "Circuit breakers: none used yet")

    buckets = Table(title="Rate limits")
    for name in ("bucket", "rate /s", "burst", "tokens", "backlog s", "granted"):
        buckets.add_column(name, justify="left" if name == "bucket" else "right")
    for r in status.rate_limits:
        buckets.add_row(
            r.name,
            f"{r.rate:g}",
            f"{r.burst:g}",
            f"{r.tokens:.1f}",
            f"{r.backlog_seconds:.1f}",
            f"{r.granted:,}",
        )
    console.print(buckets if status.rate_limits else "Rate limits: none configured yet")
