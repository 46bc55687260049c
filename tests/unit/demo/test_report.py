"""The demo's report: its S/N is the validation's, failures grouped by cause, the Markdown page."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from galpipe.db.demo_results import RESULT_COLUMNS
from galpipe.demo import report
from galpipe.demo.run import DemoOptions, DemoResult
from galpipe.synthetic.catalog import make_truths, truth_table
from galpipe.validation.population import snr_half_light


def _rows(source_ids: list[int], measured_pa: list[float | None]) -> list[dict[str, Any]]:
    """:func:`galpipe.db.demo_results.demo_results` rows of done galaxies."""
    rows = []
    for sid, pa in zip(source_ids, measured_pa, strict=True):
        row: dict[str, Any] = dict.fromkeys(RESULT_COLUMNS)
        row.update(
            source_id=sid,
            ra=10.0,
            dec=5.0,
            fetch_state="done",
            radon_state="done",
            position_angle_deg=pa,
        )
        rows.append(row)
    return rows


def test_the_catalogue_s_n_is_the_validation_s_n() -> None:
    truths = make_truths(40, seed=4)
    truth = truth_table(truths)
    rows = _rows([t.source_id for t in truths], [t.position_angle_deg for t in truths])
    table = report.results_catalogue(rows, truth)
    assert "snr_r" not in table.colnames  # one S/N, under the name validation gives it
    by_id = {t.source_id: snr_half_light(t) for t in truths}
    np.testing.assert_array_equal(
        table["snr_half_light"], [by_id[int(s)] for s in table["source_id"]]
    )
    description = table["snr_half_light"].description
    assert "half-light aperture" in description
    assert "validation" in description
    assert {"sky_sigma_r", "gain"}.isdisjoint(table.colnames)


def test_the_headline_selects_elongated_bright_galaxies() -> None:
    truths = make_truths(60, seed=2)
    truth = truth_table(truths)
    # Measured 3 degrees off for every galaxy except one, which was not measured.
    measured = [(t.position_angle_deg + 3.0) % 180.0 for t in truths]
    measured[0] = None
    table = report.results_catalogue(_rows([t.source_id for t in truths], measured), truth)
    q = np.asarray(table["true_axis_ratio"])
    snr = np.asarray(table["snr_half_light"])
    selected = (q < 0.6) & (snr > 30) & np.isfinite(np.asarray(table["pa_error_deg"]))
    headline = report.headline_accuracy(table)
    assert headline.n == selected.sum() > 0
    assert headline.median == pytest.approx(3.0)
    assert headline.label.startswith("axis ratio < 0.6 and S/N > 30")


def test_failures_are_counted_by_cause_without_ids() -> None:
    rows = _rows([1, 2, 3], [None, None, 10.0])
    rows[0].update(
        fetch_state="skipped", fetch_error="no coverage at 1234\ndetails", radon_state=None
    )
    rows[1].update(fetch_state="skipped", fetch_error="no coverage at 99", radon_state=None)
    rows[2].update(radon_state="failed", radon_error="undecodable cutout 3")
    assert report.failures_by_reason(rows) == {
        "fetch skipped: no coverage at N": 2,
        "radon failed: undecodable cutout N": 1,
    }


def test_the_report_names_what_the_gallery_left_out(tmp_path: Path) -> None:
    result = DemoResult(
        out=tmp_path,
        n_galaxies=2,
        object_store="file:///tmp/objects",
        cutout_url="http://127.0.0.1:1",
        fetch_rate=1000.0,
        counts={"fetch": {"done": 2}, "radon": {"done": 2}},
        gallery_skipped={7: "ObjectNotFound: object 'a/7.fits' not found"},
    )
    path = report.write_report(result, DemoOptions(n=2, out=tmp_path))
    text = path.read_text()
    assert "leaves out 1 galaxy(ies)" in text
    assert "7 (ObjectNotFound: object 'a/7.fits' not found)" in text
    assert "every task terminal" in text
    console = Console(file=io.StringIO(), width=120)
    report.print_summary(result, console)
    assert "gallery: left out 1 galaxy(ies)" in console.file.getvalue()
