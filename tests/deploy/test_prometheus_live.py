"""A real Prometheus scrapes a running local stack; every dashboard query and alert evaluates.

The stack is the demo's, smaller and throttled so that it is still working while Prometheus
watches (about 30 s): an embedded PostgreSQL (the session's test server), the synthetic sky
server, one fetch worker, one radon worker and ``galpipe monitor``, each serving ``/metrics``
on a loopback port. The two kube-state-metrics series the dashboards and alerts use (replicas,
restarts) and KEDA's scaler errors cannot come from a local stack; a static text exposition on
loopback stands in for kube-state-metrics and KEDA's operator. ``galpipe control`` runs for
real (its app served by uvicorn, its ``/metrics`` by the runtime's health server, composed as
``run_from_settings`` composes them)
over the test database and the fake Kubernetes API (tests/kube_fake.py), the one part that
cannot run here; the test drives it through its HTTP API: failed console logins, reviews, an
action the cluster denies and, once the pipelines' work is done, a pause of fetch. Prometheus
(Debian's package) scrapes everything every second, loads the chart's rules file and evaluates
it; then every panel query of every dashboard must return series over the run, every alert
expression must evaluate without error, every series an alert reads must exist, and the
control service's counters must have grown by what the test did.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

from galpipe.catalog import ingest_catalog
from galpipe.control.actions import ControlActions
from galpipe.control.app import create_app
from galpipe.control.auth import Authenticator, Authorizer
from galpipe.control.kube import Identity
from galpipe.control.service import ControlService, OverrideCollector
from galpipe.control.sessions import SessionSigner
from galpipe.db import monitor as monitor_db
from galpipe.db.connection import open_pool
from galpipe.db.queue import TaskQueue
from galpipe.demo.processes import ChildProcess, start_sky, stop_all, worker_environment
from galpipe.runtime import metrics
from galpipe.runtime.service import serve
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
from tests.integration.control.cluster import NAMESPACE, seeded_objects
from tests.kube_fake import FakeKube
from tests.probes import counts_now

N_GALAXIES = 100
FETCH_RATE = 10.0  # requests/s: the fetch stage takes ~10 s, so Prometheus sees it working
RUN_LIMIT_S = 45.0
SCRAPE_S = 1
RATE_INTERVAL_S = 5

#: Stand-in for kube-state-metrics and KEDA's operator: the series a cluster would have for this
#: release.
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
# HELP keda_scaler_detail_errors_total The total number of errors encountered for each scaler.
# TYPE keda_scaler_detail_errors_total counter
keda_scaler_detail_errors_total{namespace="galpipe",scaledObject="galpipe-radon",\
scaler="postgresqlScaler",triggerIndex="0",metric="s0-postgresql",type="scaledobject"} 0
"""


#: Bearer tokens the fake API server accepts, and whom they belong to.
OPERATOR_TOKEN = "op-" + secrets.token_urlsafe(24)
VIEWER_TOKEN = "view-" + secrets.token_urlsafe(24)
KUBE_TOKENS = {
    OPERATOR_TOKEN: Identity("oscar", ("galpipe-operators", "system:authenticated"), uid="u-o"),
    VIEWER_TOKEN: Identity("vera", ("galpipe-viewers", "system:authenticated"), uid="u-v"),
}
KUBE_GRANTS = {"galpipe-operators": {"get", "list", "pause"}, "galpipe-viewers": {"get", "list"}}
#: How long ago the test's pause began, set in its database row: past the threshold of
#: GalpipeOverrideActive in the rules file (14400 s), so its expression is true while
#: Prometheus watches (its ``for`` of 5 minutes keeps it pending).
OVERRIDE_AGE_S = 5 * 3600
#: The control service's samples the test changes, and by how much at least.
CONTROL_GROWTH: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {
    ("galpipe_control_login_failures_total", ()): 2,
    (
        "galpipe_control_reviews_total",
        (("review", "token"), ("outcome", "denied"), ("cached", "false")),
    ): 2,
    (
        "galpipe_control_reviews_total",
        (("review", "access"), ("outcome", "denied"), ("cached", "false")),
    ): 1,
    (
        "galpipe_control_actions_total",
        (("action", "hold"), ("pipeline", "radon"), ("result", "denied")),
    ): 1,
    (
        "galpipe_control_actions_total",
        (("action", "pause"), ("pipeline", "fetch"), ("result", "ok")),
    ): 1,
}


