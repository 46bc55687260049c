"""Fixtures of the database tests beyond the suite's own (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo


@pytest.fixture
def fresh_database(pg_server: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty database with no migration applied, named after the test module; its
    conninfo. Dropped afterwards."""
    admin = pg_server.get_uri()
    name = f"galpipe_fresh_{request.module.__name__.rsplit('.', 1)[-1]}"[:63]
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(drop)
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_conninfo(admin, dbname=name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(drop)
