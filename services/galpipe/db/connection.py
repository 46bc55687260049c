"""Connection pools on the galpipe database (psycopg 3 + psycopg_pool).

A process opens its pool as its settings say with
:func:`galpipe.runtime.database.pool_from_settings`; this module knows no settings.
"""

from __future__ import annotations

from psycopg_pool import ConnectionPool

APPLICATION_NAME = "galpipe"


def open_pool(
    conninfo: str, *, max_size: int = 4, min_size: int = 1, name: str = APPLICATION_NAME
) -> ConnectionPool:
    """Open a pool on ``conninfo`` and wait until one connection works.

    Connections are autocommit outside explicit ``conn.transaction()`` blocks, so a read never
    holds a transaction (and its snapshot) open between batches.
    """
    pool = ConnectionPool(
        conninfo,
        min_size=min(min_size, max_size),
        max_size=max_size,
        kwargs={"autocommit": True, "application_name": name},
        name=name,
        open=False,
    )
    pool.open(wait=True, timeout=30.0)
    return pool
