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

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from psycopg_pool import ConnectionPool

from galpipe.runtime import metrics
from galpipe.settings import Settings

# One reservation, in one statement. ``clock`` is read once; ``greatest(c.ts, r.updated_at)``
# keeps the accounting exact when this UPDATE waited for another one's row lock: PostgreSQL
# then re-checks the row but keeps ``c.ts`` from before the wait, and a timestamp older than
# ``updated_at`` simply means "no refill since", never a refill counted twice.
# The second column is only filled when the reservation was refused (it would have waited
# longer than ``max_wait``): the wait it would have had, from the statement's snapshot.
_RESERVE_SQL = """
WITH clock AS (SELECT clock_timestamp() AS ts),
taken AS (
    UPDATE rate_limits r
    SET tokens = LEAST(r.burst, r.tokens + r.rate
                       * GREATEST(0, EXTRACT(EPOCH FROM c.ts - r.updated_at)::float8))
                 - %(n)s,
        updated_at = GREATEST(c.ts, r.updated_at),
        granted = r.granted + %(n)s
    FROM clock c
    WHERE r.name = %(name)s
      AND LEAST(r.burst, r.tokens + r.rate
                * GREATEST(0, EXTRACT(EPOCH FROM c.ts - r.updated_at)::float8))
          - %(n)s >= -%(max_wait)s * r.rate
    RETURNING r.tokens, r.rate, r.burst, r.updated_at
)
SELECT
    (SELECT GREATEST(0, EXTRACT(EPOCH FROM t.updated_at - clock_timestamp())::float8
                        + GREATEST(0, -t.tokens) / t.rate)
     FROM taken t) AS wait,
    (SELECT t.rate FROM taken t) AS rate,
    (SELECT t.burst FROM taken t) AS burst,
    (SELECT (%(n)s - LEAST(r.burst, r.tokens + r.rate
                           * GREATEST(0, EXTRACT(EPOCH FROM c.ts - r.updated_at)::float8)))
            / r.rate
     FROM rate_limits r, clock c WHERE r.name = %(name)s) AS refused_wait
"""

# Create the bucket full, or bring an existing one up to now at its old rate, clamp it to the
# new burst and adopt the new rate: pending reservations (negative tokens) are kept.
_CONFIGURE_SQL = """
INSERT INTO rate_limits AS r (name, rate, burst, tokens, updated_at)
VALUES (%(name)s, %(rate)s, %(burst)s, %(burst)s, clock_timestamp())
ON CONFLICT (name) DO UPDATE
SET tokens = LEAST(EXCLUDED.burst, r.burst,
                   r.tokens + r.rate
                   * GREATEST(0, EXTRACT(EPOCH FROM clock_timestamp() - r.updated_at)::float8)),
    updated_at = GREATEST(clock_timestamp(), r.updated_at),
    rate = EXCLUDED.rate,
    burst = EXCLUDED.burst
"""

_USAGE_SQL = """
SELECT rate, burst,
       LEAST(burst, tokens + rate
             * GREATEST(0, EXTRACT(EPOCH FROM clock_timestamp() - updated_at)::float8)),
       granted
FROM rate_limits WHERE name = %(name)s
"""


#: How many seconds of the fetch rate one draw reserves for this process's threads.
FETCH_BLOCK_SECONDS = 0.2
#: Most tokens one statement reserves, whatever the rate (a lifted limit is ~1e6/s).
MAX_BLOCK = 256


class RateLimitTimeoutError(TimeoutError):
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