@dataclass
class ControlPlane:
    """``galpipe control`` on loopback: its API, its metrics port and its registry."""

    url: str
    metrics_port: int
    registry: CollectorRegistry

    def call(self, method: str, path: str, token: str | None, body: dict[str, Any]) -> int:
        """One JSON request to the API; the HTTP status."""
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(
            f"{self.url}/api/v1{path}",
            data=json.dumps(body).encode() if method != "GET" else None,
            method=method,
            headers=headers,
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def value(self, name: str, labels: tuple[tuple[str, str], ...]) -> float:
        return self.registry.get_sample_value(name, dict(labels)) or 0.0


def _control_counters() -> list[Counter]:
    """The counters ``galpipe control`` increments (galpipe.runtime.metrics)."""
    return [
        metric
        for metric in vars(metrics).values()
        if isinstance(metric, Counter)
        and next(iter(metric.describe())).name.startswith("galpipe_control_")
    ]


@contextmanager
def _control_plane(database_url: str, cluster: list[dict[str, Any]]) -> Iterator[ControlPlane]:
    """``galpipe control`` as ``run_from_settings`` composes it, the fake API server under it.

    prometheus_client's metrics are process-wide, and this process holds every galpipe metric
    (and what earlier tests counted): its ``/metrics`` serves a registry of the control
    service's own counters and its override collector, so every series scraped from it is the
    control service's, and the test compares the counters with their values before it acted.
    """
    pool = open_pool(database_url, max_size=2, name="galpipe-control")
    kube = FakeKube(cluster, tokens=KUBE_TOKENS, grants=KUBE_GRANTS, namespace=NAMESPACE)
    actions = ControlActions(
        pool, kube, namespace=NAMESPACE, release="galpipe", helm_release="galpipe"
    )
    app = create_app(
        actions,
        Authenticator(kube),
        Authorizer(kube, NAMESPACE),
        SessionSigner(secrets.token_urlsafe(32)),
    )

    def ping() -> None:
        with pool.connection(timeout=2.0) as conn:
            monitor_db.ping(conn)

    api_port, metrics_port = _free_port(), _free_port()
    service = ControlService(app, ping, host="127.0.0.1", port=api_port)
    registry = CollectorRegistry()
    for counter in _control_counters():
        registry.register(counter)
    # Served from a thread, serve() installs no signal handlers: request_stop() ends it.
    thread = threading.Thread(
        target=serve,
        args=(service,),
        kwargs={
            "port": metrics_port,
            "host": "127.0.0.1",
            "collectors": [OverrideCollector(actions)],
            "registry": registry,
        },
        name="galpipe-control",
        daemon=True,
    )
    thread.start()
    try:
        _wait_until(
            lambda: (
                urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=2).status
                == 200
            ),
            30,
            "galpipe control ready",
        )
        yield ControlPlane(f"http://127.0.0.1:{api_port}", metrics_port, registry)
    finally:
        service.request_stop()
        thread.join(30)
        pool.close()
    assert kube.invalid_bodies == []


def _act_before_the_run(control: ControlPlane) -> None:
    """Failed logins, reviews allowed (then cached) and denied, an action denied."""
    assert control.call("POST", "/session", None, {"token": "not-a-token"}) == 401
    for _ in range(2):
        assert control.call("GET", "/overview", VIEWER_TOKEN, {}) == 200
    hold = {"replicas": 1, "reason": "a viewer may not hold"}
    assert control.call("POST", "/pipelines/radon/hold", VIEWER_TOKEN, hold) == 403


def _pause_fetch(control: ControlPlane, pool: ConnectionPool) -> None:
    """Pause fetch through the API once its work is done, begun OVERRIDE_AGE_S ago."""
    assert control.call("POST", "/session", None, {"token": "still-not-a-token"}) == 401
    body = {"reason": "the override alert must see a pause"}
    assert control.call("POST", "/pipelines/fetch/pause", OPERATOR_TOKEN, body) == 200
    with pool.connection() as conn:
        conn.execute(
            "UPDATE pipeline_control SET updated_at = now() - make_interval(secs => %s) "
            "WHERE pipeline = 'fetch' AND paused",
            (OVERRIDE_AGE_S,),
        )


