"""``galpipe monitor`` against a real PostgreSQL: what it reads, what it exports, its probes.

In-process tests call :func:`poll_database` and the :class:`Monitor` collector on the test
database; the end-to-end test runs the real ``galpipe monitor`` command and scrapes it over
HTTP, then stops it with SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from psycopg_pool import ConnectionPool

from galpipe.db.breaker import BreakerPolicy, CircuitBreaker
from galpipe.db.queue import TaskQueue
from galpipe.db.ratelimit import RateLimitPolicy, TokenBucket
from galpipe.ops.monitor import Monitor, poll_database
from galpipe.runtime.database import pool_from_settings
from galpipe.settings import Settings

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(monitor: Monitor) -> Samples:
    """The monitor's exposition, parsed back: (sample name, labels) -> value."""
    registry = CollectorRegistry()
    registry.register(monitor)
    return parse(generate_latest(registry).decode())


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings.from_env({"GALPIPE_DATABASE_URL": database_url})


def ping_with(pool: ConnectionPool) -> Callable[[], None]:
    from galpipe.db.monitor import ping

    def check() -> None:
        with pool.connection(timeout=1.0) as conn:
            ping(conn)

    return check


def test_monitor_exports_the_database_state(
    pool: ConnectionPool,
    queue: TaskQueue,
    settings: Settings,
    add_galaxies: Callable[..., list[int]],
) -> None:
    ids = add_galaxies(10)
    queue.enqueue("fetch", ids)
    claimed = queue.claim_batch("fetch", 4, 60.0, "w1")
    queue.complete(None, "fetch", "w1", [t.source_id for t in claimed[:3]])
    # One fetch task back in the queue with a retry delay: queued, but not ready.
    queue.retry(None, "fetch", "w1", {claimed[3].source_id: "timeout"}, {claimed[3].source_id: 600})
    queue.pause("radon", "maintenance")
    breaker = CircuitBreaker(pool, "fetch", BreakerPolicy(failures=2))
    breaker.record_failure("w1", "HTTP 503")
    breaker.record_failure("w1", "HTTP 503")
    bucket = TokenBucket(pool, "fetch", RateLimitPolicy(rate=5.0, burst=10.0))
    bucket.configure()
    bucket.acquire(3)

    monitor = Monitor(
        lambda: poll_database(pool, settings), ping_with(pool), queue_age_slo_s=1800.0
    )
    assert monitor.poll_once()
    samples = scrape(monitor)

    assert value(samples, "galpipe_database_up") == 1.0
    assert value(samples, "galpipe_tasks", pipeline="fetch", state="queued") == 7
    assert value(samples, "galpipe_tasks", pipeline="fetch", state="done") == 3
    assert value(samples, "galpipe_tasks", pipeline="fetch", state="running") == 0
    assert value(samples, "galpipe_tasks", pipeline="radon", state="queued") == 3
    # The autoscaler's depth: the delayed retry is not ready, a paused pipeline reads 0.
    assert value(samples, "galpipe_tasks_ready", pipeline="fetch") == 6
    assert value(samples, "galpipe_tasks_ready", pipeline="radon") == 0
    assert value(samples, "galpipe_pipeline_paused", pipeline="radon") == 1
    assert value(samples, "galpipe_pipeline_paused", pipeline="fetch") == 0
    assert value(samples, "galpipe_queue_age_slo_seconds", pipeline="fetch") == 1800.0
    for pipeline in ("fetch", "radon"):
        age = value(samples, "galpipe_queue_oldest_ready_age_seconds", pipeline=pipeline)
        assert age is not None
        assert 0.0 <= age < 60.0
    assert value(samples, "galpipe_breaker_state", breaker="fetch", state="open") == 1
    assert value(samples, "galpipe_breaker_state", breaker="fetch", state="closed") == 0
    assert value(samples, "galpipe_breaker_state", breaker="fetch", state="half_open") == 0
    assert value(samples, "galpipe_breaker_consecutive_failures", breaker="fetch") == 2
    assert value(samples, "galpipe_rate_limit_rate", bucket="fetch") == 5.0
    assert value(samples, "galpipe_rate_limit_burst", bucket="fetch") == 10.0
    assert value(samples, "galpipe_rate_limit_granted_total", bucket="fetch") == 3
    tokens = value(samples, "galpipe_rate_limit_tokens", bucket="fetch")
    assert tokens is not None
    assert 7.0 <= tokens <= 10.0
    sizes = {
        dict(labels)["relation"]: v
        for (name, labels), v in samples.items()
        if name == "galpipe_database_relation_size_bytes"
    }
    assert {"tasks", "galaxies", "breakers", "rate_limits"} <= sizes.keys()
    database_bytes = value(samples, "galpipe_database_size_bytes")
    assert database_bytes is not None
    assert database_bytes >= sizes["tasks"] > 0
    connections = sum(
        v for (name, _), v in samples.items() if name == "galpipe_database_connections"
    )
    assert connections >= 1
    last_success = value(samples, "galpipe_monitor_last_success_timestamp_seconds")
    assert last_success is not None
    assert abs(last_success - time.time()) < 60
    assert monitor.readiness() == (True, "ok")
    assert monitor.liveness() == (True, "ok")


