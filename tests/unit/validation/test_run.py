"""The sizes of a validation run: explicit sizes win over ``--quick``'s defaults."""

from __future__ import annotations

import argparse
import dataclasses
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
    LENSING_GALAXIES,
    LENSING_RINGS,
    QUICK_AUGMENT,
    QUICK_FLOOR_GALAXIES,
    QUICK_LENSING_GALAXIES,
    QUICK_LENSING_RINGS,
    QUICK_TRUTH,
    RunSizes,
    resolve_sizes,
)

QUICK = RunSizes(
    QUICK_TRUTH, QUICK_AUGMENT, QUICK_FLOOR_GALAXIES, QUICK_LENSING_GALAXIES, QUICK_LENSING_RINGS
)
FULL = RunSizes(FULL_TRUTH, FULL_AUGMENT, FLOOR_GALAXIES, LENSING_GALAXIES, LENSING_RINGS)


def test_quick_fills_only_the_sizes_not_given() -> None:
    assert resolve_sizes(quick=True) == QUICK
    assert resolve_sizes(n_truth=50, quick=True) == dataclasses.replace(QUICK, n_truth=50)
    assert resolve_sizes(n_augment=0, n_floor=0, quick=True) == dataclasses.replace(
        QUICK, n_augment=0, n_floor=0
    )
    assert resolve_sizes(n_rings=3, quick=True) == dataclasses.replace(QUICK, n_rings=3)


def test_without_quick_the_defaults_are_the_full_run() -> None:
    assert resolve_sizes() == FULL
    assert resolve_sizes(n_floor=3) == dataclasses.replace(FULL, n_floor=3)
    assert resolve_sizes(n_lensing=7) == dataclasses.replace(FULL, n_lensing=7)
    # The quick lensing check is far smaller than the full one (seconds, not minutes).
    assert QUICK.n_lensing < FULL.n_lensing
    assert QUICK.n_rings < FULL.n_rings


def test_either_lensing_size_zero_switches_the_check_off() -> None:
    assert QUICK.lensing
    assert FULL.lensing
    assert not resolve_sizes(n_lensing=0, quick=True).lensing
    assert not resolve_sizes(n_rings=0).lensing


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
        received["n_truth"],
        received["n_augment"],
        received["n_floor"],
        received["n_lensing"],
        received["n_rings"],
        quick=received["quick"],
    )
    assert sizes == dataclasses.replace(QUICK, n_truth=50)
    assert printed == {"truth_median_deg": 0.5, "out_dir": str(tmp_path), "elapsed_s": 1.5}


def test_the_command_leaves_sizes_not_given_to_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    received, _ = _run_command([str(tmp_path)], monkeypatch, capsys)
    sizes = ("n_truth", "n_augment", "n_floor", "n_lensing", "n_rings")
    assert [received[name] for name in sizes] == [None] * len(sizes)
    assert received["quick"] is False


def test_the_command_passes_the_lensing_sizes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    received, _ = _run_command(
        [str(tmp_path), "--quick", "--lensing-galaxies", "0", "--lensing-rings", "12"],
        monkeypatch,
        capsys,
    )
    assert (received["n_lensing"], received["n_rings"]) == (0, 12)


def test_the_command_refuses_a_negative_lensing_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit):
        parser.parse_args(["validate", str(tmp_path), "--lensing-rings", "-1"])
    assert "-1: expected an integer >= 0" in capsys.readouterr().err
