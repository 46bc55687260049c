"""Connection pools on the galpipe database (psycopg 3 + psycopg_pool).

A process opens its pool as its settings say with
:func:`galpipe.runtime.database.pool_from_settings`; this module knows no settings.
"""

from __future__ import annotations

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
    """
    pool = ConnectionPool(
        conninfo,
        min_size=min(min_size, max_size),
        max_size=max_size,
        kwargs={"autocommit": True, "application_name": name},
        name=name,
        timeout=timeout_s,
        open=False,
    )
    if wait:
        pool.open(wait=True, timeout=timeout_s)
    else:
        pool.open(wait=False)
    return pool
