"""The queue's hot queries read indexes, not the task table, and the table is stored for scale.

Each plan is PostgreSQL's own (``EXPLAIN (FORMAT JSON)``) over 100,000 tasks loaded with
``generate_series`` and analysed, in the two shapes a survey's table takes: straight after an
ingest (every task queued) and late in a run (most done, a few running, queued and delayed).
The claim's SQL is the statement :meth:`TaskQueue.claim_batch` itself sends, recorded on its
connection, so the test follows the code rather than a copy of its text. bench/scale.py
measures the same queries at 10⁷ tasks (docs/capacity.md).

Why 100,000 and not fewer: at 50,000 tasks the planner rightly joins a claimed batch
of 256 to the table by a hash over one sequential scan of it (a small table is cheaper to read
whole than by 256 key probes); at 100,000 and more it probes the primary key, as it does at
survey scale. The test must see the plan of a table past that crossover.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

from galpipe.db.queue import (
    MAINTAINED_TASK_COUNTS_SQL,
    OLDEST_QUEUED_SQL,
    READY_DEPTH_CAPPED_SQL,
    READY_DEPTH_SQL,
    TASK_COUNTS_SQL,
    TaskQueue,
    ready_depth_cap,
)
from galpipe.db.status import RATE_WINDOW_SECONDS, RECENT_DONE_SQL

ROWS = 100_000
PIPELINE = "fetch"
#: The autoscaler's cap for fetch with the chart's defaults (3 replicas x 2,000 ready tasks):
#: below the ready tasks of both shapes (100,000 and 8,000), so the count stops at it.
CAP = ready_depth_cap(3, 2000)

#: Fixture rows: ``%(n)s`` galaxies and one fetch task each, in id order (the FIFO order).
_LOAD_SQL = (
    "INSERT INTO galaxies (source_id, ra, dec, catalog) "
    "SELECT g, (g * 0.001) %% 360, ((g * 0.0007) %% 180) - 90, 'plans' "
    "FROM generate_series(1::bigint, %(n)s::bigint) g",
    "INSERT INTO tasks (pipeline, source_id) "
    "SELECT 'fetch', g FROM generate_series(1::bigint, %(n)s::bigint) g ORDER BY g",
)
#: Late in a run: the first 90 % done (about 28 a second over the last hour, so the rate window
#: holds some), then 1 % running, 1 % waiting out a retry delay, the rest queued and ready.
_LATE_RUN_SQL = """
UPDATE tasks SET
    state = CASE WHEN source_id <= %(n)s * 0.90 THEN 'done'
                 WHEN source_id <= %(n)s * 0.91 THEN 'running'
                 ELSE 'queued' END::task_state,
    lease_owner = CASE WHEN source_id > %(n)s * 0.90 AND source_id <= %(n)s * 0.91
                       THEN 'w' END,
    lease_expires = CASE WHEN source_id > %(n)s * 0.90 AND source_id <= %(n)s * 0.91
                         THEN now() + interval '5 min' END,
    not_before = CASE WHEN source_id > %(n)s * 0.91 AND source_id <= %(n)s * 0.92
                      THEN now() + interval '10 min' ELSE '-infinity' END,
    attempts = CASE WHEN source_id <= %(n)s * 0.92 THEN 1 ELSE 0 END,
    updated_at = now() - greatest(0, %(n)s * 0.90 - source_id) * interval '36 ms'
"""


class RecordingConnection(psycopg.Connection[Any]):
    """A connection that keeps every statement it executes, with its parameters."""

    statements: list[tuple[Any, Any]]

    def execute(  # type: ignore[override]
        self, query: Any, params: Any = None, **kwargs: Any
    ) -> Any:
        self.statements.append((query, params))
        return super().execute(query, params, **kwargs)


@pytest.fixture(params=["after_ingest", "late_in_run"], scope="module")
def loaded_url(request: pytest.FixtureRequest, pg_server) -> Iterator[str]:
    """A migrated database of 100,000 tasks in one of the two shapes, vacuumed and analysed.

    VACUUM sets the visibility map, as autovacuum does after an ingest under migration 0013's
    insert threshold: without it no count can be index-only.
    """
    name = f"galpipe_plans_{request.param}"
    admin = pg_server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE galpipe_template").format(sql.Identifier(name))
        )
    url = make_conninfo(admin, dbname=name)
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in _LOAD_SQL:
            conn.execute(statement, {"n": ROWS})
        if request.param == "late_in_run":
            conn.execute(_LATE_RUN_SQL, {"n": ROWS})
        conn.execute("VACUUM (ANALYZE) galaxies")
        conn.execute("VACUUM (ANALYZE) tasks")
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _plan(conn: psycopg.Connection, query: str, params: Any, *, analyze: bool = False) -> Any:
    options = "ANALYZE, FORMAT JSON" if analyze else "FORMAT JSON"
    row = conn.execute(f"EXPLAIN ({options}) {query}", params).fetchone()
    assert row is not None
    return row[0][0]["Plan"]


def _task_scans(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every plan node that reads the table ``tasks`` (scans of it or of its indexes)."""
    found, stack = [], [plan]
    while stack:
        node = stack.pop()
        if node.get("Relation Name") == "tasks":
            found.append(node)
        stack.extend(node.get("Plans", []))
    return found


