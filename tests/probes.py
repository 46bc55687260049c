"""Reads and draws that only tests need, kept out of the production classes.

Production reads the queue through :func:`galpipe.db.queue.task_counts` and
:func:`galpipe.db.status.pipeline_controls` inside its own transactions, and the shared buckets
through :func:`galpipe.db.ratelimit.bucket_usages`; tests want one call on a pool or a bucket.
"""

from __future__ import annotations

from psycopg_pool import ConnectionPool

from galpipe.db.queue import task_counts
from galpipe.db.ratelimit import BucketUsage, RateLimitTimeoutError, TokenBucket, bucket_usages
from galpipe.db.status import pipeline_controls


def counts_now(pool: ConnectionPool) -> dict[str, dict[str, int]]:
    """Every task by pipeline and state, every state present (zero when none)."""
    with pool.connection() as conn:
        return task_counts(conn)


def is_paused(pool: ConnectionPool, pipeline: str) -> bool:
    """Whether an operator paused ``pipeline`` (``galpipe pause``)."""
    with pool.connection() as conn:
        control = pipeline_controls(conn).get(pipeline)
    return bool(control and control.paused)


def usage_of(bucket: TokenBucket) -> BucketUsage:
    """Rate, burst, tokens now and tokens granted so far of ``bucket``'s shared row.

    Raises
    ------
    LookupError
        If the bucket was never configured nor drawn from.
    """
    with bucket.pool.connection() as conn:
        found = bucket_usages(conn, bucket.name)
    if not found:
        raise LookupError(f"rate limit {bucket.name!r} does not exist (configure it first)")
    return found[0]


def draw_now(bucket: TokenBucket, n: int = 1) -> bool:
    """Take ``n`` tokens if ``bucket`` holds them now; never waits, and a refusal takes none."""
    try:
        bucket.acquire(n, max_wait=0.0)
    except RateLimitTimeoutError:
        return False
    return True
