"""The database pool of a galpipe process, as ``GALPIPE_*`` configures it."""

from __future__ import annotations

from psycopg_pool import ConnectionPool

from galpipe.db.connection import APPLICATION_NAME, open_pool
from galpipe.settings import Settings

#: Seconds a pool may take to open, or a connection request to be served, before ``PoolTimeout``.
_CONNECTION_TIMEOUT_S = 30.0


def pool_from_settings(
    settings: Settings,
    *,
    role: str | None = None,
    max_size: int | None = None,
    wait: bool = True,
    timeout_s: float = _CONNECTION_TIMEOUT_S,
) -> ConnectionPool:
    """A pool on ``GALPIPE_DATABASE_URL``, at most ``GALPIPE_DB_POOL_SIZE`` connections.

    Parameters
    ----------
    settings
        The process's configuration.
    role
        Appended to the connections' ``application_name`` (``galpipe-monitor``), so
        ``pg_stat_activity`` tells the processes apart.
    max_size
        Fewer connections than ``GALPIPE_DB_POOL_SIZE`` (never more).
    wait
        True: return once a first connection works, as a worker needs (it has nothing to do
        without the database). False: open in the background and return at once, as the
        monitor needs (it must start, and report the database down, while it is unreachable).
    timeout_s
        Seconds: with ``wait``, how long opening may take; without, how long a
        ``pool.connection()`` waits for a connection before raising ``PoolTimeout``.
    """
    conninfo = settings.require("database_url")
    size = settings.db_pool_size if max_size is None else min(max_size, settings.db_pool_size)
    name = APPLICATION_NAME if role is None else f"{APPLICATION_NAME}-{role}"
    return open_pool(conninfo, max_size=size, name=name, wait=wait, timeout_s=timeout_s)
