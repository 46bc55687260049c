"""When the demo counts a pipeline finished."""

from __future__ import annotations

import pytest

from galpipe.demo.progress import Progress, stage_done


def _counts(**states: int) -> dict[str, int]:
    return {"queued": 0, "running": 0, "done": 0, "failed": 0, "skipped": 0, **states}


def test_a_stage_is_done_when_every_task_is_terminal_and_none_waits() -> None:
    assert stage_done({"fetch": _counts(done=8, skipped=2)}, "fetch", 10)
    assert not stage_done({"fetch": _counts(done=9, skipped=2, queued=1)}, "fetch", 10)
    assert not stage_done({"fetch": _counts(done=9)}, "fetch", 10)
    assert not stage_done({}, "radon", 1)


def test_radon_is_not_finished_before_fetch() -> None:
    progress = Progress(started=100.0)
    # Every radon task queued so far is done, but fetch still has work (and queues more radon).
    progress.update({"fetch": _counts(done=3, running=2), "radon": _counts(done=3)}, now=101.0)
    progress.mark_finished(n_galaxies=5, now=101.0)
    assert progress.finished_at == {}
    progress.update({"fetch": _counts(done=5), "radon": _counts(done=3, queued=2)}, now=102.0)
    progress.mark_finished(n_galaxies=5, now=102.0)
    assert progress.finished_at == {"fetch": 2.0}
    progress.update({"fetch": _counts(done=5), "radon": _counts(done=4, failed=1)}, now=104.0)
    progress.mark_finished(n_galaxies=5, now=104.0)
    assert progress.finished_at == {"fetch": 2.0, "radon": 4.0}
    assert progress.all_finished
    assert progress.rate("radon") == pytest.approx(2 / 3)  # 3 terminal at 101 s, 5 at 104 s


def test_every_downstream_pipeline_must_account_for_every_done_fetch() -> None:
    progress = Progress(started=0.0, pipelines=("fetch", "radon", "morphology"))
    progress.update(
        {"fetch": _counts(done=4, failed=1), "radon": _counts(done=4), "morphology": _counts()},
        now=1.0,
    )
    progress.mark_finished(n_galaxies=5, now=1.0)
    # Morphology has no task yet for the 4 done fetches: not finished, and neither is the run.
    assert set(progress.finished_at) == {"fetch", "radon"}
    assert not progress.all_finished
    progress.update(
        {
            "fetch": _counts(done=4, failed=1),
            "radon": _counts(done=4),
            "morphology": _counts(done=3, skipped=1),
        },
        now=3.0,
    )
    progress.mark_finished(n_galaxies=5, now=3.0)
    assert progress.finished_at["morphology"] == 3.0
    assert progress.all_finished


def test_a_run_without_radon_does_not_wait_for_radon() -> None:
    progress = Progress(started=0.0, pipelines=("fetch", "morphology"))
    progress.update({"fetch": _counts(done=2), "morphology": _counts(done=2)}, now=1.0)
    progress.mark_finished(n_galaxies=2, now=1.0)
    assert progress.all_finished
    assert "radon" not in progress.line()
