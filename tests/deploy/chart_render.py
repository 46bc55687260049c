"""Rendering the galpipe chart with Helm's own engine (helm-python-sdk), offline.

Shared by the chart tests: the value sets they render (default, dev, prod and each toggle),
a cached render of each, and validation of one object against the Kubernetes schemas or, for a
custom resource, against its CRD's model (KEDA, prometheus-operator, Flux via cloudcoil).
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml
from pydantic import BaseModel

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "galpipe"
RELEASE = "galpipe"
NAMESPACE = "galpipe"
#: The Kubernetes minor the objects must be valid for (EKS's current standard-support range).
KUBE_VERSION = "1.31"


def environment_values(env: str) -> dict[str, Any]:
    """The values of ``env``'s Flux HelmRelease (k8s/envs/<env>/galpipe.yaml): its overrides.

    The environments' values live outside the chart package, in the HelmRelease that installs it.
    """
    path = REPO_ROOT / "k8s" / "envs" / env / "galpipe.yaml"
    releases = [
        d
        for d in yaml.safe_load_all(path.read_text())
        if d and d.get("kind") == "HelmRelease" and d["metadata"]["name"] == RELEASE
    ]
    assert len(releases) == 1, f"{path}: expected one HelmRelease {RELEASE}"
    values: dict[str, Any] = releases[0]["spec"]["values"]
    return values


#: Value sets rendered by the tests: values files (in the chart directory, in order) and then
#: overrides, exactly as `helm template -f FILE... --set-json ...` layers them.
VALUE_SETS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "default": ((), {}),
    "dev": ((), environment_values("dev")),
    "prod": ((), environment_values("prod")),
    "keda-off": ((), {"autoscaling": {"keda": {"enabled": False}}}),
    "servicemonitor-off": ((), {"serviceMonitor": {"enabled": False}}),
    "prometheusrule-off": ((), {"prometheusRule": {"enabled": False}}),
    "dashboards-off": ((), {"grafanaDashboards": {"enabled": False}}),
    "networkpolicy-off": ((), {"networkPolicy": {"enabled": False}}),
    "pdb-off": ((), {"podDisruptionBudget": {"enabled": False}}),
    "monitor-off": ((), {"monitor": {"enabled": False}}),
    "migrations-off": ((), {"migrations": {"enabled": False}}),
    "radon-off": ((), {"pipelines": {"radon": {"enabled": False}}}),
    "control-off": ((), {"control": {"enabled": False}}),
    "rbac-off": ((), {"rbac": {"roles": False, "aggregateToDefaultRoles": False}}),
    "control-ingress-and-own-secret": (
        (),
        {
            "control": {
                "sessionKey": {"existingSecret": "galpipe-control-key", "key": "key"},
                "helmRelease": "galpipe-dev",
                "ingress": {
                    "enabled": True,
                    "className": "nginx",
                    "annotations": {"nginx.ingress.kubernetes.io/ssl-redirect": "true"},
                    "hosts": ["galpipe.example.org"],
                    "tls": [{"secretName": "galpipe-tls", "hosts": ["galpipe.example.org"]}],
                },
            }
        },
    ),
    "s3-endpoint-and-digest": (
        (),
        {
            "objectStore": {"endpointUrl": "http://minio.storage:9000"},
            "image": {"digest": "sha256:" + "ab" * 32, "tag": "142-3f9c2ab"},
            "imagePullSecrets": [{"name": "registry"}],
            "pod": {"topologySpread": {"enabled": False}, "nodeSelector": {"pool": "spot"}},
        },
    ),
}


def merge_values(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base`` (maps merge, anything else replaces)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def user_values(value_set: str) -> dict[str, Any]:
    """The user-supplied values of a named set (files then overrides), before the defaults."""
    files, overrides = VALUE_SETS[value_set]
    values: dict[str, Any] = {}
    for name in files:
        values = merge_values(values, yaml.safe_load((CHART_DIR / name).read_text()) or {})
    return merge_values(values, overrides)


@functools.cache
def _chart() -> helm.Chart:
    return helm.Chart.load(CHART_DIR)


def effective_values(values: dict[str, Any]) -> dict[str, Any]:
    """The chart's defaults with ``values`` on top: what the templates see as ``.Values``."""
    return _chart().merge_values(values)


def render_templates(values: dict[str, Any], chart: helm.Chart | None = None) -> dict[str, str]:
    """Template path → rendered text, as `helm template` (schema-checked; raises on bad values)."""
    return (chart or _chart()).render(
        values=values, name=RELEASE, namespace=NAMESPACE, is_install=True
    )