def _described(nodes: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return sorted((n["Node Type"], n.get("Index Name")) for n in nodes)


def test_ready_depth_counts_index_only_without_heap_fetches(loaded_url: str) -> None:
    with psycopg.connect(loaded_url, autocommit=True) as conn:
        plan = _plan(conn, READY_DEPTH_SQL, {"pipeline": PIPELINE}, analyze=True)
    scans = _task_scans(plan)
    # The queued count reads the deduplicated (pipeline, state) index, the delayed ones theirs.
    assert _described(scans) == [
        ("Index Only Scan", "tasks_delayed"),
        ("Index Only Scan", "tasks_state"),
    ]
    # Index-only in fact, not only in name: the visibility map spares every heap visit.
    assert [n["Heap Fetches"] for n in scans] == [0, 0]


def _parents(plan: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Every (parent, child) pair of plan nodes."""
    stack = [plan]
    while stack:
        node = stack.pop()
        for child in node.get("Plans", []):
            yield node, child
            stack.append(child)


def test_capped_ready_depth_stops_at_the_cap_on_the_ready_index(loaded_url: str) -> None:
    with psycopg.connect(loaded_url, autocommit=True) as conn:
        plan = _plan(conn, READY_DEPTH_CAPPED_SQL, {"pipeline": PIPELINE, "cap": CAP}, analyze=True)
        row = conn.execute(READY_DEPTH_CAPPED_SQL, {"pipeline": PIPELINE, "cap": CAP}).fetchone()
        exact = conn.execute(READY_DEPTH_SQL, {"pipeline": PIPELINE}).fetchone()
    assert row == (CAP,)
    assert exact is not None
    assert exact[0] > CAP
    # The queued tasks are read index-only from the deduplicated state index under a Limit that
    # ends the scan at the cap (plus the delayed ones it subtracts): its cost is the cap's, not
    # the queue's. The delayed retries are counted on their partial index.
    scans = _task_scans(plan)
    assert sorted(_described(scans)) == [
        ("Index Only Scan", "tasks_delayed"),
        ("Index Only Scan", "tasks_delayed"),
        ("Index Only Scan", "tasks_state"),
    ]
    assert [n["Heap Fetches"] for n in scans] == [0, 0, 0]
    (queued,) = [n for n in scans if n["Index Name"] == "tasks_state"]
    (parent,) = [p for p, child in _parents(plan) if child is queued]
    assert parent["Node Type"] == "Limit"
    delayed = round(
        float(next(n for n in scans if n["Index Name"] == "tasks_delayed")["Actual Rows"])
    )
    assert round(float(queued["Actual Rows"])) == CAP + delayed
    # Late in the run 1 % of the tasks wait out a retry delay; straight after an ingest none.
    assert delayed in (0, ROWS // 100)


def test_status_reads_maintained_counts_not_the_tasks(loaded_url: str) -> None:
    with psycopg.connect(loaded_url, autocommit=True) as conn:
        plan = _plan(conn, MAINTAINED_TASK_COUNTS_SQL, None, analyze=True)
        maintained = conn.execute(MAINTAINED_TASK_COUNTS_SQL).fetchall()
        counted = conn.execute(TASK_COUNTS_SQL, {"ids": None}).fetchall()
    assert _task_scans(plan) == []
    assert sorted(maintained) == sorted(counted)


def test_status_counts_read_the_state_index_only(loaded_url: str) -> None:
    with psycopg.connect(loaded_url, autocommit=True) as conn:
        counts = _plan(conn, TASK_COUNTS_SQL, {"ids": None}, analyze=True)
        oldest = _plan(conn, OLDEST_QUEUED_SQL, {"pipelines": [PIPELINE], "ready_only": True})
        recent = _plan(
            conn, RECENT_DONE_SQL, {"pipelines": [PIPELINE], "seconds": RATE_WINDOW_SECONDS}
        )
    count_scans = _task_scans(counts)
    assert _described(count_scans) == [("Index Only Scan", "tasks_state")]
    assert count_scans[0]["Heap Fetches"] == 0
    # The head of the queue is one probe of the ready index. Recent completions do not read
    # the tasks at all: one row per completing statement, in task_completions.
    assert _described(_task_scans(oldest)) == [("Index Scan", "tasks_ready")]
    assert _task_scans(recent) == []
    assert _relations(recent) == {"task_completions"}


def _relations(plan: dict[str, Any]) -> set[str]:
    found, stack = set(), [plan]
    while stack:
        node = stack.pop()
        if "Relation Name" in node:
            found.add(node["Relation Name"])
        stack.extend(node.get("Plans", []))
    return found


def test_claim_walks_the_ready_index_and_updates_by_key(loaded_url: str) -> None:
    recorded: list[tuple[Any, Any]] = []

    def keep(conn: psycopg.Connection) -> None:
        conn.statements = recorded  # type: ignore[attr-defined]

    pool = ConnectionPool(
        loaded_url,
        min_size=1,
        max_size=1,
        connection_class=RecordingConnection,
        configure=keep,
        open=True,
    )
    try:
        claimed = TaskQueue(cast(ConnectionPool, pool)).claim_batch(PIPELINE, 256, 30, "plans")
        assert claimed, "the fixture holds ready tasks"
        (query, params), *_ = [s for s in recorded if "FOR UPDATE SKIP LOCKED" in str(s[0])]
        with pool.connection() as conn:
            conn.rollback()
            plan = _plan(conn, str(query), params)
            conn.rollback()
    finally:
        pool.close()
    scans = _task_scans(plan)
    assert "Seq Scan" not in {n["Node Type"] for n in scans}, _described(scans)
    # The batch is the head of the ready index, in its order (no sort of the queue)...
    assert ("Index Scan", "tasks_ready") in _described(scans)
    # ...and each picked row is updated through the primary key.
    assert ("Index Scan", "tasks_pkey") in _described(scans)


def test_the_task_table_is_stored_for_survey_scale(database_url: str) -> None:
    """Migration 0013's storage parameters, checked for what they are for, not their text."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = 'tasks'::regclass"
        ).fetchone()
        assert row is not None
        options = dict(option.split("=", 1) for option in row[0])
        default_cost_limit = conn.execute(
            "SELECT setting::int FROM pg_settings WHERE name = 'vacuum_cost_limit'"
        ).fetchone()
    assert default_cost_limit is not None
    wanted = {
        "fillfactor",
        "autovacuum_vacuum_threshold",
        "autovacuum_vacuum_scale_factor",
        "autovacuum_analyze_threshold",
        "autovacuum_analyze_scale_factor",
        "autovacuum_vacuum_insert_scale_factor",
        "autovacuum_vacuum_cost_limit",
    }
    assert wanted <= options.keys(), f"tasks' reloptions lack {sorted(wanted - options.keys())}"
    # Room on every page for new row versions of claims and completions.
    assert 50 <= int(options["fillfactor"]) < 100
    # On 10^7 tasks autovacuum starts within 10^5 dead rows and re-analyses within 10^5
    # changes (the defaults wait for 2 * 10^6 and 10^6), also after a bulk insert.
    survey = 10_000_000
    vacuum_at = int(options["autovacuum_vacuum_threshold"]) + survey * float(
        options["autovacuum_vacuum_scale_factor"]
    )
    analyze_at = int(options["autovacuum_analyze_threshold"]) + survey * float(
        options["autovacuum_analyze_scale_factor"]
    )
    assert vacuum_at <= 200_000
    assert analyze_at <= 100_000
    assert survey * float(options["autovacuum_vacuum_insert_scale_factor"]) <= 200_000
    # And it is given more I/O per round than the server's default, so it keeps up.
    assert int(options["autovacuum_vacuum_cost_limit"]) > default_cost_limit[0]
