"""Benchmark of the task table at survey scale: claims, the depth and status queries, and bloat.

Run ``python bench/scale.py`` (``--n`` tasks, 10⁷ by default; ``--quick`` for a smoke run of
about a minute). It starts a private embedded PostgreSQL with default settings and, for the
anchor size (``--anchor-n``, 10⁵) and then for ``--n``, each in a database of its own migrated
by ``galpipe migrate`` (migration 0013's storage parameters included, unless ``--storage
default`` resets them to PostgreSQL's), measures in the same process:

1. **Load**: ``COPY`` of ``n`` galaxies and of one queued ``fetch`` task each (the migrated
   indexes and foreign key in place, as an ingest meets them), then ``VACUUM (ANALYZE)``.
2. **Queries over a full queue** (``n`` queued): the exact ready depth (``TaskQueue.ready_depth``,
   the monitor's gauge), the KEDA trigger's capped query at the chart's default caps of fetch
   and radon (``ready_depth(cap=...)``), ``galpipe status`` (``collect_status``) and its parts
   (``task_counts`` from the maintained counts, ``roll_up_task_counts``, ``oldest_queued_age``,
   ``recent_done``), the exact count by state it replaced (``task_counts_exact``), and the
   monitor's poll (``poll_database``): a first call and the median and p95 of ``--runs`` more,
   client wall clock; with the scans of ``tasks`` that ``EXPLAIN`` of the SQL ones shows.
3. **Claims**: ``--claimers`` threads (4), each on a connection of its own, loop
   ``claim_batch(--batch)`` + ``complete`` (the real functions of ``galpipe.db.queue``) until
   ``--transitions`` tasks (all ``n`` by default) are done. No route leaves ``fetch`` here, so
   a completion queues nothing downstream: the figure is the queue's own. Throughput over the
   whole run and per ``--sample-s`` window, with the table's dead rows, size and autovacuum runs
   sampled alongside. With ``--count-triggers ab`` (the default) the triggers that maintain the
   task counts (migration 0015) are disabled and enabled again every other window, so that the
   windows with and without them interleave over the same drain, table and machine load: their
   median rates give the triggers' cost as a ratio (``on`` or ``off`` keep them so throughout).
   The counts are then rebuilt from the tasks, and checked against an exact count at the end.
4. **Storage after the transitions**: table and index sizes (and their growth over the loaded
   table), ``n_dead_tup``, the HOT-update ratio ``n_tup_hot_upd / n_tup_upd``, whether and how
   often autovacuum and autoanalyze ran, and the bloat estimate of ``pgstattuple_approx`` (table)
   and ``pgstatindex`` (indexes).
5. **The same queries over the drained table** (every task done; no manual vacuum since, only
   what autovacuum did).

Goals printed against: ready depth and status ≤ 50 ms at 10⁷ tasks, ≥ 10,000 claimed and
completed tasks per second, bounded bloat (the table no larger than twice its loaded size after
a full pass, autovacuum having run). Every figure of ``--n`` is also printed as a ratio to the
anchor's. The last line is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from _postgres import embedded_postgres
from _stats import percentile
from galpipe.db.connection import open_pool
from galpipe.db.migrate import migrate
from galpipe.db.queue import (
    MAINTAINED_TASK_COUNTS_SQL,
    OLDEST_QUEUED_SQL,
    READY_DEPTH_CAPPED_SQL,
    READY_DEPTH_SQL,
    TASK_COUNTS_SQL,
    TaskQueue,
    oldest_queued_age,
    ready_depth_cap,
    roll_up_task_counts,
    task_counts,
)
from galpipe.db.status import RATE_WINDOW_SECONDS, RECENT_DONE_SQL, recent_done
from galpipe.ops.monitor import poll_database
from galpipe.ops.status import collect_status
from galpipe.settings import Settings

TARGET_TASKS_PER_S = 10_000.0
TARGET_QUERY_MS = 50.0
#: A full pass of claims and completions may leave the heap at most this many times its loaded
#: size: each task is written three times, so without vacuum it would be about three.
TARGET_GROWTH = 2.0
PIPELINE = "fetch"
LEASE_S = 600.0
# Rows per COPY chunk sent from Python (about 5 MB of text).
COPY_CHUNK = 100_000
# Seconds a claimer waits for the others at the start line.
START_TIMEOUT_S = 120.0
#: The KEDA trigger's caps with the chart's defaults (charts/galpipe/values.yaml): fetch (3
#: replicas x 2,000 ready tasks) and radon (20 x 20,000), both measured on the fetch queue.
DEPTH_CAPS = (ready_depth_cap(3, 2000), ready_depth_cap(20, 20000))
# Server settings printed so that a reader knows what the numbers were measured under.
SHOWN_SETTINGS = (
    "server_version",
    "shared_buffers",
    "max_wal_size",
    "synchronous_commit",
    "autovacuum",
    "autovacuum_naptime",
    "autovacuum_max_workers",
    "autovacuum_vacuum_cost_limit",
    "autovacuum_vacuum_cost_delay",
    "max_parallel_workers_per_gather",
    "jit",
)
# Migration 0013's parameters, reset by --storage default to measure what it changes.
STORAGE_PARAMETERS = (
    "fillfactor",
    "autovacuum_vacuum_scale_factor",
    "autovacuum_vacuum_threshold",
    "autovacuum_analyze_scale_factor",
    "autovacuum_analyze_threshold",
    "autovacuum_vacuum_insert_scale_factor",
    "autovacuum_vacuum_cost_limit",
    "autovacuum_vacuum_cost_delay",
)

# -- bench-only SQL (fixtures and catalogue reads; the library's SQL stays in galpipe.db) ------

_SHOW_SETTINGS_SQL = "SELECT s, current_setting(s) FROM unnest(%s::text[]) AS s"
_TABLE_STATS_SQL = """
SELECT n_live_tup, n_dead_tup, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_newpage_upd,
       last_autovacuum, autovacuum_count, last_autoanalyze, autoanalyze_count, vacuum_count
