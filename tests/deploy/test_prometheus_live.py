"""A real Prometheus scrapes a running local stack; every dashboard query and alert evaluates.

The stack is the demo's, smaller and throttled so that it is still working while Prometheus
watches (about 30 s): an embedded PostgreSQL (the session's test server), the synthetic sky
server, one fetch worker, one radon worker and ``galpipe monitor``, each serving ``/metrics``
on a loopback port. The two kube-state-metrics series the dashboards and alerts use (replicas,
restarts) cannot come from a local stack; a static text exposition on loopback stands in for
kube-state-metrics. ``galpipe control`` needs a Kubernetes API server to act; its series are
served by a stand-in built from the metric definitions it exports (galpipe.runtime.metrics:
names, types, label names), with a few operator actions, reviews and one active pause.
Prometheus (Debian's package) scrapes everything every second, loads the chart's rules file
and evaluates it; then every panel query of every dashboard must return
series over the run, every alert expression must evaluate without error, and every series an
alert reads must exist.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

from galpipe.catalog import ingest_catalog
from galpipe.db.connection import open_pool
from galpipe.db.queue import TaskQueue
from galpipe.demo.processes import ChildProcess, start_sky, stop_all, worker_environment
from galpipe.runtime import metrics
from galpipe.science.core import RadonConfig
from galpipe.science.radon import RadonOperator, default_cache_dir
from galpipe.synthetic.catalog import make_truths, truth_table
from tests.conftest import TEMPLATE_DB
from tests.deploy.observability import (
    RULES_FILE,
    alert_rules,
    dashboard_queries,
    grafana_variables,
    metric_selectors,
    substitute,
)
from tests.probes import counts_now

N_GALAXIES = 100
FETCH_RATE = 10.0  # requests/s: the fetch stage takes ~10 s, so Prometheus sees it working
RUN_LIMIT_S = 45.0
SCRAPE_S = 1
RATE_INTERVAL_S = 5

#: Stand-in for kube-state-metrics: the series a cluster would have for this release.
KUBE_STATE_METRICS_TEXT = """\
# HELP kube_deployment_status_replicas The number of replicas per deployment.
# TYPE kube_deployment_status_replicas gauge
kube_deployment_status_replicas{namespace="galpipe",deployment="galpipe-fetch"} 2
kube_deployment_status_replicas{namespace="galpipe",deployment="galpipe-radon"} 1
kube_deployment_status_replicas{namespace="galpipe",deployment="galpipe-monitor"} 1
# HELP kube_pod_container_status_restarts_total The number of container restarts per container.
# TYPE kube_pod_container_status_restarts_total counter
kube_pod_container_status_restarts_total{namespace="galpipe",\
pod="galpipe-fetch-7d9f-abcde",container="fetch"} 0
kube_pod_container_status_restarts_total{namespace="galpipe",\
pod="galpipe-radon-5c8b-fghij",container="radon"} 1
"""


class _ControlStandIn(Collector):
    """The control service's series, from its metric definitions, growing while scraped."""

    def __init__(self, override_since: float) -> None:
        self.override_since = override_since
        self.started = time.monotonic()

    def collect(self) -> Iterator[Metric]:
        grown = 1.0 + (time.monotonic() - self.started)
        samples: list[tuple[Counter, dict[tuple[str, ...], float]]] = [
            (metrics.CONTROL_LOGIN_FAILURES, {(): grown}),
            (
                metrics.CONTROL_REVIEWS,
                {("token", "allowed", "false"): grown, ("access", "denied", "true"): 1.0},
            ),
            (
                metrics.CONTROL_ACTIONS,
                {("pause", "fetch", "ok"): 1.0, ("hold", "radon", "denied"): grown},
            ),
        ]
        for counter, values in samples:
            (described,) = counter.describe()
            family = CounterMetricFamily(
                described.name, described.documentation, labels=counter._labelnames
            )
            for labels, value in values.items():
                family.add_metric(list(labels), value)
            yield family
        overrides: dict[tuple[str, ...], float] = {("fetch", "pause"): self.override_since}
        yield metrics.CONTROL_OVERRIDE_ACTIVE_SINCE.family(overrides)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _StaticExposition(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = KUBE_STATE_METRICS_TEXT.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class PrometheusAPI:
    """Prometheus's HTTP API on loopback."""

    url: str

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query_range(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        """Series of ``expr`` over [start, end]; raises (HTTP 400/422) if it does not evaluate."""
        data = self.get(
            "/api/v1/query_range",
            query=expr,
            start=f"{start:.3f}",
            end=f"{end:.3f}",
            step=f"{SCRAPE_S}s",
        )
        return data["result"]  # type: ignore[no-any-return]


@dataclass
class StackRun:
    prometheus: PrometheusAPI
    started: float
    ended: float


def _prometheus_config(targets: dict[str, int], path: Path) -> None:
    config = {
        "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
        "rule_files": [str(RULES_FILE)],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
            for job, port in targets.items()
        ],
    }
    path.write_text(yaml.safe_dump(config))


def _wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s")


def _terminal(pool: ConnectionPool) -> bool:
    counts = counts_now(pool)
    radon = counts.get("radon", {})
    fetch = counts.get("fetch", {})
    return (
        fetch.get("queued", 0) + fetch.get("running", 0) == 0
        and sum(radon.values()) > 1
        and radon.get("queued", 0) + radon.get("running", 0) == 0
    )


@pytest.fixture(scope="module")
def stack_run(
    require_tool: Callable[[str], str],
    pg_server: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[StackRun]:
    """Run the stack under Prometheus until its work is done (or RUN_LIMIT_S), then stop it."""
    prometheus_bin = require_tool("prometheus")
    work = tmp_path_factory.mktemp("live")
    admin = pg_server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS galpipe_live")
        conn.execute(f"CREATE DATABASE galpipe_live TEMPLATE {TEMPLATE_DB}")
    database_url = make_conninfo(admin, dbname="galpipe_live")
    pool = open_pool(database_url, max_size=2)

    catalog = work / "catalog.ecsv"
    truth = truth_table(make_truths(N_GALAXIES, seed=7))
    truth.write(catalog, format="ascii.ecsv")
    ingest_catalog(pool, catalog, keep=[], catalog_name="live")
    # A radon task for a galaxy not fetched yet fails at once ("no cutouts row"), so the
    # failure series the alerts read exist, as they would in any real run.
    TaskQueue(pool).enqueue("radon", [int(truth["source_id"][-1])])

    # Build the Radon operator now if it is not cached yet (minutes on a fresh machine), so the
    # radon worker measures while Prometheus watches instead of building it.
    config = RadonConfig()
    RadonOperator.load_or_build(
        config.size, np.asarray(config.angles_deg), config.order, cache_dir=default_cache_dir()
    )

    ports = {name: _free_port() for name in ("fetch", "radon", "monitor")}
    kube_state_metrics = ThreadingHTTPServer(("127.0.0.1", 0), _StaticExposition)
    threading.Thread(target=kube_state_metrics.serve_forever, daemon=True).start()
    control_registry = CollectorRegistry(auto_describe=False)
    control_registry.register(_ControlStandIn(override_since=time.time() - 600))
    control_port = _free_port()
    control_server, _ = start_http_server(control_port, "127.0.0.1", control_registry)
    targets = {f"galpipe-{name}": port for name, port in ports.items()}
    targets["kube-state-metrics"] = int(kube_state_metrics.server_address[1])
    targets["galpipe-control"] = control_port
    _prometheus_config(targets, work / "prometheus.yml")
    web_port = _free_port()
    prometheus_log = open(work / "prometheus.log", "w")  # noqa: SIM115 - closed below
    prometheus = subprocess.Popen(
        [
            prometheus_bin,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{web_port}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=prometheus_log,
        stderr=subprocess.STDOUT,
    )
    api = PrometheusAPI(f"http://127.0.0.1:{web_port}")
    children: list[ChildProcess] = []
    try:
        sky = start_sky(catalog, work, cache_size=10_000)
        children.append(sky)
        _wait_until(
            lambda: urllib.request.urlopen(f"{api.url}/-/ready", timeout=2).status == 200,
            30,
            "prometheus ready",
        )
        cutout_url = sky.wait_until_ready(timeout_s=120)
        env = worker_environment(
            os.environ,
            database_url=database_url,
            object_store=(work / "objects").as_uri(),
            cutout_url=cutout_url,
            fetch_rate=FETCH_RATE,
            radon_cache_dir=default_cache_dir(),
        )
        extra = {
            "fetch": {},
            "radon": {"GALPIPE_RADON_BATCH_SIZE": "16"},
            "monitor": {"GALPIPE_MONITOR_INTERVAL_SECONDS": "1"},
        }
        started = time.time()
        for name, port in ports.items():
            children.append(
                ChildProcess(
                    name,
                    [name],
                    work / f"{name}.log",
                    {
                        **env,
                        **extra[name],
                        "GALPIPE_METRICS_PORT": str(port),
                        "GALPIPE_WORKER_ID": f"live-{name}",
                    },
                )
            )
        deadline = time.monotonic() + RUN_LIMIT_S
        while time.monotonic() < deadline and not _terminal(pool):
            dead = [c.name for c in children if not c.alive]
            assert not dead, f"{dead} exited early; see the logs in {work}"
            time.sleep(0.5)
        time.sleep(3 * SCRAPE_S + 1)  # the last state is scraped and the rules evaluated
        yield StackRun(api, started, time.time())
    finally:
        stop_all(children)
        prometheus.terminate()
        prometheus.wait(timeout=30)
        prometheus_log.close()
        kube_state_metrics.shutdown()
        control_server.shutdown()
        pool.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS galpipe_live WITH (FORCE)")


def test_prometheus_scraped_every_target(stack_run: StackRun) -> None:
    targets = stack_run.prometheus.get("/api/v1/targets")["activeTargets"]
    health = {t["labels"]["job"]: (t["health"], t["lastError"]) for t in targets}
    jobs = (
        "galpipe-fetch",
        "galpipe-radon",
        "galpipe-monitor",
        "galpipe-control",
        "kube-state-metrics",
    )
    assert health == dict.fromkeys(jobs, ("up", ""))


def test_prometheus_loaded_and_evaluated_every_alert_rule(stack_run: StackRun) -> None:
    groups = stack_run.prometheus.get("/api/v1/rules")["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(rules) == {r["alert"] for r in alert_rules()}
    for name, rule in rules.items():
        assert rule["health"] == "ok", f"{name}: {rule.get('lastError')}"
        assert rule["lastEvaluation"] != "0001-01-01T00:00:00Z", f"{name} never evaluated"


@pytest.mark.parametrize(
    ("where", "ref", "expr"),
    dashboard_queries(),
    ids=[f"{w} {r}" for w, r, _ in dashboard_queries()],
)
def test_dashboard_query_returns_series(
    stack_run: StackRun, where: str, ref: str, expr: str
) -> None:
    variables = grafana_variables(
        range_s=int(stack_run.ended - stack_run.started) + 1, rate_interval_s=RATE_INTERVAL_S
    )
    query = substitute(expr, variables)
    series = stack_run.prometheus.query_range(query, stack_run.started, stack_run.ended)
    assert series, f"{where} {ref}: no series for {query}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_expression_evaluates_and_its_series_exist(
    stack_run: StackRun, rule: dict[str, Any]
) -> None:
    api = stack_run.prometheus
    api.query_range(rule["expr"], stack_run.started, stack_run.ended)  # evaluates, no error
    for _, selector in metric_selectors(rule["expr"]):
        series = api.query_range(selector, stack_run.started, stack_run.ended)
        assert series, f"{rule['alert']}: no series for {selector}"
