"""Benchmark of the control API: overview and action latency for 20 operators, reviews per request.

Run ``python bench/control.py`` (``--quick`` for a smoke run of about 20 seconds). It starts a
private embedded PostgreSQL with default settings, loads 10⁶ tasks (800,000 ``fetch`` in every
state, 200,000 ``radon``) with ``generate_series``, and serves the real app
(:func:`galpipe.control.app.create_app` over :class:`~galpipe.control.actions.ControlActions`,
the real :class:`~galpipe.control.auth.Authenticator` and
:class:`~galpipe.control.auth.Authorizer` with the production review TTL) by uvicorn in a
server process of its own. The Kubernetes API is the tests' recording fake
(``tests/kube_fake.py``) seeded with the chart's render, answering every request after
``--latency-ms`` (5 ms: an API server in the same region); its schema validation of request
bodies is switched off here, as it is test-only work that a real API server does elsewhere.

``--clients`` threads (20), each an operator of its own token using
:class:`galpipe.control.ctl.ControlClient` (what ``galpipe ctl`` sends), loop for
``--duration`` seconds after ``--warmup`` seconds: three ``GET /api/v1/overview`` for each
action, the actions cycling over a dry-run ``retry`` of fetch's failed tasks with an error
filter, ``pause`` and ``resume`` of radon (each audited and announced by an Event). Printed:

- **Anchor**: ``OverviewReader.read()`` called directly, one at a time (no HTTP, no reviews,
  no sharing: the count by state, the queue reads and the four Kubernetes reads at the same
  latency) — what computing one overview costs before any concurrency.
- p50/p99 of the overview and of the actions over HTTP under the load, and their ratios to the
  anchor and to the goal (p99 ≤ 200 ms);
- TokenReviews and SubjectAccessReviews the fake received per request after warm-up (the
  reviews' TTL cache at work);
- ``EXPLAIN ANALYZE`` of the overview's count query (index-only over ``tasks_state``?).

The last line is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

# The fake Kubernetes API, the chart's render and the uvicorn helper live with the tests.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from _postgres import SETUP_GALAXIES_SQL, embedded_postgres, migrated_database  # noqa: E402
from _stats import percentile  # noqa: E402
from galpipe.control.actions import ControlActions  # noqa: E402
from galpipe.control.auth import DEFAULT_TTL_SECONDS  # noqa: E402
from galpipe.control.ctl import ControlClient, Token  # noqa: E402
from galpipe.control.kube import Identity  # noqa: E402
from galpipe.db.connection import open_pool  # noqa: E402
from galpipe.db.queue import TASK_COUNTS_SQL  # noqa: E402

GOAL_P99_MS = 200.0
BENCH_DB = "galpipe_bench"
NAMESPACE = "galpipe"
RELEASE = "galpipe"
OPERATORS_GROUP = "galpipe-operators"
#: Overview requests per action request in each client's loop (a console mostly reads).
READS_PER_ACTION = 3
#: The actions cycled through: (verb, pipeline, extra body).
ACTIONS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("retry", "fetch", {"error_contains": "timeout", "dry_run": True}),
    ("pause", "radon", {}),
    ("resume", "radon", {}),
)
SHOWN_SETTINGS = ("server_version", "shared_buffers", "max_parallel_workers_per_gather", "jit")
# The fetch tasks in every state (1 % failed, with errors to filter on); radon's mostly done.
SETUP_FETCH_SQL = """
INSERT INTO tasks (pipeline, source_id, state, lease_owner, lease_expires, last_error)
SELECT 'fetch', g, s.state::task_state,
       CASE WHEN s.state = 'running' THEN 'bench' END,
       CASE WHEN s.state = 'running' THEN now() + interval '1 hour' END,
       CASE WHEN s.state = 'failed' THEN
            CASE WHEN g %% 2 = 0 THEN 'cutout timeout after 30 s' ELSE 'HTTP 404' END END
FROM generate_series(1::bigint, %(n)s::bigint) g,
LATERAL (SELECT CASE
    WHEN g %% 1000 = 0 THEN 'running'
    WHEN g %% 100 = 1 THEN 'failed'
    WHEN g %% 100 < 11 THEN 'skipped'
    WHEN g %% 100 < 40 THEN 'queued'
    ELSE 'done' END AS state) s
