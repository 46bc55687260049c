"""The common worker loop: claim → process → commit, for any :class:`Pipeline`.

One loop serves every stage. It claims a FIFO batch under a lease, keeps the lease alive while
the pipeline works, and commits the outcome in one transaction: done tasks (with the
downstream tasks of the pipeline's routes, and its result rows), retries, skips and failures.
On SIGTERM it stops claiming, finishes the batch in hand (or gives it back if work had not
started) and returns, so the process exits 0 within the pod's termination grace period. A
:class:`Worker` is a :class:`~galpipe.runtime.service.Service`; :func:`run_from_settings` serves
one.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

import psycopg
from psycopg_pool import ConnectionPool

from galpipe.db.queue import RetryPolicy, Task, TaskQueue
from galpipe.pipelines.base import Done, Fail, Outcome, Pipeline, Release, Retry, Skip
from galpipe.runtime import metrics
from galpipe.runtime.database import pool_from_settings
from galpipe.runtime.service import serve
from galpipe.settings import Settings

log = logging.getLogger(__name__)

# Lease renewal runs this many times per lease period while a batch is being processed.
_RENEWALS_PER_LEASE = 3
# Expired leases of the pipeline are swept at most this often (seconds) by each worker (or once
# a lease period, if shorter); `galpipe check` allows a lease this long past expiry, plus one
# idle poll, before it calls it stale.
RECOVERY_INTERVAL_S = 10.0


@dataclass
class WorkerStats:
    """What one worker did in its lifetime (also exported as Prometheus counters)."""

    batches: int = 0
    claimed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: str, n: int) -> None:
        if n:
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + n


class Worker:
    """Runs one pipeline against the task queue until told to stop.

    Parameters
    ----------
    pipeline
        The stage to run.
    queue
        Task queue on the galpipe database; its pool also carries the commit transaction.
    owner
        Lease owner name, unique per process (``hostname:pid``; the pod name in Kubernetes).
    lease_seconds
        Lease of a claimed batch; renewed while the batch is processed.
    poll_min_seconds, poll_max_seconds
        Idle polling: the delay doubles from min to max while the queue stays empty, with
        full jitter so that idle replicas do not poll in step.
    clock, rng
        Injected for tests.
    stop_event
        Set to stop the loop; share it with a pipeline that waits on its own (e.g. on the
        shared breaker) so that SIGTERM reaches it too.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        queue: TaskQueue,
        *,
        owner: str,
        lease_seconds: float = 300.0,
        poll_min_seconds: float = 0.2,
        poll_max_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        stop_event: threading.Event | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.queue = queue
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.poll_min_seconds = poll_min_seconds
        self.poll_max_seconds = poll_max_seconds
        self.clock = clock
        self.rng = rng or random.Random()
        self.stats = WorkerStats()
        self._stop = stop_event or threading.Event()
        self._idle_delay = poll_min_seconds
        self._last_recovery = -float("inf")
        self.last_progress = clock()

    @property
    def pool(self) -> ConnectionPool:
        return self.queue.pool

    # -- lifecycle -------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop claiming; the batch in hand is finished. Safe to call from a signal handler."""
        if not self._stop.is_set():
            log.info("stop requested; finishing the current batch")
        self._stop.set()

    def run(self, *, stop_when_idle: bool = False, max_batches: int | None = None) -> WorkerStats:
        """Loop until stopped (or, for tests and one-shot jobs, until the queue is empty)."""
        log.info(
            "worker started",
            extra={"pipeline": self.pipeline.name, "owner": self.owner},
        )
        while not self._stop.is_set():
            try:
                claimed = self.run_once()
            except psycopg.OperationalError as exc:
                # The database went away: what we held returns to the queue when its lease
                # expires, so back off and keep going rather than crash-looping the pod.
                log.error("database error, backing off: %s", exc)
                self._idle_wait()
                continue
            if claimed == 0 and stop_when_idle:
                break
            if max_batches is not None and self.stats.batches >= max_batches:
                break
            if claimed == 0:
                self._idle_wait()
        log.info(
            "worker stopped",
            extra={"pipeline": self.pipeline.name, "owner": self.owner, **self.stats.outcomes},
        )
        return self.stats

    # -- one batch ---------------------------------------------------------------------------

    def run_once(self) -> int:
        """Claim, process and commit one batch; return how many tasks were claimed."""
        name = self.pipeline.name
        self.last_progress = self.clock()
        self._recover_expired_leases()
        with metrics.BATCH_SECONDS.labels(name, "claim").time():
            tasks = self.queue.claim_batch(
                name, self.pipeline.batch_size, self.lease_seconds, self.owner
            )
        if not tasks:
            metrics.IDLE_POLLS.labels(name).inc()
            return 0
        self._idle_delay = self.poll_min_seconds
        self.stats.batches += 1
        self.stats.claimed += len(tasks)
        metrics.TASKS_CLAIMED.labels(name).inc(len(tasks))
        metrics.BATCH_SIZE.labels(name).observe(len(tasks))
        if self._stop.is_set():
            released = self.queue.release(name, self.owner, [t.source_id for t in tasks])
            self._count("released", released)
            return len(tasks)
        metrics.WORKER_BUSY.labels(name).set(1)
        try:
            with metrics.BATCH_SECONDS.labels(name, "process").time(), self._lease_renewal():
                outcomes = self._process(tasks)
            with metrics.BATCH_SECONDS.labels(name, "commit").time():
                self._commit(tasks, outcomes)
        finally:
            metrics.WORKER_BUSY.labels(name).set(0)
        self.last_progress = self.clock()
        return len(tasks)

    def _process(self, tasks: Sequence[Task]) -> dict[int, Outcome]:
        """Run the pipeline; every claimed task gets exactly one outcome."""
        try:
            returned = self.pipeline.process(tasks)
        except Exception as exc:
            log.exception("batch failed as a whole; every task will be retried")
            return {t.source_id: Retry(t.source_id, f"batch error: {exc!r}") for t in tasks}
        claimed = {t.source_id for t in tasks}
        outcomes: dict[int, Outcome] = {}
        for outcome in returned:
            if outcome.source_id not in claimed:
                log.error("pipeline returned an outcome for unclaimed task %s", outcome.source_id)
            elif outcome.source_id in outcomes:
                log.error("pipeline returned two outcomes for task %s", outcome.source_id)
            else:
                outcomes[outcome.source_id] = outcome
        for sid in claimed - outcomes.keys():
            outcomes[sid] = Retry(sid, "pipeline returned no outcome for this task")
        return outcomes

    def _commit(self, tasks: Sequence[Task], outcomes: dict[int, Outcome]) -> None:
        """One transaction: done (+ results, + downstream), retries, skips, failures."""
        name, owner = self.pipeline.name, self.owner
        order = [t.source_id for t in tasks]
        done = [o for sid in order if isinstance(o := outcomes[sid], Done)]
        retries = {sid: o.error for sid in order if isinstance(o := outcomes[sid], Retry)}
        min_delays = {
            sid: o.delay_s
            for sid in order
            if isinstance(o := outcomes[sid], Retry) and o.delay_s is not None
        }
        released = [sid for sid in order if isinstance(outcomes[sid], Release)]
        skips = {sid: o.reason for sid in order if isinstance(o := outcomes[sid], Skip)}
        fails = {sid: o.reason for sid in order if isinstance(o := outcomes[sid], Fail)}
        with self.pool.connection() as conn, conn.transaction():
            owned = set(self.queue.complete(conn, name, owner, [d.source_id for d in done]))
            kept = [d for d in done if d.source_id in owned]
            if kept:
                self.pipeline.store(conn, kept)
            retried = self.queue.retry(conn, name, owner, retries, min_delays)
            skipped = self.queue.skip(conn, name, owner, skips)
            failed = self.queue.fail(conn, name, owner, fails)
            given_back = self.queue.release(name, owner, released, conn=conn) if released else 0
        lost = len(tasks) - len(owned) - len(retried.requeued) - len(retried.failed)
        lost -= len(skipped) + len(failed) + given_back
        self._count("released", given_back)
        self._count("done", len(owned))
        self._count("retry", len(retried.requeued))
        self._count("failed", len(retried.failed) + len(failed))
        self._count("skipped", len(skipped))
        if lost:
            # Our lease expired and the tasks went to another worker: its results win.
            log.warning("lost the lease of %d task(s); their results were not stored", lost)
            self._count("lost", lost)

    def _count(self, outcome: str, n: int) -> None:
        self.stats.add(outcome, n)
        if n:
            metrics.TASKS_FINISHED.labels(self.pipeline.name, outcome).inc(n)

    # -- leases and idling -------------------------------------------------------------------------

    def _recover_expired_leases(self) -> None:
        now = self.clock()
        if now - self._last_recovery < min(RECOVERY_INTERVAL_S, self.lease_seconds):
            return
        self._last_recovery = now
        recovered = self.queue.recover_expired(self.pipeline.name)
        if recovered.requeued or recovered.failed:
            log.warning(
                "recovered %d task(s) from expired leases (%d failed at the attempt limit)",
                len(recovered.requeued) + len(recovered.failed),
                len(recovered.failed),
            )

    def _lease_renewal(self) -> _LeaseRenewal:
        return _LeaseRenewal(self)

    def _idle_wait(self) -> None:
        delay = self.rng.uniform(0, self._idle_delay)
        self._idle_delay = min(self._idle_delay * 2, self.poll_max_seconds)
        self._stop.wait(delay)

    # -- probes --------------------------------------------------------------------------------

    def liveness(self) -> tuple[bool, str]:
        """Alive while the loop has moved within two lease periods (plus the idle ceiling)."""
        silent = self.clock() - self.last_progress
        limit = 2 * self.lease_seconds + self.poll_max_seconds
        if silent > limit:
            return False, f"no progress for {silent:.0f} s (limit {limit:.0f} s)"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        """Ready while the database answers."""
        try:
            with self.pool.connection(timeout=2.0) as conn:
                conn.execute("SELECT 1")
        except (psycopg.Error, TimeoutError) as exc:
            return False, f"database unreachable: {exc}"
        if self._stop.is_set():
            return False, "stopping"
        return True, "ok"