FROM pg_stat_user_tables WHERE relid = 'tasks'::regclass
"""
_SIZES_SQL = """
SELECT pg_relation_size('tasks'), pg_indexes_size('tasks'), pg_total_relation_size('tasks')
"""
_INDEX_SIZES_SQL = """
SELECT i.indexrelid::regclass::text, pg_relation_size(i.indexrelid)
FROM pg_index i WHERE i.indrelid = 'tasks'::regclass ORDER BY 1
"""
_TABLE_BLOAT_SQL = """
SELECT table_len, approx_tuple_percent, dead_tuple_percent, approx_free_percent
FROM pgstattuple_approx('tasks')
"""
_INDEX_BLOAT_SQL = "SELECT avg_leaf_density, leaf_fragmentation FROM pgstatindex(%s)"
_RELOPTIONS_SQL = "SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = 'tasks'::regclass"
# Migration 0015's triggers, off and on again in each claimer's session between windows of
# --count-triggers ab. A session setting, not ALTER TABLE ... DISABLE TRIGGER: that lock would
# cancel every autovacuum pass of the table it met, and change the bloat this bench measures.
# (The foreign key's check does not run on these updates either way: they keep source_id.)
_TRIGGERS_SQL = {
    True: "SET session_replication_role = origin",
    False: "SET session_replication_role = replica",
}
# After windows without the triggers the counts are rebuilt as migration 0015 first built them.
_REBUILD_COUNTS_SQL = (
    "LOCK TABLE tasks IN SHARE ROW EXCLUSIVE MODE",
    "DELETE FROM task_state_deltas",
    "DELETE FROM task_state_counts",
    "INSERT INTO task_state_counts (pipeline, state, n) "
    "SELECT pipeline, state, count(*) FROM tasks GROUP BY pipeline, state",
)


@dataclass(frozen=True)
class QueryTiming:
    """Client wall-clock timings (ms) of one query function, and the scans its plan holds."""

    name: str
    first_ms: float
    median_ms: float
    p95_ms: float
    runs: int
    scans: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DrainResult:
    """One claim run: ``tasks`` completed by ``claimers`` threads in ``elapsed_s``."""

    tasks: int
    claims: int
    elapsed_s: float
    window_rates: list[float]
    samples: list[dict[str, Any]]
    #: Whether the count triggers were enabled during each window of ``window_rates``.
    window_triggers: list[bool] = field(default_factory=list)

    @property
    def tasks_per_s(self) -> float:
        return self.tasks / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def median_rate(self, triggers: bool) -> float | None:
        """Median rate of the full windows run with the count triggers on (or off)."""
        # The last window is cut short by the end of the drain; leave it out.
        rates = [
            r
            for r, on in zip(self.window_rates[:-1], self.window_triggers, strict=False)
            if on == triggers
        ]
        return statistics.median(rates) if rates else None


@dataclass
class SizeRun:
    """Every figure of one size."""

    n: int
    phases_s: dict[str, float] = field(default_factory=dict)
    loaded: dict[str, QueryTiming] = field(default_factory=dict)
    drained: dict[str, QueryTiming] = field(default_factory=dict)
    drain: DrainResult | None = None
    sizes_loaded: dict[str, int] = field(default_factory=dict)
    storage: dict[str, Any] = field(default_factory=dict)
    #: Whether the maintained counts equalled an exact count after the drain.
    counts_match: bool | None = None


# -- setup -------------------------------------------------------------------------------------


@contextlib.contextmanager
def phase(run: SizeRun, name: str) -> Iterator[None]:
    """Time one phase of a size's run into ``run.phases_s`` and print it."""
    t0 = time.monotonic()
    yield
    run.phases_s[name] = round(time.monotonic() - t0, 2)
    print(f"    [{run.n:,}] {name}: {run.phases_s[name]:.1f} s", flush=True)


