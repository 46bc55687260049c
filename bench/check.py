"""Benchmark of ``galpipe check``: one reconciliation of 10⁶ tasks, a sample of their objects.

Run ``python bench/check.py`` (``--quick`` for a smoke run of about 20 seconds). It starts a
private embedded PostgreSQL with default settings and seeds, with ``generate_series``, a clean
state of ``--tasks`` tasks (10⁶): 9 galaxies in 10 with a fetch task only (queued, skipped or
failed, with reasons), the tenth fetched, measured and predicted (a done fetch task, its
``cutouts`` row and its object in a local store, a done radon task and five measurement rows
that agree, a done morphology task, routed from fetch, and its prediction of one model). Then
it times ``run_check(sample=--sample)`` (1,000 objects) ``--repeats`` times after a
``VACUUM (ANALYZE)``, and each database rule on its own in one snapshot. Printed:

- **Anchor**: ``task_counts`` (``galpipe status``'s count by state, an index-only count of
  ``tasks_state``), the cheapest read that grows with the table;
- the check's median and its ratio to the anchor, then each rule's time;
- whether the state was judged clean (it must be: the seed keeps every rule).

The last line is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg

from _postgres import SETUP_GALAXIES_SQL, embedded_postgres, migrated_database
from galpipe.db import check as rules
from galpipe.db.connection import open_pool
from galpipe.db.morphology import FRACTION_COLUMNS
from galpipe.db.queue import task_counts
from galpipe.db.routes import add_route, routes
from galpipe.ops.check import EXAMPLES, PREDICTED_PIPELINE, default_lease_grace_s, run_check
from galpipe.settings import Settings
from galpipe.storage import LocalObjectStore
from galpipe.survey.layout import BANDS

BENCH_DB = "galpipe_bench"
#: One galaxy in this many is fetched, measured and predicted (three tasks); the others have
#: one task.
MEASURED_EVERY = 10
#: The version of the one model the seeded predictions name (a sha256's shape).
BENCH_MODEL = "b" * 64

SEED_FETCH_SQL = """
INSERT INTO tasks (pipeline, source_id, state, attempts, last_error)
SELECT 'fetch', g, s.state::task_state, CASE WHEN s.state = 'queued' THEN 0 ELSE 1 END,
       CASE WHEN s.state IN ('failed', 'skipped') THEN 'no coverage' END
FROM generate_series(1::bigint, %(n)s::bigint) g,
LATERAL (SELECT CASE
    WHEN g %% %(every)s = 0 THEN 'done'
    WHEN g %% %(every)s = 1 THEN 'skipped'
    WHEN g %% %(every)s = 2 THEN 'failed'
    ELSE 'queued' END AS state) s
ORDER BY g
"""
# The radon and morphology tasks of the done fetches, all done.
SEED_DOWNSTREAM_SQL = """
INSERT INTO tasks (pipeline, source_id, state, attempts)
SELECT %(pipeline)s, source_id, 'done', 1 FROM tasks
WHERE pipeline = 'fetch' AND state = 'done' ORDER BY source_id
"""
# Each object's bytes are the galaxy's id as text, so its digest is computed here too.
SEED_CUTOUTS_SQL = """
INSERT INTO cutouts (source_id, layer, bands, size, pixscale, object_key, sha256, nbytes)
SELECT source_id, 'ls-dr10', 'griz', 40, 0.262, 'cutouts/bench/' || source_id || '.fits',
       encode(sha256(convert_to(source_id::text, 'UTF8')), 'hex'), length(source_id::text)
FROM tasks WHERE pipeline = 'fetch' AND state = 'done' ORDER BY source_id
"""
SEED_MEASUREMENTS_SQL = """
INSERT INTO radon_measurements (source_id, algo_version, band, angle_image_deg,
                                nonfinite_pixels, n_bands, flags)
SELECT t.source_id, 'bench-v1', b.band,
       CASE WHEN b.band = 'combined' THEN 45.0 ELSE 40.0 + b.ord END,
       CASE WHEN b.band = 'combined' THEN 4 ELSE 1 END,
       CASE WHEN b.band = 'combined' THEN 4 END, 0
