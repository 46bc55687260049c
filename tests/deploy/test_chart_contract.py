"""The contract between the chart and the code it deploys.

- Every environment variable the chart sets is a setting ``Settings`` knows, every value parses,
  and every setting a command requires is provided.
- The values schema offers exactly the settings the chart does not set itself.
- Container ports, probes and Services use the port the settings' metrics server listens on.
- The autoscaler's depth query is the code's ``READY_DEPTH_CAPPED_SQL`` (one source) with each
  pipeline's cap, and the rendered query counts what ``TaskQueue.ready_depth`` counts up to that
  cap, index-only, on a migrated database.
"""

from __future__ import annotations

import json
import math
from dataclasses import fields
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from galpipe.db.queue import READY_DEPTH_CAPPED_SQL, TaskQueue, ready_depth_cap, ready_depth_query
from galpipe.settings import Settings
from tests.deploy.chart_render import (
    CHART_DIR,
    effective_values,
    of_kind,
    pod_specs,
    render,
    render_set,
    user_values,
)

SETTINGS_ENV = {f.metadata["env"]: f.name for f in fields(Settings)}
#: The settings the chart fills in from its own values (not from `config`).
CHART_OWNED = {
    "GALPIPE_DATABASE_URL",
    "GALPIPE_DATABASE_PASSWORD_FILE",
    "GALPIPE_OBJECT_STORE",
    "GALPIPE_S3_ENDPOINT_URL",
    "GALPIPE_METRICS_PORT",
    "GALPIPE_WORKER_ID",
    "GALPIPE_CONTROL_PORT",
    "GALPIPE_CONTROL_NAMESPACE",
    "GALPIPE_CONTROL_RELEASE",
    "GALPIPE_CONTROL_HELMRELEASE",
    "GALPIPE_CONTROL_SESSION_KEY",
    "GALPIPE_MORPHOLOGY_MODEL",
    "GALPIPE_MORPHOLOGY_DEVICE",
    "GALPIPE_RADON_DEVICE",
    "GALPIPE_PHOTOZ_MODEL",
}
#: What each `galpipe` subcommand the chart runs needs (Settings.require in its code path).
REQUIRED = {
    "fetch": {"database_url", "object_store"},
    "radon": {"database_url", "object_store"},
    "morphology worker": {"database_url", "object_store", "morphology_model"},
    "photoz worker": {"database_url", "object_store", "photoz_model"},
    "monitor": {"database_url"},
    "migrate": {"database_url"},
    "routes add fetch morphology": {"database_url"},
    "routes add fetch photoz": {"database_url"},
    "control": {"database_url", "control_session_key"},
}
#: Stand-ins for what the cluster fills in (Secret, downward API) when the pod starts.
_FROM_CLUSTER = {
    "secretKeyRef": "postgresql://galpipe:secret@db.example:5432/galpipe",
    "fieldRef": "galpipe-fetch-6d9f7c7b9-x2x4z",
}


def _environment(container: dict[str, Any]) -> dict[str, str]:
    env = {}
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            (source,) = var["valueFrom"]
            env[var["name"]] = _FROM_CLUSTER[source]
    return env


@pytest.mark.parametrize(
    "value_set",
    [
        "default",
        "dev",
        "prod",
        "s3-endpoint-and-digest",
        "morphology-gpu",
        "photoz",
        "morphology-and-photoz",
    ],
)
def test_every_variable_is_a_setting_and_every_required_one_is_set(value_set: str) -> None:
    for where, pod in pod_specs(render_set(value_set)).items():
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            names = [v["name"] for v in container["env"]]
            assert len(names) == len(set(names)), f"{where}: a variable is set twice"
            unknown = set(names) - SETTINGS_ENV.keys()
            assert not unknown, f"{where} sets variables galpipe does not read: {unknown}"
            settings = Settings.from_env(_environment(container))  # every value parses
            for name in REQUIRED[" ".join(container["command"][1:])]:
                settings.require(name)
            assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"], where


def test_schema_offers_exactly_the_settings_the_chart_does_not_set() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    offered = set(schema["definitions"]["settings"]["properties"])
    assert offered == SETTINGS_ENV.keys() - CHART_OWNED
    assert SETTINGS_ENV.keys() >= CHART_OWNED


