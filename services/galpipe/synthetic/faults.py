"""Fault injection of the synthetic sky: what goes wrong, how often, and when.

Each admitted cutout request draws one number from a seeded generator; the ratios partition
``[0, 1)`` so the faults are mutually exclusive and their frequencies exact in expectation
(a serial client sees the same sequence on every run with the same seed). Outages, blank
regions, the northern area without the i band and the server's own request-rate limit are
deterministic.
"""

from __future__ import annotations

import math
import random
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "BlankRegion",
    "FaultConfig",
    "FaultKind",
    "FaultPlan",
    "OutageSchedule",
    "SlidingWindowLimiter",
    "max_in_window",
]

FaultKind = Literal["error", "throttle", "timeout", "truncated", "corrupt"]
BlankMode = Literal["http500", "zeros"]
TimeoutMode = Literal["sleep", "close"]
TruncateMode = Literal["dropped", "short"]


@dataclass(frozen=True)
class BlankRegion:
    """A box of the sky without data (``ra_min <= ra <= ra_max``, ``dec_min <= dec <= dec_max``).

    ``mode`` is ``"http500"`` (the real service's answer for an area with no data at all) or
    ``"zeros"`` (a FITS cube whose planes are all 0.0).
    """

    ra_min: float
    ra_max: float
    dec_min: float
    dec_max: float
    mode: BlankMode = "http500"

    def __post_init__(self) -> None:
        if self.ra_min > self.ra_max or self.dec_min > self.dec_max:
            raise ValueError(f"blank region {self}: min above max")
        if self.mode not in ("http500", "zeros"):
            raise ValueError(f"blank region mode {self.mode!r}: expected http500 or zeros")

    def contains(self, ra: float, dec: float) -> bool:
        """Whether ``(ra, dec)`` (degrees) lies in the box."""
        return self.ra_min <= ra <= self.ra_max and self.dec_min <= dec <= self.dec_max

    @classmethod
    def parse(cls, text: str) -> BlankRegion:
        """``"RA0:RA1:DEC0:DEC1[:http500|zeros]"`` (degrees) as a region.

        Raises
        ------
        ValueError
            If the text is not four numbers and an optional mode.
        """
        parts = text.split(":")
        if len(parts) not in (4, 5):
            raise ValueError(f"blank region {text!r}: expected RA0:RA1:DEC0:DEC1[:http500|zeros]")
        try:
            ra0, ra1, dec0, dec1 = (float(p) for p in parts[:4])
        except ValueError:
            raise ValueError(f"blank region {text!r}: the bounds must be numbers") from None
        mode = parts[4] if len(parts) == 5 else "http500"
        return cls(ra0, ra1, dec0, dec1, mode)  # type: ignore[arg-type]


