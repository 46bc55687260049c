"""Benchmark of the task queue: claim + complete throughput, and the autoscaler's depth query.

Run ``python bench/task_queue.py`` (``--quick`` for a smoke run of about ten seconds). It starts a
private embedded PostgreSQL with default settings, migrates a database, and measures in the
same process:

1. **Anchor**: the one-at-a-time queue, ``claim_batch(n=1)`` + ``complete`` of that one task
   (one transaction each), by 2 worker processes.
2. **Batched**: the same loop with batches of 256, by the same 2 processes on the same server;
   then again with the route fetch -> radon in ``pipeline_routes`` (complete queues the next
   stage, as fetch does); the first two run with no route.
3. **Depth query** (``READY_DEPTH_SQL`` through ``TaskQueue.ready_depth``) over 1,000,000
   queued tasks, with ``EXPLAIN ANALYZE`` of each state: straight after the bulk load (no
   visibility map yet); after ``VACUUM (ANALYZE)`` (what autovacuum gives a deployment: the
   headline number); after draining the first 10 % with no vacuum since (workers running,
   autovacuum not yet caught up).

Throughput is tasks completed / (last worker's end - first worker's start), the workers being
released together by a barrier; each scenario runs ``--repeats`` times, interleaved, and the
median counts. Ratios are printed against the anchor and against the targets
(10,000 tasks/s; 50 ms per depth query). The last line is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from typing import Any

import psycopg
from psycopg import sql

from _postgres import SETUP_GALAXIES_SQL, embedded_postgres, migrated_database
from _stats import percentile
from galpipe.db.connection import open_pool
from galpipe.db.queue import READY_DEPTH_SQL, TaskQueue
from galpipe.db.routes import add_route

TARGET_TASKS_PER_S = 10_000.0
TARGET_DEPTH_QUERY_MS = 50.0
BENCH_DB = "galpipe_bench"
PIPELINE = "fetch"
DOWNSTREAM = "radon"
LEASE_S = 300.0
# Seconds a worker waits for the others at the start line, and the parent for its report.
START_TIMEOUT_S = 120.0
RUN_TIMEOUT_S = 1800.0
# Server settings printed so that a reader knows what the numbers were measured under.
SHOWN_SETTINGS = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_level",
    "shared_buffers",
    "max_wal_size",
    "autovacuum",
    "max_parallel_workers_per_gather",
    "jit",
)

# -- setup SQL (bench-only fixtures; the library's SQL stays under services/galpipe/db/) -------

# FIFO order of the queue is seq, which follows insertion order here.
SETUP_TASKS_SQL = """
INSERT INTO tasks (pipeline, source_id)
SELECT %(pipeline)s, g FROM generate_series(1::bigint, %(n)s::bigint) g ORDER BY g
"""
# Needs the pg_visibility extension (shipped with PostgreSQL), created in the bench database.
VISIBILITY_SQL = """
SELECT count(*) FILTER (WHERE all_visible), count(*) FROM pg_visibility_map('tasks')
"""
STATE_COUNTS_SQL = "SELECT pipeline, state::text, count(*) FROM tasks GROUP BY 1, 2"


@dataclass(frozen=True)
class WorkerReport:
    """What one worker process did, with its start and end on the system-wide monotonic clock."""

    owner: str
    completed: int
    claims: int
    start_s: float
    end_s: float


@dataclass(frozen=True)
class RunResult:
    """One throughput run: ``tasks`` completed by ``workers`` processes in ``elapsed_s``."""

    name: str
    batch: int
    workers: int
    tasks: int
    elapsed_s: float
    claims: int

    @property
    def tasks_per_s(self) -> float:
        return self.tasks / self.elapsed_s


@dataclass(frozen=True)
class DepthTiming:
    """Wall-clock timings (ms, client round trip included) of repeated depth queries."""

    state: str
    all_visible: float | None
    first_ms: float
    median_ms: float
    p95_ms: float
    runs: int
    count: int
    scans: list[str]
    index_only: bool
    heap_fetches: int
    server_ms: float | None
    plan: str


# -- worker process ---------------------------------------------------------------------------


# The start line of the current run, handed to each worker process by the pool's initializer
# (synchronisation primitives travel to a child only when it starts, not with each call).
_start_line: Barrier | None = None


def set_start_line(barrier: Barrier) -> None:
    """Pool initializer: remember the barrier that releases every worker at once."""
    global _start_line
    _start_line = barrier


def drain_worker(url: str, owner: str, batch: int) -> WorkerReport:
    """Claim and complete ``batch`` tasks at a time until the queue is empty (child process).

    Parameters
    ----------
    url
        Connection string of the benchmark database.
    owner
        Lease owner name of this worker.
    batch
        Tasks per claim (1 for the one-at-a-time anchor).

    Returns
    -------
    WorkerReport
        Tasks completed and the start and end of the loop, taken after every worker has
        connected and passed the start line.
    """
    if _start_line is None:
        raise RuntimeError("drain_worker runs in a pool made by throughput_run")
    pool = open_pool(url, max_size=1, name=f"bench-{owner}")
    queue = TaskQueue(pool)
    try:
        _start_line.wait(timeout=START_TIMEOUT_S)
        start = time.monotonic()
        completed = claims = 0
        while True:
            tasks = queue.claim_batch(PIPELINE, batch, LEASE_S, owner)
            if not tasks:
                break
            claims += 1
            ids = [t.source_id for t in tasks]
            completed += len(queue.complete(None, PIPELINE, owner, ids))
        end = time.monotonic()
    finally:
        pool.close()
    return WorkerReport(owner, completed, claims, start, end)


# -- measurements -----------------------------------------------------------------------------


def reset_tasks(url: str, n: int, downstream: str | None) -> None:
    """Empty ``tasks``, route ``fetch`` to ``downstream`` only (or nowhere), and queue ``n``
    fresh ``fetch`` tasks, vacuumed and analysed.

    A CHECKPOINT follows so that one left over from the setup does not land in a timed run.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE tasks")
        conn.execute("DELETE FROM pipeline_routes")
        if downstream is not None:
            add_route(conn, PIPELINE, downstream)
        conn.execute(SETUP_TASKS_SQL, {"pipeline": PIPELINE, "n": n})
        conn.execute("VACUUM (ANALYZE) tasks")
        conn.execute("CHECKPOINT")