def test_pipeline_batch_sizes_are_settings() -> None:
    """Each pipeline's claim size (Settings.batch_size) exists for every pipeline deployed."""
    for value_set in ("default", "dev", "prod", "morphology-and-photoz"):
        for name in of_kind(render_set(value_set), "ScaledObject"):
            pipeline = name.removeprefix("galpipe-")
            assert Settings().batch_size(pipeline) > 0


@pytest.mark.parametrize("port", [9100, 9464])
def test_ports_follow_the_metrics_port_setting(port: int) -> None:
    objects = render({"metricsPort": port})
    for where, pod in pod_specs(objects).items():
        (container,) = pod["containers"]
        settings = Settings.from_env(_environment(container))
        assert settings.metrics_port == port, where
        if where.startswith("Deployment/"):
            declared = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert declared["metrics"] == port, where
            assert set(declared) <= {"metrics", "http"}, where
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                assert container[probe]["httpGet"]["port"] == "metrics", where
    for service in of_kind(objects, "Service").values():
        exposed = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
        assert exposed["metrics"] == (port, "metrics")
    assert of_kind(objects, "ServiceMonitor")["galpipe"]["spec"]["endpoints"][0]["port"] == (
        "metrics"
    )


# -- the autoscaler's query ----------------------------------------------------------------------


def test_chart_query_file_is_the_codes_query() -> None:
    text = (CHART_DIR / "files" / "ready-depth.sql").read_text()
    assert text == READY_DEPTH_CAPPED_SQL.strip() + "\n"


def _rendered_queries(objects: list[dict[str, Any]]) -> dict[str, str]:
    return {
        o["spec"]["scaleTargetRef"]["name"].removeprefix("galpipe-"): o["spec"]["triggers"][0][
            "metadata"
        ]["query"]
        for o in objects
        if o["kind"] == "ScaledObject"
    }


def _cap(values: dict[str, Any], pipeline: str) -> int:
    scaling = values["pipelines"][pipeline]["autoscaling"]
    return ready_depth_cap(scaling["maxReplicaCount"], scaling["targetQueryValue"])


@pytest.mark.parametrize("value_set", ["default", "dev", "prod"])
def test_rendered_query_is_ready_depth_query_of_each_pipeline(value_set: str) -> None:
    queries = _rendered_queries(render_set(value_set))
    values = effective_values(user_values(value_set))
    assert sorted(queries) == ["fetch", "radon"]
    for pipeline, query in queries.items():
        assert query == ready_depth_query(pipeline, _cap(values, pipeline))


def test_chart_caps_each_pipeline_where_its_replicas_stop_growing() -> None:
    # A fractional target too: the chart's arithmetic (mulf, floor) must be the code's.
    values = {
        "pipelines": {
            "fetch": {"autoscaling": {"maxReplicaCount": 3, "targetQueryValue": 2.5}},
            "radon": {"autoscaling": {"maxReplicaCount": 7, "targetQueryValue": 100}},
        }
    }
    queries = _rendered_queries(render(values))
    assert "LIMIT 8 + (SELECT count(*)" in queries["fetch"]  # floor(3 x 2.5) + 1
    assert "LIMIT 701 + (SELECT count(*)" in queries["radon"]
    for pipeline, query in queries.items():
        assert query == ready_depth_query(pipeline, _cap(effective_values(values), pipeline))


@pytest.mark.parametrize(("max_replicas", "target"), [(3, 2000), (20, 20000), (3, 2.5), (1, 0.4)])
def test_capped_depth_asks_for_the_replicas_the_exact_depth_would(
    max_replicas: int, target: float
) -> None:
    """KEDA's replicas, ceil(depth / target) at most maxReplicaCount, from either depth."""
    cap = ready_depth_cap(max_replicas, target)

    def replicas(depth: int) -> int:
        return min(max_replicas, math.ceil(depth / target))

    at_max = math.floor(max_replicas * target)
    depths = {0, 1, at_max - 1, at_max, at_max + 1, at_max + 2, 10 * at_max + 7, 10**7}
    for depth in sorted(d for d in depths if d >= 0):
        assert replicas(min(depth, cap)) == replicas(depth), depth
    # The cap itself is visible: a count at the cap says "at least this many".
    assert cap > at_max