class TokenBucket:
    """A token bucket shared through ``rate_limits`` by every process that names it.

    Parameters
    ----------
    pool
        Connection pool on the galpipe database.
    name
        Bucket name; processes with the same name share one rate.
    rate
        Refill rate, tokens per second (> 0).
    burst
        Capacity, tokens (> 0): how many may be drawn at once after an idle spell.
    clock
        Monotonic clock (seconds): the deadlines of the slots and the waits reported to metrics.
    sleep
        Sleeps a number of seconds; tests inject a recorder.
    block_seconds
        Single-token draws reserve ``ceil(rate * block_seconds)`` tokens at a time (at most
        ``MAX_BLOCK``) and serve them from this process (0: one statement per draw).

    Notes
    -----
    ``rate`` and ``burst`` are written to the database by :meth:`configure` (and by the first
    draw when the row does not exist yet); a draw always obeys the values in the row, so the
    last process configured wins.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        name: str,
        rate: float,
        burst: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        block_seconds: float = 0.0,
    ) -> None:
        if not name:
            raise ValueError("bucket name must be a non-empty string")
        if not (block_seconds >= 0 and math.isfinite(block_seconds)):
            raise ValueError(f"block_seconds must be >= 0 and finite, got {block_seconds!r}")
        self.pool = pool
        self.name = name
        self.rate = _check_positive("rate (tokens per second)", rate)
        self.burst = _check_positive("burst (tokens)", burst)
        self.block_seconds = float(block_seconds)
        self._clock = clock
        self._sleep = sleep
        # Slots of this process's last block: (due time on ``clock``, latest use on ``clock``).
        self._slots: deque[tuple[float, float]] = deque()
        self._slots_lock = threading.Lock()

    @classmethod
    def from_settings(
        cls,
        pool: ConnectionPool,
        settings: Settings,
        name: str = "fetch",
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> TokenBucket:
        """The fetch pipeline's bucket: ``GALPIPE_FETCH_RATE_LIMIT`` and ``_BURST``, drawn in
        blocks of ``FETCH_BLOCK_SECONDS``."""
        return cls(
            pool,
            name,
            settings.fetch_rate_limit,
            settings.fetch_rate_burst,
            clock=clock,
            sleep=sleep,
            block_seconds=FETCH_BLOCK_SECONDS,
        )

    def configure(self) -> None:
        """Create the bucket full, or give an existing one this object's rate and burst.

        Tokens already in the bucket are kept (refilled at the old rate up to now, then
        clamped to the new burst), so restarting every pod with a new rate neither grants a
        fresh burst nor forgets reservations that are waiting.
        """
        with self.pool.connection() as conn:
            conn.execute(
                _CONFIGURE_SQL, {"name": self.name, "rate": self.rate, "burst": self.burst}
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
                block = min(MAX_BLOCK, max(1, math.ceil(self.rate * self.block_seconds)))
                # The block's first token must be due within max_wait; its last one later.
                answered, wait, rate, burst = self._reserve(
                    block, max_wait + (block - 1) / self.rate
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
        metrics.RATE_LIMIT_WAIT_SECONDS.labels(bucket=self.name).observe(waited)
        return waited

    def try_acquire(self, n: int = 1) -> bool:
        """Take ``n`` tokens if the bucket holds them now; never waits, never queues.

        Raises
        ------
        ValueError
            If ``n`` exceeds this object's ``burst``: such a draw could never succeed.
        """
        _check_tokens(n)
        if n > self.burst:
            raise ValueError(
                f"try_acquire({n}) can never succeed: bucket {self.name!r} "
                f"holds at most burst={self.burst:g} tokens"
            )
        try:
            self._reserve(n, 0.0)
        except RateLimitTimeoutError:
            return False
        return True

    def usage(self) -> BucketUsage:
        """Rate, burst, tokens now and tokens granted so far, from the shared row.

        Raises
        ------
        LookupError
            If the bucket was never configured nor drawn from.
        """
        with self.pool.connection() as conn:
            row = conn.execute(_USAGE_SQL, {"name": self.name}).fetchone()
        if row is None:
            raise LookupError(f"rate limit {self.name!r} does not exist (configure it first)")
        rate, burst, tokens, granted = row
        return BucketUsage(self.name, float(rate), float(burst), float(tokens), int(granted))
