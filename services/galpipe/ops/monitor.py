"""``galpipe monitor``: the database-derived gauges, exported by one process.

Workers count what they do themselves (:mod:`galpipe.runtime.metrics`); what only the database knows
— tasks by pipeline and state, ready depth, queue ages, completions so far, pauses, breakers and
rate limits, database sizes — is read here, every ``GALPIPE_MONITOR_INTERVAL_SECONDS``, by a single
replica, so that N workers never multiply it. Each poll replaces the previous one as a whole: a
scrape sees one consistent poll, and a pipeline, breaker or bucket that left the database leaves
``/metrics`` too. While the database is unreachable only ``galpipe_database_up 0`` and the time of
the last good poll are exported (stale queue numbers would feed the alerts with a past that no
longer holds), and ``/readyz`` answers 503."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg
from prometheus_client.core import Metric
from psycopg_pool import ConnectionPool, PoolTimeout

from galpipe.db import monitor as db
from galpipe.db.breaker import CLOSED, HALF_OPEN, OPEN
from galpipe.db.queue import TaskQueue, oldest_queued_age
from galpipe.ops.status import SystemStatus, collect_status
from galpipe.runtime import metrics
from galpipe.runtime.database import pool_from_settings
from galpipe.runtime.service import serve
from galpipe.settings import Settings

log = logging.getLogger(__name__)

BREAKER_STATES = (CLOSED, OPEN, HALF_OPEN)
#: Liveness allows this many intervals without a finished poll (a hung poll restarts the pod).
_LIVENESS_INTERVALS = 3
#: How long a poll or a probe waits for a pooled connection before calling the database down.
_CONNECTION_TIMEOUT_S = 10.0
#: ``/readyz`` must answer within a kubelet probe's timeout.
_PING_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class DatabaseSnapshot:
    """One poll of the database.

    Attributes
    ----------
    status
        What ``galpipe status`` shows: counts by state, oldest queued age, pauses, breakers,
        rate limits.
    ready
        Ready tasks by pipeline, exact (``READY_DEPTH_SQL``): the autoscaler's query stops
        counting at its cap (``READY_DEPTH_CAPPED_SQL``); the gauge shows the whole backlog.
    oldest_ready_seconds
        Age of each pipeline's oldest ready task, seconds (pipelines with one).
    database_bytes
        Size of the database, bytes.
    relation_bytes
        Size of each table with its indexes, bytes.
    connections
        Connections to the database by state.
    """

    status: SystemStatus
    ready: dict[str, int]
    oldest_ready_seconds: dict[str, float]
    database_bytes: int
    relation_bytes: dict[str, int]
    connections: dict[str, int]


def poll_database(pool: ConnectionPool, settings: Settings) -> DatabaseSnapshot:
    """Read everything the monitor exports, with the queries of ``galpipe status`` and more."""
    status = collect_status(pool, settings)
    names = [p.name for p in status.pipelines]
    queue = TaskQueue(pool)
    ready = {name: queue.ready_depth(name) for name in names}
    with pool.connection() as conn:
        return DatabaseSnapshot(
            status=status,
            ready=ready,
            oldest_ready_seconds=oldest_queued_age(conn, names, ready_only=True),
            database_bytes=db.database_size(conn),
            relation_bytes=db.relation_sizes(conn),
            connections=db.connections_by_state(conn),
        )


def snapshot_families(snapshot: DatabaseSnapshot, queue_age_slo_s: float) -> Iterator[Metric]:
    """The metric families of one successful poll (``galpipe_database_up`` aside)."""
    pipelines = snapshot.status.pipelines
    yield metrics.TASKS.family(
        {(p.name, state): n for p in pipelines for state, n in p.counts.items()}
    )
    yield metrics.TASKS_READY.family({(p,): n for p, n in snapshot.ready.items()})
    yield metrics.QUEUE_OLDEST_QUEUED_AGE.family(
        {
            (p.name,): p.oldest_queued_seconds
            for p in pipelines
            if p.oldest_queued_seconds is not None
        }
    )
    yield metrics.QUEUE_OLDEST_READY_AGE.family(
        {(p,): age for p, age in snapshot.oldest_ready_seconds.items()}
    )
    yield metrics.QUEUE_AGE_SLO.family({(p.name,): queue_age_slo_s for p in pipelines})
    yield metrics.PIPELINE_PAUSED.family({(p.name,): float(p.paused) for p in pipelines})
    breakers = snapshot.status.breakers
    yield metrics.BREAKER_STATE.family(
        {(b.name, s): float(b.state == s) for b in breakers for s in BREAKER_STATES}
    )
    yield metrics.BREAKER_CONSECUTIVE_FAILURES.family(
        {(b.name,): b.consecutive_failures for b in breakers}
    )
    buckets = snapshot.status.rate_limits
    yield metrics.RATE_LIMIT_RATE.family({(b.name,): b.rate for b in buckets})
    yield metrics.RATE_LIMIT_BURST.family({(b.name,): b.burst for b in buckets})
    yield metrics.RATE_LIMIT_TOKENS.family({(b.name,): b.tokens for b in buckets})
    yield metrics.RATE_LIMIT_GRANTED.family({(b.name,): b.granted for b in buckets})
    yield metrics.DATABASE_SIZE.family({(): snapshot.database_bytes})
    yield metrics.RELATION_SIZE.family({(r,): n for r, n in snapshot.relation_bytes.items()})
    yield metrics.DATABASE_CONNECTIONS.family({(s,): n for s, n in snapshot.connections.items()})


@dataclass(frozen=True)
class _PollResult:
    snapshot: DatabaseSnapshot | None  # None: the poll failed
    seconds: float
    last_success_unix: float | None


class Monitor:
    """Polls the database periodically and serves the result as a Prometheus collector.

    A :class:`~galpipe.runtime.service.Service`: :func:`run_from_settings` serves it, with
    itself among the registry's collectors.

    Parameters
    ----------
    poll
        Reads the database once; raises :class:`psycopg.Error` (or a pool timeout) when it is
        unreachable.
    ping
        Raises unless the database answers now (``/readyz``).
    interval_s
        Seconds between the starts of two polls.
    queue_age_slo_s
        Objective for the oldest ready task's age, seconds, exported for the alert.
    clock, wall_clock
        Monotonic and Unix clocks, seconds; injected for tests.
    stop_event
        Set to stop :meth:`run`.
    """

    def __init__(
        self,
        poll: Callable[[], DatabaseSnapshot],
        ping: Callable[[], None],
        *,
        interval_s: float = 15.0,
        queue_age_slo_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        stop_event: threading.Event | None = None,
    ) -> None:
        self._poll = poll
        self._ping = ping
        self.interval_s = interval_s
        self.queue_age_slo_s = queue_age_slo_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._stop = stop_event or threading.Event()
        self._result: _PollResult | None = None  # replaced whole, so collect() needs no lock
        self.last_progress = clock()

    # -- polling -----------------------------------------------------------------------------

    def poll_once(self) -> bool:
        """Poll the database once and publish the result; True if it was reachable."""
        started = self._clock()
        previous = self._result.last_success_unix if self._result else None
        try:
            snapshot: DatabaseSnapshot | None = self._poll()
        except (psycopg.Error, PoolTimeout) as exc:
            log.error("database poll failed: %s", str(exc).strip() or repr(exc))
            snapshot = None
        seconds = self._clock() - started
        last_success = self._wall_clock() if snapshot is not None else previous
        self._result = _PollResult(snapshot, seconds, last_success)
        self.last_progress = self._clock()
        return snapshot is not None

    def run(self) -> None:
        """Poll every ``interval_s`` until stopped."""
        log.info("monitor started", extra={"interval_s": self.interval_s})
        while not self._stop.is_set():
            started = self._clock()
            self.poll_once()
            self._stop.wait(max(0.0, self.interval_s - (self._clock() - started)))
        log.info("monitor stopped")

    def request_stop(self) -> None:
        """Stop after the poll in hand. Safe to call from a signal handler."""
        self._stop.set()

    # -- the Prometheus collector ------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """The last poll's families (nothing before the first poll)."""
        result = self._result
        if result is None:
            return
        yield metrics.DATABASE_UP.family({(): float(result.snapshot is not None)})
        yield metrics.MONITOR_POLL_SECONDS.family({(): result.seconds})
        if result.last_success_unix is not None:
            yield metrics.MONITOR_LAST_SUCCESS.family({(): result.last_success_unix})
        if result.snapshot is not None:
            yield from snapshot_families(result.snapshot, self.queue_age_slo_s)

    # -- probes ------------------------------------------------------------------------------

    def liveness(self) -> tuple[bool, str]:
        """Alive while polls finish (a failed poll counts: it finished)."""
        silent = self._clock() - self.last_progress
        limit = _LIVENESS_INTERVALS * self.interval_s + _CONNECTION_TIMEOUT_S
        if silent > limit:
            return False, f"no poll finished for {silent:.0f} s (limit {limit:.0f} s)"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        """Ready while the database answers now."""
        try:
            self._ping()
        except (psycopg.Error, PoolTimeout) as exc:
            return False, f"database unreachable: {str(exc).strip() or repr(exc)}"
        if self._stop.is_set():
            return False, "stopping"
        return True, "ok"


#: Connections the monitor's pool holds at most: one poll at a time, and the liveness ping.
#: The connection budget of a release counts it (docs/capacity.md, "Database connections").
MONITOR_POOL_SIZE = 2


def run_from_settings(settings: Settings) -> None:
    """Run the monitor process as configured by ``GALPIPE_*`` until SIGTERM."""
    # A poll waits for a connection at most one interval (1 to 10 s) before it counts the
    # database as down, so a dead database shows within an interval or two. The pool opens in
    # the background: the monitor must start, and report the database down, while it is
    # unreachable.
    interval = settings.monitor_interval_seconds
    with pool_from_settings(
        settings,
        role="monitor",
        max_size=MONITOR_POOL_SIZE,
        wait=False,
        timeout_s=min(_CONNECTION_TIMEOUT_S, max(1.0, interval)),
    ) as pool:

        def ping() -> None:
            with pool.connection(timeout=_PING_TIMEOUT_S) as conn:
                db.ping(conn)

        monitor = Monitor(
            lambda: poll_database(pool, settings),
            ping,
            interval_s=interval,
            queue_age_slo_s=settings.queue_age_slo_seconds,
        )
        serve(monitor, port=settings.metrics_port, collectors=[monitor])