FROM tasks t
CROSS JOIN unnest(%(bands)s::text[]) WITH ORDINALITY AS b(band, ord)
WHERE t.pipeline = 'radon' AND t.state = 'done'
ORDER BY t.source_id, b.band
"""
SEED_MODEL_SQL = """
INSERT INTO models (model_version, pipeline, architecture, input_mode, input_size,
                    input_channels, training_data_sha256, object_key, nbytes)
VALUES (%(version)s, %(pipeline)s, 'bench', 'bench', 40, 4, %(version)s, 'models/bench.onnx', 1)
"""
# Every fraction 0 (the table's checks allow it; the check reads only the keys).
SEED_PREDICTIONS_SQL = (
    "INSERT INTO morphology_predictions (source_id, model_version, "
    + ", ".join(FRACTION_COLUMNS)
    + ", six_class, six_class_probability) SELECT source_id, %(version)s, "
    + ", ".join("0" for _ in FRACTION_COLUMNS)
    + ", 'Elliptical', 0 FROM tasks WHERE pipeline = %(pipeline)s AND state = 'done' "
    "ORDER BY source_id"
)


def seed(url: str, objects: Path, tasks: int) -> dict[str, int]:
    """A clean state of about ``tasks`` tasks; returns what was made."""
    # Galaxies g with g % MEASURED_EVERY == 0 have three tasks, the others one.
    galaxies = tasks * MEASURED_EVERY // (MEASURED_EVERY + 2)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SETUP_GALAXIES_SQL, {"n": galaxies})
        conn.execute(SEED_FETCH_SQL, {"n": galaxies, "every": MEASURED_EVERY})
        conn.execute(SEED_DOWNSTREAM_SQL, {"pipeline": "radon"})
        conn.execute(SEED_DOWNSTREAM_SQL, {"pipeline": PREDICTED_PIPELINE})
        conn.execute(SEED_CUTOUTS_SQL)
        conn.execute(SEED_MEASUREMENTS_SQL, {"bands": [*BANDS, "combined"]})
        predicted = {"version": BENCH_MODEL, "pipeline": PREDICTED_PIPELINE}
        conn.execute(SEED_MODEL_SQL, predicted)
        conn.execute(SEED_PREDICTIONS_SQL, predicted)
        # Every done fetch has its morphology task already: the route's backfill queues none.
        add_route(conn, "fetch", PREDICTED_PIPELINE)
        ids = [r[0] for r in conn.execute("SELECT source_id FROM cutouts").fetchall()]
        made = conn.execute("SELECT count(*) FROM tasks").fetchone()
        conn.execute("VACUUM (ANALYZE)")
    # Written straight to files: the seed is not what is measured, and the store's fsyncs
    # would make it minutes.
    folder = objects / "cutouts" / "bench"
    folder.mkdir(parents=True)
    for sid in ids:
        (folder / f"{sid}.fits").write_bytes(str(sid).encode())
    return {"galaxies": galaxies, "tasks": int(made[0]) if made else 0, "objects": len(ids)}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def rule_times(url: str, settings: Settings, objects: int, sample: int) -> dict[str, float]:
    """Each database rule alone, in one REPEATABLE READ snapshot, seconds."""
    n, grace, limit = EXAMPLES, default_lease_grace_s(settings), 1 + settings.max_retries
    # The Bernoulli percentage run_check draws its sample with (3x the sample, at least +100).
    percent = 100.0 * max(3 * sample, sample + 100) / max(objects, 1)
    calls: dict[str, Callable[[psycopg.Connection], Any]] = {
        "task_counts": task_counts,
        "galaxy_count": rules.galaxy_count,
        "routes": routes,
        "galaxies_without_task": lambda c: rules.galaxies_without_task(c, "fetch", n),
        "done_without_downstream": lambda c: rules.done_without_downstream(c, "fetch", "radon", n),
        "downstream_without_done_upstream": lambda c: rules.downstream_without_done_upstream(
            c, ["fetch"], "radon", n
        ),
        "stale_leases": lambda c: rules.stale_leases(c, grace, n),
        "attempts_over": lambda c: rules.attempts_over(c, limit, n),
        "finished_without_reason": lambda c: rules.finished_without_reason(c, n),
        "done_without_cutout": lambda c: rules.done_without_cutout(c, "fetch", n),
        "done_without_measurement": lambda c: rules.done_without_measurement(c, "radon", n),
        "measurement_groups": lambda c: rules.measurement_groups(c, list(BANDS), n),
        "done_without_prediction": lambda c: rules.done_without_prediction(
            c, PREDICTED_PIPELINE, n
        ),
        "cutouts_without_done_task": lambda c: rules.cutouts_without_done_task(c, "fetch", n),
        "measurements_without_done_task": lambda c: rules.measurements_without_done_task(
            c, "radon", n
        ),
        "predictions_without_done_task": lambda c: rules.predictions_without_done_task(
            c, PREDICTED_PIPELINE, n
        ),
        "sample_objects": lambda c: rules.sample_objects(c, "fetch", sample, percent),
    }
    times = {}
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for name, call in calls.items():
            t0 = time.perf_counter()
            call(conn)
            times[name] = time.perf_counter() - t0
    return times


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=1_000_000, help="tasks seeded")
    parser.add_argument("--sample", type=int, default=1000, help="objects verified per check")
    parser.add_argument("--repeats", type=int, default=5, help="timed checks (median kept)")
    parser.add_argument("--quick", action="store_true", help="smoke run (10⁵ tasks, 2 repeats)")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.repeats = 100_000, 2
    for name in ("tasks", "sample", "repeats"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive, got {getattr(args, name)}")
    return args


def run(args: argparse.Namespace, admin_url: str, tmp: Path) -> dict[str, Any]:
    url, _ = migrated_database(admin_url, BENCH_DB)
    seed_s, made = timed(lambda: seed(url, tmp / "objects", args.tasks))
    print(
        f"seed: {made['tasks']:,} tasks, {made['galaxies']:,} galaxies, {made['objects']:,} "
        f"objects in {seed_s:.1f} s",
        flush=True,
    )
    settings = Settings()
    store = LocalObjectStore(tmp / "objects")
    with open_pool(url, max_size=4) as pool:
        anchors = []
        for _ in range(args.repeats):
            with pool.connection() as conn:
                t0 = time.perf_counter()
                task_counts(conn)
                anchors.append(time.perf_counter() - t0)
        checks, reports = [], []
        for _ in range(args.repeats):
            seconds, report = timed(lambda: run_check(pool, store, settings, sample=args.sample))
            checks.append(seconds)
            reports.append(report)
    anchor_s, check_s = statistics.median(anchors), statistics.median(checks)
    clean = all(r.ok for r in reports)
    verified = reports[-1].objects_verified
    print(f"anchor task_counts: {anchor_s * 1000:.0f} ms (median of {args.repeats})")
    print(
        f"run_check(sample={args.sample}): {check_s:.2f} s (median of {args.repeats}), "
        f"{check_s / anchor_s:.0f}x the anchor; {verified} objects verified; clean: {clean}"
    )
    if not clean:
        print("  breaches: " + reports[-1].failure_message())
    times = rule_times(url, settings, made["objects"], args.sample)
    print("each rule alone, in one snapshot:")
    for name, seconds in sorted(times.items(), key=lambda item: -item[1]):
        print(f"  {name:<34} {seconds * 1000:>8.0f} ms")
    return {
        "tasks": made["tasks"],
        "galaxies": made["galaxies"],
        "objects": made["objects"],
        "sample": args.sample,
        "objects_verified": verified,
        "check_s": round(check_s, 3),
        "check_runs_s": [round(s, 3) for s in checks],
        "anchor_task_counts_s": round(anchor_s, 4),
        "ratio_vs_anchor": round(check_s / anchor_s, 1),
        "rule_ms": {k: round(v * 1000, 1) for k, v in times.items()},
        "clean": clean,
        "repeats": args.repeats,
        "quick": args.quick,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    with embedded_postgres("galpipe-bench-check-") as (admin, tmp):
        result = run(args, admin, tmp)
    result["bench_wall_s"] = round(time.monotonic() - started, 1)
    print("RESULT " + json.dumps(result, sort_keys=True), flush=True)
    return 0 if result["clean"] else 1


if __name__ == "__main__":
    sys.exit(main())
