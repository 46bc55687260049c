"""The shared circuit breaker against a real PostgreSQL, across processes and against a model."""

from __future__ import annotations

import multiprocessing
import time
from datetime import timedelta

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

from galpipe.db.breaker import BreakerPolicy, CircuitBreaker
from galpipe.db.connection import open_pool

COOLDOWN = 0.3  # seconds: short, so that tests wait it out


def _trip(breaker: CircuitBreaker, owner: str = "w") -> None:
    """Open ``breaker`` by consecutive failures."""
    for i in range(breaker.policy.failures):
        breaker.record_failure(owner, f"HTTP 503 #{i}")
    assert breaker.status().state == "open"


def _breaker(
    pool: ConnectionPool, name: str = "fetch", *, observer=None, **policy: float
) -> CircuitBreaker:
    defaults: dict = {"failures": 3, "cooldown_seconds": COOLDOWN}
    return CircuitBreaker(pool, name, BreakerPolicy(**{**defaults, **policy}), observer=observer)


# -- closed -> open ------------------------------------------------------------------------------


def test_consecutive_failures_open_it(pool: ConnectionPool) -> None:
    rejected: list[str] = []
    breaker = _breaker(pool, cooldown_seconds=60, observer=rejected.append)
    assert breaker.status().state == "closed"
    assert breaker.allow("w")
    assert breaker.record_failure("w", "timeout") == "closed"
    assert breaker.record_failure("w", "timeout") == "closed"
    assert breaker.record_success("w") == "closed"  # a success breaks the run
    assert breaker.status().consecutive_failures == 0
    assert breaker.record_failure("w", "timeout") == "closed"
    assert breaker.record_failure("w", "timeout") == "closed"
    assert breaker.record_failure("w", "HTTP 503") == "open"

    status = breaker.status()
    assert status.state == "open"
    assert status.consecutive_failures == 3
    assert status.last_error == "HTTP 503"
    assert status.opened_at is not None
    assert status.reopens_at == status.opened_at + timedelta(seconds=60)
    assert (status.window_requests, status.window_failures) == (6, 5)

    assert rejected == []  # the observer hears of refusals only
    assert not breaker.allow("w")
    assert not breaker.allow("other")
    assert rejected == ["fetch", "fetch"]


def test_failure_ratio_opens_it_once_enough_requests(pool: ConnectionPool) -> None:
    breaker = _breaker(pool, failures=100, failure_ratio=0.5, min_requests=10)
    # 9 requests, 4 failed: under min_requests, not judged.
    for i in range(9):
        (breaker.record_failure("w", "x") if i % 2 else breaker.record_success("w"))
    assert breaker.status().state == "closed"
    assert (breaker.status().window_requests, breaker.status().window_failures) == (9, 4)
    # The 10th: 5 of 10 failed, ratio 0.5 >= 0.5.
    assert breaker.record_failure("w", "x") == "open"


def test_failure_ratio_below_threshold_keeps_it_closed(pool: ConnectionPool) -> None:
    breaker = _breaker(pool, failures=100, failure_ratio=0.5, min_requests=10)
    for i in range(40):  # one failure in three: ratio 1/3 < 0.5
        assert (
            breaker.record_failure("w", "x") if i % 3 == 2 else breaker.record_success("w")
        ) == ("closed")


def test_ratio_window_restarts_when_old(pool: ConnectionPool) -> None:
    breaker = _breaker(pool, failures=100, min_requests=4, window_seconds=0.3)
    for _ in range(3):
        breaker.record_failure("w", "x")
    assert breaker.status().window_failures == 3
    time.sleep(0.35)
    # The old window's three failures no longer count: this is failure 1 of a new window.
    assert breaker.status().window_failures == 0
    assert breaker.record_failure("w", "x") == "closed"
    status = breaker.status()
    assert (status.window_requests, status.window_failures) == (1, 1)
    assert status.consecutive_failures == 4  # the run of failures spans windows


