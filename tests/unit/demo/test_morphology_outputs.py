"""The demo's morphology outputs: the catalogue join, failures, the report section, the gallery."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.table import Table
from rich.console import Console

from galpipe.db.demo_results import MORPHOLOGY_COLUMNS, RESULT_COLUMNS
from galpipe.db.models import ModelRecord
from galpipe.db.morphology import FRACTION_COLUMNS
from galpipe.demo import figures, report
from galpipe.demo.run import DemoOptions, DemoResult
from galpipe.science import gz2

VERSION = "c0ffee" * 10 + "c0ff"
GZ2_COLUMNS = [f"gz2_{c}" for c in FRACTION_COLUMNS]


def _radon_rows(source_ids: list[int]) -> list[dict[str, Any]]:
    rows = []
    for sid in source_ids:
        row: dict[str, Any] = dict.fromkeys(RESULT_COLUMNS)
        row.update(source_id=sid, ra=1.0, dec=2.0, fetch_state="done", radon_state="done")
        rows.append(row)
    return rows


def _fractions(n: int, seed: int) -> np.ndarray:
    return gz2.fractions_from_logits(np.random.default_rng(seed).normal(0, 2, (n, gz2.N_ANSWERS)))


def _morphology_rows(
    predicted: dict[int, np.ndarray], failed: dict[int, str]
) -> list[dict[str, Any]]:
    """:func:`galpipe.db.demo_results.demo_morphology_results` rows, in no particular order."""
    rows = []
    for sid, fractions in predicted.items():
        codes, probability = gz2.six_class(fractions[None])
        row: dict[str, Any] = dict.fromkeys(MORPHOLOGY_COLUMNS)
        row.update(
            source_id=sid,
            morphology_state="done",
            morphology_attempts=1,
            morph_model_version=VERSION,
            morph_class=gz2.SIX_CLASSES[codes[0]],
            morph_class_probability=float(probability[0]),
            **dict(zip(GZ2_COLUMNS, map(float, fractions), strict=True)),
        )
        rows.append(row)
    for sid, error in failed.items():
        row = dict.fromkeys(MORPHOLOGY_COLUMNS)
        row.update(
            source_id=sid, morphology_state="failed", morphology_attempts=3, morphology_error=error
        )
        rows.append(row)
    return rows[::-1]


def test_the_catalogue_joins_each_prediction_to_its_galaxy(tmp_path: Path) -> None:
    fractions = _fractions(3, seed=1)
    predicted = {30: fractions[0], 10: fractions[1], 20: fractions[2]}
    rows = _morphology_rows(predicted, {40: "cutout is 64 px wide; model takes 40 px"})
    table = report.results_catalogue(_radon_rows([10, 20, 30, 40]), None, rows)
    assert set(GZ2_COLUMNS) <= set(table.colnames)
    assert {"morph_class", "morph_class_probability", "morph_model_version"} <= set(table.colnames)
    by_id = {int(r["source_id"]): r for r in table}
    for sid, expected in predicted.items():
        got = np.array([by_id[sid][c] for c in GZ2_COLUMNS], dtype=float)
        np.testing.assert_allclose(got, expected)
        assert by_id[sid]["morph_model_version"] == VERSION
        assert by_id[sid]["morphology_state"] == "done"
    # The catalogue's fractions obey the tree, and the label is the one they imply.
    done = table[table["morphology_state"] == "done"]
    stored = gz2.check_fractions(np.array([list(r) for r in done[GZ2_COLUMNS]]), atol=1e-9)
    codes, probability = gz2.six_class(stored)
    assert list(done["morph_class"]) == [gz2.SIX_CLASSES[c] for c in codes]
    np.testing.assert_allclose(done["morph_class_probability"], probability)
    # A galaxy without a prediction has its task's reason and no numbers.
    failed = by_id[40]
    assert failed["morphology_state"] == "failed"
    assert "64 px" in failed["morphology_error"]
    assert failed["morph_class"] == ""
    assert np.isnan([failed[c] for c in GZ2_COLUMNS]).all()
    assert "dimensionless" in table["gz2_class1_1"].description
    assert "smooth" in table["gz2_class1_1"].description
    # Both files carry the columns.
    fits_path, ecsv_path = report.write_catalogue(table, tmp_path)
    for read in (Table.read(fits_path), Table.read(ecsv_path, format="ascii.ecsv")):
        assert set(GZ2_COLUMNS) <= set(read.colnames)


def test_without_morphology_the_catalogue_has_no_morphology_column() -> None:
    table = report.results_catalogue(_radon_rows([1, 2]), None)
    assert list(table.colnames) == list(RESULT_COLUMNS)


def test_a_missing_morphology_row_is_an_error() -> None:
    rows = _morphology_rows({1: _fractions(1, seed=2)[0]}, {})
    with pytest.raises(ValueError, match=r"no morphology row for galaxies \[2\]"):
        report.results_catalogue(_radon_rows([1, 2]), None, rows)


def test_morphology_failures_are_counted_with_the_others() -> None:
    rows = _morphology_rows({}, {1: "undecodable cutout 1", 2: "undecodable cutout 22"})
    assert report.failures_by_reason(rows) == {"morphology failed: undecodable cutout N": 2}


def _record(metrics: dict[str, Any]) -> ModelRecord:
    return ModelRecord(
        model_version=VERSION,
        pipeline="morphology",
        architecture="small_cnn",
        input_mode="asinh_bands",
        input_size=40,
        input_channels=4,
        training_data_sha256="0" * 64,
        object_key=f"models/morphology/{VERSION}.onnx",
        nbytes=1,
        metrics=metrics,
    )


def test_the_report_says_what_the_model_predicted_and_how_well_it_scored(tmp_path: Path) -> None:
    fractions = _fractions(12, seed=3)
    rows = _morphology_rows(dict(enumerate(fractions, start=1)), {})
    table = report.results_catalogue(_radon_rows(list(range(1, 13))), None, rows)
    classes = report.morphology_class_counts(table)
    assert list(classes) == list(gz2.SIX_CLASSES)
    assert sum(classes.values()) == 12
    result = DemoResult(
        out=tmp_path,
        pipelines=("fetch", "morphology"),
        n_galaxies=12,
        counts={"fetch": {"done": 12}, "morphology": {"done": 12}},
        stage_seconds={"fetch": 1.0, "morphology": 4.0},
        morphology_model=_record({"rmse": 0.1234, "six_class_accuracy": 0.875, "n_galaxies": 9}),
        morphology_classes=classes,
    )
    options = DemoOptions(n=12, out=tmp_path, pipelines=("morphology",), morphology_workers=2)
    text = report.write_report(result, options).read_text()
    section = text.split("## Morphology", 1)[1].split("\n## ", 1)[0]
    assert VERSION in section
    assert "RMSE 0.1234" in section
    assert "six-class accuracy 0.875 on 9" in section
    assert "3.0 galaxies/s" in section  # 12 tasks over the 4 s of the stage
    most = max(classes, key=lambda k: classes[k])
    assert f"| {most} | {classes[most]} |" in section
    assert "radon" not in text.split("## Tasks", 1)[1].split("\n## ", 1)[0]
    assert "2 fetch, 2 morphology" in text
    printed = io.StringIO()
    report.print_summary(result, Console(file=printed, width=120))
    assert f"morphology (model {VERSION[:12]})" in printed.getvalue()


def test_a_model_without_recorded_metrics_says_so(tmp_path: Path) -> None:
    result = DemoResult(
        out=tmp_path,
        pipelines=("fetch", "radon", "morphology"),
        morphology_model=_record({}),
    )
    text = report.write_report(result, DemoOptions(n=1, out=tmp_path)).read_text()
    assert "RMSE not recorded" in text


def test_the_gallery_shows_every_predicted_class_before_repeating_one(tmp_path: Path) -> None:
    labels = ["Spiral"] * 10 + ["Elliptical"] * 3 + ["Irregular"]
    probability = np.linspace(0.3, 0.9, len(labels))
    table = Table(
        {
            "source_id": np.arange(100, 101 + len(labels)),
            "morph_class": [*labels, ""],
            "morph_class_probability": [*probability, np.nan],
        }
    )
    picks = figures.pick_morphology_gallery(table, count=6)
    by_id = {int(r["source_id"]): str(r["morph_class"]) for r in table}
    shown = [by_id[sid] for sid in picks]
    assert len(picks) == len(set(picks)) == 6
    assert set(shown) == {"Spiral", "Elliptical", "Irregular"}
    # Classes take turns (Elliptical runs out after three, Irregular after one).
    assert shown == ["Elliptical", "Spiral", "Irregular", "Elliptical", "Spiral", "Elliptical"]
    assert "" not in shown  # a galaxy without a prediction is never shown
    # Each class shows its most confident galaxies first.
    spirals = [sid for sid in picks if by_id[sid] == "Spiral"]
    assert spirals == [109, 108]
    assert len(figures.pick_morphology_gallery(table, count=50)) == len(labels)

    rng = np.random.default_rng(0)
    items = [
        figures.MorphologyItem(sid, rng.normal(0, 1, (4, 40, 40)), by_id[sid], 0.5) for sid in picks
    ]
    path = figures.plot_morphology_gallery(items, tmp_path / "morphology_gallery.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_stretch_puts_the_sky_at_zero_and_keeps_a_blank_band_finite() -> None:
    rng = np.random.default_rng(1)
    sky = 5.0 + rng.normal(0, 1, (40, 40))
    sky[18:22, 18:22] += 1000.0
    stretched = figures.asinh_stretch(sky)
    assert abs(np.median(stretched)) < 0.1
    assert stretched.max() > 5
    assert np.isfinite(figures.asinh_stretch(np.zeros((40, 40)))).all()
