"""Puts this interpreter's wall clock ``CHAOS_CLOCK_OFFSET_S`` seconds ahead (the chaos run).

On ``PYTHONPATH`` of one worker only. Every wall-clock read Python code can make is shifted:
``time.time``, ``time.time_ns`` and ``datetime.datetime.now`` / ``utcnow`` / ``today``; the
monotonic clock is not (it has no meaning across machines). libfaketime would shift the C
library's clock too, but its interposition of ``clock_nanosleep`` and ``poll`` breaks
CPython's sleeps and socket timeouts, so this worker would fail for the tool's sake.
"""

from __future__ import annotations

import datetime as _datetime
import os
import time as _time

_OFFSET_S = float(os.environ.get("CHAOS_CLOCK_OFFSET_S", "0"))

if _OFFSET_S:
    _real_time = _time.time
    _real_time_ns = _time.time_ns
    _time.time = lambda: _real_time() + _OFFSET_S
    _time.time_ns = lambda: _real_time_ns() + int(_OFFSET_S * 1e9)

    class _AheadDatetime(_datetime.datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
            return super().now(tz) + _datetime.timedelta(seconds=_OFFSET_S)

        @classmethod
        def utcnow(cls):  # type: ignore[no-untyped-def, override]
            return super().utcnow() + _datetime.timedelta(seconds=_OFFSET_S)

        @classmethod
        def today(cls):  # type: ignore[no-untyped-def, override]
            return cls.now()

    _datetime.datetime = _AheadDatetime  # type: ignore[misc]