# -- open -> half_open -> closed / open -----------------------------------------------------------


def test_stays_open_during_cooldown_then_lets_one_probe(pool: ConnectionPool) -> None:
    breaker = _breaker(pool)
    _trip(breaker)
    reopens_at = breaker.status().reopens_at
    deadline = time.monotonic() + COOLDOWN - 0.1
    while time.monotonic() < deadline:
        assert not breaker.allow("w1")
        time.sleep(0.02)
    time.sleep(0.15)
    assert breaker.allow("w2")
    assert not breaker.allow("w1")
    assert not breaker.allow("w2")  # its one request is out already
    status = breaker.status()
    assert status.state == "half_open"
    assert status.probe_owner == "w2"
    assert status.reopens_at is None
    assert status.opened_at is not None
    assert status.opened_at + timedelta(seconds=COOLDOWN) == reopens_at


def test_probe_success_closes_and_resets(pool: ConnectionPool) -> None:
    breaker = _breaker(pool)
    _trip(breaker)
    time.sleep(COOLDOWN + 0.05)
    assert breaker.allow("probe")
    assert breaker.record_success("probe") == "closed"
    status = breaker.status()
    assert status.state == "closed"
    assert (status.consecutive_failures, status.window_requests, status.window_failures) == (
        0,
        0,
        0,
    )
    assert status.opened_at is None
    assert status.probe_owner is None
    assert breaker.allow("anyone")
    # Counting starts afresh: it takes a full run of failures to open it again.
    assert breaker.record_failure("w", "x") == "closed"


def test_probe_failure_reopens_with_a_new_cooldown(pool: ConnectionPool) -> None:
    breaker = _breaker(pool)
    _trip(breaker)
    first_opened = breaker.status().opened_at
    time.sleep(COOLDOWN + 0.05)
    assert breaker.allow("probe")
    assert breaker.record_failure("probe", "still 503") == "open"
    status = breaker.status()
    assert status.state == "open"
    assert status.opened_at is not None
    assert first_opened is not None
    assert status.opened_at >= first_opened + timedelta(seconds=COOLDOWN)
    assert status.last_error == "still 503"
    assert status.probe_owner is None
    assert not breaker.allow("probe")
    time.sleep(COOLDOWN + 0.05)
    assert breaker.allow("other")


def test_expired_probe_lease_lets_one_new_probe(pool: ConnectionPool) -> None:
    breaker = _breaker(pool, probe_timeout_seconds=0.2)
    _trip(breaker)
    time.sleep(COOLDOWN + 0.05)
    assert breaker.allow("dead")
    assert not breaker.allow("w1")
    time.sleep(0.25)  # "dead" never reports back
    assert breaker.allow("w1")
    assert not breaker.allow("w2")
    assert breaker.status().probe_owner == "w1"
    # The late answer of the old probe is not the probe's any more: it changes nothing.
    assert breaker.record_success("dead") == "half_open"
    assert breaker.record_success("w1") == "closed"


def test_outcomes_of_others_do_not_move_half_open(pool: ConnectionPool) -> None:
    breaker = _breaker(pool)
    _trip(breaker)
    time.sleep(COOLDOWN + 0.05)
    assert breaker.allow("probe")
    before = breaker.status()
    # Late answers to requests sent before the breaker opened.
    for _ in range(5):
        assert breaker.record_success("late") == "half_open"
    assert breaker.record_failure("late", "late error") == "half_open"
    after = breaker.status()
    assert after.probe_owner == "probe"
    assert after.probe_expires == before.probe_expires
    assert after.opened_at == before.opened_at
    assert after.last_error == "late error"
    assert breaker.record_success("probe") == "closed"