@dataclass(frozen=True)
class FaultConfig:
    """What the synthetic sky does wrong.

    Attributes
    ----------
    error_ratio : float
        Fraction of requests answered 503.
    throttle_ratio : float
        Fraction answered 429 with ``Retry-After: retry_after_s``.
    retry_after_s : int
        Seconds sent in ``Retry-After`` with an injected 429 (the rate limit's own 429s send
        the whole seconds until a slot frees, at least 1).
    timeout_ratio : float
        Fraction never answered: ``timeout_mode="sleep"`` holds the connection for
        ``timeout_sleep_s`` seconds then closes it, ``"close"`` closes it at once.
    timeout_sleep_s : float
        How long a ``sleep`` timeout holds the connection, seconds (longer than the client's
        read timeout).
    truncated_ratio : float
        Fraction whose body is cut in half: ``truncate_mode="dropped"`` announces the full
        ``Content-Length`` and closes the connection early; ``"short"`` announces the short
        length (a well-formed HTTP answer carrying a truncated FITS file).
    corrupt_ratio : float
        Fraction whose body is replaced by random bytes of the same length (status 200).
    latency_s, latency_jitter_s : float
        Every admitted request waits ``latency_s + U(0, latency_jitter_s)`` seconds.
    outages : tuple
        ``(start_s, duration_s)`` windows, seconds after the server started, when every
        cutout request gets 503.
    blank_regions : tuple of BlankRegion
        Areas without data.
    north_without_i_dec : float or None
        For ``layer=ls-dr10``, declinations at or above this (degrees) come from the northern
        release without the i band: the i plane is all zero. None disables it.
    seed : int
        Seeds the fault draws and the corrupt bytes.
    """

    error_ratio: float = 0.0
    throttle_ratio: float = 0.0
    retry_after_s: int = 1
    timeout_ratio: float = 0.0
    timeout_mode: TimeoutMode = "sleep"
    timeout_sleep_s: float = 30.0
    truncated_ratio: float = 0.0
    truncate_mode: TruncateMode = "dropped"
    corrupt_ratio: float = 0.0
    latency_s: float = 0.0
    latency_jitter_s: float = 0.0
    outages: tuple[tuple[float, float], ...] = ()
    blank_regions: tuple[BlankRegion, ...] = ()
    north_without_i_dec: float | None = 32.375
    seed: int = 0
    ratios: dict[FaultKind, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ratios: dict[FaultKind, float] = {
            "error": self.error_ratio,
            "throttle": self.throttle_ratio,
            "timeout": self.timeout_ratio,
            "truncated": self.truncated_ratio,
            "corrupt": self.corrupt_ratio,
        }
        for kind, ratio in ratios.items():
            if not 0.0 <= ratio <= 1.0:
                raise ValueError(f"fault ratio {kind}={ratio}: must lie in [0, 1]")
        if sum(ratios.values()) > 1.0 + 1e-9:
            raise ValueError(f"fault ratios {ratios}: sum above 1")
        for name in ("retry_after_s", "timeout_sleep_s", "latency_s", "latency_jitter_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}: must not be negative")
        if self.timeout_mode not in ("sleep", "close"):
            raise ValueError(f"timeout_mode {self.timeout_mode!r}: expected sleep or close")
        if self.truncate_mode not in ("dropped", "short"):
            raise ValueError(f"truncate_mode {self.truncate_mode!r}: expected dropped or short")
        for start, duration in self.outages:
            if start < 0 or duration <= 0:
                raise ValueError(f"outage ({start}, {duration}): need start >= 0, duration > 0")
        object.__setattr__(self, "ratios", ratios)

    def blank_region_at(self, ra: float, dec: float) -> BlankRegion | None:
        """The first blank region containing ``(ra, dec)``, or None."""
        return next((r for r in self.blank_regions if r.contains(ra, dec)), None)


class FaultPlan:
    """Seeded, thread-safe draws of the fault (if any) and latency of each request."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._lock = threading.Lock()

    def draw(self) -> tuple[FaultKind | None, float]:
        """The fault of the next request (None: answer normally) and its latency, seconds."""
        with self._lock:
            u = self._rng.random()
            jitter = self._rng.random() * self.config.latency_jitter_s
        latency = self.config.latency_s + jitter
        edge = 0.0
        for kind, ratio in self.config.ratios.items():
            edge += ratio
            if u < edge:
                return kind, latency
        return None, latency

    def garbage(self, length: int) -> bytes:
        """``length`` random bytes (a corrupt body)."""
        with self._lock:
            return self._rng.randbytes(length)


class SlidingWindowLimiter:
    """At most ``per_second`` admissions in any window of ``max(1, 1/per_second)`` seconds.

    ``per_second = 0`` lifts the limit. A sliding window (not a bucket) so that "never above
    the limit in any 1-s window" holds exactly for what it admits.
    """

    def __init__(self, per_second: float, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._admitted: deque[float] = deque()
        self.set_rate(per_second)

    @property
    def per_second(self) -> float:
        """The limit, requests per second (0: unlimited)."""
        return self._per_second

    def set_rate(self, per_second: float) -> None:
        """Change the limit (0 lifts it)."""
        if per_second < 0 or not math.isfinite(per_second):
            raise ValueError(f"rate {per_second}: must be a finite number >= 0 (0 = unlimited)")
        window = max(1.0, 1.0 / per_second) if per_second else 1.0
        if not math.isfinite(window):
            # A subnormal rate: its window (1/rate) overflows to infinity.
            raise ValueError(f"rate {per_second}: too small, 1/rate is not a finite window")
        with self._lock:
            self._per_second = per_second
            self._window = window
            self._capacity = max(1, math.floor(per_second * self._window + 1e-9))
            self._admitted.clear()

    def admit(self) -> tuple[bool, float]:
        """``(True, 0)`` if a request may proceed now, else ``(False, seconds until a slot)``."""
        with self._lock:
            if not self._per_second:
                return True, 0.0
            now = self._clock()
            while self._admitted and self._admitted[0] <= now - self._window:
                self._admitted.popleft()
            if len(self._admitted) < self._capacity:
                self._admitted.append(now)
                return True, 0.0
            return False, self._admitted[0] + self._window - now


class OutageSchedule:
    """Time windows (on ``clock``) when the service is down."""

    def __init__(
        self, windows: Iterable[tuple[float, float]], started_at: float, clock: Callable[[], float]
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._windows = [(started_at + start, started_at + start + dur) for start, dur in windows]

    def start_now(self, seconds: float) -> float:
        """Begin an outage of ``seconds`` now; returns when it ends (on ``clock``)."""
        if seconds <= 0 or not math.isfinite(seconds):
            raise ValueError(f"outage of {seconds} s: must be a positive number of seconds")
        now = self._clock()
        with self._lock:
            self._windows.append((now, now + seconds))
        return now + seconds

    def remaining(self) -> float:
        """Seconds until the current outage ends; 0 when the service is up."""
        now = self._clock()
        with self._lock:
            ends = [end for start, end in self._windows if start <= now < end]
        return max(ends) - now if ends else 0.0


def max_in_window(times: Iterable[float], window: float = 1.0) -> int:
    """The largest number of ``times`` (seconds) in any window ``(t - window, t]``.

    The same windows :class:`SlidingWindowLimiter` counts, so for the times it admitted the
    answer is at most its capacity.
    """
    ordered = sorted(times)
    best = 0
    left = 0
    for right, t in enumerate(ordered):
        while ordered[left] <= t - window:
            left += 1
        best = max(best, right - left + 1)
    return best