def test_ready_depth_query_refuses_what_it_cannot_inline() -> None:
    with pytest.raises(ValueError, match='pipeline name "x\'; DROP TABLE tasks; --"'):
        ready_depth_query("x'; DROP TABLE tasks; --", 10)
    with pytest.raises(ValueError, match="cap must be a positive integer, got '10; DROP'"):
        ready_depth_query("fetch", "10; DROP")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cap must be a positive integer, got 0"):
        ready_depth_query("fetch", 0)


def test_rendered_query_counts_ready_tasks_index_only(
    pool: ConnectionPool, queue: TaskQueue, add_galaxies: Any
) -> None:
    queries = _rendered_queries(render_set("default"))
    ids = add_galaxies(3000)
    queue.enqueue("fetch", ids)
    queue.enqueue("radon", ids[:40])
    # A long run's shape: most fetch tasks done, some retried later, a few running.
    queue.claim_batch("fetch", 2900, 30, "w")
    queue.complete(None, "fetch", "w", ids[:2850])
    delayed = ids[2850:2880]
    queue.retry(
        None, "fetch", "w", dict.fromkeys(delayed, "HTTP 503"), dict.fromkeys(delayed, 3600)
    )
    queue.pause("radon")
    with pool.connection() as conn:
        conn.execute("VACUUM ANALYZE tasks")
        counts = {p: conn.execute(q).fetchone() for p, q in queries.items()}
        plans = {
            p: "\n".join(r[0] for r in conn.execute("EXPLAIN " + q)) for p, q in queries.items()
        }
    # fetch: 3000 - 2900 claimed (the 30 retried are not due for an hour); radon is paused.
    assert counts == {"fetch": (100,), "radon": (0,)}
    assert counts["fetch"] == (queue.ready_depth("fetch"),)
    for pipeline, plan in plans.items():
        assert "Index Only Scan" in plan, plan
        assert "Seq Scan on tasks" not in plan, plan
        assert "Bitmap Heap Scan on tasks" not in plan, plan
        assert f"'{pipeline}'::text" in plan


def test_rendered_query_stops_at_the_pipelines_cap(
    pool: ConnectionPool, queue: TaskQueue, add_galaxies: Any
) -> None:
    values = {
        "pipelines": {"fetch": {"autoscaling": {"maxReplicaCount": 2, "targetQueryValue": 5}}}
    }
    query = _rendered_queries(render(values))["fetch"]
    ids = add_galaxies(40)
    queue.enqueue("fetch", ids)
    # Delayed retries ahead of the ready ones in FIFO order are not counted, capped or not.
    queue.claim_batch("fetch", 6, 30, "w")
    queue.retry(
        None, "fetch", "w", dict.fromkeys(ids[:6], "HTTP 503"), dict.fromkeys(ids[:6], 3600)
    )
    with pool.connection() as conn:
        (capped,) = conn.execute(query).fetchone() or (None,)
    assert queue.ready_depth("fetch") == 34
    assert capped == queue.ready_depth("fetch", cap=11) == 11  # 2 x 5 + 1
    queue.claim_batch("fetch", 30, 30, "w")
    with pool.connection() as conn:
        (below,) = conn.execute(query).fetchone() or (None,)
    assert below == queue.ready_depth("fetch") == 4  # exact below the cap


def test_rendered_query_is_one_statement_without_parameters(database_url: str) -> None:
    """KEDA runs the text as given: it must prepare as one statement taking no parameters."""
    (query,) = _rendered_queries(render({"pipelines": {"radon": {"enabled": False}}})).values()
    with psycopg.connect(database_url) as conn:
        conn.execute("SET TRANSACTION READ ONLY")  # and it writes nothing
        conn.execute(f"PREPARE depth AS {query}")
        row = conn.execute(
            "SELECT cardinality(parameter_types) FROM pg_prepared_statements WHERE name = 'depth'"
        ).fetchone()
        assert row == (0,)
        assert conn.execute("EXECUTE depth").fetchone() == (0,)
