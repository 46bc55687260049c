"""The Helm chart rendered offline by Helm's engine: lint, schemas, toggles, security, packaging.

Every value set of ``chart_render.VALUE_SETS`` (default, dev, prod and each toggle) renders, and
every object it renders is valid for Kubernetes ``KUBE_VERSION`` (strict schemas) or for its
CRD (KEDA, prometheus-operator). Wrong values fail with a message naming the key and the rule.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.deploy.chart_render import (
    CHART_DIR,
    CLUSTER_SCOPED,
    KUBE_VERSION,
    REPO_ROOT,
    VALUE_SETS,
    effective_values,
    objects_of,
    of_kind,
    pod_specs,
    render,
    render_set,
    render_templates,
    user_values,
    validate_object,
)

DASHBOARDS = REPO_ROOT / "grafana" / "dashboards"
RULES_FILE = CHART_DIR / "files" / "prometheus-rules.yaml"
PIPELINES = ("fetch", "radon")


def _kinds(objects: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in objects:
        counts[o["kind"]] = counts.get(o["kind"], 0) + 1
    return counts


# -- lint and schemas --------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", ["default", "dev", "prod"])
def test_lint_is_clean(value_set: str) -> None:
    report = helm.lint(
        CHART_DIR, user_values(value_set), strict=True, kube_version=f"v{KUBE_VERSION}.0"
    )
    # Severity 1 is informational; the only one is Chart.yaml's missing icon (no logo exists).
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [], report
    assert problems == [], problems


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_every_object_validates_against_its_schema(value_set: str) -> None:
    objects = render_set(value_set)
    assert objects, f"{value_set} rendered nothing"
    for obj in objects:
        validate_object(obj)
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in obj["metadata"], obj["metadata"]["name"]
        else:
            assert obj["metadata"]["namespace"] == "galpipe", obj["metadata"]["name"]
        assert len(obj["metadata"]["name"]) <= 63, obj["metadata"]["name"]


def test_schema_check_catches_a_misspelt_field() -> None:
    """The validation above can fail: a field the CRD or Kubernetes does not know is caught."""
    scaled = next(o for o in render_set("default") if o["kind"] == "ScaledObject")
    scaled["spec"]["maxReplicas"] = 3
    with pytest.raises(AssertionError, match=r"spec\.maxReplicas"):
        validate_object(scaled)
    deployment = next(o for o in render_set("default") if o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFS"] = True
    with pytest.raises(AssertionError, match="readOnlyRootFS"):
        validate_object(deployment)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"pipelines": {"fetch": {"autoscaling": {"maxReplicaCount": 0}}}},
            "at '/pipelines/fetch/autoscaling/maxReplicaCount': minimum: got 0, want 1",
        ),
        (
            {"config": {"GALPIPE_FETCH_RATE": "5"}},
            "at '/config': additional properties 'GALPIPE_FETCH_RATE' not allowed",
        ),
        (
            {"config": {"GALPIPE_DATABASE_URL": "postgresql://x"}},
            "additional properties 'GALPIPE_DATABASE_URL' not allowed",
        ),
        ({"pipelines": {"Fetch-2": {}}}, "'Fetch-2' does not match pattern '^[a-z][a-z0-9]*$'"),
        ({"metricsPort": "9100"}, "at '/metricsPort': got string, want integer"),
        (
            {"pipelines": {"fetch": {"egress": ["internet"]}}},
            "at '/pipelines/fetch/egress/0': value must be one of 'database', 'objectStore'",
        ),
        (
            {"pipelines": {"radon": {"serviceAccount": {"roleArn": "galpipe-radon"}}}},
            "at '/pipelines/radon/serviceAccount/roleArn': 'galpipe-radon' does not match",
        ),
        ({"objectStore": {"url": "galpipe-cutouts"}}, "at '/objectStore/url': 'galpipe-cutouts'"),
        ({"image": {"digest": "latest"}}, "at '/image/digest': 'latest' does not match"),
        ({"pod": {"runAsUser": 0}}, "at '/pod/runAsUser': minimum: got 0, want 10,000"),
        (
            {"pipelines": {"radon": {"resources": {"limits": {"memory": "2 GB"}}}}},
            "at '/pipelines/radon/resources/limits/memory': '2 GB' does not match pattern",
        ),
        (
            {"pipelines": {"fetch": {"terminationGracePeriodSeconds": 5}}},
            "at '/pipelines/fetch/terminationGracePeriodSeconds': minimum: got 5, want 30",
        ),
        (
            {"networkPolicy": {"database": {"cidrs": ["10.0.0.0"]}}},
            "at '/networkPolicy/database/cidrs/0'",
        ),
        ({"serviceMonitor": {"interval": "30"}}, "at '/serviceMonitor/interval'"),
        ({"replicaCount": 3}, "additional properties 'replicaCount' not allowed"),
        # Not expressible in JSON Schema: the template's own check.
        (
            {"pipelines": {"radon": {"autoscaling": {"minReplicaCount": 5, "maxReplicaCount": 2}}}},
            "pipelines.radon.autoscaling: minReplicaCount 5 exceeds maxReplicaCount 2",
        ),
    ],
)
def test_wrong_values_are_rejected_with_a_clear_message(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmError) as caught:
        render(values)
    assert message in str(caught.value)


# -- what each value set renders ------------------------------------------------------------------


def test_default_render_has_every_piece() -> None:
    kinds = _kinds(render_set("default"))
    assert kinds == {
        "Deployment": 4,  # fetch, radon, monitor, control
        "Job": 1,
        "ScaledObject": 2,
        "TriggerAuthentication": 1,
        "ServiceAccount": 5,  # fetch, radon, monitor, migrate, control
        "Service": 4,
        "PodDisruptionBudget": 4,
        "NetworkPolicy": 6,  # default deny, fetch, radon, monitor, migrate, control
        "ServiceMonitor": 1,
        "Secret": 1,  # the control service's session key
        "Role": 3,  # viewer, operator, the control service's own
        "RoleBinding": 1,
        "ClusterRole": 2,  # viewer and operator, aggregated into view and edit
        "ClusterRoleBinding": 1,  # control → system:auth-delegator
        # A rules file or dashboards gone from the repository must fail here, not shrink this.
        "PrometheusRule": 1,
        "ConfigMap": len(list(DASHBOARDS.glob("*.json"))),
    }


@pytest.mark.parametrize(
    ("value_set", "gone", "added"),
    [
        (
            "keda-off",
            {"ScaledObject": 2, "TriggerAuthentication": 1},
            {"HorizontalPodAutoscaler": 2},
        ),
        ("servicemonitor-off", {"ServiceMonitor": 1}, {}),
        ("networkpolicy-off", {"NetworkPolicy": 6}, {}),
        ("pdb-off", {"PodDisruptionBudget": 4}, {}),
        (
            "control-off",
            {
                "Deployment": 1,
                "ServiceAccount": 1,
                "Service": 1,
                "Secret": 1,
                "PodDisruptionBudget": 1,
                "NetworkPolicy": 1,
                "Role": 1,
                "RoleBinding": 1,
                "ClusterRoleBinding": 1,
            },
            {},
        ),
        ("rbac-off", {"Role": 2, "ClusterRole": 2}, {}),
        ("control-ingress-and-own-secret", {"Secret": 1}, {"Ingress": 1}),
        (
            "monitor-off",
            {
                "Deployment": 1,
                "ServiceAccount": 1,
                "Service": 1,
                "PodDisruptionBudget": 1,
                "NetworkPolicy": 1,
            },
            {},
        ),
        ("migrations-off", {"Job": 1, "ServiceAccount": 1, "NetworkPolicy": 1}, {}),
        (
            "radon-off",
            {
                "Deployment": 1,
                "ServiceAccount": 1,
                "Service": 1,
                "ScaledObject": 1,
                "PodDisruptionBudget": 1,
                "NetworkPolicy": 1,
            },
            {},
        ),
    ],
)
def test_toggles_remove_exactly_their_objects(
    value_set: str, gone: dict[str, int], added: dict[str, int]
) -> None:
    base, toggled = _kinds(render_set("default")), _kinds(render_set(value_set))
    expected = {k: base.get(k, 0) - gone.get(k, 0) + added.get(k, 0) for k in base | added}
    assert toggled == {k: n for k, n in expected.items() if n}


def test_toggles_of_alerts_and_dashboards() -> None:
    assert not of_kind(render_set("prometheusrule-off"), "PrometheusRule")
    assert not of_kind(render_set("dashboards-off"), "ConfigMap")


def test_keda_scales_each_pipeline_from_zero_on_its_queue() -> None:
    objects = render_set("default")
    auth = of_kind(objects, "TriggerAuthentication")["galpipe-autoscaler"]
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "connection", "name": "galpipe-database-scaler", "key": "connection"}
    ]
    deployments = of_kind(objects, "Deployment")
    for name in PIPELINES:
        scaled = of_kind(objects, "ScaledObject")[f"galpipe-{name}"]["spec"]
        assert scaled["scaleTargetRef"]["name"] in deployments
        assert scaled["minReplicaCount"] == 0
        assert 1 <= scaled["maxReplicaCount"] <= 50
        (trigger,) = scaled["triggers"]
        assert trigger["type"] == "postgresql"
        assert trigger["useCachedMetrics"] is True
        assert trigger["authenticationRef"]["name"] == "galpipe-autoscaler"
        assert f"pipeline = '{name}'" in trigger["metadata"]["query"]
        # KEDA owns the replica count: a Deployment `replicas` would fight it on every upgrade.
        assert "replicas" not in deployments[f"galpipe-{name}"]["spec"]


def test_fetch_maximum_is_bounded_by_the_global_rate() -> None:
    """Past rate × latency / threads replicas, fetch pods only wait on the shared bucket."""
    for value_set in ("default", "dev", "prod"):
        values = effective_values(user_values(value_set))
        fetch = values["pipelines"]["fetch"]
        rate = float(values["config"]["GALPIPE_FETCH_RATE_LIMIT"])
        threads = int(fetch["config"]["GALPIPE_FETCH_THREADS"])
        seconds_per_request = 1.5  # values.yaml's assumed cutout latency
        saturating = rate * seconds_per_request / threads
        assert fetch["autoscaling"]["maxReplicaCount"] <= max(3, 3 * saturating), value_set
        # One batch shared with every other replica fits the termination grace, with the
        # worst-case request timeouts (connect 5 s + read 30 s) on top.
        batch = int(fetch["config"]["GALPIPE_FETCH_BATCH_SIZE"])
        batch_seconds = batch * fetch["autoscaling"]["maxReplicaCount"] / rate + 35
        assert fetch["terminationGracePeriodSeconds"] > batch_seconds, value_set


def test_hpa_fallback_when_keda_is_disabled() -> None:
    objects = render_set("keda-off")
    assert not of_kind(objects, "ScaledObject")
    for name in PIPELINES:
        hpa = of_kind(objects, "HorizontalPodAutoscaler")[f"galpipe-{name}"]["spec"]
        assert hpa["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": f"galpipe-{name}",
        }
        assert hpa["minReplicas"] >= 1  # an HPA cannot scale to zero
        assert hpa["metrics"][0]["resource"]["name"] == "cpu"


def test_a_new_pipeline_is_one_values_entry() -> None:
    sersic = effective_values({})["pipelines"]["radon"]
    sersic["config"] = {"GALPIPE_LOG_LEVEL": "debug"}
    objects = render({"pipelines": {"sersic": sersic}})
    for kind in (
        "Deployment",
        "ScaledObject",
        "ServiceAccount",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ):
        assert "galpipe-sersic" in of_kind(objects, kind), kind
    container = of_kind(objects, "Deployment")["galpipe-sersic"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["command"] == ["galpipe", "sersic"]
    query = of_kind(objects, "ScaledObject")["galpipe-sersic"]["spec"]["triggers"][0]
    assert "pipeline = 'sersic'" in query["metadata"]["query"]


def test_migration_runs_as_a_pre_install_and_pre_upgrade_hook() -> None:
    objects = render_set("default")
    job = of_kind(objects, "Job")["galpipe-migrate"]
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["galpipe", "migrate"]
    assert pod["restartPolicy"] == "Never"
    # Its ServiceAccount must exist before it: a hook itself, of lower weight.
    account = of_kind(objects, "ServiceAccount")[pod["serviceAccountName"]]
    hook = account["metadata"]["annotations"]
    assert hook["helm.sh/hook"] == annotations["helm.sh/hook"]
    assert int(hook["helm.sh/hook-weight"]) < int(annotations["helm.sh/hook-weight"])


def test_pods_are_restricted() -> None:
    """Pod Security Standard `restricted`, a read-only root, and resources on every container."""
    for value_set in ("default", "dev", "prod", "s3-endpoint-and-digest"):
        for where, pod in pod_specs(render_set(value_set)).items():
            assert pod["securityContext"]["runAsNonRoot"] is True, where
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert pod["automountServiceAccountToken"] is False, where
            assert pod["serviceAccountName"].startswith("galpipe-"), where
            for container in pod["containers"]:
                sc = container["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True, where
                assert sc["allowPrivilegeEscalation"] is False, where
                assert sc["capabilities"] == {"drop": ["ALL"]}, where
                assert sc["runAsUser"] >= 10000, where
                assert set(container["resources"]) == {"requests", "limits"}, where
                mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
                assert "/tmp" in mounts, where
                volumes = {v["name"]: v for v in pod["volumes"]}
                assert "emptyDir" in volumes[mounts["/tmp"]], where


def test_long_running_pods_are_probed_spread_and_drained() -> None:
    objects = render_set("default")
    for name, deployment in of_kind(objects, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
        keys = [c["topologyKey"] for c in pod["topologySpreadConstraints"]]
        assert keys == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"], name
        selector = pod["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]
        assert selector == deployment["spec"]["selector"]["matchLabels"], name
        assert pod["terminationGracePeriodSeconds"] >= 30, name
    for name in PIPELINES:
        pdb = of_kind(objects, "PodDisruptionBudget")[f"galpipe-{name}"]["spec"]
        deployment = of_kind(objects, "Deployment")[f"galpipe-{name}"]
        assert pdb["selector"] == deployment["spec"]["selector"]
        assert pdb["maxUnavailable"] == 1


def test_service_accounts_carry_the_irsa_roles() -> None:
    dev = of_kind(render_set("dev"), "ServiceAccount")
    for name in PIPELINES:
        role = dev[f"galpipe-{name}"]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        assert role == f"arn:aws:iam::111111111111:role/galpipe-dev-{name}"
    # No role configured, no annotation (the monitor never touches AWS).
    assert (
        "annotations"
        not in of_kind(render_set("default"), "ServiceAccount")["galpipe-fetch"]["metadata"]
    )
    assert "annotations" not in dev["galpipe-monitor"]["metadata"]


def test_network_policies_allow_only_dns_and_the_listed_destinations() -> None:
    objects = render_set("default")
    policies = of_kind(objects, "NetworkPolicy")
    deny = policies.pop("galpipe-default-deny")["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny
    assert "egress" not in deny
    database, anywhere_https = (5432, ("10.0.0.0/16",)), (443, ("0.0.0.0/0",))
    expected = {
        "fetch": [database, anywhere_https, anywhere_https],  # object store, cutout service
        "radon": [database, anywhere_https],  # object store only
        "monitor": [database],
        "migrate": [database],
    }
    for component, allowed in expected.items():
        spec = policies[f"galpipe-{component}"]["spec"]
        assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == component
        dns, *rest = spec["egress"]
        assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
        assert {p["port"] for p in dns["ports"]} == {53}
        rules = [
            (r["ports"][0]["port"], tuple(t["ipBlock"]["cidr"] for t in r["to"])) for r in rest
        ]
        assert rules == allowed, component
    assert policies["galpipe-migrate"]["spec"]["ingress"] == []


def test_service_monitor_scrapes_every_metrics_service() -> None:
    objects = render_set("default")
    monitor = of_kind(objects, "ServiceMonitor")["galpipe"]["spec"]
    selector = monitor["selector"]["matchLabels"]
    scraped = [
        s
        for s in of_kind(objects, "Service").values()
        if selector.items() <= s["metadata"]["labels"].items()
    ]
    assert sorted(s["metadata"]["name"] for s in scraped) == [
        "galpipe-control",
        "galpipe-fetch",
        "galpipe-monitor",
        "galpipe-radon",
    ]
    for service in scraped:
        assert monitor["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_prometheus_rule_wraps_the_rules_file_unchanged() -> None:
    rule = of_kind(render_set("default"), "PrometheusRule")["galpipe"]
    assert rule["spec"]["groups"] == yaml.safe_load(RULES_FILE.read_text())["groups"]


def test_a_broken_rules_file_fails_the_render(tmp_path: Path) -> None:
    chart = _chart_copy(tmp_path)
    (chart / "files" / "prometheus-rules.yaml").write_text("rules: []\n")
    with helm.Chart.load(chart) as loaded, pytest.raises(helm.HelmError, match="no `groups:`"):
        render_templates({}, loaded)


def test_dashboards_become_configmaps_for_the_grafana_sidecar() -> None:
    files = sorted(DASHBOARDS.glob("*.json"))
    assert files, "grafana/dashboards/ holds no dashboard"
    maps = of_kind(render_set("default"), "ConfigMap")
    shipped = {}
    for configmap in maps.values():
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert configmap["metadata"]["annotations"]["grafana_folder"] == "galpipe"
        shipped.update(configmap["data"])
        # The API server refuses objects over 1 MiB (etcd's request limit is 1.5 MiB).
        assert len(json.dumps(configmap)) < 1024 * 1024, configmap["metadata"]["name"]
    assert shipped == {f.name: f.read_text().rstrip("\n") for f in files}


def test_packaged_chart_contains_the_dashboards(tmp_path: Path) -> None:
    """`helm package` follows the dashboards/ symlink: the archive holds the files themselves."""
    files = sorted(DASHBOARDS.glob("*.json"))
    assert files, "grafana/dashboards/ holds no dashboard"
    archive = helm.package(CHART_DIR, destination=tmp_path)
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        for name in ("values.yaml", "values.schema.json", "files/ready-depth.sql"):
            assert f"galpipe/{name}" in members, name
        # The environments' values live in their HelmReleases (k8s/envs), not in the package.
        assert not [m for m in members if m.startswith("galpipe/values-")], sorted(members)
        for f in files:
            member = members[f"galpipe/dashboards/{f.name}"]
            assert member.isfile(), f"{member.name} is not a regular file in the archive"
            extracted = tar.extractfile(member)
            assert extracted is not None
            assert extracted.read() == f.read_bytes()
    with helm.Chart.load(archive) as packaged:
        maps = of_kind(objects_of(render_templates({}, packaged)), "ConfigMap")
    assert sorted(k for m in maps.values() for k in m["data"]) == [f.name for f in files]


@pytest.mark.parametrize("value_set", ["default", "keda-off"])
def test_notes_tell_the_operator_what_to_check(value_set: str) -> None:
    notes = render_templates(user_values(value_set))["galpipe/templates/NOTES.txt"]
    assert "kubectl -n galpipe logs job/galpipe-migrate" in notes
    assert "galpipe status" in notes
    assert ("get scaledobjects" in notes) == (value_set == "default")
    assert ("get hpa" in notes) == (value_set == "keda-off")


def _chart_copy(tmp_path: Path) -> Path:
    """A copy of the chart (dashboards dereferenced) that a test may break."""
    target = tmp_path / "galpipe"
    shutil.copytree(CHART_DIR, target, symlinks=False)
    return target
