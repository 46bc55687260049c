"""A token bucket in PostgreSQL that every process of a pipeline draws from.

One row of ``rate_limits`` holds a bucket: ``tokens`` at time ``updated_at``, refilled at
``rate`` tokens per second up to ``burst``. Time is the database's ``clock_timestamp()``, so
pods on different hosts agree on it, and the global request rate is ``rate`` whatever the
replica count.

A draw is a *reservation*: one atomic ``UPDATE`` refills the bucket up to now, subtracts the
tokens asked for and returns how long the caller must wait before using them. ``tokens`` may go
negative; it is then a queue of reservations, served in the order their ``UPDATE`` took the
row lock. That order is what makes the limiter fair (no process starves, however many poll it)
and exact (the bucket never hands out more than ``burst + rate * t`` tokens in ``t`` seconds),
without any process polling in a loop.

A process that draws often can reserve a *block* of tokens per statement (``block_seconds``):
it then hands the block's slots (the moment each token falls due) to its own threads in order.
The global accounting is unchanged, because every token of a block was reserved in the shared
row; what changes is one commit per block instead of one per request, which at hundreds of
requests per second is the difference between the shared row's lock being the bottleneck or
not. A slot may be used up to ``burst / rate`` seconds after it falls due (holding a token
that long is what the bucket's burst allows anyway); a slot older than that is dropped, never
sent late in a bunch.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg_pool import ConnectionPool

from galpipe.errors import ServiceError

log = logging.getLogger(__name__)

# One reservation, in one statement. ``clock`` is read once; ``greatest(c.ts, r.updated_at)``
# keeps the accounting exact when this UPDATE waited for another one's row lock: PostgreSQL
# then re-checks the row but keeps ``c.ts`` from before the wait, and a timestamp older than
# ``updated_at`` simply means "no refill since" (``rate_limit_tokens``, migration 0005), never
# a refill counted twice.
# The second column is only filled when the reservation was refused (it would have waited
# longer than ``max_wait``): the wait it would have had, from the statement's snapshot.
_RESERVE_SQL = """
WITH clock AS (SELECT clock_timestamp() AS ts),
taken AS (
    UPDATE rate_limits r
    SET tokens = rate_limit_tokens(r.tokens, r.rate, r.burst, r.updated_at, c.ts) - %(n)s,
        updated_at = GREATEST(c.ts, r.updated_at),
        granted = r.granted + %(n)s
    FROM clock c
    WHERE r.name = %(name)s
      AND rate_limit_tokens(r.tokens, r.rate, r.burst, r.updated_at, c.ts) - %(n)s
          >= -%(max_wait)s * r.rate
    RETURNING r.tokens, r.rate, r.burst, r.updated_at
)
SELECT
    (SELECT GREATEST(0, EXTRACT(EPOCH FROM t.updated_at - clock_timestamp())::float8
                        + GREATEST(0, -t.tokens) / t.rate)
     FROM taken t) AS wait,
    (SELECT t.rate FROM taken t) AS rate,
    (SELECT t.burst FROM taken t) AS burst,
    (SELECT (%(n)s - rate_limit_tokens(r.tokens, r.rate, r.burst, r.updated_at, c.ts)) / r.rate
     FROM rate_limits r, clock c WHERE r.name = %(name)s) AS refused_wait
"""

# Create the bucket full, or bring an existing one up to now at its old rate, clamp it to the
# new burst and adopt the new rate: pending reservations (negative tokens) are kept.
_CONFIGURE_SQL = """
INSERT INTO rate_limits AS r (name, rate, burst, tokens, updated_at)
VALUES (%(name)s, %(rate)s, %(burst)s, %(burst)s, clock_timestamp())
ON CONFLICT (name) DO UPDATE
SET tokens = LEAST(EXCLUDED.burst,
                   rate_limit_tokens(r.tokens, r.rate, r.burst, r.updated_at, clock_timestamp())),
    updated_at = GREATEST(clock_timestamp(), r.updated_at),
    rate = EXCLUDED.rate,
    burst = EXCLUDED.burst
"""

# Every bucket (or the one named), its tokens brought up to now.
_USAGES_SQL = """
SELECT name, rate, burst,
       rate_limit_tokens(tokens, rate, burst, updated_at, clock_timestamp()),
       granted
