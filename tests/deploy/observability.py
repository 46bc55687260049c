"""The alert rules, dashboards and runbook under test, and PromQL helpers the tests share."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.metrics import MetricWrapperBase

from galpipe.runtime import metrics

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = REPO_ROOT / "charts" / "galpipe" / "files" / "prometheus-rules.yaml"
RULES_TEST_FILE = Path(__file__).with_name("alert_rules_test.yaml")
DASHBOARD_DIR = REPO_ROOT / "grafana" / "dashboards"
DASHBOARDS = ("pipelines", "science", "storage")
RUNBOOK = REPO_ROOT / "docs" / "runbook.md"

#: kube-state-metrics series the dashboards and alerts use (no galpipe process exports them).
KUBE_STATE_METRICS = frozenset(
    {"kube_deployment_status_replicas", "kube_pod_container_status_restarts_total"}
)
#: KEDA operator series the alerts use (KEDA >= 2.14 names; per ScaledObject).
KEDA_METRICS = frozenset({"keda_scaler_detail_errors_total"})


#: What Grafana puts in place of each template variable when "All" is selected, and a rate
#: window fit for a short scrape interval.
def grafana_variables(range_s: int, rate_interval_s: int) -> dict[str, str]:
    return {
        "$__rate_interval": f"{rate_interval_s}s",
        "$__range": f"{range_s}s",
        "$namespace": ".*",
        "$pipeline": ".*",
        "$band": "g|r|i|z|combined",
    }


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of the rules file."""
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard(name: str) -> dict[str, Any]:
    return json.loads((DASHBOARD_DIR / f"{name}.json").read_text())  # type: ignore[no-any-return]


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """The panels that query (rows left out)."""
    return [p for p in board["panels"] if p["type"] != "row"]


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(where, refId, expr) of every panel target of every dashboard."""
    return [
        (f"{name}: {panel['title']}", target["refId"], target["expr"])
        for name in DASHBOARDS
        for panel in panels(dashboard(name))
        for target in panel["targets"]
    ]


def substitute(expr: str, variables: dict[str, str]) -> str:
    """``expr`` with Grafana's template variables replaced (longest names first)."""
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(name, variables[name])
    return expr


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r"\b((?:galpipe|kube|keda)_[A-Za-z0-9_]+)\s*(\{[^}]*\})?")


def metric_selectors(expr: str) -> list[tuple[str, str]]:
    """(metric name, selector as written) of every galpipe_* / kube_* / keda_* series in ``expr``.

    Names inside quoted strings (label values such as ``pod=~".*galpipe.*"``) are skipped.
    """
    spans = [m.span() for m in _STRING.finditer(expr)]
    found = []
    for match in _SELECTOR.finditer(expr):
        if any(start <= match.start() < end for start, end in spans):
            continue
        found.append((match.group(1), match.group(0).strip()))
    return found


def exported_sample_names() -> dict[str, str]:
    """Every sample name galpipe exports (counters' ``_total``, histograms' series) -> metric."""
    names: dict[str, str] = {}
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            for family in obj.describe():
                suffixes = {
                    "counter": ("_total",),
                    "histogram": ("_bucket", "_count", "_sum"),
                    "gauge": ("",),
                }[family.type]
                names.update({family.name + s: family.name for s in suffixes})
        elif isinstance(obj, metrics.DerivedMetric):
            suffix = "_total" if obj.kind == "counter" else ""
            names[obj.name + suffix] = obj.name
    return names


def runbook_anchors() -> dict[str, str]:
    """GitHub's anchor of every ``##`` section of the runbook -> its text."""
    sections = re.split(r"^## ", RUNBOOK.read_text(), flags=re.MULTILINE)[1:]
    anchors = {}
    for section in sections:
        title, _, body = section.partition("\n")
        anchor = re.sub(r"[^a-z0-9 _-]", "", title.strip().lower()).replace(" ", "-")
        anchors[anchor] = body
    return anchors
