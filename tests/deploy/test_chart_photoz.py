"""The photo-z pipeline in the chart: off by default; on, a CPU worker like radon's that loads a
named pixel-redshift model and scales on its own queue.

- Disabled (the default), the chart renders nothing of it, and the migrate Job only migrates.
- Enabled, it gets every per-pipeline object (Deployment, ScaledObject, ServiceAccount, metrics
  Service, PodDisruptionBudget, NetworkPolicy), each valid against the Kubernetes or KEDA
  schema, with radon's probes, security context and settings; its trigger counts the photoz
  queue; the migrate Job adds the fetch → photoz route after migrating (and after morphology's
  route when both are on).
- It never asks for a GPU: the values have no ``gpu`` block and the schema refuses one.
- A missing or malformed model version fails the render, naming the value.
- The alert rules and dashboards select pipelines by label, never by a list of names, so they
  cover photoz as they cover every pipeline.
"""

from __future__ import annotations

import re
from typing import Any

import helm_python as helm
import pytest

from galpipe.db.queue import ready_depth_cap, ready_depth_query
from galpipe.db.routes import PIPELINES
from galpipe.settings import Settings
from tests.deploy.chart_render import (
    effective_values,
    of_kind,
    render,
    render_set,
    user_values,
    validate_object,
)
from tests.deploy.observability import alert_rules, dashboard_queries