def test_oldest_ready_skips_delayed_retries_where_oldest_queued_does_not(
    pool: ConnectionPool,
    queue: TaskQueue,
    settings: Settings,
    add_galaxies: Callable[..., list[int]],
) -> None:
    ids = add_galaxies(2)
    queue.enqueue("fetch", ids[:1])
    (task,) = queue.claim_batch("fetch", 1, 60.0, "w1")
    queue.retry(None, "fetch", "w1", {task.source_id: "timeout"}, {task.source_id: 600})
    with pool.connection() as conn:  # the retried task waited an hour before it was claimed
        conn.execute("UPDATE tasks SET enqueued_at = now() - interval '1 hour'")
    queue.enqueue("fetch", ids[1:])

    monitor = Monitor(lambda: poll_database(pool, settings), ping_with(pool))
    monitor.poll_once()
    samples = scrape(monitor)

    queued_age = value(samples, "galpipe_queue_oldest_queued_age_seconds", pipeline="fetch")
    ready_age = value(samples, "galpipe_queue_oldest_ready_age_seconds", pipeline="fetch")
    assert queued_age is not None
    assert queued_age >= 3600
    assert ready_age is not None
    assert ready_age < 60


def test_an_unreachable_database_exports_only_up_zero_and_fails_readiness(
    pool: ConnectionPool, settings: Settings
) -> None:
    # The monitor's pool: it opens, in the background, on a database that does not answer.
    unreachable = Settings.from_env({"GALPIPE_DATABASE_URL": _closed_port_url()})
    dead = pool_from_settings(unreachable, role="monitor", max_size=1, wait=False, timeout_s=0.5)
    current = [pool]
    monitor = Monitor(lambda: poll_database(current[0], settings), ping_with(dead), interval_s=1.0)
    try:
        assert monitor.poll_once()
        good = value(scrape(monitor), "galpipe_monitor_last_success_timestamp_seconds")

        current[0] = dead
        assert not monitor.poll_once()
        samples = scrape(monitor)
        assert value(samples, "galpipe_database_up") == 0.0
        # The time of the last good poll stays; stale queue numbers do not.
        assert value(samples, "galpipe_monitor_last_success_timestamp_seconds") == good
        assert not names(samples) & {
            "galpipe_tasks",
            "galpipe_tasks_ready",
            "galpipe_breaker_state",
        }
        ready, detail = monitor.readiness()
        assert not ready
        assert detail.startswith("database unreachable")
        assert monitor.liveness() == (True, "ok")  # a failed poll still finished
    finally:
        dead.close()


def test_liveness_fails_when_no_poll_finishes() -> None:
    now = [0.0]

    def never_called() -> None:
        raise AssertionError("not polled in this test")

    monitor = Monitor(never_called, never_called, interval_s=15.0, clock=lambda: now[0])  # type: ignore[arg-type]
    now[0] = 50.0
    assert monitor.liveness() == (True, "ok")
    now[0] = 60.0
    alive, detail = monitor.liveness()
    assert not alive
    assert "no poll finished for 60 s" in detail


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _closed_port_url() -> str:
    return f"postgresql://galpipe@127.0.0.1:{_free_port()}/galpipe?connect_timeout=1"


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _start_monitor(database_url: str, port: int) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "GALPIPE_DATABASE_URL": database_url,
        "GALPIPE_METRICS_PORT": str(port),
        "GALPIPE_MONITOR_INTERVAL_SECONDS": "0.2",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "galpipe.cli", "monitor"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(url: str, accept: Callable[[int, str], bool], timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            status, body = _get(url)
        except OSError as exc:
            last = repr(exc)
        else:
            if accept(status, body):
                return body
            last = f"{status}: {body[:200]}"
        time.sleep(0.1)
    raise AssertionError(f"{url}: not as expected within {timeout_s} s; last: {last}")


@pytest.mark.parametrize("reachable", [True, False], ids=["database-up", "database-down"])
def test_galpipe_monitor_command_serves_metrics_and_probes(
    database_url: str, queue: TaskQueue, add_galaxies: Callable[..., list[int]], reachable: bool
) -> None:
    queue.enqueue("fetch", add_galaxies(5))
    port = _free_port()
    process = _start_monitor(database_url if reachable else _closed_port_url(), port)
    base = f"http://127.0.0.1:{port}"
    try:
        body = _wait_for(f"{base}/metrics", lambda s, b: s == 200 and "galpipe_database_up" in b)
        samples = parse(body)
        assert _get(f"{base}/healthz")[0] == 200
        status, detail = _get(f"{base}/readyz")
        if reachable:
            assert value(samples, "galpipe_database_up") == 1.0
            assert value(samples, "galpipe_tasks_ready", pipeline="fetch") == 5
            assert status == 200
        else:
            assert value(samples, "galpipe_database_up") == 0.0
            assert "galpipe_tasks" not in names(samples)
            assert status == 503
            assert "database unreachable" in detail
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        output = process.stdout.read() if process.stdout else ""
        print(output)


def test_oldest_ready_probe_reads_the_head_of_the_ready_index(
    pool: ConnectionPool, queue: TaskQueue, add_galaxies: Callable[..., list[int]]
) -> None:
    """Every poll runs it: one LIMIT 1 walk of ``tasks_ready`` per pipeline, not a queue scan."""
    from galpipe.db.queue import OLDEST_QUEUED_SQL

    ids = add_galaxies(20_000)
    queue.enqueue("fetch", ids)
    queue.enqueue("radon", ids[:5_000])
    with pool.connection() as conn:
        conn.execute("ANALYZE tasks")
        (plan,) = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + OLDEST_QUEUED_SQL,
            {"pipelines": ["fetch", "radon"], "ready_only": True},
        ).fetchone()
    nodes = []

    def walk(node: dict) -> None:
        nodes.append(node)
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    scans = [n for n in nodes if "Scan" in n["Node Type"] and n.get("Relation Name") == "tasks"]
    assert scans, nodes
    for scan in scans:
        assert scan["Node Type"] == "Index Scan", scan
        assert scan["Index Name"] == "tasks_ready", scan
        # One index entry per pipeline: the head of its FIFO.
        assert scan["Actual Rows"] == 1, scan