def test_outcomes_while_open_change_nothing(pool: ConnectionPool) -> None:
    breaker = _breaker(pool, cooldown_seconds=60)
    _trip(breaker)
    before = breaker.status()
    assert breaker.record_success("w") == "open"
    assert breaker.record_failure("w", "x") == "open"
    after = breaker.status()
    assert after.opened_at == before.opened_at
    assert after.consecutive_failures == before.consecutive_failures


def test_breakers_are_independent(pool: ConnectionPool) -> None:
    fetch = _breaker(pool, "fetch", cooldown_seconds=60)
    other = _breaker(pool, "other", cooldown_seconds=60)
    _trip(fetch)
    assert other.allow("w")
    assert other.status().state == "closed"


def test_long_errors_are_truncated(pool: ConnectionPool) -> None:
    breaker = _breaker(pool)
    breaker.record_failure("w", "e" * 10_000)
    last_error = breaker.status().last_error
    assert last_error is not None
    assert 100 < len(last_error) <= 2000


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"failures": 0}, "failures must be an integer >= 1"),
        ({"failures": 2.5}, "failures must be an integer >= 1"),
        ({"min_requests": 0}, "min_requests must be an integer >= 1"),
        ({"failure_ratio": 0.0}, r"failure_ratio must be in \(0, 1\]"),
        ({"failure_ratio": 1.5}, r"failure_ratio must be in \(0, 1\]"),
        ({"window_seconds": 0}, "window_seconds must be positive"),
        ({"cooldown_seconds": -1}, "cooldown_seconds must be positive"),
        ({"probe_timeout_seconds": float("inf")}, "probe_timeout_seconds must be positive"),
    ],
)
def test_bad_policy_is_refused(policy: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BreakerPolicy(**policy)


def test_empty_name_is_refused(pool: ConnectionPool) -> None:
    with pytest.raises(ValueError, match="name"):
        CircuitBreaker(pool, "")


# -- across processes: one probe only -------------------------------------------------------------

RACERS = 6
ASKS_PER_RACER = 20


def _race_for_the_probe(database_url: str, index: int, barrier, results) -> None:
    """Child: after the barrier, ask ``allow()`` repeatedly; report how many times it said yes."""
    pool = open_pool(database_url, max_size=1)
    breaker = CircuitBreaker(pool, "fetch", BreakerPolicy(failures=3, cooldown_seconds=COOLDOWN))
    owner = f"racer-{index}"
    breaker.allow(owner)  # warm up (connection, imports) while the breaker is still closed
    barrier.wait()  # ready
    barrier.wait()  # go
    try:
        results.put((owner, sum(breaker.allow(owner) for _ in range(ASKS_PER_RACER))))
    finally:
        pool.close()


def test_exactly_one_probe_across_processes(database_url: str, pool: ConnectionPool) -> None:
    breaker = _breaker(pool, cooldown_seconds=COOLDOWN)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(RACERS + 1)
    results = ctx.Queue()
    children = [
        ctx.Process(target=_race_for_the_probe, args=(database_url, i, barrier, results))
        for i in range(RACERS)
    ]
    for child in children:
        child.start()
    barrier.wait(timeout=60)
    # Every child is up: open the breaker and let them loose just after the cooldown.
    _trip(breaker)
    time.sleep(COOLDOWN + 0.02)
    barrier.wait(timeout=10)
    answers = dict(results.get(timeout=60) for _ in children)
    for child in children:
        child.join(timeout=10)
        assert child.exitcode == 0
    assert sum(answers.values()) == 1, answers
    winner = next(owner for owner, yes in answers.items() if yes)
    status = breaker.status()
    assert (status.state, status.probe_owner) == ("half_open", winner)


# -- property-based: random events against a pure-Python model -----------------------------------

OWNERS = ("a", "b", "c")
# Durations end in .5 and the model's clock moves in whole seconds, so the few milliseconds of
# real time that pass during an example never decide a comparison.
POLICY = {
    "failures": 3,
    "failure_ratio": 0.5,
    "min_requests": 4,
    "window_seconds": 6.5,
    "cooldown_seconds": 4.5,
    "probe_timeout_seconds": 2.5,
}


class BreakerModel:
    """The breaker as db/breaker.py states it, on a virtual clock of whole seconds."""

    def __init__(self) -> None:
        self.now = 0
        self.state = "closed"
        self.consecutive = 0
        self.window_start = 0
        self.requests = 0
        self.failures = 0
        self.opened_at: int | None = None
        self.probe: str | None = None
        self.probe_expires = 0

    def _roll_window(self) -> None:
        if self.now - self.window_start >= POLICY["window_seconds"]:
            self.window_start, self.requests, self.failures = self.now, 0, 0

    def allow(self, owner: str) -> bool:
        if self.state == "closed":
            return True
        cooled = self.state == "open" and self.now - self.opened_at >= POLICY["cooldown_seconds"]
        lease_over = self.state == "half_open" and self.now >= self.probe_expires
        if cooled or lease_over:
            self.state, self.probe = "half_open", owner
            self.probe_expires = self.now + POLICY["probe_timeout_seconds"]
            return True
        return False

    def success(self, owner: str) -> None:
        if self.state == "closed":
            self._roll_window()
            self.consecutive = 0
            self.requests += 1
        elif self.state == "half_open" and owner == self.probe:
            self.state, self.probe, self.opened_at = "closed", None, None
            self.consecutive, self.requests, self.failures = 0, 0, 0
            self.window_start = self.now

    def failure(self, owner: str) -> None:
        if self.state == "closed":
            self._roll_window()
            self.consecutive += 1
            self.requests += 1
            self.failures += 1
            if self.consecutive >= POLICY["failures"] or (
                self.requests >= POLICY["min_requests"]
                and self.failures / self.requests >= POLICY["failure_ratio"]
            ):
                self.state, self.opened_at = "open", self.now
        elif self.state == "half_open" and owner == self.probe:
            self.state, self.opened_at, self.probe = "open", self.now, None
            self.consecutive += 1


class BreakerMachine(RuleBasedStateMachine):
    """Drives the real breaker with random events; time travel shifts the row's timestamps."""

    pool: ConnectionPool
    examples = 0

    @initialize()
    def fresh_breaker(self) -> None:
        BreakerMachine.examples += 1
        self.breaker = CircuitBreaker(self.pool, f"model-{self.examples}", BreakerPolicy(**POLICY))
        self.model = BreakerModel()
        self.breaker.status()  # creates the row: its window starts at the model's time 0

    @rule(owner=st.sampled_from(OWNERS))
    def allow(self, owner: str) -> None:
        assert self.breaker.allow(owner) == self.model.allow(owner)

    @rule(owner=st.sampled_from(OWNERS))
    def success(self, owner: str) -> None:
        self.model.success(owner)
        assert self.breaker.record_success(owner) == self.model.state

    @rule(owner=st.sampled_from(OWNERS))
    def failure(self, owner: str) -> None:
        self.model.failure(owner)
        assert self.breaker.record_failure(owner, f"from {owner}") == self.model.state

    @rule(seconds=st.sampled_from([1, 2, 5]))
    def time_passes(self, seconds: int) -> None:
        # Moving every stored time back is the same, to the breaker, as the clock moving on.
        with self.pool.connection() as conn:
            conn.execute(
                "UPDATE breakers SET window_start = window_start - make_interval(secs => %(s)s), "
                "opened_at = opened_at - make_interval(secs => %(s)s), "
                "probe_expires = probe_expires - make_interval(secs => %(s)s) "
                "WHERE name = %(name)s",
                {"s": seconds, "name": self.breaker.name},
            )
        self.model.now += seconds

    @invariant()
    def database_matches_model(self) -> None:
        status = self.breaker.status()
        model = self.model
        assert status.state == model.state
        assert status.consecutive_failures == model.consecutive
        assert status.probe_owner == (model.probe if model.state == "half_open" else None)
        if model.state == "closed":
            # status() shows an expired window as empty, as the next outcome will see it.
            if model.now - model.window_start < POLICY["window_seconds"]:
                assert (status.window_requests, status.window_failures) == (
                    model.requests,
                    model.failures,
                )
            else:
                assert (status.window_requests, status.window_failures) == (0, 0)


def test_breaker_state_machine(pool: ConnectionPool) -> None:
    BreakerMachine.pool = pool
    run_state_machine_as_test(
        BreakerMachine,
        settings=settings(
            max_examples=60,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )


# -- a process's short view of a closed breaker ---------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _viewing(pool: ConnectionPool, clock: _Clock, view_s: float = 1.0) -> CircuitBreaker:
    policy = BreakerPolicy(failures=3, cooldown_seconds=60.0)
    return CircuitBreaker(pool, "fetch", policy, view_seconds=view_s, clock=clock)


def test_successes_are_gathered_then_written_in_one_go(pool: ConnectionPool) -> None:
    clock = _Clock()
    breaker = _viewing(pool, clock)
    assert breaker.allow("w")  # reads the row: closed, trusted for 1 s
    for _ in range(7):
        assert breaker.record_success("w") == "closed"
    assert breaker.status().window_requests == 0  # nothing written yet
    clock.now = 1.5  # the view expired: the next allow() writes what it gathered
    assert breaker.allow("w")
    assert breaker.status().window_requests == 7


def test_a_failure_writes_the_gathered_successes_first(pool: ConnectionPool) -> None:
    clock = _Clock()
    breaker = _viewing(pool, clock)
    breaker.allow("w")
    breaker.record_failure("w", "HTTP 503")
    breaker.record_failure("w", "HTTP 503")
    breaker.allow("w")
    breaker.record_success("w")  # gathered, but it ends the run of failures ...
    breaker.record_failure("w", "HTTP 503")  # ... so this third failure is not the third in a row
    status = breaker.status()
    assert (status.state, status.consecutive_failures) == ("closed", 1)
    assert (status.window_requests, status.window_failures) == (4, 3)


def test_a_stale_view_only_lasts_its_seconds_and_never_hides_an_open_breaker(
    pool: ConnectionPool,
) -> None:
    clock = _Clock()
    breaker = _viewing(pool, clock)
    other = _breaker(pool)  # another replica, with no view of its own
    assert breaker.allow("w")
    _trip(other, "elsewhere")
    assert breaker.allow("w")  # within its view: one more request may leave, as in a race
    breaker.record_success("w")  # gathered under the closed view ...
    clock.now = 1.01
    assert not breaker.allow("w")  # the view expired: the open row is read
    status = breaker.status()
    # ... and dropped: an answer to a request sent before the breaker opened changes nothing.
    assert (status.state, status.window_requests) == ("open", 3)


def test_flush_writes_at_shutdown(pool: ConnectionPool) -> None:
    breaker = _viewing(pool, _Clock(), view_s=60.0)
    breaker.allow("w")
    for _ in range(3):
        breaker.record_success("w")
    breaker.flush()
    assert breaker.status().window_requests == 3


def test_a_failing_observer_does_not_change_the_answer(pool: ConnectionPool) -> None:
    def broken(name: str) -> None:
        raise RuntimeError(f"metrics backend down for {name}")

    breaker = _breaker(pool, cooldown_seconds=60, observer=broken)
    _trip(breaker)
    assert not breaker.allow("w")  # refused, and the observer's error is only logged
    assert breaker.status().state == "open"


def test_the_default_policy(pool: ConnectionPool) -> None:
    assert CircuitBreaker(pool, "fetch").policy == BreakerPolicy()


def test_a_bad_view_is_refused(pool: ConnectionPool) -> None:
    with pytest.raises(ValueError, match="view_seconds"):
        CircuitBreaker(pool, "fetch", view_seconds=-1.0)