def _override_alert(api: PrometheusAPI) -> list[dict[str, Any]]:
    """GalpipeOverrideActive's alerts (pending or firing) as Prometheus holds them now."""
    alerts = api.get("/api/v1/alerts")["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == "GalpipeOverrideActive"]


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
    control: ControlPlane
    #: The control service's CONTROL_GROWTH samples before the test acted.
    control_before: dict[tuple[str, tuple[tuple[str, str], ...]], float]


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


def _fetch_finished(pool: ConnectionPool) -> bool:
    fetch = counts_now(pool).get("fetch", {})
    return sum(fetch.values()) > 0 and fetch.get("queued", 0) + fetch.get("running", 0) == 0


@pytest.fixture(scope="module")
def stack_run(
    require_tool: Callable[[str], str],
    pg_server: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[StackRun]:
    """Run the stack under Prometheus until its work is done (or RUN_LIMIT_S), then stop it."""
    prometheus_bin = require_tool("prometheus")
    # The chart's render (seconds) for the fake API server, while the stack is set up.
    rendering = ThreadPoolExecutor(max_workers=1)
    cluster = rendering.submit(seeded_objects)
    rendering.shutdown(wait=False)
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
    stack = ExitStack()  # closed in the finally below
    control = stack.enter_context(_control_plane(database_url, cluster.result()))
    control_before = {key: control.value(*key) for key in CONTROL_GROWTH}
    targets = {f"galpipe-{name}": port for name, port in ports.items()}
    targets["kube-state-metrics"] = int(kube_state_metrics.server_address[1])
    targets["galpipe-control"] = control.metrics_port
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
        _act_before_the_run(control)
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
        paused = False
        while time.monotonic() < deadline and not _terminal(pool):
            dead = [c.name for c in children if not c.alive]
            assert not dead, f"{dead} exited early; see the logs in {work}"
            if not paused and _fetch_finished(pool):
                _pause_fetch(control, pool)  # while radon still works
                paused = True
            time.sleep(0.5)
        if not paused:
            _pause_fetch(control, pool)
        _wait_until(lambda: bool(_override_alert(api)), 20, "GalpipeOverrideActive pending")
        time.sleep(3 * SCRAPE_S + 1)  # the last state is scraped and the rules evaluated
        yield StackRun(api, started, time.time(), control, control_before)
    finally:
        stop_all(children)
        prometheus.terminate()
        prometheus.wait(timeout=30)
        prometheus_log.close()
        kube_state_metrics.shutdown()
        stack.close()
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


def test_control_series_are_what_the_real_service_counted(stack_run: StackRun) -> None:
    api = stack_run.prometheus
    at = f"{stack_run.ended:.3f}"
    for key, growth in CONTROL_GROWTH.items():
        name, labels = key
        # Every galpipe process exports the unlabelled counter (0): the control service's own.
        matchers = [("job", "galpipe-control"), *labels]
        selector = name + "{" + ",".join(f'{k}="{v}"' for k, v in matchers) + "}"
        (series,) = api.get("/api/v1/query", query=selector, time=at)["result"]
        assert float(series["value"][1]) >= stack_run.control_before[key] + growth, selector
    # The pause is exported with its start as the database holds it, and the alert is pending
    # (its expression true, its `for` not yet over).
    override = (
        'galpipe_control_override_active_since_timestamp_seconds{pipeline="fetch",override="pause"}'
    )
    (series,) = api.get("/api/v1/query", query=override, time=at)["result"]
    assert abs(float(series["value"][1]) - (stack_run.ended - OVERRIDE_AGE_S)) < 120
    alerts = _override_alert(api)
    assert [(a["labels"]["pipeline"], a["labels"]["override"]) for a in alerts] == [
        ("fetch", "pause")
    ]
    assert alerts[0]["state"] == "pending"