class _LeaseRenewal:
    """Extends the batch's lease in the background while the pipeline processes it."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="lease-renewal", daemon=True)

    def __enter__(self) -> _LeaseRenewal:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _renew(self) -> None:
        w = self.worker
        interval = w.lease_seconds / _RENEWALS_PER_LEASE
        while not self._done.wait(interval):
            try:
                w.queue.extend_lease(w.pipeline.name, w.owner, w.lease_seconds)
            except psycopg.Error:
                log.exception("could not extend the lease; will try again")


PipelineFactory = Callable[[Settings, ConnectionPool, threading.Event], Pipeline]


def run_from_settings(settings: Settings, build: PipelineFactory) -> WorkerStats:
    """Run one pipeline's worker process as configured by ``GALPIPE_*`` until SIGTERM.

    ``build(settings, pool, stop)`` makes the pipeline; ``stop`` is the worker's stop event.
    The pipeline's ``close()``, if it has one, runs after the worker stopped, before the pool
    closes.
    """
    with ExitStack() as resources:  # closes in reverse: the pipeline, then the pool
        pool = resources.enter_context(pool_from_settings(settings))
        stop = threading.Event()
        pipeline = build(settings, pool, stop)
        close = getattr(pipeline, "close", None)
        if close is not None:
            resources.callback(close)
        queue = TaskQueue(pool, RetryPolicy(settings.max_retries, settings.retry_delays))
        worker = Worker(
            pipeline,
            queue,
            owner=settings.owner,
            lease_seconds=settings.lease_seconds,
            poll_min_seconds=settings.poll_min_seconds,
            poll_max_seconds=settings.poll_max_seconds,
            stop_event=stop,
        )
        return serve(worker, port=settings.metrics_port)
