"""The database pool of a galpipe process, as ``GALPIPE_*`` configures it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

from galpipe.db.connection import APPLICATION_NAME, open_pool
from galpipe.errors import ServiceError, reraise_as
from galpipe.settings import PREFIX, Settings, SettingsError

#: Seconds a pool may take to open, or a connection request to be served, before ``PoolTimeout``.
_CONNECTION_TIMEOUT_S = 30.0


def database_errors() -> contextlib.AbstractContextManager[None]:
    """Report a failure of the database (unreachable, refused, an SQL error) as a ServiceError,
    the way every command reports it."""
    return reraise_as(ServiceError, psycopg.Error, context="database error")


def password_reader(settings: Settings) -> Callable[[], str] | None:
    """The reader of ``GALPIPE_DATABASE_PASSWORD_FILE``, or None when it is unset.

    The file is read at every call: Kubernetes rewrites a mounted Secret in place (an atomic
    symlink swap) when External Secrets Operator stores a rotated password, so the next
    connection authenticates with the new one and no pod restarts. It is read once here too,
    so that a missing or empty file stops the process at start-up, naming the variable.

    Raises
    ------
    SettingsError
        If the file cannot be read or holds no password.
    """
    if settings.database_password_file is None:
        return None
    path = Path(settings.database_password_file)

    def read() -> str:
        try:
            # A trailing newline is an editor's or `echo`'s, never part of the password.
            password = path.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(
                f"{PREFIX}DATABASE_PASSWORD_FILE={str(path)!r}: cannot read it "
                f"({type(exc).__name__}: {getattr(exc, 'strerror', None) or exc})"
            ) from None
        if not password:
            raise SettingsError(f"{PREFIX}DATABASE_PASSWORD_FILE={str(path)!r}: the file is empty")
        return password

    read()
    return read


def conninfo_from_settings(settings: Settings) -> str:
    """``GALPIPE_DATABASE_URL`` with the password file's current password, for one connection.

    For a short-lived connection (``galpipe migrate``); a pool takes the reader itself, so that
    each of its connections reads the file again.
    """
    conninfo = settings.require("database_url")
    read = password_reader(settings)
    return conninfo if read is None else make_conninfo(conninfo, password=read())


def pool_from_settings(
    settings: Settings,
    *,
    role: str | None = None,
    max_size: int | None = None,
    wait: bool = True,
    timeout_s: float = _CONNECTION_TIMEOUT_S,
) -> ConnectionPool:
    """A pool on ``GALPIPE_DATABASE_URL``, at most ``GALPIPE_DB_POOL_SIZE`` connections.

    With ``GALPIPE_DATABASE_PASSWORD_FILE`` every new connection reads the password from that
    file, so a rotated password is picked up without a restart.

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
    return open_pool(
        conninfo,
        max_size=size,
        name=name,
        wait=wait,
        timeout_s=timeout_s,
        password=password_reader(settings),
    )
