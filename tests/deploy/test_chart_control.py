"""The chart's control service: its Deployment, Service, Ingress, session key, network policy, the
RBAC for people and for itself, the override alert's threshold, and the fields it leaves alone.

The RBAC is checked by evaluating the rendered rules the way the API server's RBAC authoriser
does (group, resource, verb, object name), so "patch only its pipelines' objects" is a property
of what is granted, not of how the YAML is written.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from galpipe.control.kube import API_GROUP, KEDA_PAUSED_REPLICAS, PIPELINES_RESOURCE, RESTARTED_AT
from galpipe.control.kube import VERBS as CONTROL_VERBS
from tests.deploy.chart_render import (
    CHART_DIR,
    VALUE_SETS,
    effective_values,
    objects_of,
    of_kind,
    render,
    render_set,
    render_templates,
)

CONTROL = "galpipe-control"
CONTROL_SA = {"kind": "ServiceAccount", "name": CONTROL, "namespace": "galpipe"}
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

Rule = dict[str, Any]


def _control_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = of_kind(objects, "Deployment")[CONTROL]["spec"]["template"]["spec"]
    return spec


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {v["name"]: v.get("value", v.get("valueFrom")) for v in container["env"]}


# -- the Deployment, Service and Ingress --------------------------------------------------------


def test_control_runs_galpipe_control_with_its_settings() -> None:
    pod = _control_pod(render_set("default"))
    (container,) = pod["containers"]
    assert container["command"] == ["galpipe", "control"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "metrics": 9100}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}
    env = _env(container)
    assert env["GALPIPE_CONTROL_PORT"] == "8080"
    assert env["GALPIPE_CONTROL_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    # The Deployments and ScaledObjects it patches are `<this>-<pipeline>`.
    assert env["GALPIPE_CONTROL_RELEASE"] == "galpipe"
    assert f"{env['GALPIPE_CONTROL_RELEASE']}-fetch" in of_kind(render_set("default"), "Deployment")
    assert env["GALPIPE_CONTROL_HELMRELEASE"] == "galpipe"
    assert env["GALPIPE_CONTROL_SESSION_KEY"] == {
        "secretKeyRef": {"name": "galpipe-control-session", "key": "session-key"}
    }
    assert env["GALPIPE_CONTROL_REVIEW_TTL_SECONDS"] == "10"
    assert pod["serviceAccountName"] == CONTROL


def test_control_names_follow_the_release_and_the_values() -> None:
    objects = render({"fullnameOverride": "astro", "control": {"port": 8443}})
    container = of_kind(objects, "Deployment")["astro-control"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    env = _env(container)
    assert env["GALPIPE_CONTROL_RELEASE"] == "astro"
    assert "astro-fetch" in of_kind(objects, "Deployment")
    assert env["GALPIPE_CONTROL_PORT"] == "8443"
    service = of_kind(objects, "Service")["astro-control"]["spec"]["ports"]
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service} == {
        "http": (8443, "http"),
        "metrics": (9100, "metrics"),
    }
    configured = render_set("control-ingress-and-own-secret")
    env = _env(_control_pod(configured)["containers"][0])
    assert env["GALPIPE_CONTROL_HELMRELEASE"] == "galpipe-dev"


def test_only_the_control_container_holds_an_api_token() -> None:
    """Every pod keeps automount off; control projects its token into its one container."""
    for value_set in ("default", "dev", "prod"):
        objects = render_set(value_set)
        for deployment in of_kind(objects, "Deployment").values():
            pod = deployment["spec"]["template"]["spec"]
            assert pod["automountServiceAccountToken"] is False
            mounts = [m["mountPath"] for c in pod["containers"] for m in c["volumeMounts"]]
            holds_token = TOKEN_DIR in mounts
            assert holds_token == (deployment["metadata"]["name"] == CONTROL), value_set
    pod = _control_pod(render_set("default"))
    volume = next(v for v in pod["volumes"] if v["name"] == "kube-api-access")
    sources = volume["projected"]["sources"]
    token = next(s["serviceAccountToken"] for s in sources if "serviceAccountToken" in s)
    assert token["path"] == "token"
    assert token["expirationSeconds"] <= 3607  # short-lived, rotated by the kubelet
    assert {"key": "ca.crt", "path": "ca.crt"} in next(
        s["configMap"]["items"] for s in sources if "configMap" in s
    )
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == TOKEN_DIR]
    assert mount["readOnly"] is True


def test_control_is_scraped_spread_and_protected_by_a_pdb() -> None:
    objects = render_set("default")
    deployment = of_kind(objects, "Deployment")[CONTROL]
    assert deployment["spec"]["replicas"] == 2
    pdb = of_kind(objects, "PodDisruptionBudget")[CONTROL]["spec"]
    assert pdb["selector"] == deployment["spec"]["selector"]
    service = of_kind(objects, "Service")[CONTROL]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    monitor = of_kind(objects, "ServiceMonitor")["galpipe"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


def test_ingress_routes_its_hosts_to_the_http_port() -> None:
    assert not of_kind(render_set("default"), "Ingress")
    ingress = of_kind(render_set("control-ingress-and-own-secret"), "Ingress")[CONTROL]
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"secretName": "galpipe-tls", "hosts": ["galpipe.example.org"]}]
    (rule,) = spec["rules"]
    assert rule["host"] == "galpipe.example.org"
    (path,) = rule["http"]["paths"]
    assert path["backend"]["service"] == {"name": CONTROL, "port": {"name": "http"}}
    assert ingress["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/ssl-redirect": "true"
    }


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"control": {"ingress": {"enabled": True}}}, "needs at least one host"),
        ({"control": {"ingress": {"hosts": ["Not A Host"]}}}, "at '/control/ingress/hosts/0'"),
        ({"control": {"overrideAlertSeconds": 5}}, "at '/control/overrideAlertSeconds'"),
        ({"control": {"replica": 2}}, "additional properties 'replica' not allowed"),
        ({"control": {"sessionKey": {"existingSecret": "Key!"}}}, "existingSecret"),
        ({"rbac": {"roles": "yes"}}, "at '/rbac/roles': got string, want boolean"),
        (
            {"pipelines": {"fetch": {"podAnnotations": {RESTARTED_AT: "2024-01-01T00:00:00Z"}}}},
            f"invalid propertyName '{RESTARTED_AT}'",
        ),
    ],
)
def test_wrong_control_values_are_rejected(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError) as caught:
        render(values)
    assert message in str(caught.value)


# -- the session key ------------------------------------------------------------------------------


def test_generated_session_key_is_random_and_long() -> None:
    secret = of_kind(render_set("default"), "Secret")["galpipe-control-session"]
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    key = base64.b64decode(secret["data"]["session-key"])
    assert len(key) == 64
    again = of_kind(render({}), "Secret")["galpipe-control-session"]["data"]["session-key"]
    assert again != secret["data"]["session-key"]  # nothing fixed in the chart


def test_an_existing_session_secret_is_used_and_none_is_generated() -> None:
    objects = render_set("control-ingress-and-own-secret")
    assert not of_kind(objects, "Secret")
    env = _env(_control_pod(objects)["containers"][0])
    assert env["GALPIPE_CONTROL_SESSION_KEY"] == {
        "secretKeyRef": {"name": "galpipe-control-key", "key": "key"}
    }


def test_an_upgrade_keeps_the_live_session_key(tmp_path: Path) -> None:
    """What `lookup` finds in the cluster is kept: the helper given a live Secret returns its key.

    Offline, `lookup` finds nothing; a template added to a copy of the chart calls the helper
    with the Secret an upgrade would read back.
    """
    chart = tmp_path / "galpipe"
    shutil.copytree(CHART_DIR, chart, symlinks=False)
    live = base64.b64encode(b"k" * 64).decode()
    (chart / "templates" / "lookup-probe.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: probe\n  namespace: galpipe\n"
        'data:\n  {{- include "galpipe.controlSessionSecretData" (dict "root" $ "existing"'
        f' (dict "data" (dict "session-key" "{live}"))) | nindent 2 }}}}\n'
    )
    with helm.Chart.load(chart) as loaded:
        secrets = of_kind(objects_of(render_templates({}, loaded)), "Secret")
    assert secrets["probe"]["data"] == {"session-key": live}
    assert secrets["galpipe-control-session"]["data"]["session-key"] != live
    template = (CHART_DIR / "templates" / "control.yaml").read_text()
    assert 'lookup "v1" "Secret" .Release.Namespace $secret' in template


# -- network policy -------------------------------------------------------------------------------


def test_control_network_policy() -> None:
    spec = of_kind(render_set("default"), "NetworkPolicy")[CONTROL]["spec"]
    assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "control"
    ingress = {
        rule["ports"][0]["port"]: rule["from"][0]["namespaceSelector"]["matchLabels"]
        for rule in spec["ingress"]
    }
    assert ingress == {
        "metrics": {"kubernetes.io/metadata.name": "monitoring"},
        "http": {"kubernetes.io/metadata.name": "ingress-nginx"},
    }
    dns, database, api = spec["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert database["ports"] == [{"port": 5432, "protocol": "TCP"}]
    assert database["to"] == [{"ipBlock": {"cidr": "10.0.0.0/16"}}]
    assert {p["port"] for p in api["ports"]} == {443, 6443}
    # Only control reaches the API server.
    for name, policy in of_kind(render_set("default"), "NetworkPolicy").items():
        ports = {p["port"] for r in policy["spec"].get("egress", []) for p in r.get("ports", [])}
        assert (6443 in ports) == (name == CONTROL), name


# -- RBAC -----------------------------------------------------------------------------------------


def _allows(rules: list[Rule], group: str, resource: str, verb: str, name: str = "") -> bool:
    """Whether ``rules`` grant ``verb`` on ``resource`` (named ``name``), as RBAC evaluates."""
    for rule in rules:
        if group not in rule.get("apiGroups", []) and "*" not in rule.get("apiGroups", []):
            continue
        if resource not in rule.get("resources", []) and "*" not in rule.get("resources", []):
            continue
        if verb not in rule["verbs"] and "*" not in rule["verbs"]:
            continue
        names = rule.get("resourceNames")
        if names and name not in names:
            continue
        return True
    return False


def _rbac(objects: list[dict[str, Any]], kind: str) -> dict[str, list[Rule]]:
    return {name: o["rules"] for name, o in of_kind(objects, kind).items()}


def test_people_get_viewer_and_operator_roles_and_aggregated_cluster_roles() -> None:
    objects = render_set("default")
    roles = _rbac(objects, "Role")
    cluster_roles = of_kind(objects, "ClusterRole")
    expected = {"viewer": ["get", "list"], "operator": list(CONTROL_VERBS)}
    for role, verbs in expected.items():
        rule = {"apiGroups": [API_GROUP], "resources": [PIPELINES_RESOURCE], "verbs": verbs}
        assert roles[f"galpipe-{role}"] == [rule]
        aggregated = cluster_roles[f"galpipe-galpipe-{role}"]
        assert aggregated["rules"] == [rule]
        into = {"viewer": "view", "operator": "edit"}[role]
        labels = aggregated["metadata"]["labels"]
        assert labels[f"rbac.authorization.k8s.io/aggregate-to-{into}"] == "true"
        assert not any(k.startswith("rbac.") and into not in k for k in labels), labels
    assert set(CONTROL_VERBS) == {
        "get",
        "list",
        "pause",
        "scale",
        "restart",
        "rollback",
        "retry",
        "requeue",
    }
    assert "galpipe-viewer" not in _rbac(render_set("rbac-off"), "Role")
    assert not of_kind(render_set("rbac-off"), "ClusterRole")


def test_control_service_account_is_an_auth_delegator() -> None:
    objects = render_set("default")
    (binding,) = of_kind(objects, "ClusterRoleBinding").values()
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "system:auth-delegator",
    }
    assert binding["subjects"] == [CONTROL_SA]
    role_binding = of_kind(objects, "RoleBinding")[CONTROL]
    assert role_binding["roleRef"]["name"] == CONTROL
    assert role_binding["subjects"] == [CONTROL_SA]


def test_control_role_grants_exactly_reads_patches_of_its_objects_and_events() -> None:
    objects = render_set("default")
    rules = _rbac(objects, "Role")[CONTROL]
    # Exactly these grants, as (group, resource, verb, names).
    granted = {
        (group, resource, verb, tuple(rule.get("resourceNames", ())))
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    pipelines = ("galpipe-fetch", "galpipe-radon")
    reads = {
        (group, resource, verb, ())
        for group, resource in (
            ("", "pods"),
            ("apps", "deployments"),
            ("keda.sh", "scaledobjects"),
            ("helm.toolkit.fluxcd.io", "helmreleases"),
        )
        for verb in ("get", "list", "watch")
    }
    assert granted == reads | {
        ("apps", "deployments", "patch", pipelines),
        ("keda.sh", "scaledobjects", "patch", pipelines),
        ("helm.toolkit.fluxcd.io", "helmreleases", "patch", ("galpipe",)),
        ("events.k8s.io", "events", "create", ()),
    }
    # Evaluated as RBAC does: its pipelines' objects yes, anything else no.
    for name in pipelines:
        assert _allows(rules, "apps", "deployments", "patch", name)
        assert _allows(rules, "keda.sh", "scaledobjects", "patch", name)
    for name in (CONTROL, "galpipe-monitor", "other-app"):
        assert not _allows(rules, "apps", "deployments", "patch", name), name
        assert not _allows(rules, "keda.sh", "scaledobjects", "patch", name), name
    assert not _allows(rules, "helm.toolkit.fluxcd.io", "helmreleases", "patch", "other")
    for verb in ("update", "delete", "create", "deletecollection"):
        assert not _allows(rules, "apps", "deployments", verb, "galpipe-fetch"), verb
    assert not _allows(rules, "", "secrets", "get", "galpipe-database")
    assert not _allows(rules, "", "events", "create")  # the old core Events API: not used
    assert not _allows(rules, "rbac.authorization.k8s.io", "rolebindings", "create")


def test_no_rbac_object_uses_a_wildcard() -> None:
    for value_set in VALUE_SETS:
        objects = render_set(value_set)
        for kind in ("Role", "ClusterRole"):
            for name, rules in _rbac(objects, kind).items():
                for rule in rules:
                    for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                        assert "*" not in rule.get(field, []), f"{value_set} {kind}/{name}"
                    if "patch" in rule["verbs"]:
                        assert rule.get("resourceNames"), f"{value_set} {kind}/{name}: any name"


def test_patch_targets_follow_the_enabled_pipelines() -> None:
    def patchable(objects: list[dict[str, Any]]) -> set[str]:
        rules = _rbac(objects, "Role")[CONTROL]
        return {
            name
            for rule in rules
            if rule["resources"] == ["deployments"] and "patch" in rule["verbs"]
            for name in rule["resourceNames"]
        }

    assert patchable(render_set("radon-off")) == {"galpipe-fetch"}
    assert patchable(render_set("photoz")) == {
        "galpipe-fetch",
        "galpipe-radon",
        "galpipe-photoz",
    }
    # Every name it may patch is a Deployment (and ScaledObject) the chart renders.
    objects = render_set("default")
    assert patchable(objects) <= of_kind(objects, "Deployment").keys()
    assert patchable(objects) <= of_kind(objects, "ScaledObject").keys()


# -- the fields the overrides own -----------------------------------------------------------------


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_chart_never_sets_the_fields_overrides_own(value_set: str) -> None:
    """A hold (KEDA's paused-replicas) or restart (restartedAt) survives every re-render: Helm's
    three-way merge only touches fields the chart renders, and it renders neither."""
    objects = render_set(value_set)
    for scaled in of_kind(objects, "ScaledObject").values():
        assert KEDA_PAUSED_REPLICAS not in scaled["metadata"].get("annotations", {})
    for deployment in of_kind(objects, "Deployment").values():
        template = deployment["spec"]["template"]["metadata"]
        assert RESTARTED_AT not in template.get("annotations", {})
    for name in ("galpipe-fetch", "galpipe-radon"):
        # KEDA (or a hold) owns the replica count.
        pipeline = of_kind(objects, "Deployment").get(name)
        assert pipeline is None or "replicas" not in pipeline["spec"]
    for text in render_templates({}).values():
        assert KEDA_PAUSED_REPLICAS not in text
        assert RESTARTED_AT not in text


# -- the override alert's threshold ---------------------------------------------------------------


def _override_rule(objects: list[dict[str, Any]]) -> dict[str, Any]:
    groups = of_kind(objects, "PrometheusRule")["galpipe"]["spec"]["groups"]
    (rule,) = [r for g in groups for r in g["rules"] if r.get("alert") == "GalpipeOverrideActive"]
    return rule


def test_override_alert_threshold_comes_from_the_values() -> None:
    assert _override_rule(render_set("default"))["expr"].endswith("> 14400")
    assert _override_rule(render({"control": {"overrideAlertSeconds": 3600}}))["expr"].endswith(
        ") > 3600"
    )


def test_rendered_threshold_changes_when_the_alert_fires(
    require_tool: Callable[[str], str], tmp_path: Path
) -> None:
    """promtool on the chart's own output: with 1 h a pin fires at 70 min; with 4 h it does not."""
    promtool = require_tool("promtool")
    series = (
        "galpipe_control_override_active_since_timestamp_seconds"
        '{namespace="galpipe", pipeline="fetch", override="pin"}'
    )
    fired = {
        "exp_labels": {
            "severity": "warning",
            "namespace": "galpipe",
            "pipeline": "fetch",
            "override": "pin",
        },
        "exp_annotations": {
            "summary": "pin override on fetch for 1h 10m 0s",
            "description": (
                "An operator's pin override on pipeline fetch in galpipe has been in force for "
                "1h 10m 0s, longer than the chart's control.overrideAlertSeconds: the pipeline "
                "is not running as Git and its autoscaler say (a pin also keeps Flux from "
                "reconciling the release)."
            ),
            "runbook_url": effective_values({})["prometheusRule"]["runbookBaseUrl"]
            + "#galpipeoverrideactive",
        },
    }
    for seconds, expected in ((3600, [fired]), (14400, [])):
        rule = of_kind(render({"control": {"overrideAlertSeconds": seconds}}), "PrometheusRule")
        (tmp_path / "rules.yaml").write_text(
            yaml.safe_dump({"groups": rule["galpipe"]["spec"]["groups"]})
        )
        case = {"eval_time": "70m", "alertname": "GalpipeOverrideActive", "exp_alerts": expected}
        test = {
            "rule_files": ["rules.yaml"],
            "evaluation_interval": "1m",
            "tests": [
                {
                    "interval": "1m",
                    "input_series": [{"series": series, "values": "0x90"}],
                    "alert_rule_test": [case],
                }
            ],
        }
        (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
        run = subprocess.run(
            [promtool, "test", "rules", "test.yaml"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode == 0, f"{seconds} s: {run.stdout}{run.stderr}"
