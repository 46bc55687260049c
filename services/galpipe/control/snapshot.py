"""A value that many callers share and one thread keeps fresh: stale-while-revalidate.

The overview counts the whole task table and reads the cluster; computing it for each of twenty
consoles would queue them all behind the database. :class:`SharedSnapshot` computes it once per
``ttl_s``; a caller that finds it older than that (but younger than ``stale_s``) gets it at once
while one background thread computes the next, so no caller waits for a refresh it did not need.
Only a missing, forgotten or too-old value is computed while callers wait (once, for all).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Value = TypeVar("Value")


@dataclass(frozen=True)
class _Computed(Generic[Value]):
    value: Value
    at: float


def _start_daemon(target: Callable[[], None]) -> None:
    threading.Thread(target=target, name="snapshot-refresh", daemon=True).start()


class SharedSnapshot(Generic[Value]):
    """``compute()``'s answer, shared by every caller and refreshed in the background.

    Parameters
    ----------
    compute
        Produces the value (may raise: a waiting caller gets the exception, a background
        refresh logs it and keeps the old value until ``stale_s``).
    ttl_s
        Seconds a value is served as fresh.
    stale_s
        Seconds a value may still be served while a refresh runs; older, callers wait.
    clock
        Monotonic seconds.
    start_background
        Runs a refresh off the caller's thread (a daemon thread; tests pass a synchronous one).
    """

    def __init__(
        self,
        compute: Callable[[], Value],
        *,
        ttl_s: float,
        stale_s: float,
        clock: Callable[[], float] = time.monotonic,
        start_background: Callable[[Callable[[], None]], None] = _start_daemon,
    ) -> None:
        if not 0 <= ttl_s <= stale_s:
            raise ValueError(f"ttl_s={ttl_s}, stale_s={stale_s}: need 0 <= ttl_s <= stale_s")
        self._compute = compute
        self.ttl_s = ttl_s
        self.stale_s = stale_s
        self._clock = clock
        self._start_background = start_background
        self._current: _Computed[Value] | None = None
        self._lock = threading.Lock()  # guards _current and _refreshing
        self._computing = threading.Lock()  # one computation at a time
        self._refreshing = False

    def get(self) -> Value:
        """The shared value: fresh, or stale while one refresh runs, or computed now."""
        now = self._clock()
        with self._lock:
            current = self._current
            if current is not None and now - current.at <= self.ttl_s:
                return current.value
            if current is not None and now - current.at <= self.stale_s:
                if not self._refreshing:
                    self._refreshing = True
                    self._start_background(self._refresh)
                return current.value
        return self._compute_now(newer_than=-float("inf") if current is None else current.at)

    def invalidate(self) -> None:
        """Forget the value: the next caller waits for a new one (after a change it caused).

        A computation already running when the value is forgotten still lands, and serves the
        callers waiting for it: the value may predate the change by that one computation.
        """
        with self._lock:
            self._current = None

    def _compute_now(self, *, newer_than: float) -> Value:
        """Compute, unless a value newer than ``newer_than`` landed while this caller waited."""
        with self._computing:
            with self._lock:
                current = self._current
                if current is not None and current.at > newer_than:
                    return current.value
            started = self._clock()
            value = self._compute()
            with self._lock:
                self._current = _Computed(value, started)
            return value

    def _refresh(self) -> None:
        try:
            self._compute_now(newer_than=self._clock())
        except Exception:
            log.exception("background refresh failed; the previous value is served until stale")
        finally:
            with self._lock:
                self._refreshing = False