ORDER BY g
"""
SETUP_RADON_SQL = """
INSERT INTO tasks (pipeline, source_id, state)
SELECT 'radon', g, CASE WHEN g %% 10 = 0 THEN 'queued' ELSE 'done' END::task_state
FROM generate_series(1::bigint, %(n)s::bigint) g ORDER BY g
"""


# -- the server process -----------------------------------------------------------------------


def _chart_objects() -> list[dict[str, Any]]:
    from tests.deploy.chart_render import render_set

    objects = [o for o in render_set("default") if o["kind"] in ("Deployment", "ScaledObject")]
    pods = []
    for obj in objects:
        if obj["kind"] != "Deployment":
            continue
        obj["spec"]["replicas"] = 3
        obj["status"] = {"replicas": 3, "readyReplicas": 3}
        component = obj["metadata"]["labels"]["app.kubernetes.io/component"]
        image = obj["spec"]["template"]["spec"]["containers"][0]["image"]
        for i in range(3):
            pods.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": f"{obj['metadata']['name']}-{i}",
                        "labels": {
                            "app.kubernetes.io/instance": RELEASE,
                            "app.kubernetes.io/component": component,
                        },
                    },
                    "spec": {"containers": [{"name": component, "image": image}]},
                    "status": {
                        "phase": "Running",
                        "conditions": [{"type": "Ready", "status": "True"}],
                        "containerStatuses": [
                            {
                                "name": component,
                                "image": image,
                                "imageID": "",
                                "ready": True,
                                "restartCount": i,
                            }
                        ],
                    },
                }
            )
    return objects + pods


def _identities(n: int) -> dict[str, Identity]:
    return {
        f"bench-token-{i:02d}": Identity(f"operator-{i:02d}", (OPERATORS_GROUP,)) for i in range(n)
    }


def serve(url: str, latency_s: float, pool_size: int, clients: int, control: Connection) -> None:
    """Server process: the app on uvicorn until told to stop; answers review counts."""
    import tests.kube_fake as kube_fake
    from tests.asgi_server import serve_app

    from galpipe.control.app import create_app
    from galpipe.control.auth import Authenticator, Authorizer
    from galpipe.control.sessions import SessionSigner

    kube = kube_fake.FakeKube(
        [*_chart_objects(), kube_fake.helm_release_object(RELEASE, NAMESPACE)],
        tokens=_identities(clients),
        grants={OPERATORS_GROUP: ["*"]},
        namespace=NAMESPACE,
    )
    # Seeds were validated; request bodies are the tests' business, not the API server's time.
    kube_fake._validate = lambda obj, what: None  # type: ignore[assignment]
    kube.latency_s = latency_s
    pool = open_pool(url, max_size=pool_size, name="galpipe-control-bench")
    actions = ControlActions(pool, kube, namespace=NAMESPACE, release=RELEASE, helm_release=RELEASE)
    app = create_app(
        actions,
        Authenticator(kube, ttl_s=DEFAULT_TTL_SECONDS),
        Authorizer(kube, NAMESPACE, ttl_s=DEFAULT_TTL_SECONDS),
        SessionSigner("bench-session-key-" + "x" * 32),
        secure_cookies=False,
    )
    try:
        with serve_app(app) as base_url:
            control.send(base_url)
            while True:
                message = control.recv()
                if message == "stop":
                    break
                if message == "reviews":
                    control.send((len(kube.token_reviews), len(kube.access_reviews)))
                elif message == "anchor":
                    samples = []
                    for _ in range(10):
                        t0 = time.perf_counter()
                        actions.reader.read()
                        samples.append((time.perf_counter() - t0) * 1e3)
                    control.send(samples)
    finally:
        pool.close()


# -- the clients ------------------------------------------------------------------------------


@dataclass
class ClientLog:
    """What one client thread measured after warm-up (ms), and its errors."""

    overview_ms: list[float] = field(default_factory=list)
    action_ms: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def client_loop(
    client: ControlClient, measure_from: float, until: float, offset: int, log: ClientLog
) -> None:
    """Overviews and actions until ``until``; samples after ``measure_from`` are kept."""
    step = offset
    while time.monotonic() < until:
        reading = step % (READS_PER_ACTION + 1) != READS_PER_ACTION
        verb, pipeline, extra = ACTIONS[(step // (READS_PER_ACTION + 1)) % len(ACTIONS)]
        t0 = time.perf_counter()
        try:
            if reading:
                client.overview()
            else:
                client.act(verb, pipeline, {"reason": "bench", **extra})
        except Exception as exc:  # every failure is counted and reported, none stops the run
            log.errors.append(f"{type(exc).__name__}: {exc}")
        elapsed_ms = (time.perf_counter() - t0) * 1e3
        if time.monotonic() >= measure_from:
            if reading:
                log.overview_ms.append(elapsed_ms)
            else:
                log.action_ms.setdefault(verb, []).append(elapsed_ms)
        step += 1


# -- measurements -----------------------------------------------------------------------------


def load(url: str, tasks: int) -> float:
    """Galaxies and ``tasks`` tasks (80 % fetch, 20 % radon), vacuumed; seconds taken."""
    t0 = time.monotonic()
    fetch = tasks * 4 // 5
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SETUP_GALAXIES_SQL, {"n": fetch})
        conn.execute(SETUP_FETCH_SQL, {"n": fetch})
        conn.execute(SETUP_RADON_SQL, {"n": tasks - fetch})
        conn.execute("VACUUM (ANALYZE) galaxies")
        conn.execute("VACUUM (ANALYZE) tasks")
        conn.execute("CHECKPOINT")
    return time.monotonic() - t0


def explain_counts(url: str) -> tuple[list[str], bool, int, float | None]:
    """Scans of ``tasks`` in the overview's count query, index-only?, heap fetches, ms."""
    with psycopg.connect(url, autocommit=True) as conn:
        query = sql.SQL("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) ") + sql.SQL(TASK_COUNTS_SQL)
        row = conn.execute(query, {"ids": None}).fetchone()
    if row is None:
        raise RuntimeError("EXPLAIN of the count query returned no plan")
    doc = row[0][0]
    nodes, stack = [], [doc["Plan"]]
    while stack:
        node = stack.pop()
        if node.get("Relation Name") == "tasks":
            nodes.append(node)
        stack.extend(node.get("Plans", []))
    scans = sorted(
        n["Node Type"] + (f" ({n['Index Name']})" if "Index Name" in n else "") for n in nodes
    )
    index_only = bool(nodes) and all(n["Node Type"] == "Index Only Scan" for n in nodes)
    fetches = sum(int(n.get("Heap Fetches", 0)) for n in nodes)
    return scans, index_only, fetches, doc.get("Execution Time")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=1_000_000, help="tasks in the database")
    parser.add_argument("--clients", type=int, default=20, help="concurrent operators")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds first")
    parser.add_argument(
        "--latency-ms", type=float, default=5.0, help="the fake API server's answer time"
    )
    parser.add_argument(
        "--pool-size", type=int, default=4, help="database connections (GALPIPE_DB_POOL_SIZE)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run of ~20 s (the full 10⁶ tasks, 8 s measured)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 8.0, 2.0
    for name in ("tasks", "clients", "duration", "pool_size"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    return args


def run(args: argparse.Namespace, admin_url: str) -> dict[str, Any]:
    """Every measurement on the server at ``admin_url``; returns the RESULT dictionary."""
    url, settings = migrated_database(admin_url, BENCH_DB, SHOWN_SETTINGS)
    print("server: embedded PostgreSQL with default settings (the benchmark changes none):")
    print("  " + ", ".join(f"{k}={v}" for k, v in settings.items()), flush=True)
    print(f"setup: {args.tasks:,} tasks loaded in {load(url, args.tasks):.1f} s", flush=True)
    scans, index_only, heap_fetches, count_ms = explain_counts(url)
    print(
        f"  the overview's count query: scans {', '.join(scans)}; index-only: {index_only}; "
        f"heap fetches {heap_fetches}; server execution {count_ms} ms",
        flush=True,
    )

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    latency_s = args.latency_ms / 1e3
    server = ctx.Process(
        target=serve, args=(url, latency_s, args.pool_size, args.clients, child), daemon=True
    )
    server.start()
    try:
        if not parent.poll(120):
            raise RuntimeError("the control server did not start within 120 s")
        base_url = parent.recv()
        print(
            f"control API at {base_url} (uvicorn, its own process; pool of {args.pool_size} "
            f"connections; Kubernetes fake answering after {args.latency_ms:g} ms; review TTL "
            f"{DEFAULT_TTL_SECONDS:g} s)",
            flush=True,
        )
        parent.send("anchor")
        anchor_samples = parent.recv()
        anchor_ms = statistics.median(anchor_samples)
        print(
            f"  anchor: OverviewReader.read() alone, median of 10: {anchor_ms:.1f} ms",
            flush=True,
        )

        tokens = list(_identities(args.clients))
        logs = [ClientLog() for _ in tokens]
        start = time.monotonic()
        measure_from = start + args.warmup
        until = measure_from + args.duration
        threads = [
            threading.Thread(
                target=client_loop,
                args=(
                    ControlClient(base_url, Token(token, "bench")),
                    measure_from,
                    until,
                    i,
                    logs[i],
                ),
                name=f"client-{i}",
            )
            for i, token in enumerate(tokens)
        ]
        for thread in threads:
            thread.start()
        time.sleep(max(0.0, measure_from - time.monotonic()))
        parent.send("reviews")
        token_reviews_0, access_reviews_0 = parent.recv()
        for thread in threads:
            thread.join()
        parent.send("reviews")
        token_reviews_1, access_reviews_1 = parent.recv()
        parent.send("stop")
    finally:
        server.join(30)
        if server.is_alive():
            server.terminate()

    overview_ms = [ms for log in logs for ms in log.overview_ms]
    by_verb: dict[str, list[float]] = {}
    for log in logs:
        for verb, samples in log.action_ms.items():
            by_verb.setdefault(verb, []).extend(samples)
    action_ms = [ms for samples in by_verb.values() for ms in samples]
    errors = [e for log in logs for e in log.errors]
    if not overview_ms or not action_ms:
        raise RuntimeError(f"no samples measured; errors: {errors[:5]}")
    requests = len(overview_ms) + len(action_ms)
    # Requests in flight at the two reads of the counters make this exact to ± clients.
    token_reviews = token_reviews_1 - token_reviews_0
    access_reviews = access_reviews_1 - access_reviews_0
    reviews_per_request = (token_reviews + access_reviews) / requests

    o50, o99 = percentile(overview_ms, 50), percentile(overview_ms, 99)
    a50, a99 = percentile(action_ms, 50), percentile(action_ms, 99)
    print(
        f"{args.clients} clients for {args.duration:g} s after {args.warmup:g} s warm-up: "
        f"{requests:,} requests ({requests / args.duration:,.0f}/s), {len(errors)} errors",
        flush=True,
    )
    print(f"  GET overview: {len(overview_ms):,}  p50 {o50:.1f} ms  p99 {o99:.1f} ms", flush=True)
    print(f"  actions:      {len(action_ms):,}  p50 {a50:.1f} ms  p99 {a99:.1f} ms", flush=True)
    for verb, samples in sorted(by_verb.items()):
        print(
            f"    {verb:<7} {len(samples):>6,}  p50 {percentile(samples, 50):.1f} ms  "
            f"p99 {percentile(samples, 99):.1f} ms",
            flush=True,
        )
    print(
        f"  reviews after warm-up: {token_reviews} TokenReviews + {access_reviews} "
        f"SubjectAccessReviews = {reviews_per_request:.4f} per request",
        flush=True,
    )
    print(
        f"  ratios: overview p50 / anchor {o50 / anchor_ms:.2f}x; overview p99 / goal "
        f"{GOAL_P99_MS:.0f} ms {o99 / GOAL_P99_MS:.2f}x; action p99 / goal "
        f"{a99 / GOAL_P99_MS:.2f}x",
        flush=True,
    )
    for error in sorted(set(errors))[:5]:
        print(f"  error: {error}", flush=True)

    return {
        "overview_p50_ms": round(o50, 2),
        "overview_p99_ms": round(o99, 2),
        "action_p50_ms": round(a50, 2),
        "action_p99_ms": round(a99, 2),
        "action_p99_ms_by_verb": {v: round(percentile(s, 99), 2) for v, s in by_verb.items()},
        "reviews_per_request": round(reviews_per_request, 5),
        "token_reviews": token_reviews,
        "access_reviews": access_reviews,
        "requests": requests,
        "requests_per_s": round(requests / args.duration, 1),
        "errors": len(errors),
        "anchor_overview_ms": round(anchor_ms, 2),
        "overview_p50_ratio_vs_anchor": round(o50 / anchor_ms, 3),
        "goal_p99_ms": GOAL_P99_MS,
        "overview_p99_ratio_vs_goal": round(o99 / GOAL_P99_MS, 3),
        "action_p99_ratio_vs_goal": round(a99 / GOAL_P99_MS, 3),
        "count_query_scans": scans,
        "count_query_index_only": index_only,
        "count_query_heap_fetches": heap_fetches,
        "count_query_server_ms": count_ms,
        "tasks": args.tasks,
        "clients": args.clients,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "kube_latency_ms": args.latency_ms,
        "pool_size": args.pool_size,
        "review_ttl_s": DEFAULT_TTL_SECONDS,
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
