"""The chart's safety nets: KEDA's fallback and scaling behavior, per-pipeline scheduling, and
alerts whose runbook links are absolute addresses."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.chart_render import (
    effective_values,
    of_kind,
    render,
    render_set,
    validate_object,
)
from tests.deploy.observability import RULES_FILE, runbook_anchors

SPOT_TOLERATION = {
    "key": "galpipe.io/node-group",
    "operator": "Equal",
    "value": "spot",
    "effect": "NoSchedule",
}


def _pod_spec(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    spec: dict[str, Any] = of_kind(objects, "Deployment")[name]["spec"]["template"]["spec"]
    return spec


def test_scaled_objects_fall_back_and_scale_down_gently() -> None:
    objects = render_set("default")
    values = effective_values({})["pipelines"]
    for name in ("fetch", "radon"):
        spec = of_kind(objects, "ScaledObject")[f"galpipe-{name}"]["spec"]
        expected = values[name]["autoscaling"]
        assert spec["fallback"] == expected["fallback"]
        assert 1 <= spec["fallback"]["replicas"] <= spec["maxReplicaCount"]
        behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        assert behavior == expected["behavior"]
        # A dip in the queue shorter than KEDA's cooldown does not shed replicas.
        assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 60
        (policy,) = behavior["scaleDown"]["policies"]
        assert policy["type"] == "Percent"
        assert policy["value"] < 100


def test_fallback_and_behavior_are_values() -> None:
    overrides = {
        "pipelines": {
            "radon": {
                "autoscaling": {
                    "fallback": {"failureThreshold": 5, "replicas": 7},
                    "behavior": {
                        "scaleDown": {
                            "stabilizationWindowSeconds": 900,
                            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}],
                        }
                    },
                }
            }
        }
    }
    objects = render(overrides)
    spec = of_kind(objects, "ScaledObject")["galpipe-radon"]["spec"]
    assert spec["fallback"] == {"failureThreshold": 5, "replicas": 7}
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 120}]
    validate_object(of_kind(objects, "ScaledObject")["galpipe-radon"])
    # The HPA that replaces KEDA when it is off scales down the same way.
    hpa_objects = render({**overrides, "autoscaling": {"keda": {"enabled": False}}})
    hpa = of_kind(hpa_objects, "HorizontalPodAutoscaler")["galpipe-radon"]
    assert hpa["spec"]["behavior"] == behavior
    validate_object(hpa)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"pipelines": {"fetch": {"autoscaling": {"fallback": {"replicas": 9}}}}},
            "fallback.replicas 9 exceeds maxReplicaCount 3",
        ),
        (
            {"pipelines": {"fetch": {"autoscaling": {"fallback": {"replicas": 0}}}}},
            "replicas",
        ),
        (
            {
                "pipelines": {
                    "fetch": {
                        "autoscaling": {
                            "behavior": {
                                "scaleDown": {
                                    "policies": [{"type": "Nodes", "value": 1, "periodSeconds": 60}]
                                }
                            }
                        }
                    }
                }
            },
            "policies/0/type",
        ),
        ({"pipelines": {"radon": {"scheduling": {"nodeSelectors": {}}}}}, "nodeSelectors"),
        ({"pod": {"priorityClassName": "Not A Name"}}, "priorityClassName"),
        ({"prometheusRule": {"runbookBaseUrl": "docs/runbook.md"}}, "runbookBaseUrl"),
    ],
    ids=[
        "fallback-above-max",
        "fallback-zero",
        "unknown-policy",
        "misspelt-scheduling",
        "bad-priority-class",
        "relative-runbook",
    ],
)
def test_wrong_safety_net_values_are_rejected(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(Exception, match=message):
        render(overrides)


def test_radon_alone_tolerates_and_prefers_the_spot_group() -> None:
    objects = render_set("default")
    radon = _pod_spec(objects, "galpipe-radon")
    assert SPOT_TOLERATION in radon["tolerations"]
    preferred = radon["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred[0]["preference"]["matchExpressions"] == [
        {"key": "galpipe.io/node-group", "operator": "In", "values": ["spot"]}
    ]
    # Everything else stays off the tainted spot nodes.
    for name in ("galpipe-fetch", "galpipe-monitor", "galpipe-control"):
        assert "tolerations" not in _pod_spec(objects, name), name
    (job,) = of_kind(objects, "Job").values()
    assert "tolerations" not in job["spec"]["template"]["spec"]


def test_pipeline_scheduling_overrides_the_global_one_key_by_key() -> None:
    overrides: dict[str, Any] = {
        "pod": {
            "nodeSelector": {"galpipe.io/node-group": "general"},
            "priorityClassName": "galpipe-batch",
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        },
        "pipelines": {
            "radon": {
                "scheduling": {
                    "nodeSelector": {"galpipe.io/node-group": "spot"},
                    "priorityClassName": "galpipe-preemptible",
                }
            }
        },
    }
    objects = render(overrides)
    radon = _pod_spec(objects, "galpipe-radon")
    fetch = _pod_spec(objects, "galpipe-fetch")
    assert radon["nodeSelector"] == {"galpipe.io/node-group": "spot"}
    assert radon["priorityClassName"] == "galpipe-preemptible"
    # radon's own tolerations (the default's) replace the global ones; fetch keeps the global.
    assert radon["tolerations"] == [SPOT_TOLERATION]
    assert fetch["nodeSelector"] == {"galpipe.io/node-group": "general"}
    assert fetch["priorityClassName"] == "galpipe-batch"
    assert fetch["tolerations"] == overrides["pod"]["tolerations"]
    for obj in objects:
        validate_object(obj)
    # An empty value clears the global one for that pipeline only.
    cleared = render({**overrides, "pipelines": {"fetch": {"scheduling": {"nodeSelector": {}}}}})
    assert "nodeSelector" not in _pod_spec(cleared, "galpipe-fetch")
    assert _pod_spec(cleared, "galpipe-radon")["nodeSelector"] == {
        "galpipe.io/node-group": "general"
    }


def test_runbook_urls_are_absolute_and_follow_the_value() -> None:
    sections = runbook_anchors()
    default = of_kind(render_set("default"), "PrometheusRule")["galpipe"]
    base = effective_values({})["prometheusRule"]["runbookBaseUrl"]
    fork = "https://git.example.org/astro/galpipe/-/blob/v1.4.0/docs/runbook.md"
    moved = of_kind(render({"prometheusRule": {"runbookBaseUrl": fork + "/"}}), "PrometheusRule")
    groups = {"default": default, "fork": moved["galpipe"]}
    source = {
        r["alert"]: r["annotations"]["runbook_url"]
        for g in yaml.safe_load(RULES_FILE.read_text())["groups"]
        for r in g["rules"]
    }
    for which, rule_object in groups.items():
        for group in rule_object["spec"]["groups"]:
            for rule in group["rules"]:
                url = rule["annotations"]["runbook_url"]
                page, _, anchor = url.partition("#")
                assert page == (base if which == "default" else fork), url
                assert anchor == rule["alert"].lower()
                assert anchor in sections, f"docs/runbook.md has no section {rule['alert']}"
                assert source[rule["alert"]].endswith("#" + anchor)
