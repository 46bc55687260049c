"""A circuit breaker in PostgreSQL, shared by every process of a pipeline.

One row of ``breakers`` holds the state, so N replicas take one outage decision::

    closed --N consecutive failures, or failures/requests >= ratio over the window--> open
    open --cooldown over, first allow()--> half_open (that caller holds the one probe)
    half_open --probe succeeds--> closed (counters reset)
    half_open --probe fails--> open (cooldown starts again)
    half_open --probe lease expires, next allow()--> half_open (the next caller probes)

While ``half_open`` exactly one request is in flight across all processes: taking the probe is
a row-locked read-modify-write, so of many processes racing ``allow()`` one wins. Outcomes
recorded by anyone but the probe holder while half-open (late answers to requests sent before
the breaker opened) change nothing, nor do outcomes recorded while open.

The failure ratio is judged over a *fixed* window: the counts restart when the window is
older than ``window_seconds``, at the next outcome recorded. That is coarser than a sliding
window (a burst of failures straddling two windows is judged in halves) but needs only three
columns and no per-request rows.

The transitions are pure functions of (row, database time, event) below; :class:`CircuitBreaker`
applies them inside row-locked transactions, with time from ``clock_timestamp()`` so that every
host agrees on cooldowns and leases.

A busy process may keep a short-lived view of a *closed* breaker (``view_seconds``): for that
long ``allow()`` answers from memory, and successes are counted in memory and written as one
increment when the view expires, when ``MAX_PENDING_SUCCESSES`` have gathered, or just before
this process records a failure (so its own outcomes stay in order). Failures, probes and
every non-closed state always go to the row at once. The delay can only make the breaker open
sooner (a success not yet written has not reset the consecutive-failure count), never later;
it takes the shared row's lock off the path of every successful request.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta

import psycopg
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
_ERROR_CHARS = 2000  # enough of an error message to diagnose it, bounded for one shared row
#: Successes gathered in memory before they are written, whatever the view's age.
MAX_PENDING_SUCCESSES = 256

#: ``observer(breaker_name)`` is called once per request the breaker refused.
RejectionObserver = Callable[[str], None]

_COLUMNS = (
    "state::text, consecutive_failures, window_start, window_requests, window_failures, "
    "opened_at, probe_owner, probe_expires, last_error, clock_timestamp()"
)
_SELECT_SQL = f"SELECT {_COLUMNS} FROM breakers WHERE name = %(name)s"
_LOCK_SQL = _SELECT_SQL + " FOR UPDATE"
_ENSURE_SQL = "INSERT INTO breakers (name) VALUES (%(name)s) ON CONFLICT (name) DO NOTHING"
_WRITE_SQL = """
UPDATE breakers
SET state = %(state)s::breaker_state, consecutive_failures = %(consecutive_failures)s,
    window_start = %(window_start)s, window_requests = %(window_requests)s,
    window_failures = %(window_failures)s, opened_at = %(opened_at)s,
    probe_owner = %(probe_owner)s, probe_expires = %(probe_expires)s,
    last_error = %(last_error)s, updated_at = clock_timestamp()
