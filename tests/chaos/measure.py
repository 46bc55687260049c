"""What the chaos run counts in the database: work left, galaxies lost, galaxies doubled.

Each count opens a short-lived connection of its own and retries while the server is
restarting (the run restarts it on purpose), so no caller holds a connection across a fault.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

__all__ = ["count", "lost_and_doubled", "unfinished", "wait_drained"]

_UNFINISHED_SQL = (
    "SELECT count(*) FROM tasks WHERE state IN ('queued', 'running') AND source_id = ANY(%(ids)s)"
)

#: Galaxies with neither a combined measurement nor a failed or skipped task that says why.
_LOST_SQL = """
SELECT count(*) FROM unnest(%(ids)s::bigint[]) AS g(source_id)
WHERE NOT EXISTS (SELECT 1 FROM radon_measurements m
                  WHERE m.source_id = g.source_id AND m.band = 'combined')
  AND NOT EXISTS (SELECT 1 FROM tasks t
                  WHERE t.source_id = g.source_id AND t.state IN ('failed', 'skipped')
                    AND coalesce(t.last_error, '') <> '')
  AND NOT EXISTS (SELECT 1 FROM tasks t
                  WHERE t.source_id = g.source_id AND t.pipeline = 'radon'
                    AND t.state = 'done')
"""

#: Galaxies with two combined rows of one version, or two tasks of one pipeline.
_DOUBLED_SQL = """
SELECT (SELECT count(*) FROM (SELECT 1 FROM radon_measurements WHERE band = 'combined'
                              GROUP BY source_id, algo_version HAVING count(*) > 1) d)
     + (SELECT count(*) FROM (SELECT 1 FROM tasks
                              GROUP BY source_id, pipeline HAVING count(*) > 1) t)
"""

#: Seconds a count keeps retrying a server that does not answer (a restart takes a few).
_RETRY_FOR_S = 30


def count(url: str, sql: str, params: dict[str, Any] | None = None) -> int:
    """The one number ``sql`` selects, retried while the server is restarting."""
    for attempt in range(_RETRY_FOR_S):
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
                row = conn.execute(sql, params or {}).fetchone()  # type: ignore[arg-type]
                return int(row[0]) if row else 0
        except psycopg.OperationalError:
            if attempt == _RETRY_FOR_S - 1:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


def unfinished(url: str, ids: list[int]) -> int:
    """Tasks of the galaxies ``ids`` still queued or running."""
    return count(url, _UNFINISHED_SQL, {"ids": ids})


def lost_and_doubled(url: str, ids: list[int]) -> tuple[int, int]:
    """Galaxies of ``ids`` with neither a result nor a stated reason, and doubled galaxies."""
    return count(url, _LOST_SQL, {"ids": ids}), count(url, _DOUBLED_SQL)


def wait_drained(url: str, ids: list[int], timeout_s: float) -> float:
    """Seconds until no task of ``ids`` is queued or running (raises after ``timeout_s``)."""
    started = time.monotonic()
    while (left := unfinished(url, ids)) > 0:
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{left} task(s) still queued or running after {timeout_s:.0f} s")
        time.sleep(0.5)
    return time.monotonic() - started
