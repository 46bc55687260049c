"""When a demo run counts as complete: every pipeline that ran accounts for every done fetch."""

from __future__ import annotations

from pathlib import Path

from galpipe.demo.run import DemoResult


def _result(tmp_path: Path, pipelines: tuple[str, ...], **counts: dict[str, int]) -> DemoResult:
    return DemoResult(out=tmp_path, pipelines=pipelines, n_galaxies=5, counts=counts)


def test_morphology_tasks_must_be_terminal_and_one_per_done_fetch(tmp_path: Path) -> None:
    both = ("fetch", "radon", "morphology")
    fetch, radon = {"done": 4, "skipped": 1}, {"done": 3, "failed": 1}
    assert _result(tmp_path, both, fetch=fetch, radon=radon, morphology={"done": 4}).all_terminal
    assert not _result(
        tmp_path, both, fetch=fetch, radon=radon, morphology={"done": 3}
    ).all_terminal  # one fetched galaxy has no morphology task
    assert not _result(
        tmp_path, both, fetch=fetch, radon=radon, morphology={"done": 3, "running": 1}
    ).all_terminal
    assert not _result(tmp_path, both, fetch=fetch, radon=radon).all_terminal


def test_a_run_without_radon_needs_no_radon_tasks(tmp_path: Path) -> None:
    only = ("fetch", "morphology")
    fetch = {"done": 5}
    assert _result(tmp_path, only, fetch=fetch, morphology={"done": 4, "failed": 1}).all_terminal
    # The default run still needs its radon tasks, and only those.
    assert not _result(tmp_path, ("fetch", "radon"), fetch=fetch).all_terminal
    assert _result(tmp_path, ("fetch", "radon"), fetch=fetch, radon={"done": 5}).all_terminal
