"""The control service: uvicorn under the runtime's Service protocol, the override gauge and
the control settings."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from galpipe.cli import build_parser
from galpipe.control.service import ControlService, OverrideCollector
from galpipe.settings import Settings, SettingsError


def test_the_service_serves_until_asked_to_stop() -> None:
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    pings: list[int] = []
    service = ControlService(app, lambda: pings.append(1), host="127.0.0.1", port=0)
    assert service.readiness() == (False, "starting")
    runner = threading.Thread(target=service.run)
    runner.start()
    deadline = time.monotonic() + 10
    while not service.server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    port = service.server.servers[0].sockets[0].getsockname()[1]
    assert httpx.get(f"http://127.0.0.1:{port}/ping").json() == {"pong": "yes"}
    assert service.readiness() == (True, "ok")
    assert pings == [1]
    assert service.liveness() == (True, "ok")
    service.request_stop()
    runner.join(10)
    assert not runner.is_alive()
    assert service.readiness() == (False, "stopping")


def test_readiness_reports_the_database() -> None:
    def down() -> None:
        raise OSError("connection refused")

    service = ControlService(FastAPI(), down, port=0)
    service.server.started = True
    ok, detail = service.readiness()
    assert not ok
    assert "connection refused" in detail


@dataclass(frozen=True)
class _Override:
    pipeline: str
    kind: str
    since: datetime | None


class _Actions:
    def __init__(self, overrides: list[_Override]) -> None:
        self.overrides_now = overrides

    def overrides(self) -> list[_Override]:
        return self.overrides_now


def test_override_gauge_has_one_series_per_active_override() -> None:
    began = datetime(2030, 1, 1, tzinfo=UTC)
    actions = _Actions([_Override("fetch", "pause", began), _Override("radon", "hold", None)])
    collector = OverrideCollector(actions, wall_clock=lambda: 42.0)  # type: ignore[arg-type]
    (family,) = collector.collect()
    assert family.name == "galpipe_control_override_active_since_timestamp_seconds"
    samples = {(s.labels["pipeline"], s.labels["override"]): s.value for s in family.samples}
    assert samples == {("fetch", "pause"): began.timestamp(), ("radon", "hold"): 42.0}
    actions.overrides_now = []
    (family,) = collector.collect()
    assert family.samples == []


def test_control_settings(tmp_path: Path) -> None:
    settings = Settings.from_env({})
    assert settings.control_port == 8080
    assert settings.control_release == "galpipe"
    assert settings.control_helm_release_name == "galpipe"
    assert settings.control_review_ttl_seconds == 10.0
    assert settings.control_namespace_or_pod(str(tmp_path / "absent")) == "default"
    (tmp_path / "namespace").write_text("galpipe-dev\n")
    assert settings.control_namespace_or_pod(str(tmp_path / "namespace")) == "galpipe-dev"
    configured = Settings.from_env(
        {
            "GALPIPE_CONTROL_NAMESPACE": "prod",
            "GALPIPE_CONTROL_HELMRELEASE": "galpipe-prod",
            "GALPIPE_CONTROL_SESSION_KEY": "s" * 32,
        }
    )
    assert configured.control_namespace_or_pod(str(tmp_path / "namespace")) == "prod"
    assert configured.control_helm_release_name == "galpipe-prod"
    assert "s" * 32 not in repr(configured)
    with pytest.raises(SettingsError, match="GALPIPE_CONTROL_SESSION_KEY") as short:
        Settings.from_env({"GALPIPE_CONTROL_SESSION_KEY": "short-secret"})
    assert "short-secret" not in str(short.value)
    with pytest.raises(SettingsError, match="GALPIPE_CONTROL_SESSION_KEY"):
        Settings.from_env({}).require("control_session_key")


def test_galpipe_control_is_a_command() -> None:
    args = build_parser().parse_args(["control"])
    assert args.handler.__module__ == "galpipe.control.cli"