def create_database(admin_url: str, name: str, storage: str) -> str:
    """Create and migrate database ``name``; with ``storage == 'default'`` undo 0013's settings.

    The route ``fetch -> radon`` is removed so that a completion queues nothing downstream.
    """
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(admin_url, dbname=name)
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        conn.execute("DELETE FROM pipeline_routes")
        if storage == "default":
            reset = sql.SQL("ALTER TABLE tasks RESET ({})").format(
                sql.SQL(", ").join(sql.SQL(p) for p in STORAGE_PARAMETERS)
            )
            conn.execute(reset)
    return url


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def galaxy_lines(start: int, stop: int) -> bytes:
    """COPY text of galaxies ``start .. stop - 1`` spread over the sky."""
    return "".join(
        f"{i}\t{(i * 0.001) % 360.0!r}\t{(i * 0.0007) % 180.0 - 90.0!r}\tbench\n"
        for i in range(start, stop)
    ).encode()


def task_lines(start: int, stop: int) -> bytes:
    """COPY text of one queued ``fetch`` task per galaxy, in id order (the FIFO order)."""
    return "".join(f"{PIPELINE}\t{i}\n" for i in range(start, stop)).encode()


def copy_rows(url: str, n: int) -> None:
    """COPY ``n`` galaxies and their ``n`` queued tasks into the migrated database."""
    with psycopg.connect(url, autocommit=True) as conn:
        for table, columns, lines in (
            ("galaxies", ("source_id", "ra", "dec", "catalog"), galaxy_lines),
            ("tasks", ("pipeline", "source_id"), task_lines),
        ):
            copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
            )
            with conn.transaction(), conn.cursor() as cur, cur.copy(copy_sql) as copy:
                for start in range(1, n + 1, COPY_CHUNK):
                    copy.write(lines(start, min(n + 1, start + COPY_CHUNK)))


# -- queries -----------------------------------------------------------------------------------


def plan_scans(conn: psycopg.Connection, query: str, params: dict[str, Any]) -> list[str]:
    """Each scan of ``tasks`` in the plan of ``query``, as "node type (index)"."""
    explain = sql.SQL("EXPLAIN (FORMAT JSON) ") + sql.SQL(query)  # type: ignore[arg-type]
    row = conn.execute(explain, params).fetchone()
    if row is None:
        raise RuntimeError("EXPLAIN returned no plan")
    found: list[str] = []
    stack = [row[0][0]["Plan"]]
    while stack:
        node = stack.pop()
        if node.get("Relation Name") == "tasks":
            index = f" ({node['Index Name']})" if "Index Name" in node else ""
            found.append(node["Node Type"] + index)
        stack.extend(node.get("Plans", []))
    return sorted(found)


def time_call(name: str, call: Callable[[], object], runs: int, scans: list[str]) -> QueryTiming:
    """Time one first call and ``runs`` more of ``call`` (ms, client wall clock)."""
    t0 = time.perf_counter()
    call()
    first = (time.perf_counter() - t0) * 1e3
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1e3)
    return QueryTiming(
        name, first, statistics.median(samples), percentile(samples, 95), runs, scans
    )


