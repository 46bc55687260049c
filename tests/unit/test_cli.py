"""``galpipe.cli.main``: the one place that turns an outcome into an exit status and a message."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path

import pytest

import galpipe.cli
from galpipe.cli import build_parser, main
from galpipe.demo.run import DemoResult
from galpipe.errors import (
    CommandError,
    ConfigurationError,
    GalpipeError,
    InputError,
    ServiceError,
    StorageError,
)

#: Every command the README documents, with the module that registers it.
COMMANDS = {
    "migrate", "pause", "resume", "routes", "status", "monitor", "check",  # ops
    "ingest", "export",  # catalog
    "fetch", "radon",  # pipelines
    "morphology",  # morphology
    "photoz",  # photoz
    "sky",  # synthetic
    "validate",  # validation
    "demo",  # demo
    "control", "ctl",  # control
}  # fmt: skip


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GALPIPE_* variable leaks in; main's logging set-up stays out of the test run's."""
    for name in ("GALPIPE_DATABASE_URL", "GALPIPE_LEASE_SECONDS", "GALPIPE_OBJECT_STORE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(galpipe.cli, "configure_logging", lambda *_: None)


def _with_command(
    monkeypatch: pytest.MonkeyPatch, handler: Callable[[argparse.Namespace, object], None]
) -> None:
    """Add ``galpipe boom``, which runs ``handler``, beside the real commands."""

    def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        subparsers.add_parser("boom").set_defaults(handler=handler)

    monkeypatch.setattr(
        galpipe.cli, "COMMAND_REGISTRARS", (*galpipe.cli.COMMAND_REGISTRARS, register)
    )


def _raising(error: BaseException) -> Callable[[argparse.Namespace, object], None]:
    def handler(args: argparse.Namespace, settings: object) -> None:
        raise error

    return handler


def test_every_command_is_registered_by_its_module() -> None:
    listed = re.findall(r"^ {4}([a-z][a-z-]*)\s{2,}", build_parser().format_help(), re.M)
    assert sorted(listed) == sorted(COMMANDS)


def test_a_command_that_returns_exits_0(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    _with_command(monkeypatch, lambda args, settings: seen.append(args.command))
    assert main(["boom"]) == 0
    assert seen == ["boom"]


@pytest.mark.parametrize(
    ("error", "status", "line"),
    [
        (ConfigurationError("X=1: bad"), 2, "galpipe boom: configuration error: X=1: bad"),
        (InputError("cat.csv: no column 'ra'"), 1, "galpipe boom: cat.csv: no column 'ra'"),
        (StorageError("key 'a': store down"), 1, "galpipe boom: key 'a': store down"),
        (ServiceError("database error: refused"), 1, "galpipe boom: database error: refused"),
        (CommandError("tasks still not terminal"), 1, "galpipe boom: tasks still not terminal"),
        (GalpipeError("some other failure"), 1, "galpipe boom: some other failure"),
        (KeyboardInterrupt(), 130, "galpipe boom: interrupted"),
    ],
)  # fmt: skip
def test_each_family_maps_to_its_exit_status_and_message(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: BaseException,
    status: int,
    line: str,
) -> None:
    _with_command(monkeypatch, _raising(error))
    assert main(["boom"]) == status
    captured = capsys.readouterr()
    assert captured.err == line + "\n"
    assert captured.out == ""


def test_a_bug_is_not_dressed_as_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """An error outside the galpipe families propagates with its traceback."""
    _with_command(monkeypatch, _raising(ZeroDivisionError("division by zero")))
    with pytest.raises(ZeroDivisionError):
        main(["boom"])


def test_bad_settings_stop_the_command_before_it_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ran: list[bool] = []
    _with_command(monkeypatch, lambda args, settings: ran.append(True))
    monkeypatch.setenv("GALPIPE_LEASE_SECONDS", "soon")
    assert main(["boom"]) == 2
    assert capsys.readouterr().err.startswith(
        "galpipe boom: configuration error: GALPIPE_LEASE_SECONDS='soon'"
    )
    assert not ran


def test_bad_usage_exits_2_through_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["export"])
    assert exit_.value.code == 2
    assert "the following arguments are required: out" in capsys.readouterr().err


# -- real commands with bad input -------------------------------------------------------------


def test_a_missing_database_url_is_a_configuration_error(capsys) -> None:
    assert main(["status"]) == 2
    assert capsys.readouterr().err.startswith(
        "galpipe status: configuration error: GALPIPE_DATABASE_URL is not set"
    )


def test_ingest_of_a_missing_file_names_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The file is read before the database is touched: no server needed."""
    monkeypatch.setenv("GALPIPE_DATABASE_URL", "postgresql://127.0.0.1:1/nowhere")
    missing = tmp_path / "galaxies.csv"
    assert main(["ingest", str(missing), "--no-progress"]) == 1
    assert capsys.readouterr().err == f"galpipe ingest: {missing}: no such file\n"


def test_export_with_an_unknown_format_fails_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(tmp_path / "results.csv")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("galpipe export: ")
    assert "cannot tell the format" in err


def test_an_unreachable_database_is_a_service_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GALPIPE_DATABASE_URL", "postgresql://galpipe@127.0.0.1:1/galpipe")
    assert main(["migrate"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("galpipe migrate: database error: ")
    assert "127.0.0.1" in err


def test_sky_catalog_names_the_sub_command_and_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sky.ecsv"
    argv = ["sky", "catalog", "--n", "3", "--out", str(out), "--ra-range", "20", "10"]
    assert main(argv) == 1
    assert capsys.readouterr().err.startswith("galpipe sky catalog: ra range (20.0, 10.0)")
    assert not out.exists()


def test_sky_serve_with_a_missing_catalogue_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "sky.ecsv"
    assert main(["sky", "serve", "--port", "0", "--catalog", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("galpipe sky serve: ")
    assert str(missing) in err


def test_demo_refuses_options_before_starting_anything(capsys) -> None:
    assert main(["demo", "--n", "0"]) == 1
    assert capsys.readouterr().err == "galpipe demo: --n 0: need at least one galaxy\n"


def test_demo_that_finishes_with_problems_fails_and_says_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The summary is printed, then the reasons the run is not a success (exit 1)."""
    result = DemoResult(out=tmp_path, problems=["every fetch worker exited early; see logs"])
    monkeypatch.setattr("galpipe.demo.run.run_demo", lambda options, console: result)
    assert main(["demo", "--n", "5", "--out", str(tmp_path), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "every fetch worker exited early" in captured.out  # the summary's problem line
    assert captured.err == (
        "galpipe demo: every fetch worker exited early; see logs "
        f"(report: {tmp_path / 'report.md'})\n"
    )
