"""SharedSnapshot: one computation per period, stale values served while one refresh runs."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from galpipe.control.snapshot import SharedSnapshot


class Counter:
    """A compute function that counts its calls and returns the count."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return self.calls


def _snapshot(
    compute: Callable[[], int], now: list[float], background: list[Callable[[], None]]
) -> SharedSnapshot[int]:
    return SharedSnapshot(
        compute, ttl_s=2.0, stale_s=10.0, clock=lambda: now[0], start_background=background.append
    )


def test_a_fresh_value_is_shared() -> None:
    compute, now, background = Counter(), [0.0], []
    snapshot = _snapshot(compute, now, background)
    assert snapshot.get() == 1
    now[0] = 2.0
    assert snapshot.get() == 1
    assert compute.calls == 1
    assert background == []


def test_a_stale_value_is_served_while_one_refresh_runs() -> None:
    compute, now, background = Counter(), [0.0], []
    snapshot = _snapshot(compute, now, background)
    snapshot.get()
    now[0] = 5.0
    assert snapshot.get() == 1  # stale, served at once
    assert snapshot.get() == 1
    assert len(background) == 1  # one refresh started, not one per caller
    background.pop()()
    assert snapshot.get() == 2
    assert compute.calls == 2


def test_a_too_old_or_forgotten_value_is_computed_while_the_caller_waits() -> None:
    compute, now, background = Counter(), [0.0], []
    snapshot = _snapshot(compute, now, background)
    snapshot.get()
    now[0] = 11.0
    assert snapshot.get() == 2
    snapshot.invalidate()
    assert snapshot.get() == 3
    assert background == []


def test_a_failed_background_refresh_keeps_the_old_value() -> None:
    now, background = [0.0], []
    answers = iter([1])

    def compute() -> int:
        return next(answers)  # the second call raises StopIteration

    snapshot = _snapshot(compute, now, background)
    snapshot.get()
    now[0] = 5.0
    snapshot.get()
    background.pop()()  # logs the failure
    assert snapshot.get() == 1
    assert len(background) == 1  # a new refresh may start again


def test_callers_waiting_on_one_computation_share_it() -> None:
    now: list[float] = [0.0]
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        started.set()
        release.wait(5)
        return len(calls)

    snapshot = SharedSnapshot(compute, ttl_s=2.0, stale_s=10.0, clock=lambda: now[0])
    answers: list[int] = []
    threads = [threading.Thread(target=lambda: answers.append(snapshot.get())) for _ in range(5)]
    threads[0].start()
    assert started.wait(5)
    for thread in threads[1:]:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(5)
    assert answers == [1] * 5
    assert len(calls) == 1


def test_the_periods_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        SharedSnapshot(Counter(), ttl_s=5.0, stale_s=1.0)
