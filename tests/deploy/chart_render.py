"""Rendering the galpipe chart with Helm's own engine (helm-python-sdk), offline.

Shared by the chart tests: the value sets they render (default, dev, prod and each toggle),
a cached render of each, and validation of one object against the Kubernetes schemas or, for a
custom resource, against its CRD's model (KEDA, prometheus-operator, Flux via cloudcoil).
"""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import jsonschema.exceptions
import kubernetes_validate
import yaml
from pydantic import BaseModel

from tests.deploy.crd_schema import vendored_crd_schema

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
    "morphology": (
        (),
        {"pipelines": {"morphology": {"enabled": True, "modelVersion": "0123456789abcdef" * 4}}},
    ),
    "morphology-gpu": (
        (),
        {
            "pipelines": {
                "morphology": {
                    "enabled": True,
                    "modelVersion": "0123456789abcdef" * 4,
                    "gpu": {"enabled": True, "count": 2},
                }
            }
        },
    ),
    "photoz": (
        (),
        {"pipelines": {"photoz": {"enabled": True, "modelVersion": "fedcba9876543210" * 4}}},
    ),
    "radon-gpu": (
        (),
        {
            "pipelines": {
                "radon": {
                    "gpu": {"enabled": True},
                    "config": {
                        "GALPIPE_RADON_BATCH_SIZE": "4096",
                        "GALPIPE_RADON_DECODE_PROCESSES": "15",
                    },
                }
            }
        },
    ),
    "morphology-and-photoz": (
        (),
        {
            "pipelines": {
                "morphology": {"enabled": True, "modelVersion": "0123456789abcdef" * 4},
                "photoz": {"enabled": True, "modelVersion": "fedcba9876543210" * 4},
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


#: JSON-schema keywords whose value is one schema, a list of schemas, or a map of name → schema.
_SUBSCHEMA = frozenset({"additionalProperties", "items", "not", "contains"})
_SUBSCHEMA_LISTS = frozenset({"anyOf", "allOf", "oneOf", "prefixItems"})
_SUBSCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions"})


def closed_schema(schema: Any) -> Any:
    """``schema`` (JSON Schema) with every object that lists its properties closed to others.

    The API server treats a CRD's structural schema this way: a field that no ``properties``
    names is unknown, and with strict field validation (kubectl's default) the request fails.
    An object that says what else it takes (``additionalProperties``: a map's values) or that
    the CRD marks ``x-kubernetes-preserve-unknown-fields`` keeps that, and one without
    ``properties`` (free-form, e.g. a HelmRelease's ``values``) stays open. Patterns are
    rewritten for Python's re (see :func:`_python_pattern`).
    """
    if not isinstance(schema, dict):
        return schema  # a boolean schema
    closed = dict(schema)
    for key, value in schema.items():
        if key in _SUBSCHEMA:
            closed[key] = closed_schema(value)
        elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
            closed[key] = [closed_schema(v) for v in value]
        elif key in _SUBSCHEMA_MAPS and isinstance(value, dict):
            closed[key] = {name: closed_schema(v) for name, v in value.items()}
    if isinstance(schema.get("pattern"), str):
        closed["pattern"] = _python_pattern(schema["pattern"])
    if (
        isinstance(schema.get("properties"), dict)
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        closed["additionalProperties"] = False
    return closed


#: A Go (RE2) pattern that turns on flags after its anchor, ``^(?i)…``: Python's re accepts
#: global flags only at the start.
_ANCHORED_FLAGS = re.compile(r"^\^\(\?(?P<flags>[imsU]+)\)")


def _python_pattern(pattern: str) -> str:
    """A CRD's (Go) ``pattern`` as Python's re must see it to match the same strings."""
    return _ANCHORED_FLAGS.sub(lambda m: f"(?{m['flags']})^", pattern, count=1)


@functools.cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator | None:
    """A strict validator of ``kind`` built from its CRD model, or None for a built-in kind.

    The models (generated from the CRDs' openAPIV3Schema) keep the CRDs' types, patterns and
    required fields, but pydantic ignores a field they do not name: validating their JSON
    Schema, closed by :func:`closed_schema`, rejects it as the API server does.
    """
    model = CRD_MODELS.get((api_version, kind))
    if model is None:
        # A CRD without a model: its schema as vendored in tests/deploy/crd_schemas.
        vendored = vendored_crd_schema(api_version, kind)
        if vendored is None:
            return None
        schema = closed_schema(vendored)
    else:
        schema = closed_schema(model.model_json_schema(by_alias=True, mode="validation"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@functools.cache
def _metadata_validator() -> jsonschema.Draft202012Validator:
    """A strict validator of a custom resource's ``metadata``.

    A CRD's schema leaves ``metadata`` to the API server, which decodes it as ObjectMeta and
    rejects an unknown field there too (a misplaced ``metadata.annotation``, say).
    """
    from cloudcoil.apimachinery import ObjectMeta

    metadata = ObjectMeta.model_json_schema(by_alias=True, mode="validation")
    definitions = metadata.pop("$defs", {})
    schema = closed_schema(
        {"properties": {"metadata": metadata}, "$defs": definitions, "additionalProperties": True}
    )
    return jsonschema.Draft202012Validator(schema)


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
    """Validate one object, strictly (an unknown field fails, as it does on the API server
    with kubectl's default strict field validation): built-in kinds against the Kubernetes
    schemas of ``KUBE_VERSION``, custom resources against their CRD's (see :func:`crd_validator`).

    Raises
    ------
    AssertionError
        Naming the object and what is wrong with it.
    """
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    validator = crd_validator(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
    if validator is not None:
        errors = sorted(
            [*validator.iter_errors(obj), *_metadata_validator().iter_errors(obj)],
            key=lambda e: list(map(str, e.path)),
        )
        if errors:
            # A model's own metadata schema and the ObjectMeta check may report one problem twice.
            problems = dict.fromkeys(_describe(e) for e in errors)
            raise AssertionError(f"{name} does not match its CRD schema: " + "; ".join(problems))
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


def _describe(error: jsonschema.ValidationError) -> str:
    """``path: problem`` of one schema error, the path dotted as kubectl prints it.

    An error under ``anyOf`` (every optional field: its type or null) is reported by the
    branch that got deepest (see :func:`_causes`), which names the field that is wrong rather
    than the whole object; an unknown field is named by its own path, like the API server's
    ``unknown field "…"``.
    """
    problems = []
    for cause in _causes(error):
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in cause.absolute_path)
        if cause.validator == "additionalProperties" and cause.validator_value is False:
            known = cause.schema.get("properties", {})
            unknown = [f for f in cause.instance if f not in known]
            problems += [f'unknown field "{(path + "." + f).lstrip(".")}"' for f in unknown]
        else:
            problems.append(f"{path.lstrip('.') or '(root)'}: {cause.message}")
    return "; ".join(dict.fromkeys(problems))


def _causes(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """The errors behind ``error``: itself, or those of the ``anyOf`` branch that got deepest.

    The null branch of an optional field is never the one meant; of the others, the branch
    whose errors lie deepest in the object is the one the author was writing.
    """
    if not error.context:
        return [error]
    branches: dict[Any, list[jsonschema.ValidationError]] = {}
    for cause in error.context:
        branches.setdefault(cause.relative_schema_path[0], []).append(cause)
    candidates = [
        causes
        for causes in branches.values()
        if not any(c.validator == "type" and c.validator_value == "null" for c in causes)
    ] or list(branches.values())
    chosen = max(candidates, key=lambda causes: max(len(c.absolute_path) for c in causes))
    return [leaf for cause in chosen for leaf in _causes(cause)]
