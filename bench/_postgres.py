"""The private PostgreSQL of a benchmark run (not a benchmark: ``make bench`` skips ``_*``)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from galpipe.db.embedded import start_embedded_postgres


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