NAME = "galpipe-photoz"
VERSION = "fedcba9876543210" * 4
#: The kinds every enabled pipeline gets (templates iterate over `pipelines`).
PIPELINE_KINDS = (
    "Deployment",
    "ScaledObject",
    "ServiceAccount",
    "Service",
    "PodDisruptionBudget",
    "NetworkPolicy",
)
#: A label matcher in PromQL: ``label`` ``op`` ``"value"``.
_MATCHER = re.compile(r'\b(pipeline|deployment)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def _pod(objects: list[dict[str, Any]], name: str = NAME) -> dict[str, Any]:
    spec: dict[str, Any] = of_kind(objects, "Deployment")[name]["spec"]["template"]["spec"]
    return spec


def _env(container: dict[str, Any]) -> dict[str, str]:
    """The container's literal variables (those from a Secret or the downward API left out)."""
    return {v["name"]: v["value"] for v in container["env"] if "value" in v}


def _mebibytes(quantity: str) -> float:
    """A Kubernetes memory quantity with a binary suffix (``512Mi``, ``2Gi``) in MiB."""
    number, unit = re.fullmatch(r"([0-9.]+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return float(number) * (1024 if unit == "Gi" else 1)


def _photoz(**values: Any) -> dict[str, Any]:
    return {"pipelines": {"photoz": {"enabled": True, "modelVersion": VERSION, **values}}}


def _migrate_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    job = of_kind(objects, "Job")["galpipe-migrate"]
    validate_object(job)
    pod: dict[str, Any] = job["spec"]["template"]["spec"]
    return pod


def test_disabled_by_default_renders_nothing_of_it() -> None:
    assert effective_values({})["pipelines"]["photoz"]["enabled"] is False
    objects = render_set("default")
    named = [f"{o['kind']}/{o['metadata']['name']}" for o in objects if "photoz" in str(o)]
    assert named == []
    pod = _migrate_pod(objects)
    assert "initContainers" not in pod
    assert [c["command"] for c in pod["containers"]] == [["galpipe", "migrate"]]


def test_enabled_renders_every_pipeline_object_valid() -> None:
    objects = render_set("photoz")
    for kind in PIPELINE_KINDS:
        obj = of_kind(objects, kind).get(NAME)
        assert obj is not None, f"no {kind}/{NAME}"
        validate_object(obj)
    # Only its own objects are added: the other pipelines are rendered as before.
    base = {(o["kind"], o["metadata"]["name"]) for o in render_set("default")}
    added = {(o["kind"], o["metadata"]["name"]) for o in objects} - base
    assert added == {(kind, NAME) for kind in PIPELINE_KINDS}


def test_scaled_object_counts_the_photoz_queue() -> None:
    objects = render_set("photoz")
    scaled = of_kind(objects, "ScaledObject")[NAME]["spec"]
    values = effective_values(user_values("photoz"))["pipelines"]["photoz"]
    assert scaled["scaleTargetRef"]["name"] == NAME
    assert scaled["minReplicaCount"] == values["autoscaling"]["minReplicaCount"] == 0
    assert scaled["maxReplicaCount"] == values["autoscaling"]["maxReplicaCount"]
    assert scaled["fallback"]["replicas"] <= scaled["maxReplicaCount"]
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "postgresql"
    assert trigger["authenticationRef"]["name"] == "galpipe-autoscaler"
    # The same query as every pipeline's, on its own name and cap (READY_DEPTH_CAPPED_SQL).
    cap = ready_depth_cap(
        values["autoscaling"]["maxReplicaCount"], values["autoscaling"]["targetQueryValue"]
    )
    assert trigger["metadata"]["query"] == ready_depth_query("photoz", cap)
    assert "pipeline = 'photoz'" in trigger["metadata"]["query"]
    assert "'radon'" not in trigger["metadata"]["query"]
    assert trigger["metadata"]["targetQueryValue"] == str(values["autoscaling"]["targetQueryValue"])


def test_without_keda_the_fallback_hpa_scales_it_on_cpu() -> None:
    objects = render({"autoscaling": {"keda": {"enabled": False}}, **_photoz()})
    assert NAME not in of_kind(objects, "ScaledObject")
    hpa = of_kind(objects, "HorizontalPodAutoscaler")[NAME]
    validate_object(hpa)
    assert hpa["spec"]["scaleTargetRef"]["name"] == NAME
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_worker_is_built_like_radons_and_loads_the_named_model() -> None:
    objects = render_set("photoz")
    pod, radon = _pod(objects), _pod(objects, "galpipe-radon")
    (container,) = pod["containers"]
    (radon_container,) = radon["containers"]
    assert container["command"] == ["galpipe", "photoz", "worker"]
    for key in ("ports", "livenessProbe", "readinessProbe", "startupProbe", "securityContext"):
        assert container[key] == radon_container[key], key
    assert container["image"] == radon_container["image"]
    assert pod["securityContext"] == radon["securityContext"]
    assert pod["serviceAccountName"] == NAME
    assert pod["automountServiceAccountToken"] is False
    # The same database role, object store and shared settings; radon's own are not given.
    env, radon_env = _env(container), _env(radon_container)
    shared = {k: v for k, v in radon_env.items() if not k.startswith("GALPIPE_RADON_")}
    assert {k: env[k] for k in shared} == shared
    settings = Settings.from_env(env)  # every value parses
    assert settings.photoz_model == VERSION
    values = effective_values(user_values("photoz"))["pipelines"]["photoz"]
    assert settings.batch_size("photoz") == int(values["config"]["GALPIPE_PHOTOZ_BATCH_SIZE"])
    assert not any(k.startswith(("GALPIPE_RADON_", "GALPIPE_MORPHOLOGY_")) for k in env)
    # Reads cutouts and the model from the store, writes rows: DNS, database, object store.
    policy = of_kind(objects, "NetworkPolicy")[NAME]["spec"]
    assert len(policy["egress"]) == 3


def test_the_knn_runs_on_cpus_only() -> None:
    """No GPU limit, no GPU nodes, and a gpu block is refused rather than silently ignored."""
    values = effective_values({})["pipelines"]["photoz"]
    assert "gpu" not in values
    objects = render_set("photoz")
    pod = _pod(objects)
    (container,) = pod["containers"]
    resources = container["resources"]
    assert "nvidia.com/gpu" not in resources["limits"]
    assert "galpipe.io/node-group" not in pod.get("nodeSelector", {})
    assert not any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", []))
    # The kNN lives in the worker's memory: the request covers the resident peak measured
    # while a 10⁴-galaxy model loads (~510 MB, values.yaml), the limit is above the request.
    request, limit = (_mebibytes(resources[k]["memory"]) for k in ("requests", "limits"))
    assert 510e6 / 2**20 < request <= limit
    with pytest.raises(helm.HelmError) as caught:
        render(_photoz(gpu={"enabled": True, "count": 1}))
    assert "at '/pipelines/photoz/gpu': false schema" in str(caught.value)


def test_migrate_job_adds_the_fetch_to_photoz_route_after_migrating() -> None:
    pod = _migrate_pod(render_set("photoz"))
    # Init containers run first and must succeed: the route's table exists by then.
    (migrate,) = pod["initContainers"]
    (routes,) = pod["containers"]
    assert migrate["command"] == ["galpipe", "migrate"]
    assert routes["command"] == ["galpipe", "routes", "add", "fetch", "photoz"]
    # Same role, image, limits and lock-down as the migration itself.
    for key in ("env", "image", "resources", "securityContext", "volumeMounts"):
        assert routes[key] == migrate[key], key
    default = _migrate_pod(render_set("default"))
    assert migrate == default["containers"][0]


def test_with_morphology_too_every_route_is_added_once_in_order() -> None:
    pod = _migrate_pod(render_set("morphology-and-photoz"))
    steps = [*pod["initContainers"], *pod["containers"]]
    assert [c["command"][1:] for c in steps] == [
        ["migrate"],
        ["routes", "add", "fetch", "morphology"],
        ["routes", "add", "fetch", "photoz"],
    ]
    names = [c["name"] for c in steps]
    assert len(set(names)) == len(names)  # the API server refuses a pod with duplicate names
    (last,) = pod["containers"]
    assert last["command"][-1] == "photoz"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"pipelines": {"photoz": {"enabled": True}}},
            "pipelines.photoz.modelVersion is empty: with pipelines.photoz.enabled=true",
        ),
        (
            _photoz(modelVersion="sha256:" + VERSION),
            "at '/pipelines/photoz/modelVersion': 'sha256:",
        ),
        (_photoz(modelVersion=VERSION[:-1]), "at '/pipelines/photoz/modelVersion'"),
        (_photoz(command=[]), "at '/pipelines/photoz/command'"),
        (_photoz(egress=["internet"]), "at '/pipelines/photoz/egress/0'"),
        (_photoz(config={"GALPIPE_PHOTOZ_MODEL": VERSION}), "GALPIPE_PHOTOZ_MODEL"),
    ],
)
def test_wrong_photoz_values_fail_the_render(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError) as caught:
        render(values)
    assert message in str(caught.value)