def measure_queries(url: str, runs: int) -> dict[str, QueryTiming]:
    """Time the depth, status and monitor functions (each on the pool they are given)."""
    settings = Settings.from_env({"GALPIPE_DATABASE_URL": url})
    pool = open_pool(url, max_size=2, name="bench-scale-queries")
    queue = TaskQueue(pool)
    pipelines = [PIPELINE]
    try:
        with pool.connection() as conn:
            conn.autocommit = True
            plans = {
                "ready_depth": plan_scans(conn, READY_DEPTH_SQL, {"pipeline": PIPELINE}),
                **{
                    f"ready_depth_cap_{cap}": plan_scans(
                        conn, READY_DEPTH_CAPPED_SQL, {"pipeline": PIPELINE, "cap": cap}
                    )
                    for cap in DEPTH_CAPS
                },
                "task_counts": plan_scans(conn, MAINTAINED_TASK_COUNTS_SQL, {}),
                "task_counts_exact": plan_scans(conn, TASK_COUNTS_SQL, {"ids": None}),
                "oldest_queued_age": plan_scans(
                    conn, OLDEST_QUEUED_SQL, {"pipelines": pipelines, "ready_only": False}
                ),
                "recent_done": plan_scans(
                    conn,
                    RECENT_DONE_SQL,
                    {"pipelines": pipelines, "seconds": RATE_WINDOW_SECONDS},
                ),
            }

        def on_conn(fn: Callable[[psycopg.Connection], object]) -> Callable[[], object]:
            def call() -> object:
                with pool.connection() as conn:
                    return fn(conn)

            return call

        def capped(cap: int) -> Callable[[], object]:
            return lambda: queue.ready_depth(PIPELINE, cap=cap)

        def exact_counts(conn: psycopg.Connection) -> object:
            return conn.execute(TASK_COUNTS_SQL, {"ids": None}).fetchall()

        def roll_up(conn: psycopg.Connection) -> object:
            with conn.transaction():
                return roll_up_task_counts(conn)

        calls: list[tuple[str, Callable[[], object]]] = [
            ("ready_depth", lambda: queue.ready_depth(PIPELINE)),
            *((f"ready_depth_cap_{cap}", capped(cap)) for cap in DEPTH_CAPS),
            ("task_counts", on_conn(task_counts)),
            ("task_counts_exact", on_conn(exact_counts)),
            ("roll_up", on_conn(roll_up)),
            ("oldest_queued_age", on_conn(lambda c: oldest_queued_age(c, pipelines))),
            ("recent_done", on_conn(lambda c: recent_done(c, pipelines))),
            ("status", lambda: collect_status(pool, settings)),
            ("monitor_poll", lambda: poll_database(pool, settings)),
        ]
        timings = {}
        for name, call in calls:
            timings[name] = time_call(name, call, runs, plans.get(name, []))
            t = timings[name]
            scans = f"  [{', '.join(t.scans)}]" if t.scans else ""
            print(
                f"      {name:<18} first {t.first_ms:8.1f} ms  median {t.median_ms:8.1f} ms  "
                f"p95 {t.p95_ms:8.1f} ms{scans}",
                flush=True,
            )
    finally:
        pool.close()
    return timings


# -- claims ------------------------------------------------------------------------------------


