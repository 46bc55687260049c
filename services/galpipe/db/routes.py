"""Task routes (``pipeline_routes``, migration 0010): which pipelines a pipeline's successes queue.

A route ``upstream -> downstream`` makes every completion of an ``upstream`` task queue a
``downstream`` task for the same galaxy, in the completing transaction
(:meth:`galpipe.db.queue.TaskQueue.complete`). :func:`add_route` also queues the galaxies
whose upstream task was done before the route existed, so that after it every done upstream
task has its downstream task, as ``galpipe check`` requires.

Adding a route takes an ``ACCESS EXCLUSIVE`` lock on ``pipeline_routes`` for its transaction:
it waits for completions in flight (each holds the table's share lock until it commits) and
holds new ones back until it commits, so no completion falls between the new route and the
backfill. Completions of every pipeline wait for the backfill: seconds at 10⁶ done tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from galpipe.errors import InputError

__all__ = ["PIPELINES", "Route", "RouteError", "add_route", "remove_route", "routes"]

#: The pipelines galpipe knows: the ``name`` of each pipeline module's class (not imported from
#: them, which would load the science stack into the database layer).
PIPELINES = ("fetch", "radon", "morphology", "photoz")


class RouteError(InputError, ValueError):
    """A route names an unknown pipeline, routes a pipeline to itself, or closes a cycle."""


@dataclass(frozen=True)
class Route:
    """One route: a done ``upstream`` task queues a ``downstream`` task for the same galaxy.

    Attributes
    ----------
    upstream, downstream
        Pipeline names.
    created_at
        When the route was added.
    """

    upstream: str
    downstream: str
    created_at: datetime


def routes(conn: psycopg.Connection) -> list[Route]:
    """Every route, by upstream then downstream."""
    rows = conn.execute(
        "SELECT upstream, downstream, created_at FROM pipeline_routes ORDER BY 1, 2"
    ).fetchall()
    return [Route(u, d, at) for u, d, at in rows]


def _validate(upstream: str, downstream: str) -> None:
    unknown = [name for name in (upstream, downstream) if name not in PIPELINES]
    if unknown:
        raise RouteError(
            f"route {upstream} -> {downstream}: unknown pipeline "
            f"{', '.join(repr(n) for n in unknown)}; known pipelines are {', '.join(PIPELINES)}"
        )
    if upstream == downstream:
        raise RouteError(f"route {upstream} -> {downstream}: a pipeline cannot queue itself")


def _reaches(edges: list[tuple[str, str]], start: str, goal: str) -> list[str] | None:
    """A path of routes from ``start`` to ``goal``, or ``None`` (depth-first; a few edges)."""
    stack = [[start]]
    while stack:
        path = stack.pop()
        if path[-1] == goal:
            return path
        stack.extend([*path, d] for u, d in edges if u == path[-1] and d not in path)
    return None


def add_route(conn: psycopg.Connection, upstream: str, downstream: str) -> int:
    """Add the route ``upstream -> downstream`` and queue the tasks it would have queued.

    Every galaxy whose ``upstream`` task is done and that has no ``downstream`` task gets one,
    in the order the upstream tasks were queued, in the same transaction as the route. Adding
    a route that exists changes nothing but still runs the backfill.

    Parameters
    ----------
    conn
        Connection; runs in the caller's transaction if it holds one, else in its own.
    upstream, downstream
        Pipeline names (:data:`PIPELINES`).

    Returns
    -------
    int
        Downstream tasks queued by the backfill.

    Raises
    ------
    RouteError
        If a name is not a known pipeline, the two are the same, or the route would close a
        cycle through the existing routes (the message names the path).
    """
    _validate(upstream, downstream)
    with conn.transaction():
        conn.execute("LOCK TABLE pipeline_routes IN ACCESS EXCLUSIVE MODE")
        edges = [(r.upstream, r.downstream) for r in routes(conn)]
        back = _reaches(edges, downstream, upstream)
        if back is not None:
            raise RouteError(
                f"route {upstream} -> {downstream} would close the cycle "
                f"{' -> '.join([upstream, *back])}"
            )
        conn.execute(
            "INSERT INTO pipeline_routes (upstream, downstream) VALUES (%s, %s) "
            "ON CONFLICT DO NOTHING",
            (upstream, downstream),
        )
        cur = conn.execute(
            "INSERT INTO tasks (pipeline, source_id) "
            "SELECT %(downstream)s, source_id FROM tasks "
            "WHERE pipeline = %(upstream)s AND state = 'done' "
            "ORDER BY seq ON CONFLICT DO NOTHING",
            {"upstream": upstream, "downstream": downstream},
        )
        return cur.rowcount


def remove_route(conn: psycopg.Connection, upstream: str, downstream: str) -> bool:
    """Remove the route ``upstream -> downstream``; tasks it queued stay as they are.

    Completions that commit after this queue no more ``downstream`` tasks through it.

    Returns
    -------
    bool
        Whether the route existed.

    Raises
    ------
    RouteError
        If a name is not a known pipeline or the two are the same.
    """
    _validate(upstream, downstream)
    with conn.transaction():
        cur = conn.execute(
            "DELETE FROM pipeline_routes WHERE upstream = %s AND downstream = %s",
            (upstream, downstream),
        )
        return cur.rowcount > 0
