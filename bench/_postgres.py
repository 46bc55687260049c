"""The private PostgreSQL of a benchmark run (not a benchmark: ``make bench`` skips ``_*``)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from galpipe.db.embedded import start_embedded_postgres
from galpipe.db.migrate import migrate

#: ``%(n)s`` galaxies with ids 1..n spread over the sky (bench-only fixture rows; the library's
#: SQL stays under services/galpipe/db/).
SETUP_GALAXIES_SQL = """
INSERT INTO galaxies (source_id, ra, dec, catalog)
SELECT g, (g * 0.001) %% 360, ((g * 0.0007) %% 180) - 90, 'bench'
FROM generate_series(1::bigint, %(n)s::bigint) g
"""

_SHOW_SETTINGS_SQL = "SELECT s, current_setting(s) FROM unnest(%s::text[]) AS s"


@contextlib.contextmanager
def embedded_postgres(prefix: str) -> Iterator[tuple[str, Path]]:
    """A server of its own for one run: its admin URL and a scratch directory, both removed after.

    The data directory lives in the scratch directory, so nothing outlives the benchmark.
    """
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp_name:
        tmp = Path(tmp_name)
        server = start_embedded_postgres(tmp / "pgdata")
        try:
            yield server.get_uri(), tmp
        finally:
            server.cleanup()


def migrated_database(
    admin_url: str, name: str, shown_settings: Sequence[str] = ()
) -> tuple[str, dict[str, str]]:
    """Create database ``name`` on the server and migrate it.

    Returns
    -------
    tuple
        Its URL, and the server's value of each of ``shown_settings`` (what a benchmark prints
        beside its figures).
    """
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        rows = conn.execute(_SHOW_SETTINGS_SQL, (list(shown_settings),)).fetchall()
    url = make_conninfo(admin_url, dbname=name)
    migrate(url)
    return url, {str(setting): str(value) for setting, value in rows}
