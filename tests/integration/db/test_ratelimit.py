"""The shared token bucket against a real PostgreSQL, with real processes drawing from it."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest
from psycopg_pool import ConnectionPool

from galpipe.db.connection import open_pool
from galpipe.db.ratelimit import RateLimitTimeoutError, TokenBucket
from galpipe.runtime import metrics
from galpipe.settings import Settings

RATE = 50.0  # tokens per second
BURST = 10.0
SECONDS = 5.0
PROCESSES = 4


def _no_sleep(waits: list[float]):
    """A ``sleep`` that records the wait instead of sleeping."""
    return waits.append


def _draw_until_deadline(database_url: str, name: str, barrier, results) -> None:
    """Child: draw single tokens for ``SECONDS`` after the barrier; put how many it got.

    A token counts when it is due within the window: ``max_wait`` is the time left, so the
    first draw that would be due after the deadline is refused and reserves nothing.
    """
    pool = open_pool(database_url, max_size=1)
    bucket = TokenBucket(pool, name, RATE, BURST)
    barrier.wait()
    deadline = time.monotonic() + SECONDS
    granted = 0
    try:
        while True:
            try:
                bucket.acquire(max_wait=max(0.0, deadline - time.monotonic()))
            except RateLimitTimeoutError:
                break
            granted += 1
    finally:
        pool.close()
        results.put(granted)


def test_processes_share_one_global_rate_fairly(database_url: str, pool: ConnectionPool) -> None:
    TokenBucket(pool, "fetch", RATE, BURST).configure()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    children = [
        ctx.Process(target=_draw_until_deadline, args=(database_url, "fetch", barrier, results))
        for _ in range(PROCESSES)
    ]
    for child in children:
        child.start()
    counts = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=10)
        assert child.exitcode == 0

    total = sum(counts)
    # The criterion: 250 ± 5 % in 5 s at 50/s, plus the burst the full bucket gives.
    assert abs(total - BURST - RATE * SECONDS) <= 0.05 * RATE * SECONDS, counts
    # Nobody starves: each process gets at least half of its fair share.
    assert min(counts) >= 0.5 * total / PROCESSES, counts
    # Every reservation was counted by a child: refused draws reserved nothing.
    usage = TokenBucket(pool, "fetch", RATE, BURST).usage()
    assert usage.granted == total


def test_burst_then_reservations_queue_at_the_rate(pool: ConnectionPool) -> None:
    waits: list[float] = []
    bucket = TokenBucket(pool, "b", rate=10.0, burst=5.0, sleep=_no_sleep(waits))
    bucket.configure()
    started = time.monotonic()
    for _ in range(8):
        bucket.acquire()
    usage = bucket.usage()
    elapsed = time.monotonic() - started
    # Five tokens at once (no sleep), then the k-th next one is due 0.1 k s after the burst:
    # the sleeps were skipped, so the reservations queued up on the bucket.
    assert len(waits) == 3, waits
    for k, wait in enumerate(waits, start=1):
        assert 0.1 * k - elapsed - 0.002 <= wait <= 0.1 * k + 0.002
    assert usage.granted == 8
    assert -3.0 <= usage.tokens <= -3.0 + 10.0 * elapsed
    assert 0.3 - elapsed <= usage.backlog_seconds <= 0.3


def test_acquire_sleeps_the_wait_and_reports_it(pool: ConnectionPool) -> None:
    bucket = TokenBucket(pool, "slow", rate=5.0, burst=1.0)
    bucket.configure()
    before = metrics.RATE_LIMIT_WAIT_SECONDS.labels(bucket="slow")._sum.get()
    assert bucket.acquire() < 0.1
    started = time.monotonic()
    waited = bucket.acquire()  # the next token is due 0.2 s after the first
    assert 0.1 <= time.monotonic() - started < 0.5
    assert 0.1 <= waited < 0.5
    after = metrics.RATE_LIMIT_WAIT_SECONDS.labels(bucket="slow")._sum.get()
    assert after - before == pytest.approx(waited, abs=0.02)


def test_bucket_refills_up_to_burst_only(pool: ConnectionPool) -> None:
    bucket = TokenBucket(pool, "refill", rate=5.0, burst=3.0)
    bucket.configure()
    assert [bucket.try_acquire() for _ in range(4)] == [True, True, True, False]
    time.sleep(1.0)  # 5 tokens' worth of refill, capped at 3
    assert bucket.usage().tokens == 3.0
    assert [bucket.try_acquire() for _ in range(4)] == [True, True, True, False]


def test_try_acquire_never_queues(pool: ConnectionPool) -> None:
    bucket = TokenBucket(pool, "try", rate=1.0, burst=2.0)
    bucket.configure()
    assert bucket.try_acquire(2)
    assert not bucket.try_acquire()
    usage = bucket.usage()
    assert usage.granted == 2
    assert 0.0 <= usage.tokens < 0.5  # refused draws took nothing


def test_max_wait_refuses_without_reserving(pool: ConnectionPool) -> None:
    waits: list[float] = []
    bucket = TokenBucket(pool, "guard", rate=2.0, burst=1.0, sleep=_no_sleep(waits))
    bucket.configure()
    bucket.acquire(max_wait=0)
    with pytest.raises(RateLimitTimeoutError, match=r"'guard'.*max_wait=0\.1") as refused:
        bucket.acquire(max_wait=0.1)
    assert 0.3 < refused.value.wait <= 0.5
    assert bucket.usage().granted == 1
    # A guard long enough lets the draw through and reserves it.
    bucket.acquire(max_wait=1.0)
    assert len(waits) == 1
    assert 0.3 < waits[0] <= 0.5
    assert bucket.usage().granted == 2


def test_configure_changes_rate_and_keeps_tokens(pool: ConnectionPool) -> None:
    TokenBucket(pool, "cfg", rate=1.0, burst=10.0).configure()
    drained = TokenBucket(pool, "cfg", rate=1.0, burst=10.0)
    for _ in range(8):
        assert drained.try_acquire()
    # A restart with a new rate and a smaller burst: no fresh burst, tokens clamped.
    restarted = TokenBucket(pool, "cfg", rate=2.0, burst=5.0)
    restarted.configure()
    usage = restarted.usage()
    assert (usage.rate, usage.burst, usage.granted) == (2.0, 5.0, 8)
    assert 2.0 <= usage.tokens < 2.5
    restarted.configure()
    assert restarted.usage().tokens < 3.0
    # Shrinking the burst below the tokens held clamps them.
    shrunk = TokenBucket(pool, "cfg", rate=2.0, burst=1.5)
    shrunk.configure()
    assert shrunk.usage().tokens == 1.5


def test_first_draw_creates_the_bucket(pool: ConnectionPool) -> None:
    bucket = TokenBucket(pool, "lazy", rate=5.0, burst=2.0)
    with pytest.raises(LookupError, match="'lazy' does not exist"):
        bucket.usage()
    assert bucket.try_acquire()
    usage = bucket.usage()
    assert (usage.rate, usage.burst, usage.granted) == (5.0, 2.0, 1)


def test_buckets_are_independent(pool: ConnectionPool) -> None:
    a = TokenBucket(pool, "a", rate=1.0, burst=1.0)
    b = TokenBucket(pool, "b", rate=1.0, burst=1.0)
    assert a.try_acquire()
    assert b.try_acquire()
    assert not a.try_acquire()


def test_from_settings_uses_the_fetch_rate(pool: ConnectionPool) -> None:
    settings = Settings.from_env(
        {"GALPIPE_FETCH_RATE_LIMIT": "7.5", "GALPIPE_FETCH_RATE_BURST": "3"}
    )
    bucket = TokenBucket.from_settings(pool, settings)
    assert (bucket.name, bucket.rate, bucket.burst) == ("fetch", 7.5, 3.0)


@pytest.mark.parametrize(
    ("rate", "burst", "message"),
    [
        (0, 1, "rate .* positive"),
        (-1.0, 1, "rate .* positive"),
        (float("inf"), 1, "rate .* finite"),
        (float("nan"), 1, "rate .* positive"),
        (1, 0, "burst .* positive"),
        (1, -2.0, "burst .* positive"),
    ],
)
def test_bad_rate_or_burst_is_refused(
    pool: ConnectionPool, rate: float, burst: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        TokenBucket(pool, "bad", rate, burst)


def test_bad_arguments_are_refused(pool: ConnectionPool) -> None:
    with pytest.raises(TypeError, match=r"rate .* number"):
        TokenBucket(pool, "bad", "10", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        TokenBucket(pool, "", 1, 1)
    bucket = TokenBucket(pool, "args", rate=1.0, burst=2.0)
    for n in (0, -1):
        with pytest.raises(ValueError, match="n must be positive"):
            bucket.acquire(n)
        with pytest.raises(ValueError, match="n must be positive"):
            bucket.try_acquire(n)
    with pytest.raises(TypeError, match="integer"):
        bucket.acquire(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_wait"):
        bucket.acquire(max_wait=-1)
    with pytest.raises(ValueError, match=r"never succeed.*burst=2"):
        bucket.try_acquire(3)
    with pytest.raises(LookupError):
        bucket.usage()  # nothing was drawn by the refused calls


# -- block draws ----------------------------------------------------------------------------------


class _FakeClock:
    """A monotonic clock the test moves by hand; ``sleep`` advances it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def test_a_block_is_one_reservation_served_at_the_rate(pool: ConnectionPool) -> None:
    clock = _FakeClock()
    bucket = TokenBucket(
        pool, "blocks", rate=10.0, burst=1.0, clock=clock, sleep=clock.sleep, block_seconds=0.5
    )
    bucket.configure()
    for _ in range(5):
        bucket.acquire()
    # One statement reserved all five tokens of the block (0.5 s x 10/s) ...
    assert bucket.usage().granted == 5
    # ... and this process spaced them at the rate: the first at once (the burst), then one
    # every 0.1 s, as five single draws would have been (within the statement's own latency).
    assert len(clock.waits) == 4
    assert [round(w, 2) for w in clock.waits] == pytest.approx([0.1] * 4, abs=0.02)
    bucket.acquire()  # the block is used up: the next draw reserves a new one
    assert bucket.usage().granted == 10