FROM rate_limits
WHERE %(name)s::text IS NULL OR name = %(name)s
ORDER BY name
"""

#: Most tokens one statement reserves, whatever the rate (a lifted limit is ~1e6/s).
MAX_BLOCK = 256

#: ``observer(bucket_name, waited_s)`` is called once per :meth:`TokenBucket.acquire`.
WaitObserver = Callable[[str, float], None]


class RateLimitTimeoutError(ServiceError, TimeoutError):
    """A token would only be granted after longer than the caller agreed to wait.

    Nothing was reserved. ``wait`` is the seconds the caller would have had to wait.
    """

    def __init__(self, bucket: str, n: int, wait: float, max_wait: float) -> None:
        super().__init__(
            f"rate limit {bucket!r}: {n} token(s) only after {wait:.3f} s, "
            f"longer than max_wait={max_wait:g} s; nothing reserved"
        )
        self.bucket = bucket
        self.wait = wait
        self.max_wait = max_wait


@dataclass(frozen=True)
class BucketUsage:
    """A snapshot of one shared bucket, for ``galpipe status`` and the monitor.

    Attributes
    ----------
    name
        Bucket name (``rate_limits.name``).
    rate
        Refill rate, tokens per second.
    burst
        Capacity, tokens.
    tokens
        Tokens available now; negative while reservations wait (a queue of ``-tokens``).
    granted
        Tokens granted since the bucket was created, by every process.
    """

    name: str
    rate: float
    burst: float
    tokens: float
    granted: int

    @property
    def backlog_seconds(self) -> float:
        """Seconds until the reservations already granted are all due (0 when none wait)."""
        return max(0.0, -self.tokens / self.rate)


def _check_positive(what: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{what} must be positive and finite, got {value!r}")
    return float(value)


def _check_tokens(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"token count n must be an integer, got {n!r}")
    if n <= 0:
        raise ValueError(f"token count n must be positive, got {n}")
    return n


@dataclass(frozen=True)
class RateLimitPolicy:
    """How fast a shared bucket refills and how much it holds.

    Parameters
    ----------
    rate
        Refill rate, tokens per second (> 0, finite).
    burst
        Capacity, tokens (> 0, finite): how many may be drawn at once after an idle spell.

    Raises
    ------
    TypeError
        If either is not a number.
    ValueError
        If either is not positive and finite.
    """

    rate: float
    burst: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", _check_positive("rate (tokens per second)", self.rate))
        object.__setattr__(self, "burst", _check_positive("burst (tokens)", self.burst))


def bucket_usages(conn: psycopg.Connection, name: str | None = None) -> list[BucketUsage]:
    """Every shared bucket (or only ``name``), by name, its tokens brought up to now."""
    rows = conn.execute(_USAGES_SQL, {"name": name}).fetchall()
    return [
        BucketUsage(str(bucket), float(rate), float(burst), float(tokens), int(granted))
        for bucket, rate, burst, tokens, granted in rows
    ]


class TokenBucket:
    """A token bucket shared through ``rate_limits`` by every process that names it.

    Parameters
    ----------
    pool
        Connection pool on the galpipe database.
    name
        Bucket name (the pipeline it serves); processes with the same name share one rate.
    policy
        Refill rate and capacity.
    clock
        Monotonic clock (seconds): the deadlines of the slots and the waits reported.
    sleep
        Sleeps a number of seconds; tests inject a recorder.
    block_seconds
        Single-token draws reserve ``ceil(rate * block_seconds)`` tokens at a time (at most
        ``MAX_BLOCK``) and serve them from this process (0: one statement per draw).
    observer
        Called as ``observer(name, waited_s)`` after every :meth:`acquire` (the process's
        metrics); an exception it raises is logged and ignored.

    Notes
    -----
    The policy is written to the database by :meth:`configure` (and by the first draw when
    the row does not exist yet); a draw always obeys the rate and burst in the row, so the
    last process configured wins.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        name: str,
        policy: RateLimitPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        block_seconds: float = 0.0,
        observer: WaitObserver | None = None,
    ) -> None:
        if not name:
            raise ValueError("bucket name must be a non-empty string")
        if not (block_seconds >= 0 and math.isfinite(block_seconds)):
            raise ValueError(f"block_seconds must be >= 0 and finite, got {block_seconds!r}")
        self.pool = pool
        self.name = name
        self.policy = policy
        self.block_seconds = float(block_seconds)
        self._clock = clock
        self._sleep = sleep
        self._observer = observer
        # Slots of this process's last block: (due time on ``clock``, latest use on ``clock``).
        self._slots: deque[tuple[float, float]] = deque()
        self._slots_lock = threading.Lock()

    def configure(self) -> None:
        """Create the bucket full, or give an existing one this object's policy.

        Tokens already in the bucket are kept (refilled at the old rate up to now, then
        clamped to the new burst), so restarting every pod with a new rate neither grants a
        fresh burst nor forgets reservations that are waiting.
        """
        with self.pool.connection() as conn:
            conn.execute(
                _CONFIGURE_SQL,
                {"name": self.name, "rate": self.policy.rate, "burst": self.policy.burst},
            )

    def _reserve(self, n: int, max_wait: float) -> tuple[float, float, float, float]:
        """Reserve ``n`` tokens if they are due within ``max_wait`` s.

        Returns ``(answered, wait, rate, burst)``: the local ``clock`` reading when the database
        answered (before the commit, whose latency must not delay the slots), the seconds from
        then until the last of the ``n`` tokens is due, and the bucket's rate and burst in the
        row.
        """
        params = {"name": self.name, "n": n, "max_wait": max_wait}
        for _ in range(2):
            with self.pool.connection() as conn:
                row = conn.execute(_RESERVE_SQL, params).fetchone()
                answered = self._clock()
            wait, rate, burst, refused_wait = row if row else (None, None, None, None)
            if wait is not None:
                return answered, float(wait), float(rate), float(burst)
            if refused_wait is not None:
                raise RateLimitTimeoutError(self.name, n, float(refused_wait), max_wait)
            self.configure()  # first use anywhere: create the row, then draw again
        raise RuntimeError(f"rate limit {self.name!r}: bucket row vanished while drawing")

    def _due(self, n: int, max_wait: float) -> float:
        """Reserve ``n`` tokens (from this process's block when it may); return when the last
        of them is due, on ``clock``."""
        if n != 1 or self.block_seconds == 0:
            answered, wait, _, _ = self._reserve(n, max_wait)
            return answered + wait
        with self._slots_lock:
            now = self._clock()
            while self._slots and self._slots[0][1] < now:
                self._slots.popleft()  # fell due too long ago to be used without bunching
            if not self._slots:
                own_rate = self.policy.rate
                block = min(MAX_BLOCK, max(1, math.ceil(own_rate * self.block_seconds)))
                # The block's first token must be due within max_wait; its last one later.
                answered, wait, rate, burst = self._reserve(
                    block, max_wait + (block - 1) / own_rate
                )
                tolerance = burst / rate
                for i in range(block):
                    due = answered + max(0.0, wait - (block - 1 - i) / rate)
                    self._slots.append((due, due + tolerance))
            due, _ = self._slots.popleft()
        if due - now > max_wait:  # a block reserved at another rate than this object's
            raise RateLimitTimeoutError(self.name, n, due - now, max_wait)
        return due

    def acquire(self, n: int = 1, *, max_wait: float | None = None) -> float:
        """Take ``n`` tokens, sleeping until they are due; return the seconds waited.

        Parameters
        ----------
        n
            Tokens to take (> 0). More than ``burst`` is allowed: the caller waits for the
            refill.
        max_wait
            Longest acceptable wait, seconds (>= 0). When the tokens would be due later,
            nothing is reserved and :class:`RateLimitTimeoutError` is raised, so a process that is
            shutting down is never committed to a long sleep. ``None`` waits as long as needed.

        Raises
        ------
        RateLimitTimeoutError
            If the wait would exceed ``max_wait``.
        """
        _check_tokens(n)
        if max_wait is not None and not max_wait >= 0:
            raise ValueError(f"max_wait must be >= 0 seconds or None, got {max_wait!r}")
        started = self._clock()
        due = self._due(n, math.inf if max_wait is None else float(max_wait))
        wait = due - self._clock()
        if wait > 0:
            self._sleep(wait)
        waited = max(0.0, self._clock() - started)
        self._report_wait(waited)
        return waited

    def _report_wait(self, waited: float) -> None:
        if self._observer is None:
            return
        try:
            self._observer(self.name, waited)
        except Exception:
            log.exception("rate limit %r: wait observer failed; ignored", self.name)
