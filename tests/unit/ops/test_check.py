"""``galpipe check``'s report: the verdict, its JSON, its tables, and what the numbers mean."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console

from galpipe.db.routes import Route
from galpipe.ops.check import (
    KINDS,
    PREDICTED_PIPELINE,
    Breach,
    CheckReport,
    default_lease_grace_s,
    expected_task_counts,
    render_check,
)
from galpipe.pipelines.morphology import MorphologyPipeline
from galpipe.pipelines.worker import RECOVERY_INTERVAL_S
from galpipe.settings import Settings

RUNBOOK = Path(__file__).resolve().parents[3] / "docs" / "runbook.md"
KEY = "cutouts/ls-dr10/griz-40px-0.262as/4295806720.fits"


AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
FETCH_TO_RADON = (Route("fetch", "radon", AT),)


def report(*breaches: Breach, sample: int | None = 1000) -> CheckReport:
    counts = {
        "fetch": {"queued": 1, "running": 0, "done": 3, "failed": 0, "skipped": 1},
        "radon": {"queued": 0, "running": 0, "done": 3, "failed": 0, "skipped": 0},
    }
    return CheckReport(
        taken_at=AT,
        breaches=breaches,
        counts=counts,
        expected=expected_task_counts(counts, 5, FETCH_TO_RADON),
        galaxies=5,
        objects_verified=3,
        sample=sample,
        lease_grace_s=20.0,
        attempts_limit=4,
    )


def rendered(r: CheckReport) -> str:
    console = Console(width=250, record=True, color_system=None)
    render_check(r, console)
    return console.export_text()


def test_a_report_without_breaches_is_ok() -> None:
    clean = report()
    assert clean.ok
    assert clean.kinds() == set()
    text = rendered(clean)
    assert "no breach" in text
    assert "3 objects verified (a sample of 1,000)" in text


def test_json_carries_the_verdict_and_every_breach() -> None:
    missing = Breach("missing_object", 2, (KEY, "cutouts/x.fits"), "fetch")
    broken = report(missing, sample=None)
    assert not broken.ok
    data = json.loads(json.dumps(broken.to_json()))
    assert data["ok"] is False
    assert data["sample"] is None
    assert data["taken_at"] == "2025-03-01T12:00:00+00:00"
    assert data["counts"]["fetch"]["done"] == 3
    assert data["breaches"] == [
        {
            "kind": "missing_object",
            "pipeline": "fetch",
            "count": 2,
            "examples": [KEY, "cutouts/x.fits"],
            "meaning": KINDS["missing_object"],
        }
    ]


def test_the_failure_message_names_kind_count_and_where() -> None:
    broken = report(
        Breach("stale_lease", 1, ("42",), "radon"),
        Breach("counts_do_not_add_up", 1, ("radon: 2 tasks, 3 done fetch",)),
    )
    assert broken.failure_message() == (
        "2 breach(es): stale_lease [radon]: 1 (e.g. 42); "
        "counts_do_not_add_up: 1 (e.g. radon: 2 tasks, 3 done fetch)"
    )


def test_the_tables_show_each_breach_and_the_counts_against_what_they_should_be() -> None:
    text = rendered(report(Breach("object_size_mismatch", 1, (KEY,), "fetch"), sample=None))
    assert "object_size_mismatch" in text
    assert KEY in text
    assert KINDS["object_size_mismatch"] in text
    assert "(all)" in text
    assert "5 (galaxies)" in text  # fetch: one task per galaxy
    assert "3 (done fetch)" in text  # radon: one task per done fetch


def test_every_pipeline_has_an_expected_task_count() -> None:
    counts = {"fetch": {"done": 7}, "radon": {"done": 2}, "bogus": {"queued": 1}}
    assert expected_task_counts(counts, 9, FETCH_TO_RADON) == {
        "fetch": (9, "galaxies"),
        "radon": (7, "done fetch"),
        "bogus": (0, "no such pipeline"),
    }
    assert expected_task_counts({}, 0, FETCH_TO_RADON) == {
        "fetch": (0, "galaxies"),
        "radon": (0, "done fetch"),
    }


def test_expected_task_counts_follow_the_routes() -> None:
    counts = {"fetch": {"done": 7}, "radon": {"done": 4}, "morphology": {"queued": 3}}
    both = (*FETCH_TO_RADON, Route("fetch", "morphology", AT))
    assert expected_task_counts(counts, 9, both)["morphology"] == (7, "done fetch")
    # Routed from two: the galaxies done in either, counted by the caller in the snapshot.
    two = (*both, Route("radon", "morphology", AT))
    assert expected_task_counts(counts, 9, two, {"morphology": 8})["morphology"] == (
        8,
        "done fetch or radon",
    )
    # A known pipeline whose route was removed keeps its tasks: no number is expected of it.
    assert "morphology" not in expected_task_counts(counts, 9, FETCH_TO_RADON)
    # Without any route, radon is expected only to exist as a known pipeline.
    assert expected_task_counts(counts, 9, ()) == {"fetch": (9, "galaxies")}


@pytest.mark.parametrize(
    ("lease", "poll_max", "grace"),
    [(300.0, 10.0, RECOVERY_INTERVAL_S + 10.0), (4.0, 2.0, 6.0)],
)
def test_the_lease_grace_is_one_sweep_plus_one_idle_poll(
    lease: float, poll_max: float, grace: float
) -> None:
    settings = Settings(lease_seconds=lease, poll_min_seconds=0.1, poll_max_seconds=poll_max)
    assert default_lease_grace_s(settings) == grace


def test_the_predictions_are_judged_against_the_morphology_pipeline() -> None:
    # Named in the check rather than imported from the pipeline (which loads ONNX Runtime).
    assert MorphologyPipeline.name == PREDICTED_PIPELINE


def test_an_unknown_kind_has_no_meaning() -> None:
    with pytest.raises(KeyError):
        _ = Breach("made_up", 1, ()).meaning


def test_the_runbook_explains_every_kind() -> None:
    runbook = RUNBOOK.read_text(encoding="utf-8")
    section = runbook[runbook.index("## galpipe check") :]
    missing = [kind for kind in KINDS if f"`{kind}`" not in section]
    assert not missing, f"docs/runbook.md's galpipe check section lacks {missing}"


def test_a_pipeline_whose_route_was_removed_is_shown_unjudged() -> None:
    counts = {"fetch": {"done": 3}, "morphology": {"queued": 2}}
    kept = CheckReport(
        taken_at=AT,
        breaches=(),
        counts=counts,
        expected=expected_task_counts(counts, 3, ()),
        galaxies=3,
        objects_verified=0,
        sample=None,
        lease_grace_s=20.0,
        attempts_limit=4,
    )
    row = next(line for line in rendered(kept).splitlines() if "morphology" in line)
    assert "- (no route)" in row
