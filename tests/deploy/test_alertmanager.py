"""Alerts reach people: the Alertmanager configuration k8s/platform ships, checked by amtool.

kube-prometheus-stack renders ``alertmanager.config`` of its HelmRelease into Alertmanager's
configuration, and mounts the Secrets of ``alertmanagerSpec.secrets`` under
/etc/alertmanager/secrets/<name>/. Here the configuration is taken as Flux applies it to each
cluster (after post-build substitution), the Secret's mount is replaced by a directory of
placeholder credentials, and Alertmanager's own ``amtool`` checks the file and resolves the
receivers of representative alerts: critical pages, warning chats, Watchdog beats the heart.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_gitops import ENVS, _by_kind, _platform_as_flux_applies_it

#: Where the operator mounts a Secret listed in alertmanagerSpec.secrets.
SECRETS_MOUNT = "/etc/alertmanager/secrets/"
#: Fields that would hold a credential in clear; each has a ``*_file`` twin that must be used.
CLEAR_CREDENTIALS = frozenset(
    {"api_url", "routing_key", "service_key", "api_key", "credentials", "password", "bot_token"}
)


def _stack_values(env: str) -> dict[str, Any]:
    releases = _by_kind(_platform_as_flux_applies_it(env), "HelmRelease")
    values: dict[str, Any] = releases[("monitoring", "kube-prometheus-stack")]["spec"]["values"]
    return values


def _fields(value: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """(path, key, value) of every mapping entry in ``value``, depth first."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield path, key, item
            yield from _fields(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _fields(item, f"{path}[{index}]")


@pytest.fixture(scope="module", params=ENVS)
def alertmanager_config(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The cluster's Alertmanager configuration with its Secrets mounted from placeholders."""
    env = request.param
    values = _stack_values(env)["alertmanager"]
    mounts = tmp_path_factory.mktemp(f"alertmanager-{env}")
    text = json.dumps(values["config"])
    for _, key, value in _fields(values["config"]):
        if key.endswith("_file"):
            assert value.startswith(SECRETS_MOUNT), f"{key}: {value} is not a mounted Secret"
            secret, name = Path(value).relative_to(SECRETS_MOUNT).parts
            assert secret in values["alertmanagerSpec"]["secrets"], f"{secret} is not mounted"
            placeholder = mounts / secret / name
            placeholder.parent.mkdir(exist_ok=True)
            url = "https://hooks.slack.com/services/T0/B0/placeholder"
            placeholder.write_text(url if name.endswith("-url") else "placeholder-key")
    text = text.replace(SECRETS_MOUNT, f"{mounts}/")
    path = mounts / "alertmanager.yaml"
    path.write_text(yaml.safe_dump(json.loads(text)))
    return path


def test_amtool_accepts_the_configuration(
    alertmanager_config: Path, require_tool: Callable[[str], str]
) -> None:
    run = subprocess.run(
        [require_tool("amtool"), "check-config", str(alertmanager_config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        # A critical alert pages and is posted to chat too.
        (
            {"alertname": "GalpipeQueueStalled", "severity": "critical", "namespace": "galpipe"},
            "pager,chat",
        ),
        (
            {"alertname": "GalpipeScalerErrors", "severity": "warning", "namespace": "galpipe"},
            "chat",
        ),
        # kube-prometheus-stack's dead-man's switch goes to the heartbeat only.
        ({"alertname": "Watchdog", "severity": "none"}, "heartbeat"),
        ({"alertname": "InfoInhibitor", "severity": "none"}, "blackhole"),
        ({"alertname": "KubeQuotaAlmostFull", "severity": "info"}, "blackhole"),
        # An alert without a known severity is still seen by someone.
        ({"alertname": "SomethingNew"}, "chat"),
    ],
    ids=["critical", "warning", "watchdog", "info-inhibitor", "info", "no-severity"],
)
def test_alerts_reach_their_receivers(
    alertmanager_config: Path,
    require_tool: Callable[[str], str],
    labels: dict[str, str],
    receivers: str,
) -> None:
    amtool = require_tool("amtool")
    pairs = [f"{key}={value}" for key, value in labels.items()]
    run = subprocess.run(
        [
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={alertmanager_config}",
            f"--verify.receivers={receivers}",
            *pairs,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip() == receivers


def test_route_verification_can_fail(
    alertmanager_config: Path, require_tool: Callable[[str], str]
) -> None:
    """amtool's verification is a real check: a critical alert does not reach chat alone."""
    run = subprocess.run(
        [
            require_tool("amtool"),
            "config",
            "routes",
            "test",
            f"--config.file={alertmanager_config}",
            "--verify.receivers=chat",
            "alertname=GalpipeQueueStalled",
            "severity=critical",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode != 0


@pytest.mark.parametrize("env", ENVS)
def test_no_credential_is_in_git(env: str) -> None:
    """Every receiver's key or URL is read from a mounted Secret, none is written inline."""
    config = _stack_values(env)["alertmanager"]["config"]
    inline = [f"{path}.{key}" for path, key, _ in _fields(config) if key in CLEAR_CREDENTIALS]
    assert inline == []
    files = [value for _, key, value in _fields(config) if key.endswith("_file")]
    # pager, chat and heartbeat each read one.
    assert len(files) == 3
    receivers = {r["name"]: r for r in config["receivers"]}
    assert set(receivers) == {"pager", "chat", "heartbeat", "blackhole"}
    assert "routing_key_file" in receivers["pager"]["pagerduty_configs"][0]
    assert "api_url_file" in receivers["chat"]["slack_configs"][0]
    heartbeat = receivers["heartbeat"]["webhook_configs"][0]
    # Named after the cluster it watches (Flux substituted ${cluster_name}).
    assert heartbeat["url"].endswith(f"/heartbeats/galpipe-{env}/ping")


def test_a_critical_alert_inhibits_its_warning_in_the_same_namespace() -> None:
    config = _stack_values("dev")["alertmanager"]["config"]
    (rule,) = [
        r for r in config["inhibit_rules"] if r["source_matchers"] == ['severity = "critical"']
    ]
    assert rule["target_matchers"] == ['severity = "warning"']
    assert set(rule["equal"]) == {"alertname", "namespace"}
    # Grouping per namespace too: two releases' alerts are two notifications.
    assert set(config["route"]["group_by"]) == {"alertname", "namespace"}
    (watchdog,) = [r for r in config["route"]["routes"] if r["receiver"] == "heartbeat"]
    # The heartbeat is sent more often than a heartbeat service's usual grace period (5 min).
    assert watchdog["repeat_interval"] == "1m"


def test_kube_prometheus_stack_ships_the_watchdog() -> None:
    """The heartbeat route relies on the chart's own always-firing Watchdog rule."""
    values = _stack_values("dev")
    rules = values.get("defaultRules", {}).get("rules", {})
    assert rules.get("general", True) is not False
    assert values.get("defaultRules", {}).get("create", True) is not False