def test_a_disabled_photoz_needs_no_model_version() -> None:
    objects = render({"pipelines": {"photoz": {"enabled": False, "modelVersion": ""}}})
    assert NAME not in of_kind(objects, "Deployment")


def test_the_chart_offers_every_pipeline_galpipe_knows() -> None:
    assert set(effective_values({})["pipelines"]) == set(PIPELINES)


def test_alerts_and_dashboards_select_pipelines_by_label_not_by_a_list() -> None:
    """A matcher on ``pipeline`` or ``deployment`` that names pipelines would leave photoz (or
    the next pipeline) out: each one must be the dashboards' ``$pipeline`` variable, or a
    pattern that matches every pipeline's Deployment."""
    exprs = [(rule["alert"], rule["expr"]) for rule in alert_rules()]
    exprs += [(where, expr) for where, _, expr in dashboard_queries()]
    seen = 0
    for where, expr in exprs:
        for label, op, value in _MATCHER.findall(expr):
            seen += 1
            if label == "pipeline":
                assert (op, value) == ("=~", "$pipeline"), f"{where}: pipeline{op}{value!r}"
            else:
                assert op == "=~", f"{where}: deployment{op}{value!r}"
                for name in PIPELINES:
                    assert re.fullmatch(value, f"galpipe-{name}"), f"{where}: misses {name}"
    assert seen, "no pipeline or deployment matcher found: the scan is broken"
