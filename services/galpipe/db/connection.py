"""Connection pools on the galpipe database (psycopg 3 + psycopg_pool).

A process opens its pool as its settings say with
:func:`galpipe.runtime.database.pool_from_settings`; this module knows no settings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from psycopg_pool import ConnectionPool

APPLICATION_NAME = "galpipe"


def open_pool(
    conninfo: str,
    *,
    max_size: int = 4,
    min_size: int = 1,
    name: str = APPLICATION_NAME,
    wait: bool = True,
    timeout_s: float = 30.0,
    password: Callable[[], str] | None = None,
) -> ConnectionPool:
    """Open a pool on ``conninfo``.

    Connections are autocommit outside explicit ``conn.transaction()`` blocks, so a read never
    holds a transaction (and its snapshot) open between batches.

    Parameters
    ----------
    conninfo
        PostgreSQL URL or conninfo string.
    max_size, min_size
        Bounds of the pool's connections.
    name
        The connections' ``application_name``, which ``pg_stat_activity`` shows.
    wait
        True: return once one connection works (raise ``PoolTimeout`` after ``timeout_s``).
        False: connect in the background and return at once, for a process that must start
        while the database is unreachable.
    timeout_s
        Seconds: with ``wait``, how long opening may take; without, how long a
        ``pool.connection()`` waits for a connection before raising ``PoolTimeout``.
    password
        Called for every new connection; its result overrides a password in ``conninfo``.
        A rotated password (a rewritten Secret file) thus reaches the next connection without
        reopening the pool.

    Notes
    -----
    The pool checks a connection (one empty round trip) before handing it out, so one that
    the server ended (a password rotation terminating sessions, a failover) is replaced
    instead of failing the caller's next statement.
    """
    fixed: dict[str, Any] = {"autocommit": True, "application_name": name}

    def with_password() -> dict[str, Any]:
        return {**fixed, "password": password()} if password is not None else fixed

    pool = ConnectionPool(
        conninfo,
        min_size=min(min_size, max_size),
        max_size=max_size,
        kwargs=fixed if password is None else with_password,
        check=ConnectionPool.check_connection,
        name=name,
        timeout=timeout_s,
        open=False,
    )
    if wait:
        pool.open(wait=True, timeout=timeout_s)
    else:
        pool.open(wait=False)
    return pool
