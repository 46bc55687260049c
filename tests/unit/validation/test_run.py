"""The sizes of a validation run: explicit sizes win over ``--quick``'s defaults."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from galpipe.validation import run as run_module
from galpipe.validation.cli import register
from galpipe.validation.run import (
    FLOOR_GALAXIES,
    FULL_AUGMENT,
    FULL_TRUTH,
    QUICK_AUGMENT,
    QUICK_FLOOR_GALAXIES,
    QUICK_TRUTH,
    RunSizes,
    resolve_sizes,
)


def test_quick_fills_only_the_sizes_not_given() -> None:
    quick = RunSizes(QUICK_TRUTH, QUICK_AUGMENT, QUICK_FLOOR_GALAXIES)
    assert resolve_sizes(quick=True) == quick
    assert resolve_sizes(n_truth=50, quick=True) == RunSizes(50, quick.n_augment, quick.n_floor)
    assert resolve_sizes(n_augment=0, n_floor=0, quick=True) == RunSizes(QUICK_TRUTH, 0, 0)


def test_without_quick_the_defaults_are_the_full_run() -> None:
    assert resolve_sizes() == RunSizes(FULL_TRUTH, FULL_AUGMENT, FLOOR_GALAXIES)
    assert resolve_sizes(n_floor=3) == RunSizes(FULL_TRUTH, FULL_AUGMENT, 3)


class _Headline:
    def to_json(self) -> dict[str, Any]:
        return {"truth_median_deg": 0.5}


class _Timing:
    total_s = 1.5


class _Summary:
    headline = _Headline()
    timing = _Timing()


def _run_command(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``galpipe validate`` with ``argv`` and a stand-in run; its arguments and output."""
    received: dict[str, Any] = {}

    def fake_run(out_dir: str, **kwargs: Any) -> _Summary:
        received.update(kwargs, out_dir=out_dir)
        return _Summary()

    monkeypatch.setattr(run_module, "run_validation", fake_run)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["validate", *argv])
    args.handler(args, None)
    printed = json.loads(capsys.readouterr().out.splitlines()[0])
    return received, printed


def test_the_command_passes_explicit_sizes_beside_quick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    received, printed = _run_command(
        [str(tmp_path), "--quick", "--n-truth", "50"], monkeypatch, capsys
    )
    sizes = resolve_sizes(
        received["n_truth"], received["n_augment"], received["n_floor"], quick=received["quick"]
    )
    assert sizes == RunSizes(50, QUICK_AUGMENT, QUICK_FLOOR_GALAXIES)
    assert printed == {"truth_median_deg": 0.5, "out_dir": str(tmp_path), "elapsed_s": 1.5}


def test_the_command_leaves_sizes_not_given_to_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    received, _ = _run_command([str(tmp_path)], monkeypatch, capsys)
    assert (received["n_truth"], received["n_augment"], received["n_floor"]) == (None,) * 3
    assert received["quick"] is False