def table_sample(conn: psycopg.Connection) -> dict[str, Any]:
    """The table's statistics and sizes now (statistics as of their last flush)."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    cur = conn.execute(_TABLE_STATS_SQL)
    stats_row = cur.fetchone()
    assert stats_row is not None
    assert cur.description is not None
    stats = dict(zip([c.name for c in cur.description], stats_row, strict=True))
    sizes = conn.execute(_SIZES_SQL).fetchone()
    assert sizes is not None
    stats["heap_bytes"], stats["index_bytes"], stats["total_bytes"] = (int(s) for s in sizes)
    for key in ("last_autovacuum", "last_autoanalyze"):
        stats[key] = None if stats[key] is None else stats[key].isoformat()
    return stats


def drain(
    url: str,
    *,
    transitions: int,
    claimers: int,
    batch: int,
    sample_s: float,
    count_triggers: str = "on",
) -> DrainResult:
    """Claim and complete with ``claimers`` threads until ``transitions`` tasks are done.

    Each thread owns a pool of one connection and its own lease owner name; a sampler thread
    reads the total and the table's statistics every ``sample_s`` seconds. ``count_triggers``:
    ``on`` or ``off`` throughout, or ``ab``: off and on again at each sample, starting on.

    Raises
    ------
    RuntimeError
        If a claimer failed, or a completion returned fewer ids than were claimed.
    """
    lock = threading.Lock()
    done = [0]
    claims = [0]
    errors: list[BaseException] = []
    start_line = threading.Barrier(claimers + 1)
    stop = threading.Event()
    ends: list[float] = []
    triggers_on = [count_triggers != "off"]

    def claimer(i: int) -> None:
        owner = f"scale-w{i}"
        pool = open_pool(url, max_size=1, name=f"bench-scale-{owner}")
        queue = TaskQueue(pool)
        applied: bool | None = None
        try:
            start_line.wait(timeout=START_TIMEOUT_S)
            while not stop.is_set():
                if applied is not triggers_on[0]:
                    applied = triggers_on[0]
                    with pool.connection() as conn:
                        conn.execute(_TRIGGERS_SQL[applied])
                        conn.commit()
                tasks = queue.claim_batch(PIPELINE, batch, LEASE_S, owner)
                if not tasks:
                    break
                ids = [t.source_id for t in tasks]
                completed = queue.complete(None, PIPELINE, owner, ids)
                if len(completed) != len(ids):
                    raise RuntimeError(f"{owner}: claimed {len(ids)}, completed {len(completed)}")
                with lock:
                    done[0] += len(completed)
                    claims[0] += 1
                    if done[0] >= transitions:
                        stop.set()
        except BaseException as exc:  # reported by the parent, which then stops everyone
            errors.append(exc)
            stop.set()
        finally:
            ends.append(time.monotonic())
            pool.close()

    threads = [threading.Thread(target=claimer, args=(i,), daemon=True) for i in range(claimers)]
    for t in threads:
        t.start()
    samples: list[dict[str, Any]] = []
    modes: list[bool] = []
    with psycopg.connect(url, autocommit=True) as watch:
        start_line.wait(timeout=START_TIMEOUT_S)
        start = last_t = time.monotonic()
        last_done = 0
        rates: list[float] = []
        while True:
            alive = [t for t in threads if t.is_alive()]
            if alive:
                alive[0].join(timeout=min(1.0, sample_s))
            now = time.monotonic()
            if alive and now - last_t < sample_s:
                continue
            with lock:
                total = done[0]
            rates.append((total - last_done) / (now - last_t))
            modes.append(triggers_on[0])
            if count_triggers == "ab":
                triggers_on[0] = not triggers_on[0]
            sample = {
                "t_s": round(now - start, 1),
                "done": total,
                "count_triggers": modes[-1],
                **table_sample(watch),
            }
            samples.append(sample)
            print(
                f"      t={sample['t_s']:7.1f} s done {total:>11,} "
                f"({rates[-1]:>7,.0f}/s) dead {sample['n_dead_tup']:>10,} heap "
                f"{sample['heap_bytes'] / 2**20:8.0f} MiB idx "
                f"{sample['index_bytes'] / 2**20:8.0f} MiB autovacuum "
                f"{sample['autovacuum_count']} triggers {'on' if modes[-1] else 'off'}",
                flush=True,
            )
            last_t, last_done = now, total
            if not alive:
                break
        if count_triggers != "on":
            with watch.transaction():
                for statement in _REBUILD_COUNTS_SQL:
                    watch.execute(statement)  # type: ignore[arg-type]  # constants above
    if errors:
        raise RuntimeError(f"a claimer failed: {errors[0]!r}") from errors[0]
    return DrainResult(done[0], claims[0], max(ends) - start, rates, samples, modes)


def counts_match(url: str) -> bool:
    """Whether the maintained counts equal an exact count of the tasks, in one snapshot."""
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        exact = {(p, s): int(n) for p, s, n in conn.execute(TASK_COUNTS_SQL, {"ids": None})}
        maintained = {
            (p, s): n for p, by_state in task_counts(conn).items() for s, n in by_state.items() if n
        }
    return exact == maintained


# -- storage -----------------------------------------------------------------------------------


def storage_report(url: str) -> dict[str, Any]:
    """Sizes, statistics and the bloat estimate of ``tasks`` and its indexes."""
    # Backends flush their statistics when they exit or within a second of a commit; the
    # claimers have exited, so a short wait covers the monitor's last poll too.
    time.sleep(2.0)
    with psycopg.connect(url, autocommit=True) as conn:
        report = table_sample(conn)
        upd = report["n_tup_upd"] or 0
        report["hot_ratio"] = (report["n_tup_hot_upd"] / upd) if upd else None
        report["newpage_ratio"] = (report["n_tup_newpage_upd"] / upd) if upd else None
        table_bloat = conn.execute(_TABLE_BLOAT_SQL).fetchone()
        assert table_bloat is not None
        report["table_len"] = int(table_bloat[0])
        report["approx_tuple_percent"] = float(table_bloat[1])
        report["dead_tuple_percent"] = float(table_bloat[2])
        report["approx_free_percent"] = float(table_bloat[3])
        indexes = {}
        for name, size in conn.execute(_INDEX_SIZES_SQL).fetchall():
            density, fragmentation = conn.execute(_INDEX_BLOAT_SQL, (name,)).fetchone() or (0, 0)
            indexes[name] = {
                "bytes": int(size),
                "avg_leaf_density": float(density),
                "leaf_fragmentation": float(fragmentation),
            }
        report["indexes"] = indexes
        (reloptions,) = conn.execute(_RELOPTIONS_SQL).fetchone() or ([],)
        report["reloptions"] = list(reloptions)
    return report


def index_sizes(url: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        sizes = {str(name): int(size) for name, size in conn.execute(_INDEX_SIZES_SQL).fetchall()}
        row = conn.execute(_SIZES_SQL).fetchone()
    assert row is not None
    sizes["heap"] = int(row[0])
    return sizes


# -- one size ----------------------------------------------------------------------------------


def run_size(admin_url: str, n: int, args: argparse.Namespace) -> SizeRun:
    """Every measurement at ``n`` tasks, in a database of its own (dropped afterwards)."""
    run = SizeRun(n)
    name = f"galpipe_scale_{n}"
    print(f"  size {n:,} tasks ({args.storage} storage parameters):", flush=True)
    try:
        with phase(run, "migrate"):
            url = create_database(admin_url, name, args.storage)
        with phase(run, "copy"):
            copy_rows(url, n)
        with phase(run, "vacuum_analyze"), psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE) galaxies")
            conn.execute("VACUUM (ANALYZE) tasks")
            conn.execute("CHECKPOINT")
        run.sizes_loaded = index_sizes(url)
        print(
            f"    loaded: heap {run.sizes_loaded['heap'] / 2**20:.0f} MiB; "
            + ", ".join(
                f"{k} {v / 2**20:.0f} MiB" for k, v in run.sizes_loaded.items() if k != "heap"
            ),
            flush=True,
        )
        print(f"    queries over {n:,} queued tasks:", flush=True)
        with phase(run, "queries_loaded"):
            run.loaded = measure_queries(url, args.runs)
        transitions = n if args.transitions is None else min(n, args.transitions)
        print(
            f"    claims: {args.claimers} threads, batch {args.batch}, until {transitions:,} "
            "tasks are done:",
            flush=True,
        )
        with phase(run, "claims"):
            run.drain = drain(
                url,
                transitions=transitions,
                claimers=args.claimers,
                batch=args.batch,
                sample_s=args.sample_s,
                count_triggers=args.count_triggers,
            )
        print(
            f"    {run.drain.tasks:,} tasks in {run.drain.elapsed_s:.1f} s = "
            f"{run.drain.tasks_per_s:,.0f} tasks/s ({run.drain.claims:,} claims)",
            flush=True,
        )
        on, off = run.drain.median_rate(True), run.drain.median_rate(False)
        if on is not None and off is not None:
            print(
                f"    median window with count triggers {on:,.0f}/s, without {off:,.0f}/s: "
                f"ratio {on / off:.3f}",
                flush=True,
            )
        with phase(run, "storage_report"):
            run.storage = storage_report(url)
        print_storage(run)
        print("    queries over the table after the transitions:", flush=True)
        with phase(run, "queries_drained"):
            run.drained = measure_queries(url, args.runs)
        run.counts_match = counts_match(url)
        print(f"    maintained counts equal an exact count: {run.counts_match}", flush=True)
    finally:
        drop_database(admin_url, name)
    return run


def growth(run: SizeRun) -> float:
    """Heap size after the transitions over its size when loaded."""
    return run.storage["heap_bytes"] / run.sizes_loaded["heap"]


def print_storage(run: SizeRun) -> None:
    s = run.storage
    hot = "n/a" if s["hot_ratio"] is None else f"{s['hot_ratio']:.3f}"
    newpage = "n/a" if s["newpage_ratio"] is None else f"{s['newpage_ratio']:.3f}"
    print(
        f"    after the transitions: heap {s['heap_bytes'] / 2**20:.0f} MiB "
        f"({growth(run):.2f}x loaded), indexes {s['index_bytes'] / 2**20:.0f} MiB; "
        f"live {s['n_live_tup']:,}, dead {s['n_dead_tup']:,}; updates {s['n_tup_upd']:,}, HOT "
        f"ratio {hot}, new-page ratio {newpage}; autovacuum {s['autovacuum_count']}x (last "
        f"{s['last_autovacuum']}), autoanalyze {s['autoanalyze_count']}x",
        flush=True,
    )
    print(
        f"    pgstattuple_approx: tuples {s['approx_tuple_percent']:.1f} %, dead "
        f"{s['dead_tuple_percent']:.1f} %, free {s['approx_free_percent']:.1f} %; reloptions "
        f"{s['reloptions']}",
        flush=True,
    )
    for name, ix in s["indexes"].items():
        loaded = run.sizes_loaded.get(name, 0)
        print(
            f"      {name:<18} {ix['bytes'] / 2**20:8.1f} MiB (loaded {loaded / 2**20:8.1f} MiB)"
            f"  leaf density {ix['avg_leaf_density']:5.1f} %",
            flush=True,
        )


# -- driver ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=10_000_000, help="tasks at survey scale")
    parser.add_argument("--anchor-n", type=int, default=100_000, help="tasks of the anchor")
    parser.add_argument(
        "--transitions",
        type=int,
        default=None,
        help="tasks claimed and completed at each size (default: all of them)",
    )
    parser.add_argument("--batch", type=int, default=256, help="tasks per claim")
    parser.add_argument("--claimers", type=int, default=4, help="claiming threads")
    parser.add_argument("--runs", type=int, default=10, help="timed calls of each query")
    parser.add_argument("--sample-s", type=float, default=15.0, help="seconds between samples")
    parser.add_argument(
        "--storage",
        choices=("migrated", "default"),
        default="migrated",
        help="tasks' storage parameters: migration 0013's, or PostgreSQL's defaults",
    )
    parser.add_argument(
        "--count-triggers",
        choices=("ab", "on", "off"),
        default="ab",
        help="migration 0015's count triggers during the claims: alternating windows, or fixed",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run of about a minute (not the goals' size)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.anchor_n, args.runs, args.sample_s = 200_000, 20_000, 3, 5.0
    for name in ("n", "anchor_n", "batch", "claimers", "runs", "sample_s"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.transitions is not None and args.transitions <= 0:
        parser.error(f"--transitions must be positive, got {args.transitions}")
    return args


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def summary(run: SizeRun) -> dict[str, Any]:
    """The figures of one size for the RESULT line."""
    assert run.drain is not None
    return {
        "n": run.n,
        "phases_s": run.phases_s,
        "tasks_per_s": round(run.drain.tasks_per_s, 1),
        "tasks_claimed": run.drain.tasks,
        "claim_window_rates": [round(r, 1) for r in run.drain.window_rates],
        "claim_window_triggers": run.drain.window_triggers,
        "claim_median_rate_triggers_on": run.drain.median_rate(True),
        "claim_median_rate_triggers_off": run.drain.median_rate(False),
        "counts_match": run.counts_match,
        "queries_loaded_ms": {k: round(v.median_ms, 2) for k, v in run.loaded.items()},
        "queries_loaded_p95_ms": {k: round(v.p95_ms, 2) for k, v in run.loaded.items()},
        "queries_drained_ms": {k: round(v.median_ms, 2) for k, v in run.drained.items()},
        "queries_drained_p95_ms": {k: round(v.p95_ms, 2) for k, v in run.drained.items()},
        "scans_loaded": {k: v.scans for k, v in run.loaded.items() if v.scans},
        "scans_drained": {k: v.scans for k, v in run.drained.items() if v.scans},
        "sizes_loaded": run.sizes_loaded,
        "heap_growth": round(growth(run), 3),
        "storage": run.storage,
        "samples": run.drain.samples,
    }


def verdicts(scale: SizeRun, anchor: SizeRun) -> dict[str, Any]:
    """Ratios of ``scale`` to ``anchor`` and to the goals; prints them."""
    assert scale.drain is not None
    assert anchor.drain is not None
    out: dict[str, Any] = {}
    print(f"  ratios {scale.n:,} / anchor {anchor.n:,}, and against the goals:", flush=True)
    for state, s_q, a_q in (
        ("loaded", scale.loaded, anchor.loaded),
        ("drained", scale.drained, anchor.drained),
    ):
        for name in s_q:
            key = f"{name}_{state}"
            out[f"{key}_ratio_vs_anchor"] = ratio(s_q[name].median_ms, a_q[name].median_ms)
            out[f"{key}_ratio_vs_goal"] = ratio(s_q[name].median_ms, TARGET_QUERY_MS)
            print(
                f"    {key:<26} {s_q[name].median_ms:9.1f} ms = "
                f"{out[f'{key}_ratio_vs_anchor']}x anchor, "
                f"{out[f'{key}_ratio_vs_goal']}x the {TARGET_QUERY_MS:.0f} ms goal",
                flush=True,
            )
    out["tasks_per_s_ratio_vs_anchor"] = ratio(scale.drain.tasks_per_s, anchor.drain.tasks_per_s)
    out["tasks_per_s_ratio_vs_goal"] = ratio(scale.drain.tasks_per_s, TARGET_TASKS_PER_S)
    on, off = scale.drain.median_rate(True), scale.drain.median_rate(False)
    out["claims_triggers_on_vs_off"] = ratio(on, off) if on is not None and off else None
    out["heap_growth_ratio_vs_goal"] = ratio(growth(scale), TARGET_GROWTH)
    out["heap_growth_ratio_vs_anchor"] = ratio(growth(scale), growth(anchor))
    out["autovacuum_ran"] = bool(scale.storage["autovacuum_count"])
    print(
        f"    claims {scale.drain.tasks_per_s:,.0f} tasks/s = "
        f"{out['tasks_per_s_ratio_vs_anchor']}x anchor, "
        f"{out['tasks_per_s_ratio_vs_goal']}x the {TARGET_TASKS_PER_S:,.0f}/s goal\n"
        f"    heap growth {growth(scale):.2f}x = {out['heap_growth_ratio_vs_goal']}x the "
        f"{TARGET_GROWTH:.0f}x bound; autovacuum ran: {out['autovacuum_ran']}",
        flush=True,
    )
    return out


def run(args: argparse.Namespace, admin_url: str) -> dict[str, Any]:
    """Every measurement on the server at ``admin_url``; returns the RESULT dictionary."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute(_SHOW_SETTINGS_SQL, (list(SHOWN_SETTINGS),)).fetchall()
    settings = {str(k): str(v) for k, v in rows}
    print("server: embedded PostgreSQL with default settings (the benchmark changes none):")
    print("  " + ", ".join(f"{k}={v}" for k, v in settings.items()), flush=True)
    anchor = run_size(admin_url, args.anchor_n, args)
    scale = run_size(admin_url, args.n, args)
    return {
        "goals": {
            "query_ms": TARGET_QUERY_MS,
            "tasks_per_s": TARGET_TASKS_PER_S,
            "heap_growth": TARGET_GROWTH,
        },
        "ratios": verdicts(scale, anchor),
        "scale": summary(scale),
        "anchor": summary(anchor),
        "batch": args.batch,
        "claimers": args.claimers,
        "storage": args.storage,
        "quick": args.quick,
        "server_settings": settings,
        "query_timings": {
            "scale_loaded": {k: asdict(v) for k, v in scale.loaded.items()},
            "scale_drained": {k: asdict(v) for k, v in scale.drained.items()},
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    with embedded_postgres("galpipe-bench-scale-") as (admin, _tmp):
        result = run(args, admin)
    result["bench_wall_s"] = round(time.monotonic() - started, 1)
    print("RESULT " + json.dumps(result, sort_keys=True, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
