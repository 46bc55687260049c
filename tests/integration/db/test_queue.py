"""The task queue's transitions against a real PostgreSQL, including a hypothesis state machine."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from psycopg_pool import ConnectionPool

from galpipe.db.queue import (
    READY_DEPTH_SQL,
    TASK_COUNTS_SQL,
    RetryPolicy,
    TaskQueue,
    oldest_queued_age,
    task_counts,
)
from tests.probes import counts_now, is_paused


def _states(pool: ConnectionPool, pipeline: str = "fetch") -> dict[int, tuple[str, int]]:
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT source_id, state::text, attempts FROM tasks WHERE pipeline = %s", (pipeline,)
        ).fetchall()
    return {sid: (state, attempts) for sid, state, attempts in rows}


def test_enqueue_is_idempotent_and_keeps_order(queue: TaskQueue, add_galaxies) -> None:
    ids = add_galaxies(30)
    shuffled = ids[::3] + ids[1::3] + ids[2::3]
    assert queue.enqueue("fetch", shuffled) == 30
    assert queue.enqueue("fetch", ids) == 0
    assert queue.enqueue("fetch", []) == 0
    claimed = queue.claim_batch("fetch", 30, 30, "w")
    assert [t.source_id for t in claimed] == shuffled
    # A finished task is not queued again by a repeated enqueue.
    queue.complete(None, "fetch", "w", ids)
    assert queue.enqueue("fetch", ids) == 0
    assert counts_now(queue.pool)["fetch"]["done"] == 30


def test_enqueue_needs_a_known_galaxy(queue: TaskQueue) -> None:
    import psycopg

    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        queue.enqueue("fetch", [123])


def test_concurrent_claims_are_disjoint_and_fifo(queue: TaskQueue, add_galaxies) -> None:
    ids = add_galaxies(400)
    queue.enqueue("fetch", ids)
    claims: dict[str, list[list[int]]] = {f"t{i}": [] for i in range(4)}
    barrier = threading.Barrier(4)

    def claimer(owner: str) -> None:
        barrier.wait()
        for _ in range(5):
            claims[owner].append([t.source_id for t in queue.claim_batch("fetch", 10, 30, owner)])

    threads = [threading.Thread(target=claimer, args=(o,)) for o in claims]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    taken = [sid for batches in claims.values() for batch in batches for sid in batch]
    assert len(taken) == len(set(taken)) == 200
    # 20 claims of 10 took exactly the 200 oldest tasks, whatever their interleaving.
    assert sorted(taken) == ids[:200]
    for batches in claims.values():
        for batch in batches:
            assert batch == sorted(batch)
        firsts = [b[0] for b in batches]
        assert firsts == sorted(firsts)


def test_claim_size_must_be_positive(queue: TaskQueue) -> None:
    with pytest.raises(ValueError, match="positive"):
        queue.claim_batch("fetch", 0, 30, "w")


def test_only_the_lease_owner_finishes_a_task(queue: TaskQueue, add_galaxies) -> None:
    ids = add_galaxies(4)
    queue.enqueue("fetch", ids)
    queue.claim_batch("fetch", 4, 30, "owner")
    assert queue.complete(None, "fetch", "intruder", ids) == []
    assert queue.retry(None, "fetch", "intruder", {ids[0]: "x"}).requeued == []
    assert queue.skip(None, "fetch", "intruder", {ids[1]: "x"}) == []
    assert queue.fail(None, "fetch", "intruder", {ids[2]: "x"}) == []
    assert queue.release("fetch", "intruder") == 0
    assert counts_now(queue.pool)["fetch"]["running"] == 4
    assert queue.complete(None, "fetch", "owner", ids) == ids


def test_retry_waits_its_delay_then_fails_at_the_limit(queue: TaskQueue, pool, add_galaxies):
    (sid,) = add_galaxies(1)
    queue.enqueue("fetch", [sid])
    # fast_policy: max_retries=3, delays 0.2, 0.4, 0.8 s.
    for attempt, delay in enumerate((0.2, 0.4, 0.8), start=1):
        (task,) = queue.claim_batch("fetch", 1, 30, "w")
        assert task.attempts == attempt
        outcome = queue.retry(None, "fetch", "w", {sid: f"boom {attempt}"})
        assert outcome.requeued == [sid]
        assert queue.claim_batch("fetch", 1, 30, "w") == []
        assert queue.ready_depth("fetch") == 0
        time.sleep(delay + 0.05)
        assert queue.ready_depth("fetch") == 1
    queue.claim_batch("fetch", 1, 30, "w")
    outcome = queue.retry(None, "fetch", "w", {sid: "boom 4"})
    assert outcome.failed == [sid]
    with pool.connection() as conn:
        row = conn.execute("SELECT state::text, attempts, last_error FROM tasks").fetchone()
    assert row == ("failed", 4, "boom 4")


def test_retries_past_the_delay_list_wait_its_last_delay(pool: ConnectionPool, add_galaxies):
    queue = TaskQueue(pool, RetryPolicy(max_retries=5, delays=(100.0, 200.0)))
    (sid,) = add_galaxies(1)
    queue.enqueue("fetch", [sid])
    waits = []
    for attempt in range(1, 5):
        queue.claim_batch("fetch", 1, 30, "w")
        queue.retry(None, "fetch", "w", {sid: f"boom {attempt}"})
        with pool.connection() as conn:
            (wait,) = conn.execute(
                "SELECT extract(epoch FROM not_before - now())::float8 FROM tasks"
            ).fetchone()
            conn.execute("UPDATE tasks SET not_before = now()")  # due again at once
        waits.append(wait)
    assert waits == pytest.approx([100.0, 200.0, 200.0, 200.0], abs=1.0)


def test_retry_policy_refuses_bad_limits() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError, match="delays"):
        RetryPolicy(delays=())


def test_expired_leases_return_and_poison_tasks_fail(queue: TaskQueue, pool, add_galaxies):
    ids = add_galaxies(2)
    queue.enqueue("fetch", ids)
    for _ in range(4):  # four claims whose workers all "die"
        assert len(queue.claim_batch("fetch", 2, 0.05, "doomed")) == 2
        time.sleep(0.1)
        outcome = queue.recover_expired("fetch")
    assert sorted(outcome.failed) == ids
    with pool.connection() as conn:
        errors = [r[0] for r in conn.execute("SELECT last_error FROM tasks")]
    assert all(e == "lease of doomed expired at attempt 4" for e in errors)


def test_recovery_skips_rows_a_finishing_owner_holds(queue: TaskQueue, pool, add_galaxies):
    # The owner of two expired leases finishes them one statement at a time, in the order
    # opposite to recovery's scan (by lease expiry). A recovery that waited for the row the
    # owner holds while holding the other would deadlock with the owner's next statement.
    first, second = add_galaxies(2)
    queue.enqueue("fetch", [first, second])
    assert [t.source_id for t in queue.claim_batch("fetch", 1, 0.01, "late")] == [first]
    time.sleep(0.02)
    assert [t.source_id for t in queue.claim_batch("fetch", 1, 0.01, "late")] == [second]
    time.sleep(0.05)
    recovered: list[object] = []
    with pool.connection() as owner, owner.transaction():
        assert queue.complete(owner, "fetch", "late", [second]) == [second]
        recovery = threading.Thread(target=lambda: recovered.append(queue.recover_expired()))
        recovery.start()
        recovery.join(timeout=5.0)
        # Recovery never waits on the owner: it has already returned, with the free row only.
        assert not recovery.is_alive()
        assert recovered[0].requeued == [first]
        # The owner's lease on `first` is gone: finishing it changes nothing.
        assert queue.complete(owner, "fetch", "late", [first]) == []
    assert {sid: state for sid, (state, _) in _states(pool).items()} == {
        first: "queued",
        second: "done",
    }


def test_recover_leaves_live_leases_alone(queue: TaskQueue, add_galaxies) -> None:
    ids = add_galaxies(2)
    queue.enqueue("fetch", ids)
    queue.claim_batch("fetch", 2, 30, "alive")
    outcome = queue.recover_expired()
    assert outcome.requeued == outcome.failed == []
    assert counts_now(queue.pool)["fetch"]["running"] == 2


def test_pause_stops_claims_and_zeroes_the_autoscaler_depth(queue: TaskQueue, add_galaxies):
    ids = add_galaxies(5)
    queue.enqueue("fetch", ids)
    queue.enqueue("radon", ids)
    queue.pause("fetch", "survey outage")
    assert is_paused(queue.pool, "fetch")
    assert not is_paused(queue.pool, "radon")
    assert queue.claim_batch("fetch", 5, 30, "w") == []
    assert queue.ready_depth("fetch") == 0
    assert queue.ready_depth("radon") == 5
    assert len(queue.claim_batch("radon", 5, 30, "w")) == 5
    queue.resume("fetch")
    assert queue.ready_depth("fetch") == 5
    assert len(queue.claim_batch("fetch", 5, 30, "w")) == 5


def test_ready_depth_query_is_index_only(queue: TaskQueue, pool, add_galaxies):
    ids = add_galaxies(2000)
    queue.enqueue("fetch", ids)
    # The usual shape of a long run: most tasks finished, the ready queue a small part.
    queue.claim_batch("fetch", 1900, 30, "w")
    queue.complete(None, "fetch", "w", ids[:1900])
    with pool.connection() as conn:
        conn.execute("VACUUM ANALYZE tasks")
        plan = "\n".join(
            r[0] for r in conn.execute("EXPLAIN " + READY_DEPTH_SQL, {"pipeline": "fetch"})
        )
    # Queued count from the deduplicated (pipeline, state) index, delayed ones from tasks_delayed.
    assert "Index Only Scan using tasks_state" in plan
    assert "Index Only Scan using tasks_delayed" in plan
    assert "Seq Scan on tasks" not in plan


def test_ready_depth_counts_only_due_tasks(queue: TaskQueue, add_galaxies) -> None:
    ids = add_galaxies(30)
    queue.enqueue("fetch", ids)
    queue.claim_batch("fetch", 20, 30, "w")
    queue.retry(None, "fetch", "w", dict.fromkeys(ids[:10], "503"))  # due in 0.2 s
    queue.release("fetch", "w", ids[10:15])  # back at once
    assert queue.ready_depth("fetch") == 15
    time.sleep(0.3)
    assert queue.ready_depth("fetch") == 25


# -- what status, the monitor and the demo read ----------------------------------------------------


def _counts(**by_state: int) -> dict[str, int]:
    return {"queued": 0, "running": 0, "done": 0, "failed": 0, "skipped": 0, **by_state}


def test_task_counts_fill_every_state_and_can_be_restricted_to_galaxies(
    pool: ConnectionPool, queue: TaskQueue, add_galaxies
) -> None:
    ids = add_galaxies(10)
    queue.enqueue("fetch", ids)
    queue.enqueue("radon", ids[:2])
    queue.claim_batch("fetch", 3, 30, "w")
    queue.complete(None, "fetch", "w", ids[:2])
    with pool.connection() as conn:
        every_task = task_counts(conn)
        of_three = task_counts(conn, ids[:3])
        of_none = task_counts(conn, [])
    assert every_task == {
        "fetch": _counts(queued=7, running=1, done=2),
        "radon": _counts(queued=2),
    }
    assert of_three == {"fetch": _counts(running=1, done=2), "radon": _counts(queued=2)}
    assert of_none == {}
    assert counts_now(pool) == every_task


def test_task_counts_of_every_task_read_the_state_index_only(
    pool: ConnectionPool, queue: TaskQueue, add_galaxies
) -> None:
    queue.enqueue("fetch", add_galaxies(20_000))
    unfiltered = "SELECT pipeline, state::text, count(*) FROM tasks GROUP BY 1, 2"
    with pool.connection() as conn:
        conn.execute("VACUUM ANALYZE tasks")
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + TASK_COUNTS_SQL, {"ids": None}))
        plain = "\n".join(r[0] for r in conn.execute("EXPLAIN " + unfiltered))
    # Without ids the filter folds away: the plan is the unfiltered count's, index-only.
    assert plan == plain
    assert "Index Only Scan using tasks_state" in plan


def test_oldest_queued_age_with_and_without_delayed_retries(
    pool: ConnectionPool, queue: TaskQueue, add_galaxies
) -> None:
    ids = add_galaxies(3)
    queue.enqueue("fetch", ids)
    with pool.connection() as conn:  # enqueued 3, 2 and 1 minutes ago, in FIFO order
        conn.execute("UPDATE tasks SET enqueued_at = now() - (4 - source_id) * interval '1 min'")
    # The head goes back with an hour's retry delay: still the oldest queued, but not ready.
    queue.claim_batch("fetch", 1, 30, "w")
    queue.retry(None, "fetch", "w", {ids[0]: "HTTP 503"}, {ids[0]: 3600.0})
    with pool.connection() as conn:
        queued = oldest_queued_age(conn, ["fetch", "radon"])
        ready = oldest_queued_age(conn, ["fetch", "radon"], ready_only=True)
    assert queued == {"fetch": pytest.approx(180, abs=5)}
    assert ready == {"fetch": pytest.approx(120, abs=5)}


def test_downstream_tasks_follow_upstream_order(queue: TaskQueue, add_galaxies) -> None:
    ids = add_galaxies(6)
    queue.enqueue("fetch", ids[::-1])
    tasks = queue.claim_batch("fetch", 6, 30, "w")
    # The route fetch -> radon that migration 0010 seeds queues the radon tasks.
    queue.complete(None, "fetch", "w", [t.source_id for t in tasks])
    assert [t.source_id for t in queue.claim_batch("radon", 6, 30, "w")] == ids[::-1]


# -- property-based: random sequences of operations against a model of the state machine --------

OWNERS = ("a", "b")
N_GALAXIES = 12


class QueueMachine(RuleBasedStateMachine):
    """Drives the real queue with random operations and checks it against a dict model."""

    pool: ConnectionPool
    queue: TaskQueue

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[int, dict] = {}
        self.seq = 0

    @initialize()
    def reset(self) -> None:
        with self.pool.connection() as conn:
            conn.execute("TRUNCATE tasks, pipeline_control")
        self.model = {}
        self.seq = 0

    def _running(self, owner: str) -> list[int]:
        return [s for s, t in self.model.items() if t["state"] == "running" and t["owner"] == owner]

    @rule(ids=st.lists(st.integers(1, N_GALAXIES), max_size=6))
    def enqueue(self, ids: list[int]) -> None:
        fresh = list(dict.fromkeys(i for i in ids if i not in self.model))
        assert self.queue.enqueue("fetch", ids) == len(fresh)
        for sid in fresh:
            self.model[sid] = {"state": "queued", "attempts": 0, "owner": None, "order": self.seq}
            self.seq += 1

    @rule(owner=st.sampled_from(OWNERS), n=st.integers(1, 5))
    def claim(self, owner: str, n: int) -> None:
        queued = sorted(
            (s for s, t in self.model.items() if t["state"] == "queued"),
            key=lambda s: self.model[s]["order"],
        )
        got = self.queue.claim_batch("fetch", n, 60, owner)
        assert [t.source_id for t in got] == queued[:n]
        for t in got:
            m = self.model[t.source_id]
            m.update(state="running", owner=owner, attempts=m["attempts"] + 1)
            assert t.attempts == m["attempts"]

    @rule(owner=st.sampled_from(OWNERS), data=st.data())
    def complete(self, owner: str, data) -> None:
        ids = data.draw(st.lists(st.integers(1, N_GALAXIES), max_size=4, unique=True))
        expected = [s for s in ids if s in self._running(owner)]
        got = self.queue.complete(None, "fetch", owner, ids)
        assert sorted(got) == sorted(expected)
        for s in expected:
            self.model[s].update(state="done", owner=None)

    @rule(owner=st.sampled_from(OWNERS), data=st.data())
    def retry(self, owner: str, data) -> None:
        ids = data.draw(st.lists(st.integers(1, N_GALAXIES), max_size=4, unique=True))
        outcome = self.queue.retry(None, "fetch", owner, dict.fromkeys(ids, "transient"))
        for s in ids:
            if s in self._running(owner):
                m = self.model[s]
                to_fail = m["attempts"] > self.queue.policy.max_retries
                m.update(state="failed" if to_fail else "queued", owner=None)
                assert s in (outcome.failed if to_fail else outcome.requeued)

    @rule(
        owner=st.sampled_from(OWNERS), state=st.sampled_from(["skipped", "failed"]), data=st.data()
    )
    def finish(self, owner: str, state: str, data) -> None:
        ids = data.draw(st.lists(st.integers(1, N_GALAXIES), max_size=3, unique=True))
        method = self.queue.skip if state == "skipped" else self.queue.fail
        got = method(None, "fetch", owner, dict.fromkeys(ids, "why"))
        expected = [s for s in ids if s in self._running(owner)]
        assert sorted(got) == sorted(expected)
        for s in expected:
            self.model[s].update(state=state, owner=None)

    @rule(owner=st.sampled_from(OWNERS))
    def release(self, owner: str) -> None:
        held = self._running(owner)
        assert self.queue.release("fetch", owner) == len(held)
        for s in held:
            m = self.model[s]
            m.update(state="queued", owner=None, attempts=m["attempts"] - 1)

    @rule(owner=st.sampled_from(OWNERS))
    def lease_expires(self, owner: str) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "UPDATE tasks SET lease_expires = now() - interval '1 s' WHERE lease_owner = %s",
                (owner,),
            )
        outcome = self.queue.recover_expired("fetch")
        for s in self._running(owner):
            m = self.model[s]
            to_fail = m["attempts"] > self.queue.policy.max_retries
            m.update(state="failed" if to_fail else "queued", owner=None)
            assert s in (outcome.failed if to_fail else outcome.requeued)

    @invariant()
    def database_matches_model(self) -> None:
        assert _states(self.pool) == {s: (t["state"], t["attempts"]) for s, t in self.model.items()}


def test_queue_state_machine(pool: ConnectionPool, add_galaxies) -> None:
    add_galaxies(N_GALAXIES)
    QueueMachine.pool = pool
    # Zero delays so that a retried task is ready again at once, as the model assumes.
    QueueMachine.queue = TaskQueue(pool, RetryPolicy(max_retries=2, delays=(0.0,)))
    run_state_machine_as_test(
        QueueMachine,
        settings=settings(
            max_examples=40,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