def test_a_slot_too_late_to_use_is_dropped_not_bunched(pool: ConnectionPool) -> None:
    clock = _FakeClock()
    bucket = TokenBucket(
        pool, "stale", rate=10.0, burst=2.0, clock=clock, sleep=clock.sleep, block_seconds=0.5
    )
    bucket.configure()
    bucket.acquire()
    granted = bucket.usage().granted
    # The process stalls for longer than burst / rate (0.2 s) past every slot of its block:
    # sending them now would put them all in one bunch, so they are dropped.
    clock.now += 1.0
    bucket.acquire()
    assert bucket.usage().granted == granted + 5  # a fresh block was reserved
    # Dropped slots are not given back: the new block queues behind them in the shared row
    # (2 of the first block came from the burst, 3 were due 0.1-0.3 s later; the new first
    # token is due 0.4 s after the first statement; the database's clock did not jump).
    assert clock.waits == [pytest.approx(0.4, abs=0.03)]


def test_threads_share_blocks_and_the_global_rate(pool: ConnectionPool) -> None:
    bucket = TokenBucket(pool, "threads", rate=40.0, burst=1.0, block_seconds=0.25)
    bucket.configure()
    sent: list[float] = []

    def draw() -> None:
        for _ in range(5):
            bucket.acquire()
            sent.append(time.monotonic())

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sent.sort()
    # 20 tokens at 40/s with a burst of 1 take at least 19/40 s; blocks of 10 tokens mean two
    # (or, with a dropped slot, three) statements instead of twenty.
    assert sent[-1] - sent[0] >= 19 / 40 - 0.01
    assert 20 <= bucket.usage().granted <= 30