def state_counts(url: str) -> dict[str, dict[str, int]]:
    """Tasks by pipeline and state."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(STATE_COUNTS_SQL).fetchall()
    counts: dict[str, dict[str, int]] = {}
    for pipeline, state, n in rows:
        counts.setdefault(pipeline, {})[state] = n
    return counts


def throughput_run(
    url: str,
    name: str,
    *,
    tasks: int,
    batch: int,
    workers: int,
    downstream: str | None,
    label: str,
) -> RunResult:
    """Queue ``tasks`` tasks, drain them with ``workers`` processes and check the outcome.

    ``name`` is short (it names the lease owners); ``label`` is what the report prints.

    Raises
    ------
    RuntimeError
        If a task was not completed exactly once, or the downstream stage was not queued.
    """
    reset_tasks(url, tasks, downstream)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=set_start_line, initargs=(ctx.Barrier(workers),)
    ) as executor:
        futures = [
            executor.submit(drain_worker, url, f"{name}-w{i}", batch) for i in range(workers)
        ]
        got = [f.result(timeout=RUN_TIMEOUT_S) for f in futures]
    completed = sum(r.completed for r in got)
    counts = state_counts(url)
    done = counts.get(PIPELINE, {}).get("done", 0)
    if completed != tasks or done != tasks or sum(counts[PIPELINE].values()) != tasks:
        raise RuntimeError(
            f"{name}: {tasks} tasks queued but workers completed {completed} and the table "
            f"holds {counts}"
        )
    if downstream is not None and counts.get(downstream, {}).get("queued", 0) != tasks:
        raise RuntimeError(f"{name}: expected {tasks} queued {downstream} tasks, got {counts}")
    elapsed = max(r.end_s for r in got) - min(r.start_s for r in got)
    result = RunResult(name, batch, workers, tasks, elapsed, sum(r.claims for r in got))
    per_worker = ", ".join(f"{r.owner}={r.completed}" for r in sorted(got, key=lambda r: r.owner))
    print(
        f"  {label:<24} batch {batch:>3}  {tasks:>7,} tasks in {elapsed:6.2f} s "
        f"= {result.tasks_per_s:>7,.0f} tasks/s  ({per_worker})",
        flush=True,
    )
    return result


def median_run(runs: Sequence[RunResult]) -> RunResult:
    """The run with the median rate (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r.tasks_per_s)
    return ordered[(len(ordered) - 1) // 2]


def load_depth_rows(url: str, n: int) -> float:
    """Replace the queue with ``n`` queued ``fetch`` tasks (no vacuum); return seconds taken."""
    t0 = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE tasks")
        conn.execute(SETUP_TASKS_SQL, {"pipeline": PIPELINE, "n": n})
    return time.monotonic() - t0


def all_visible_fraction(url: str) -> float | None:
    """Fraction of ``tasks`` heap pages marked all-visible (None without pg_visibility)."""
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(VISIBILITY_SQL).fetchone()
    except psycopg.Error:
        return None
    return None if row is None or not row[1] else row[0] / row[1]


def drain_in_process(url: str, n: int, batch: int) -> int:
    """Claim and complete the first ``n`` ready tasks in batches (the head of the queue)."""
    pool = open_pool(url, max_size=1, name="bench-churn")
    queue = TaskQueue(pool)
    drained = 0
    try:
        while drained < n:
            tasks = queue.claim_batch(PIPELINE, min(batch, n - drained), LEASE_S, "churn")
            if not tasks:
                break
            drained += len(queue.complete(None, PIPELINE, "churn", [t.source_id for t in tasks]))
    finally:
        pool.close()
    return drained


def explain_depth(url: str) -> tuple[str, list[str], bool, int, float | None]:
    """EXPLAIN ANALYZE of the depth query.

    Returns
    -------
    plan, scans, index_only, heap_fetches, execution_ms
        The text plan (with BUFFERS); each scan of ``tasks`` as "node type (index)"; whether
        every such scan is an Index Only Scan; the heap fetches of the index-only scans
        (summed over scans and parallel workers); the server's execution time (ms, measured
        with per-node timing off, whose overhead would inflate it).
    """
    with psycopg.connect(url, autocommit=True) as conn:
        query = sql.SQL(READY_DEPTH_SQL)
        explain_json = sql.SQL("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) ") + query
        row = conn.execute(explain_json, {"pipeline": PIPELINE}).fetchone()
        if row is None:
            raise RuntimeError("EXPLAIN of the depth query returned no plan")
        doc = row[0][0]
        explain_text = sql.SQL("EXPLAIN (ANALYZE, BUFFERS) ") + query
        text = "\n".join(r[0] for r in conn.execute(explain_text, {"pipeline": PIPELINE}))
    nodes: list[dict[str, Any]] = []
    stack = [doc["Plan"]]
    while stack:
        node = stack.pop()
        if node.get("Relation Name") == "tasks":
            nodes.append(node)
        stack.extend(node.get("Plans", []))
    scans = sorted(
        ("Parallel " if n.get("Parallel Aware") else "")
        + n["Node Type"]
        + (f" ({n['Index Name']})" if "Index Name" in n else "")
        for n in nodes
    )
    index_only = bool(nodes) and all(n["Node Type"] == "Index Only Scan" for n in nodes)
    fetches = sum(int(n.get("Heap Fetches", 0)) for n in nodes)
    return text, scans, index_only, fetches, doc.get("Execution Time")


def time_depth(url: str, state: str, runs: int, expected: int) -> DepthTiming:
    """Time one first and then ``runs`` calls of :meth:`TaskQueue.ready_depth`, then EXPLAIN it.

    Raises
    ------
    RuntimeError
        If the query does not count ``expected`` ready tasks.
    """
    visible = all_visible_fraction(url)
    pool = open_pool(url, max_size=1, name="bench-depth")
    queue = TaskQueue(pool)
    try:
        t0 = time.perf_counter()
        count = queue.ready_depth(PIPELINE)
        first_ms = (time.perf_counter() - t0) * 1e3
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter()
            count = queue.ready_depth(PIPELINE)
            samples.append((time.perf_counter() - t0) * 1e3)
    finally:
        pool.close()
    if count != expected:
        raise RuntimeError(f"depth query ({state}) counted {count}, expected {expected}")
    plan, scans, index_only, fetches, server_ms = explain_depth(url)
    timing = DepthTiming(
        state=state,
        all_visible=visible,
        first_ms=first_ms,
        median_ms=statistics.median(samples),
        p95_ms=percentile(samples, 95),
        runs=runs,
        count=count,
        scans=scans,
        index_only=index_only,
        heap_fetches=fetches,
        server_ms=server_ms,
        plan=plan,
    )
    print_depth(timing)
    return timing


def print_depth(t: DepthTiming) -> None:
    visible = "n/a" if t.all_visible is None else f"{t.all_visible:.0%}"
    print(
        f"  {t.state}: {t.count:,} ready; heap pages all-visible: {visible}\n"
        f"    first {t.first_ms:.1f} ms, then median {t.median_ms:.1f} ms, p95 {t.p95_ms:.1f} ms "
        f"over {t.runs} runs (client wall clock)",
        flush=True,
    )
    print(
        f"    EXPLAIN ANALYZE: scans of tasks: {', '.join(t.scans)}; all index-only: "
        f"{t.index_only}; "
        f"heap fetches: {t.heap_fetches}; server execution {t.server_ms} ms",
        flush=True,
    )
    for line in t.plan.splitlines():
        print(f"      {line}")


def depth_runs(url: str, rows: int, runs: int, batch: int) -> dict[str, DepthTiming]:
    """Time the depth query over ``rows`` queued tasks in three states of the table.

    ``fresh``: straight after the bulk load, no vacuum, so no visibility map (autovacuum is
    held off for ``tasks`` until the end so that it cannot change the state being measured).
    ``vacuumed``: after ``VACUUM (ANALYZE)``, the state autovacuum gives a deployment.
    ``churned``: after claiming and completing the first 10 % (no vacuum since), as while
    workers run and autovacuum has not caught up.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE tasks SET (autovacuum_enabled = off)")
    print("  (table setting for this part: ALTER TABLE tasks SET (autovacuum_enabled = off))")
    try:
        load_s = load_depth_rows(url, rows)
        print(f"  bulk load of {rows:,} tasks: {load_s:.1f} s", flush=True)
        fresh = time_depth(url, "fresh bulk load, no vacuum", runs, rows)
        t0 = time.monotonic()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE) tasks")
        print(f"  VACUUM (ANALYZE) tasks: {time.monotonic() - t0:.1f} s", flush=True)
        vacuumed = time_depth(url, "after VACUUM (ANALYZE)", runs, rows)
        t0 = time.monotonic()
        drained = drain_in_process(url, rows // 10, batch)
        print(f"  drained the first {drained:,} tasks: {time.monotonic() - t0:.1f} s", flush=True)
        churned = time_depth(url, "after draining 10 %, no vacuum since", runs, rows - drained)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER TABLE tasks RESET (autovacuum_enabled)")
    return {"fresh": fresh, "vacuumed": vacuumed, "churned": churned}


# -- driver -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks per batched run")
    parser.add_argument(
        "--anchor-tasks", type=int, default=5_000, help="tasks of the one-at-a-time anchor run"
    )
    parser.add_argument(
        "--depth-rows", type=int, default=1_000_000, help="queued tasks under the depth query"
    )
    parser.add_argument("--depth-runs", type=int, default=50, help="timed depth queries")
    parser.add_argument("--batch", type=int, default=256, help="tasks per claim")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--repeats", type=int, default=5, help="runs of each throughput scenario (median kept)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run of ~10 s (small sizes; not the targets)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.anchor_tasks = 10_000, 1_000
        args.depth_rows, args.depth_runs, args.repeats = 100_000, 10, 1
    for name in (
        "tasks",
        "anchor_tasks",
        "depth_rows",
        "depth_runs",
        "batch",
        "workers",
        "repeats",
    ):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    return args


def run(args: argparse.Namespace, admin_url: str) -> dict[str, Any]:
    """Every measurement on the server at ``admin_url``; returns the RESULT dictionary."""
    url, settings = migrated_database(admin_url, BENCH_DB, SHOWN_SETTINGS)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_visibility")
    print("server: embedded PostgreSQL with default settings (the benchmark changes none):")
    print("  " + ", ".join(f"{k}={v}" for k, v in settings.items()), flush=True)

    n_galaxies = max(args.tasks, args.anchor_tasks, args.depth_rows)
    t0 = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SETUP_GALAXIES_SQL, {"n": n_galaxies})
        conn.execute("VACUUM (ANALYZE) galaxies")
    print(f"setup: {n_galaxies:,} galaxies in {time.monotonic() - t0:.1f} s", flush=True)

    print(
        f"throughput ({args.workers} processes, claim_batch + complete until empty; each run "
        "starts from a freshly queued, VACUUM (ANALYZE)d, checkpointed table):",
        flush=True,
    )
    # (name, label, tasks, batch, downstream); repeats interleave so that drift in the disk's
    # fsync latency or in background work hits every scenario alike.
    scenarios = [
        ("anchor", "anchor (one at a time)", args.anchor_tasks, 1, None),
        ("batched", "batched", args.tasks, args.batch, None),
        ("chained", f"batched, +{DOWNSTREAM} enqueue", args.tasks, args.batch, DOWNSTREAM),
    ]
    runs: dict[str, list[RunResult]] = {name: [] for name, *_ in scenarios}
    for _ in range(args.repeats):
        for name, label, tasks, batch, downstream in scenarios:
            runs[name].append(
                throughput_run(
                    url,
                    name,
                    tasks=tasks,
                    batch=batch,
                    workers=args.workers,
                    downstream=downstream,
                    label=label,
                )
            )
    anchor, batched, chained = (median_run(runs[name]) for name, *_ in scenarios)
    print(f"  medians of {args.repeats} repeats:", flush=True)
    for r in (anchor, batched, chained):
        print(f"    {r.name:<8} {r.tasks_per_s:>9,.0f} tasks/s", flush=True)
    print(
        f"  ratio batched / anchor: {batched.tasks_per_s / anchor.tasks_per_s:.1f}x;  "
        f"batched / target {TARGET_TASKS_PER_S:,.0f}/s: "
        f"{batched.tasks_per_s / TARGET_TASKS_PER_S:.2f}x;  "
        f"with downstream / target: {chained.tasks_per_s / TARGET_TASKS_PER_S:.2f}x",
        flush=True,
    )

    print(f"depth query (TaskQueue.ready_depth) over {args.depth_rows:,} queued tasks:")
    depth = depth_runs(url, args.depth_rows, args.depth_runs, args.batch)
    fresh, vacuumed, churned = depth["fresh"], depth["vacuumed"], depth["churned"]
    print(
        f"  depth median / target {TARGET_DEPTH_QUERY_MS:.0f} ms: "
        f"{vacuumed.median_ms / TARGET_DEPTH_QUERY_MS:.2f}x vacuumed, "
        f"{fresh.median_ms / TARGET_DEPTH_QUERY_MS:.2f}x fresh, "
        f"{churned.median_ms / TARGET_DEPTH_QUERY_MS:.2f}x churned",
        flush=True,
    )

    return {
        "tasks_per_s": round(batched.tasks_per_s, 1),
        "depth_query_ms": round(vacuumed.median_ms, 3),
        "depth_query_p95_ms": round(vacuumed.p95_ms, 3),
        "depth_query_unvacuumed_ms": round(fresh.median_ms, 3),
        "depth_query_unvacuumed_p95_ms": round(fresh.p95_ms, 3),
        "depth_query_unvacuumed_first_ms": round(fresh.first_ms, 3),
        "depth_query_churned_ms": round(churned.median_ms, 3),
        "depth_query_churned_p95_ms": round(churned.p95_ms, 3),
        "depth_index_only_scan": vacuumed.index_only,
        "depth_scans": vacuumed.scans,
        "depth_unvacuumed_scans": fresh.scans,
        "depth_churned_scans": churned.scans,
        "depth_heap_fetches": vacuumed.heap_fetches,
        "depth_unvacuumed_heap_fetches": fresh.heap_fetches,
        "depth_churned_heap_fetches": churned.heap_fetches,
        "depth_rows": args.depth_rows,
        "depth_ratio_vs_target": round(vacuumed.median_ms / TARGET_DEPTH_QUERY_MS, 4),
        "anchor_tasks_per_s": round(anchor.tasks_per_s, 1),
        "ratio_vs_anchor": round(batched.tasks_per_s / anchor.tasks_per_s, 2),
        "ratio_vs_target": round(batched.tasks_per_s / TARGET_TASKS_PER_S, 3),
        "with_downstream_tasks_per_s": round(chained.tasks_per_s, 1),
        "with_downstream_ratio_vs_target": round(chained.tasks_per_s / TARGET_TASKS_PER_S, 3),
        "target_tasks_per_s": TARGET_TASKS_PER_S,
        "target_depth_query_ms": TARGET_DEPTH_QUERY_MS,
        "runs": {
            name: [round(r.tasks_per_s, 1) for r in results] for name, results in runs.items()
        },
        "repeats": args.repeats,
        "tasks": args.tasks,
        "anchor_tasks": args.anchor_tasks,
        "batch": args.batch,
        "workers": args.workers,
        "quick": args.quick,
        "server_settings": settings,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    with embedded_postgres("galpipe-bench-") as (admin, _tmp):
        result = run(args, admin)
    result["bench_wall_s"] = round(time.monotonic() - started, 1)
    print("RESULT " + json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
