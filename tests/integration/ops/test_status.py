"""``galpipe status`` against a real PostgreSQL: every task state, a pause, a breaker, a bucket."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta

import pytest
from psycopg_pool import ConnectionPool
from rich.console import Console

from galpipe.db.breaker import BreakerPolicy, CircuitBreaker
from galpipe.db.queue import TaskQueue
from galpipe.db.ratelimit import RateLimitPolicy, TokenBucket
from galpipe.ops.cli import register
from galpipe.ops.status import collect_status, render_status
from galpipe.pipelines.fetch import breaker_policy
from galpipe.settings import Settings

# Fetch: 3 queued (head enqueued 10 min ago), 2 running, 5 done (3 of them in the last minute),
# 1 failed, 1 skipped. Radon: 2 queued, 1 done long ago; paused.
FETCH_IDS = range(1, 13)
RADON_IDS = range(1, 4)


@pytest.fixture
def settings(database_url: str, monkeypatch) -> Settings:
    monkeypatch.setenv("GALPIPE_DATABASE_URL", database_url)
    monkeypatch.setenv("GALPIPE_BREAKER_FAILURES", "2")
    monkeypatch.setenv("GALPIPE_BREAKER_COOLDOWN_SECONDS", "300")
    return Settings.from_env()


@pytest.fixture
def busy(pool: ConnectionPool, queue: TaskQueue, add_galaxies, settings: Settings):
    add_galaxies(12)
    queue.enqueue("fetch", FETCH_IDS)
    queue.enqueue("radon", RADON_IDS)
    with pool.connection() as conn:
        conn.execute(
            """
            UPDATE tasks SET
                state = (CASE WHEN source_id <= 3 THEN 'queued'
                              WHEN source_id <= 5 THEN 'running'
                              WHEN source_id <= 10 THEN 'done'
                              WHEN source_id = 11 THEN 'failed'
                              ELSE 'skipped' END)::task_state,
                lease_owner = CASE WHEN source_id IN (4, 5) THEN 'w1' END,
                lease_expires = CASE WHEN source_id IN (4, 5) THEN now() + interval '1 min' END,
                enqueued_at = now() - (11 - source_id) * interval '1 min',
                updated_at = CASE WHEN source_id IN (6, 7) THEN now() - interval '5 min'
                                  ELSE now() - interval '2 s' END
            WHERE pipeline = 'fetch'
            """
        )
        conn.execute(
            "UPDATE tasks SET state = 'done', updated_at = now() - interval '1 hour' "
            "WHERE pipeline = 'radon' AND source_id = 3"
        )
        # The statements above completed every task now; the completions the rates read
        # (task_completions, one row per completing statement) at the times set above.
        conn.execute("DELETE FROM task_completions")
        conn.execute(
            "INSERT INTO task_completions (pipeline, at, n) VALUES "
            "('fetch', now() - interval '5 min', 2), ('fetch', now() - interval '2 s', 3), "
            "('radon', now() - interval '1 hour', 1)"
        )
    queue.pause("radon", "new algo_version being deployed")
    breaker = CircuitBreaker(pool, "fetch", breaker_policy(settings))
    breaker.record_failure("w1", "HTTP 503 from the cutout service")
    breaker.record_failure("w1", "HTTP 503 from the cutout service")
    CircuitBreaker(pool, "other").record_success("w1")
    bucket = TokenBucket(pool, "fetch", RateLimitPolicy(rate=5.0, burst=10.0), sleep=lambda s: None)
    bucket.configure()
    bucket.acquire(25)  # 10 of the burst, then 15 reserved ahead: ~3 s of backlog
    return pool


def test_counts_ages_and_rates_per_pipeline(busy, settings) -> None:
    status = collect_status(busy, settings)
    fetch, radon = status.pipelines
    assert (fetch.name, radon.name) == ("fetch", "radon")
    assert fetch.counts == {"queued": 3, "running": 2, "done": 5, "failed": 1, "skipped": 1}
    assert radon.counts == {"queued": 2, "running": 0, "done": 1, "failed": 0, "skipped": 0}
    assert fetch.oldest_queued_seconds == pytest.approx(600, abs=30)
    assert radon.oldest_queued_seconds is not None
    assert radon.oldest_queued_seconds < 30
    assert fetch.done_last_minute == 3
    assert fetch.rate_per_second == pytest.approx(3 / 60)
    assert (radon.done_last_minute, radon.rate_per_second) == (0, 0.0)


def test_pause_flags_with_reason(busy, settings) -> None:
    fetch, radon = collect_status(busy, settings).pipelines
    assert not fetch.paused
    assert fetch.pause_reason is None
    assert radon.paused
    assert radon.pause_reason == "new algo_version being deployed"
    assert radon.paused_since is not None


def test_a_paused_pipeline_without_tasks_is_listed(pool, queue, settings) -> None:
    queue.pause("morphology", "not deployed yet")
    (only,) = collect_status(pool, settings).pipelines
    assert (only.name, only.paused, only.oldest_queued_seconds) == ("morphology", True, None)
    assert sum(only.counts.values()) == 0


def test_breakers_and_rate_limits(busy, settings) -> None:
    status = collect_status(busy, settings)
    breakers = {b.name: b for b in status.breakers}
    assert breakers["fetch"].state == "open"
    assert breakers["fetch"].reopens_at is not None
    assert breakers["fetch"].last_error == "HTTP 503 from the cutout service"
    assert breakers["other"].state == "closed"
    (bucket,) = status.rate_limits
    assert (bucket.name, bucket.rate, bucket.burst, bucket.granted) == ("fetch", 5.0, 10.0, 25)
    assert bucket.tokens < -10
    assert bucket.backlog_seconds == pytest.approx(3.0, abs=0.5)


def test_each_breaker_is_read_with_the_policy_of_the_pipeline_it_serves(
    pool: ConnectionPool, settings: Settings
) -> None:
    # The GALPIPE_BREAKER_* settings (300 s cooldown) are the fetch pipeline's; a breaker no
    # pipeline configures ("other") is read with the default policy (30 s), not with fetch's.
    for name in ("fetch", "other"):
        tripping = CircuitBreaker(pool, name, BreakerPolicy(failures=1))
        tripping.record_failure("w1", "HTTP 503")
    breakers = {b.name: b for b in collect_status(pool, settings).breakers}
    for name, cooldown in (("fetch", 300.0), ("other", BreakerPolicy().cooldown_seconds)):
        status = breakers[name]
        assert status.state == "open"
        assert status.opened_at is not None
        assert status.reopens_at == status.opened_at + timedelta(seconds=cooldown), name


def test_status_writes_nothing(busy, settings) -> None:
    def snapshot() -> list[tuple]:
        with busy.connection() as conn:
            return conn.execute(
                "SELECT (SELECT count(*) FROM breakers), (SELECT count(*) FROM rate_limits), "
                "(SELECT max(updated_at) FROM tasks), (SELECT max(updated_at) FROM breakers)"
            ).fetchall()

    before = snapshot()
    collect_status(busy, settings)
    assert snapshot() == before


def _run(argv: list[str], settings: Settings) -> None:
    """Run ``galpipe ARGV``'s handler (the ``galpipe`` command's sub-command) with ``settings``."""
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    args.handler(args, settings)


def test_json_output(busy, settings, capsys) -> None:
    _run(["status", "--json"], settings)
    report = json.loads(capsys.readouterr().out)
    assert report["pipelines"]["fetch"]["counts"]["skipped"] == 1
    assert report["pipelines"]["fetch"]["done_last_minute"] == 3
    assert report["pipelines"]["radon"]["paused"] is True
    assert report["pipelines"]["radon"]["pause_reason"] == "new algo_version being deployed"
    assert report["breakers"]["fetch"]["state"] == "open"
    assert report["rate_limits"]["fetch"]["backlog_seconds"] > 2
    assert report["rate_window_seconds"] == 60


def test_tables_show_every_part(busy, settings) -> None:
    console = Console(record=True, width=220)
    render_status(collect_status(busy, settings), console)
    text = console.export_text()
    for expected in (
        "fetch",
        "radon",
        "skipped",
        "10 min",  # oldest queued fetch task
        "paused: new algo_version being deployed",
        "open",
        "HTTP 503 from the cutout service",
        "Rate limits",
    ):
        assert expected in text, expected


def test_empty_database(pool, settings, capsys) -> None:
    _run(["status"], settings)
    out = capsys.readouterr().out
    assert "Circuit breakers: none used yet" in out
    assert "Rate limits: none configured yet" in out
