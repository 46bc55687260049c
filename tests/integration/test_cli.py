"""The ``galpipe`` command: configuration errors, migrate, pause/resume, status, demo usage."""

from __future__ import annotations

import json

import psycopg
import pytest

import galpipe.cli
from galpipe.cli import main


@pytest.fixture(autouse=True)
def _test_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """main's logging set-up is the process's; the test run keeps its own."""
    monkeypatch.setattr(galpipe.cli, "configure_logging", lambda *_: None)


def test_missing_database_url_is_a_usage_error(monkeypatch, capsys) -> None:
    monkeypatch.delenv("GALPIPE_DATABASE_URL", raising=False)
    assert main(["migrate"]) == 2
    assert "GALPIPE_DATABASE_URL is not set" in capsys.readouterr().err


def test_bad_setting_is_reported_before_anything_runs(monkeypatch, capsys) -> None:
    monkeypatch.setenv("GALPIPE_LEASE_SECONDS", "soon")
    assert main(["migrate"]) == 2
    assert "GALPIPE_LEASE_SECONDS='soon'" in capsys.readouterr().err


def test_migrate_is_idempotent(database_url: str, monkeypatch, capsys) -> None:
    monkeypatch.setenv("GALPIPE_DATABASE_URL", database_url)
    assert main(["migrate"]) == 0
    assert "applied 0 migration(s)" in capsys.readouterr().out


def test_pause_and_resume(database_url: str, monkeypatch) -> None:
    monkeypatch.setenv("GALPIPE_DATABASE_URL", database_url)
    assert main(["pause", "fetch", "--reason", "survey maintenance"]) == 0
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT paused, reason FROM pipeline_control").fetchone()
    assert row == (True, "survey maintenance")
    assert main(["resume", "fetch"]) == 0
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT paused FROM pipeline_control").fetchone() == (False,)


def test_status_prints_json_through_main(database_url: str, monkeypatch, capsys) -> None:
    monkeypatch.setenv("GALPIPE_DATABASE_URL", database_url)
    assert main(["pause", "radon", "--reason", "new operator"]) == 0
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pipelines"]["radon"]["paused"] is True
    assert main(["resume", "radon"]) == 0
    assert capsys.readouterr().out == "resumed radon\n"


def test_a_database_that_refuses_is_a_failure_not_a_traceback(
    database_url: str, monkeypatch, capsys
) -> None:
    wrong = psycopg.conninfo.make_conninfo(database_url, dbname="no_such_database")
    monkeypatch.setenv("GALPIPE_DATABASE_URL", wrong)
    assert main(["migrate"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("galpipe migrate: database error: ")
    assert "no_such_database" in err


def test_demo_refuses_an_empty_catalogue(capsys) -> None:
    assert main(["demo", "--n", "0"]) == 1
    assert "--n 0" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["transmogrify"])
    assert exit_.value.code == 2