def objects_of(templates: dict[str, str]) -> list[dict[str, Any]]:
    """The Kubernetes objects of a render (NOTES.txt and empty documents left out)."""
    found: list[dict[str, Any]] = []
    for path, text in sorted(templates.items()):
        if path.endswith("NOTES.txt"):
            continue
        found.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return found


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The objects the chart renders with ``values`` on top of its defaults."""
    return objects_of(render_templates(values))


@functools.cache
def _render_set_json(value_set: str) -> str:
    return json.dumps(render(user_values(value_set)))


def render_set(value_set: str) -> list[dict[str, Any]]:
    """The objects of a named value set (rendered once per session; each caller gets a copy)."""
    objects: list[dict[str, Any]] = json.loads(_render_set_json(value_set))
    return objects


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """Objects of ``kind`` by name."""
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


#: Kinds without a namespace (the control service's ClusterRoles and their binding).
CLUSTER_SCOPED = frozenset({"ClusterRole", "ClusterRoleBinding"})


def pod_specs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Pod specs of every Deployment and Job, by `Kind/name`."""
    return {
        f"{o['kind']}/{o['metadata']['name']}": o["spec"]["template"]["spec"]
        for o in objects
        if o["kind"] in ("Deployment", "Job")
    }


def _crd_models() -> dict[tuple[str, str], type[BaseModel]]:
    from cloudcoil.models.fluxcd.helm import v2 as flux_helm
    from cloudcoil.models.fluxcd.image import v1beta2 as flux_image
    from cloudcoil.models.fluxcd.kustomize import v1 as flux_kustomize
    from cloudcoil.models.fluxcd.notification import v1beta3 as flux_notification
    from cloudcoil.models.fluxcd.source import v1 as flux_source
    from cloudcoil.models.fluxcd.source import v1beta2 as flux_source_v1beta2
    from cloudcoil.models.keda import v1alpha1 as keda
    from cloudcoil.models.prometheus_operator import v1 as monitoring

    models: list[type[BaseModel]] = [
        keda.ScaledObject,
        keda.TriggerAuthentication,
        monitoring.ServiceMonitor,
        monitoring.PrometheusRule,
        flux_source.GitRepository,
        flux_source.HelmRepository,
        flux_source_v1beta2.OCIRepository,  # v1 from Flux 2.6; these models stop at v1beta2
        flux_helm.HelmRelease,
        flux_kustomize.Kustomization,
        flux_image.ImageRepository,
        flux_image.ImagePolicy,
        flux_image.ImageUpdateAutomation,
        flux_notification.Provider,
        flux_notification.Alert,
    ]
    table = {}
    for model in models:
        fields = model.model_fields
        api_version = fields["api_version"].default
        kind = fields["kind"].default
        table[(api_version, kind)] = model
    return table


CRD_MODELS = _crd_models()


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def validate_object(obj: dict[str, Any]) -> None:
    """Validate one object (see :func:`_validate_json`); identical objects are checked once.

    Raises
    ------
    AssertionError
        Naming the object and what is wrong with it.
    """
    problem = _validate_json(json.dumps(obj, sort_keys=True))
    if problem:
        raise AssertionError(problem)


@functools.cache
def _validate_json(text: str) -> str:
    """The problem with one object (JSON text), or "" when it is valid."""
    try:
        _validate(json.loads(text))
    except AssertionError as exc:
        return str(exc)
    return ""


def _validate(obj: dict[str, Any]) -> None:
    """Validate one object: built-in kinds against the Kubernetes schemas of ``KUBE_VERSION``
    (strict: unknown fields fail), custom resources against their CRD's model.

    The CRD models ignore unknown fields, so a custom resource must also survive a round trip
    through its model: a misspelt or misplaced field is dropped, a wrongly typed one coerced,
    and either shows up as a difference (defaults the model fills in are not differences).

    Raises
    ------
    AssertionError
        Naming the object and what is wrong with it.
    """
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    model = CRD_MODELS.get((obj.get("apiVersion", ""), obj.get("kind", "")))
    if model is not None:
        parsed = model.model_validate(obj)
        dumped = parsed.model_dump(by_alias=True, exclude_none=True, mode="json")
        lost = _difference(_without_nulls(obj), dumped)
        assert not lost, f"{name} does not match its CRD schema at {lost}"
        return
    try:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        raise AssertionError(
            f"{name} is invalid for Kubernetes {KUBE_VERSION}: {path}: {exc.message}"
        ) from None
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise AssertionError(f"{name}: no schema: {exc.message}") from None


def _difference(expected: Any, actual: Any, path: str = "") -> str:
    """The first path where ``expected`` lost a key or changed a value in ``actual``."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in expected:
            if key not in actual:
                return f"{path}.{key} (dropped)"
            diff = _difference(expected[key], actual[key], f"{path}.{key}")
            if diff:
                return diff
        return ""
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        for index, (e, a) in enumerate(zip(expected, actual, strict=True)):
            diff = _difference(e, a, f"{path}[{index}]")
            if diff:
                return diff
        return ""
    return "" if expected == actual else f"{path}: {expected!r} became {actual!r}"
