"""Shared fixtures: one real PostgreSQL server per test session, one fresh database per test."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

from galpipe.db.connection import open_pool
from galpipe.db.embedded import start_embedded_postgres
from galpipe.db.migrate import migrate
from galpipe.db.queue import RetryPolicy, TaskQueue
from tests.tools import MISSING_TOOL

TEMPLATE_DB = "galpipe_template"
_MISSING_TOOL_REASON = re.compile(rf"{MISSING_TOOL}: (?P<tool>[\w.-]+); it comes from (?P<how>.*)")
_db_numbers = itertools.count()


@pytest.fixture(scope="session")
def pg_server():
    """A private PostgreSQL server (embedded-postgres) for the whole test session.

    Its data lives in a temp dir of its own, not pytest's basetemp: pytest prunes old basetemps
    when other sessions start, which would pull the data out from under a running server.
    """
    server = start_embedded_postgres()
    admin = server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}")
        conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    migrate(make_conninfo(admin, dbname=TEMPLATE_DB))
    yield server
    server.cleanup()


@pytest.fixture
def database_url(pg_server) -> Iterator[str]:
    """A freshly migrated, empty database of its own for one test (cloned from the template)."""
    name = f"galpipe_test_{next(_db_numbers)}"
    admin = pg_server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    yield make_conninfo(admin, dbname=name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pool(database_url: str) -> Iterator[ConnectionPool]:
    pool = open_pool(database_url, max_size=4)
    yield pool
    pool.close()


@pytest.fixture
def fast_policy() -> RetryPolicy:
    """Retry delays short enough for tests to wait them out."""
    return RetryPolicy(max_retries=3, delays=(0.2, 0.4, 0.8))


@pytest.fixture
def queue(pool: ConnectionPool, fast_policy: RetryPolicy) -> TaskQueue:
    return TaskQueue(pool, fast_policy)


@pytest.fixture
def add_galaxies(pool: ConnectionPool) -> Callable[..., list[int]]:
    """Insert galaxies with ids ``start .. start+n-1`` at valid coordinates; return the ids."""

    def add(n: int, start: int = 1) -> list[int]:
        with pool.connection() as conn:
            conn.execute(
                "INSERT INTO galaxies (source_id, ra, dec, catalog) "
                "SELECT g, (g * 0.001) %% 360, ((g * 0.0007) %% 180) - 90, 'test' "
                "FROM generate_series(%s::bigint, %s::bigint) g",
                (start, start + n - 1),
            )
        return list(range(start, start + n))

    return add


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """End the run by naming the tests skipped for a missing tool and how to install it."""
    missing: dict[str, tuple[str, int]] = {}
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        match = _MISSING_TOOL_REASON.search(reason)
        if match is not None:
            how, count = missing.get(match["tool"], (match["how"], 0))
            missing[match["tool"]] = (how, count + 1)
    if not missing:
        return
    terminalreporter.section("skipped for missing tools", sep="=", yellow=True, bold=True)
    for tool, (how, count) in sorted(missing.items()):
        terminalreporter.write_line(f"{count} test(s) need {tool}: it comes from {how}")