WHERE name = %(name)s
"""


@dataclass(frozen=True)
class BreakerPolicy:
    """When a breaker opens and how long it stays open.

    Every process sharing a breaker should use the same policy: it is not stored in the row.

    Parameters
    ----------
    failures
        Consecutive failures that open the breaker (>= 1).
    failure_ratio
        Failures / requests over the window that open it, in (0, 1].
    min_requests
        Requests in the window before the ratio is judged (>= 1).
    window_seconds
        Length of the fixed ratio window, seconds (> 0).
    cooldown_seconds
        Time open before one probe is let through, seconds (> 0).
    probe_timeout_seconds
        Lease of the probe, seconds (> 0): if its holder neither succeeds nor fails by then
        (it died), the next caller gets the probe.
    """

    failures: int = 5
    failure_ratio: float = 0.5
    min_requests: int = 20
    window_seconds: float = 60.0
    cooldown_seconds: float = 30.0
    probe_timeout_seconds: float = 30.0

    def __post_init__(self) -> None:
        for what in ("failures", "min_requests"):
            value = getattr(self, what)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"breaker {what} must be an integer >= 1, got {value!r}")
        if not 0.0 < self.failure_ratio <= 1.0:
            raise ValueError(f"breaker failure_ratio must be in (0, 1], got {self.failure_ratio!r}")
        for what in ("window_seconds", "cooldown_seconds", "probe_timeout_seconds"):
            value = getattr(self, what)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"breaker {what} must be positive and finite, got {value!r}")

    @property
    def window(self) -> timedelta:
        return timedelta(seconds=self.window_seconds)

    @property
    def cooldown(self) -> timedelta:
        return timedelta(seconds=self.cooldown_seconds)

    @property
    def probe_timeout(self) -> timedelta:
        return timedelta(seconds=self.probe_timeout_seconds)


@dataclass(frozen=True)
class BreakerRow:
    """One row of ``breakers`` (times are the database's, timezone-aware)."""

    state: str
    consecutive_failures: int
    window_start: datetime
    window_requests: int
    window_failures: int
    opened_at: datetime | None
    probe_owner: str | None
    probe_expires: datetime | None
    last_error: str | None


@dataclass(frozen=True)
class BreakerStatus:
    """What ``galpipe status`` and the monitor show of a breaker.

    Attributes
    ----------
    state
        ``closed``, ``open`` or ``half_open``.
    consecutive_failures
        Failures in a row since the last success.
    window_start, window_requests, window_failures
        The current ratio window (counts are 0 once the stored window has expired).
    opened_at
        When the breaker last opened (``None`` while closed).
    reopens_at
        While open: when the next probe will be let through; else ``None``.
    probe_owner, probe_expires
        While half-open: who holds the probe and until when.
    last_error
        The last failure recorded.
    """

    name: str
    state: str
    consecutive_failures: int
    window_start: datetime
    window_requests: int
    window_failures: int
    opened_at: datetime | None
    reopens_at: datetime | None
    probe_owner: str | None
    probe_expires: datetime | None
    last_error: str | None


# -- the state machine: pure functions of (row, now, event) ------------------------------------


def current_window(row: BreakerRow, now: datetime, policy: BreakerPolicy) -> BreakerRow:
    """``row`` with its ratio window restarted at ``now`` if the stored one has expired."""
    if now - row.window_start < policy.window:
        return row
    return replace(row, window_start=now, window_requests=0, window_failures=0)


def admit(
    row: BreakerRow, now: datetime, owner: str, policy: BreakerPolicy
) -> tuple[bool, BreakerRow]:
    """May ``owner`` send a request now? Returns the answer and the row after asking.

    Closed: yes. Open before the cooldown ends: no. Open after it, or half-open with an
    expired probe lease: yes, and ``owner`` now holds the probe. Half-open otherwise: no
    (including for the probe holder itself: its one request is already out).
    """
    if row.state == CLOSED:
        return True, row
    probe_free = (
        row.state == OPEN and row.opened_at is not None and now >= row.opened_at + policy.cooldown
    ) or (row.state == HALF_OPEN and (row.probe_expires is None or now >= row.probe_expires))
    if not probe_free:
        return False, row
    return True, replace(
        row, state=HALF_OPEN, probe_owner=owner, probe_expires=now + policy.probe_timeout
    )


def on_success(row: BreakerRow, now: datetime, owner: str, policy: BreakerPolicy) -> BreakerRow:
    """The row after ``owner`` reports a successful request."""
    if row.state == CLOSED:
        row = current_window(row, now, policy)
        return replace(row, consecutive_failures=0, window_requests=row.window_requests + 1)
    if row.state == HALF_OPEN and row.probe_owner == owner:
        return replace(
            row,
            state=CLOSED,
            consecutive_failures=0,
            window_start=now,
            window_requests=0,
            window_failures=0,
            opened_at=None,
            probe_owner=None,
            probe_expires=None,
        )
    return row


def on_closed_successes(
    row: BreakerRow, now: datetime, n: int, policy: BreakerPolicy
) -> BreakerRow:
    """The row after ``n`` successes gathered while this process saw the breaker closed.

    They count only if the breaker is still closed: answers to requests sent before it opened
    change nothing (as in :func:`on_success`), and they are never a probe's answer.
    """
    if n == 0 or row.state != CLOSED:
        return row
    row = current_window(row, now, policy)
    return replace(row, consecutive_failures=0, window_requests=row.window_requests + n)


def on_failure(
    row: BreakerRow, now: datetime, owner: str, error: str, policy: BreakerPolicy
) -> BreakerRow:
    """The row after ``owner`` reports a failed request with message ``error``."""
    error = error[:_ERROR_CHARS]
    if row.state == CLOSED:
        row = current_window(row, now, policy)
        consecutive = row.consecutive_failures + 1
        requests = row.window_requests + 1
        failures = row.window_failures + 1
        trips = consecutive >= policy.failures or (
            requests >= policy.min_requests and failures >= policy.failure_ratio * requests
        )
        return replace(
            row,
            state=OPEN if trips else CLOSED,
            consecutive_failures=consecutive,
            window_requests=requests,
            window_failures=failures,
            opened_at=now if trips else None,
            last_error=error,
        )
    if row.state == HALF_OPEN and row.probe_owner == owner:
        return replace(
            row,
            state=OPEN,
            consecutive_failures=row.consecutive_failures + 1,
            opened_at=now,
            probe_owner=None,
            probe_expires=None,
            last_error=error,
        )
    return replace(row, last_error=error)


# -- the shared breaker -------------------------------------------------------------------------


class CircuitBreaker:
    """A circuit breaker whose state lives in one row of ``breakers``.

    Parameters
    ----------
    pool
        Connection pool on the galpipe database.
    name
        Breaker name (the pipeline it serves); processes with the same name share one state.
    policy
        When it opens and for how long (default: :class:`BreakerPolicy`'s defaults).
    view_seconds
        How long this object trusts a closed state it has read, and gathers successes in
        memory (see the module docstring); 0 reads and writes the row every time.
    clock
        Monotonic clock (seconds) for the view's age.
    observer
        Called as ``observer(name)`` for every request :meth:`allow` refuses (the process's
        metrics); an exception it raises is logged and ignored.

    Examples
    --------
    >>> if breaker.allow(owner):  # doctest: +SKIP
    ...     try:
    ...         response = get(url)
    ...     except OSError as exc:
    ...         breaker.record_failure(owner, str(exc))
    ...     else:
    ...         breaker.record_success(owner)
    """

    def __init__(
        self,
        pool: ConnectionPool,
        name: str,
        policy: BreakerPolicy | None = None,
        *,
        view_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        observer: RejectionObserver | None = None,
    ) -> None:
        if not name:
            raise ValueError("breaker name must be a non-empty string")
        if not (view_seconds >= 0 and math.isfinite(view_seconds)):
            raise ValueError(f"view_seconds must be >= 0 and finite, got {view_seconds!r}")
        self.pool = pool
        self.name = name
        self.policy = policy or BreakerPolicy()
        self.view_seconds = float(view_seconds)
        self._clock = clock
        self._observer = observer
        self._lock = threading.Lock()
        self._closed_until = -math.inf  # on ``clock``: until then, allow() answers "closed"
        self._pending = 0  # successes seen while the view was closed, not written yet

    def _read(self, conn: psycopg.Connection, sql: str) -> tuple[BreakerRow, datetime] | None:
        """The row and the database time, by ``sql`` (a plain or a locking read)."""
        row = conn.execute(sql, {"name": self.name}).fetchone()
        if row is None:
            return None
        return BreakerRow(*row[:-1]), row[-1]

    def _ensure(self) -> None:
        with self.pool.connection() as conn:
            conn.execute(_ENSURE_SQL, {"name": self.name})

    def _write(self, conn: psycopg.Connection, row: BreakerRow) -> None:
        conn.execute(_WRITE_SQL, {"name": self.name, **asdict(row)})

    def allow(self, owner: str) -> bool:
        """May ``owner`` send one request now? See :func:`admit`.

        A plain read answers when the state does not change (closed; open in cooldown;
        half-open with a live probe); taking the probe is a row-locked transaction, so across
        all processes exactly one caller gets it. A refusal is reported to the observer.
        """
        if self._clock() < self._closed_until:
            return True
        if self._pending:
            self.flush()  # the view expired: write what it gathered (refreshes it if closed)
            if self._clock() < self._closed_until:
                return True
        with self.pool.connection() as conn:
            found = self._read(conn, _SELECT_SQL)
        if found is None:
            self._ensure()  # first use anywhere: a new breaker starts closed
            self._observe(CLOSED)
            return True
        row, now = found
        allowed, after = admit(row, now, owner, self.policy)
        if after != row:
            with self.pool.connection() as conn, conn.transaction():
                locked = self._read(conn, _LOCK_SQL)
                if locked is None:  # deleted meanwhile: a new breaker starts closed
                    return True
                row, now = locked
                allowed, after = admit(row, now, owner, self.policy)
                if after != row:
                    self._write(conn, after)
        self._observe(after.state)
        if not allowed:
            self._report_rejection()
        return allowed

    def _report_rejection(self) -> None:
        if self._observer is None:
            return
        try:
            self._observer(self.name)
        except Exception:
            log.exception("breaker %r: rejection observer failed; ignored", self.name)

    def _observe(self, state: str) -> None:
        """Remember the state just read or written: a closed one is trusted for a while."""
        with self._lock:
            if state == CLOSED and self.view_seconds > 0:
                self._closed_until = self._clock() + self.view_seconds
            else:
                self._closed_until = -math.inf
                # Gathered successes would change nothing now (see on_closed_successes).
                self._pending = 0

    def _take_pending(self) -> int:
        with self._lock:
            pending, self._pending = self._pending, 0
            return pending

    def _record(self, transition: Callable[[BreakerRow, datetime], BreakerRow]) -> str:
        """Apply ``transition`` to the row under its lock; return the state after it."""
        for _ in range(2):
            with self.pool.connection() as conn, conn.transaction():
                locked = self._read(conn, _LOCK_SQL)
                if locked is not None:
                    row, now = locked
                    after = transition(row, now)
                    if after != row:
                        self._write(conn, after)
                    break
            self._ensure()  # first use anywhere: create the row, then record again
        else:
            raise RuntimeError(f"breaker {self.name!r}: row vanished while recording an outcome")
        self._observe(after.state)
        return after.state

    def flush(self) -> None:
        """Write the successes gathered in memory now (call before the process exits)."""
        n = self._take_pending()
        if n:
            self._record(lambda row, now: on_closed_successes(row, now, n, self.policy))

    def record_success(self, owner: str) -> str:
        """Report that ``owner``'s request succeeded; return the state after it (as this
        process sees it while its view of a closed breaker is fresh)."""
        with self._lock:
            gather = self._clock() < self._closed_until
            if gather:
                self._pending += 1
                full = self._pending >= MAX_PENDING_SUCCESSES
        if not gather:
            n = self._take_pending()
            return self._record(
                lambda row, now: on_success(
                    on_closed_successes(row, now, n, self.policy), now, owner, self.policy
                )
            )
        if full:
            self.flush()
        return CLOSED

    def record_failure(self, owner: str, error: str) -> str:
        """Report that ``owner``'s request failed with ``error``; return the state after it.

        Successes this process gathered before it are written first, in the same transaction.
        """
        n = self._take_pending()
        return self._record(
            lambda row, now: on_failure(
                on_closed_successes(row, now, n, self.policy), now, owner, str(error), self.policy
            )
        )

    def status(self) -> BreakerStatus:
        """The shared state as of now (a never-used breaker reads as closed and empty)."""
        with self.pool.connection() as conn:
            found = self._read(conn, _SELECT_SQL)
        if found is None:
            self._ensure()
            with self.pool.connection() as conn:
                found = self._read(conn, _SELECT_SQL)
        if found is None:
            raise RuntimeError(f"breaker {self.name!r}: row vanished while reading it")
        row, now = found
        row = current_window(row, now, self.policy)
        reopens_at = (
            row.opened_at + self.policy.cooldown
            if row.state == OPEN and row.opened_at is not None
            else None
        )
        return BreakerStatus(
            name=self.name,
            state=row.state,
            consecutive_failures=row.consecutive_failures,
            window_start=row.window_start,
            window_requests=row.window_requests,
            window_failures=row.window_failures,
            opened_at=row.opened_at,
            reopens_at=reopens_at,
            probe_owner=row.probe_owner,
            probe_expires=row.probe_expires,
            last_error=row.last_error,
        )
