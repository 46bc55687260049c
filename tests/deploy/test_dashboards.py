"""The Grafana dashboards: Grafana's schema conventions, one data-source variable, known series.

Whether every query actually returns data is checked against a running stack in
``test_prometheus_live.py``.
"""

from __future__ import annotations

import pytest

from tests.deploy.observability import (
    DASHBOARDS,
    KUBE_STATE_METRICS,
    dashboard,
    dashboard_queries,
    exported_sample_names,
    metric_selectors,
    panels,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


@pytest.mark.parametrize("name", DASHBOARDS)
def test_dashboard_is_provisionable_and_uses_the_datasource_variable(name: str) -> None:
    board = dashboard(name)
    assert board["uid"] == f"galpipe-{name}"
    assert board["title"].startswith("galpipe / ")
    assert isinstance(board["schemaVersion"], int)
    assert "id" not in board or board["id"] is None  # provisioning assigns ids
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(board):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["description"], panel["title"]
        assert panel["targets"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
        used = {v[1:] for t in panel["targets"] for v in _variables(t["expr"])}
        assert used <= variables.keys() | {"__rate_interval", "__range"}, panel["title"]


def _variables(expr: str) -> set[str]:
    import re

    return set(re.findall(r"\$[A-Za-z_]+", expr))


def test_dashboards_cover_queues_throughput_outcomes_and_replicas() -> None:
    titles = {name: {p["title"] for p in panels(dashboard(name))} for name in DASHBOARDS}
    assert {
        "Queue depth by state",
        "Throughput",
        "Success, retry and failure rates",
        "Replicas and busy workers",
        "Batch processing latency",
        "Breaker state",
        "Rate-limit use against the limit",
    } <= titles["pipelines"]
    exprs = " ".join(expr for _, _, expr in dashboard_queries())
    for series in (
        "galpipe_radon_angle_error_degrees_bucket",
        "galpipe_radon_anisotropy_bucket",
        "galpipe_radon_band_offset_degrees_bucket",
        "galpipe_radon_galaxies_flagged_total",
        "galpipe_database_size_bytes",
        "galpipe_object_store_operations_total",
        "kube_deployment_status_replicas",
    ):
        assert series in exprs


def test_every_metric_in_the_dashboards_is_exported() -> None:
    exported = exported_sample_names()
    for where, ref, expr in dashboard_queries():
        used = {name for name, _ in metric_selectors(expr)}
        assert used, f"{where} {ref}: no galpipe or kube-state-metrics series"
        unknown = used - exported.keys() - KUBE_STATE_METRICS
        assert not unknown, f"{where} {ref} uses series nothing exports: {sorted(unknown)}"


def test_operator_actions_row_covers_the_control_service() -> None:
    """A row of its own, below the pipelines' rows, with one panel per control-plane series."""
    board = dashboard("pipelines")
    rows = [p for p in board["panels"] if p["type"] == "row"]
    assert rows[-1]["title"] == "Operator actions"
    below = [p for p in panels(board) if p["gridPos"]["y"] > rows[-1]["gridPos"]["y"]]
    by_series = {
        name: panel["title"]
        for panel in below
        for target in panel["targets"]
        for name, _ in metric_selectors(target["expr"])
    }
    assert set(by_series) == {
        "galpipe_control_actions_total",
        "galpipe_control_login_failures_total",
        "galpipe_control_reviews_total",
        "galpipe_control_override_active_since_timestamp_seconds",
    }
    exprs = {panel["title"]: panel["targets"][0]["expr"] for panel in below}
    assert "by (action, result)" in exprs["Operator actions by result"]
    assert "by (review, outcome, cached)" in exprs["Token and access reviews"]
    # Two control replicas export the same overrides: the panel must not add them up.
    assert exprs["Active overrides"].startswith("max by (pipeline, override)")
