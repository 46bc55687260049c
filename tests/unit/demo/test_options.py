"""``--pipelines`` and the worker counts: what the demo runs, and what it refuses up front."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from galpipe.cli import main
from galpipe.demo import DemoError
from galpipe.demo.processes import WORKER_COMMANDS, worker_environment
from galpipe.demo.run import DemoOptions, DemoResult, parse_pipelines
from galpipe.settings import Settings


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("radon", ("fetch", "radon")),
        ("morphology", ("fetch", "morphology")),
        ("radon,morphology", ("fetch", "radon", "morphology")),
        # Order and spacing do not matter; fetch may be named, it runs anyway.
        (" morphology , radon ", ("fetch", "radon", "morphology")),
        ("fetch,morphology", ("fetch", "morphology")),
    ],
)
def test_pipelines_are_parsed_fetch_first_in_flow_order(
    value: str, expected: tuple[str, ...]
) -> None:
    assert parse_pipelines(value) == expected


def test_unknown_pipelines_are_named() -> None:
    with pytest.raises(DemoError, match=r"unknown pipeline\(s\) colour, shape; the demo runs"):
        parse_pipelines("radon,shape,colour")


@pytest.mark.parametrize("value", ["", "fetch", " , "])
def test_some_pipeline_beside_fetch_is_needed(value: str) -> None:
    with pytest.raises(DemoError, match=r"name at least one of radon, morphology"):
        parse_pipelines(value)


def test_options_built_in_code_are_checked_and_ordered_too() -> None:
    options = DemoOptions(n=3, pipelines=("morphology", "radon", "fetch"))
    assert options.pipelines == ("fetch", "radon", "morphology")
    with pytest.raises(DemoError, match="unknown pipeline"):
        DemoOptions(n=3, pipelines=("radom",))


def test_worker_counts_cover_only_the_pipelines_that_run() -> None:
    options = DemoOptions(n=3, pipelines=("morphology",), fetch_workers=3, morphology_workers=2)
    assert options.worker_counts == {"fetch": 3, "morphology": 2}
    # A pipeline that does not run needs no workers, one that runs at least one.
    assert DemoOptions(n=3, pipelines=("morphology",), radon_workers=0).worker_counts == {
        "fetch": 2,
        "morphology": 1,
    }
    with pytest.raises(DemoError, match="morphology=0"):
        DemoOptions(n=3, pipelines=("radon", "morphology"), morphology_workers=0)
    assert set(WORKER_COMMANDS) >= set(
        DemoOptions(n=3, pipelines=("radon", "morphology")).pipelines
    )


def _captured_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[DemoOptions]:
    seen: list[DemoOptions] = []

    def run_demo(options: DemoOptions, console: Any) -> DemoResult:
        seen.append(options)
        return DemoResult(out=tmp_path, pipelines=options.pipelines, n_galaxies=0)

    monkeypatch.setattr("galpipe.demo.run.run_demo", run_demo)
    return seen


def test_the_command_passes_pipelines_and_worker_counts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen = _captured_options(monkeypatch, tmp_path)
    argv = ["demo", "--n", "5", "--out", str(tmp_path), "--no-progress"]
    assert main([*argv, "--pipelines", "radon,morphology", "--morphology-workers", "3"]) == 0
    assert main([*argv, "--pipelines", "morphology", "--workers", "4"]) == 0
    assert main(argv) == 0
    first, second, default = seen
    assert first.pipelines == ("fetch", "radon", "morphology")
    assert (first.fetch_workers, first.radon_workers, first.morphology_workers) == (2, 1, 3)
    assert second.worker_counts == {"fetch": 4, "morphology": 4}
    assert default.pipelines == ("fetch", "radon")


def test_the_command_refuses_an_unknown_pipeline_before_running(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = _captured_options(monkeypatch, tmp_path)
    assert main(["demo", "--n", "5", "--out", str(tmp_path), "--pipelines", "radon,bars"]) == 1
    assert seen == []
    err = capsys.readouterr().err
    assert "--pipelines 'radon,bars': unknown pipeline(s) bars" in err


def test_morphology_workers_get_the_model_and_run_on_the_cpu(tmp_path: Path) -> None:
    common: dict[str, Any] = {
        "database_url": "postgresql://demo/db",
        "object_store": "file:///tmp/objects",
        "cutout_url": "http://127.0.0.1:1",
        "fetch_rate": 1000,
        "radon_cache_dir": tmp_path,
    }
    version = "ab" * 32
    settings = Settings.from_env(worker_environment({}, **common, morphology_model=version))
    assert settings.morphology_model == version
    assert settings.morphology_device == "cpu"
    without = worker_environment({}, **common)
    assert "GALPIPE_MORPHOLOGY_MODEL" not in without
