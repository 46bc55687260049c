"""The alert rules: promtool accepts them, its unit tests pass, each alert is documented.

The rules file is the single source that the chart wraps into its PrometheusRule; the unit
tests in ``alert_rules_test.yaml`` make every alert fire and not fire.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable

import pytest
import yaml

from tests.deploy.observability import (
    KEDA_METRICS,
    KUBE_STATE_METRICS,
    REPO_ROOT,
    RULES_FILE,
    RULES_TEST_FILE,
    alert_rules,
    exported_sample_names,
    metric_selectors,
    runbook_anchors,
)

#: The alerts of docs/runbook.md, plus the monitor's own absence (without it the others are
#: blind), an operator's override left in force (from `galpipe control`) and the autoscaler
#: blind to the queue (KEDA's scaler errors).
EXPECTED_ALERTS = {
    "GalpipeCutoutSourceDown",
    "GalpipeQueueStalled",
    "GalpipeFailureRatioHigh",
    "GalpipeRateLimitUnderused",
    "GalpipeOldestReadyTaskOverSLO",
    "GalpipeWorkersRestarting",
    "GalpipeDatabaseUnreachable",
    "GalpipeObjectStoreErrors",
    "GalpipeMonitorDown",
    "GalpipeOverrideActive",
    "GalpipeScalerErrors",
}
#: Where every runbook_url of the rules file points: the chart's default
#: prometheusRule.runbookBaseUrl, the runbook as GitHub publishes it.
RUNBOOK_BASE_URL = yaml.safe_load((REPO_ROOT / "charts" / "galpipe" / "values.yaml").read_text())[
    "prometheusRule"
]["runbookBaseUrl"]
#: `by (…)`, `without (…)`, `on (…)` and `ignoring (…)` clauses of a PromQL expression.
GROUPING = re.compile(r"\b(?P<kind>by|without|on|ignoring)\s*\((?P<labels>[^)]*)\)")


def test_promtool_checks_the_rules_file(require_tool: Callable[[str], str]) -> None:
    promtool = require_tool("promtool")
    run = subprocess.run(
        [promtool, "check", "rules", str(RULES_FILE)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in run.stdout


def test_promtool_unit_tests_pass(require_tool: Callable[[str], str]) -> None:
    promtool = require_tool("promtool")
    run = subprocess.run(
        [promtool, "test", "rules", RULES_TEST_FILE.name],
        cwd=RULES_TEST_FILE.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_promtool_unit_tests_fail_when_an_alert_changes(
    require_tool: Callable[[str], str], tmp_path
) -> None:
    """The unit tests can fail: a threshold moved past the test's data breaks them."""
    promtool = require_tool("promtool")
    rules = RULES_FILE.read_text().replace("> 0.05", "> 0.5")
    assert rules != RULES_FILE.read_text()
    (tmp_path / "rules.yaml").write_text(rules)
    tests = yaml.safe_load(RULES_TEST_FILE.read_text())
    tests["rule_files"] = ["rules.yaml"]
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(tests))
    run = subprocess.run(
        [promtool, "test", "rules", "test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode != 0
    assert "GalpipeFailureRatioHigh" in run.stdout + run.stderr


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    tests = yaml.safe_load(RULES_TEST_FILE.read_text())["tests"]
    firing: set[str] = set()
    silent: set[str] = set()
    for test in tests:
        for case in test["alert_rule_test"]:
            (firing if case["exp_alerts"] else silent).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names == EXPECTED_ALERTS
    assert names - firing == set(), "alerts never shown firing"
    assert names - silent == set(), "alerts never shown not firing"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_has_severity_summary_description_and_runbook_section(rule: dict) -> None:
    assert rule["labels"]["severity"] in {"critical", "warning"}
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert len(annotations["description"]) > 60
    page, _, anchor = annotations["runbook_url"].partition("#")
    # Absolute, so that a notification's link opens from a pager or a chat client.
    assert page == RUNBOOK_BASE_URL
    assert RUNBOOK_BASE_URL.startswith("https://github.com/")
    assert RUNBOOK_BASE_URL.endswith("/docs/runbook.md")
    assert anchor == rule["alert"].lower()
    sections = runbook_anchors()
    assert anchor in sections, f"docs/runbook.md has no section {rule['alert']}"
    for part in ("**Meaning.**", "**Checks.**", "**Actions.**"):
        assert part in sections[anchor], f"runbook section {rule['alert']} lacks {part}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_waits_before_firing_and_keeps_the_namespace(rule: dict) -> None:
    """A `for`, so one bad scrape never pages; `namespace` through every aggregation and match,
    so that two releases are two alerts and Alertmanager groups and inhibits per namespace."""
    assert re.fullmatch(r"[1-9]\d*[smh]", str(rule.get("for", ""))), f"{rule['alert']}: no `for`"
    for clause in GROUPING.finditer(rule["expr"]):
        labels = {label.strip() for label in clause["labels"].split(",")}
        assert clause["kind"] in ("by", "on"), f"{rule['alert']}: {clause[0]} drops labels blindly"
        assert "namespace" in labels, f"{rule['alert']}: {clause[0]} drops the namespace"


def test_every_runbook_anchor_of_the_rules_exists() -> None:
    """Each runbook_url's `#anchor` is a section of docs/runbook.md, as GitHub names it."""
    sections = runbook_anchors()
    anchors = {rule["annotations"]["runbook_url"].partition("#")[2] for rule in alert_rules()}
    assert len(anchors) == len(alert_rules())
    assert anchors <= set(sections), sorted(anchors - set(sections))
    # The helper's anchors are GitHub's: lower case, spaces to dashes, punctuation dropped.
    assert "galpipe-check" in sections
    assert "watchdog-heartbeat-missing" in sections


def test_every_metric_in_the_rules_is_exported() -> None:
    exported = exported_sample_names()
    for rule in alert_rules():
        used = {name for name, _ in metric_selectors(rule["expr"])}
        assert used, f"{rule['alert']}: no galpipe or kube-state-metrics series in its expression"
        unknown = used - exported.keys() - KUBE_STATE_METRICS - KEDA_METRICS
        assert not unknown, f"{rule['alert']} uses series nothing exports: {sorted(unknown)}"


def test_rules_and_their_tests_pass_yamllint(require_tool: Callable[[str], str]) -> None:
    run = subprocess.run(
        [
            require_tool("yamllint"),
            "--strict",
            "-c",
            str(REPO_ROOT / ".yamllint.yaml"),
            "-f",
            "parsable",
            str(RULES_FILE),
            str(RULES_TEST_FILE),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout
