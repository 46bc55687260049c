"""``galpipe export --morphology-model`` against a real PostgreSQL: join, masks, files, errors."""

from __future__ import annotations

import subprocess
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.table import Table
from psycopg_pool import ConnectionPool

import galpipe.cli
from galpipe.catalog.export import ExportError, build_results_table, export_results
from galpipe.db.measurements import MEASUREMENT_COLUMNS, record_measurements
from galpipe.db.models import ModelRecord, register_model
from galpipe.db.morphology import PredictionRows, record_predictions
from galpipe.db.results import MORPHOLOGY_COLUMNS
from galpipe.science import gz2
from tests.tools import require_tool

ALGO = "radon-v1+test"
NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
# Registered oldest to newest: OLD and NEW have predictions, EMPTY (newest) has none.
OLD, NEW, EMPTY = "a" * 64, "b" * 64, "c" * 64
GALAXIES = (1, 2, 3, 4)
PREDICTED = {OLD: (1, 2), NEW: (1, 3)}


def _fractions(sid: int, model: str) -> np.ndarray:
    """Distinct per galaxy and model; multiples of 1/64 are exact as the table's reals."""
    offset = ord(model[0]) - ord("a")
    return ((np.arange(gz2.N_ANSWERS) + 7 * sid + 11 * offset) % 65) / 64.0


def _label(sid: int) -> str:
    return gz2.SIX_CLASSES[sid % len(gz2.SIX_CLASSES)]


def _model(version: str) -> ModelRecord:
    return ModelRecord(
        model_version=version,
        pipeline="morphology",
        architecture="small_cnn",
        input_mode="asinh_bands",
        input_size=40,
        input_channels=4,
        training_data_sha256="0" * 64,
        object_key=f"models/morphology/{version}.onnx",
        nbytes=1,
    )


@pytest.fixture
def seeded(pool: ConnectionPool) -> ConnectionPool:
    """Four transformed galaxies measured; OLD predicts 1, 2 and NEW 1, 3; EMPTY predicts none."""
    with pool.connection() as conn, conn.transaction():
        for sid in GALAXIES:
            conn.execute(
                "INSERT INTO galaxies (source_id, ra, dec, catalog) VALUES (%s, %s, %s, 'test')",
                (sid, 10.0 + sid, -5.0 - sid),
            )
            for pipeline in ("fetch", "radon"):
                conn.execute(
                    "INSERT INTO tasks (pipeline, source_id, state) VALUES (%s, %s, 'done')",
                    (pipeline, sid),
                )
        rows = []
        for sid in GALAXIES:
            values: dict[str, Any] = dict.fromkeys(MEASUREMENT_COLUMNS)
            values.update(source_id=sid, algo_version=ALGO, band="combined", flags=0)
            values.update(position_angle_deg=20.0 * sid, angle_image_deg=10.0, angle_err_deg=1.0)
            values.update(anisotropy=0.3, n_bands=4, nonfinite_pixels=0, band_spread_deg=1.0)
            values.update(masked_fraction=0.0, contaminated=False)
            rows.append(values)
        record_measurements(conn, rows)
        for age_days, version in ((3, OLD), (2, NEW), (1, EMPTY)):
            register_model(conn, _model(version))
            conn.execute(
                "UPDATE models SET created_at = now() - make_interval(days => %s) "
                "WHERE model_version = %s",
                (age_days, version),
            )
        for version, ids in PREDICTED.items():
            fractions = np.array([_fractions(sid, version) for sid in ids])
            record_predictions(
                conn,
                version,
                PredictionRows(ids, fractions, [_label(s) for s in ids], fractions[:, 0]),
            )
    return pool


def _check_morphology(table: Table, version: str) -> None:
    predicted = PREDICTED[version]
    assert list(table["source_id"]) == list(GALAXIES)
    missing = [sid not in predicted for sid in GALAXIES]
    for name in MORPHOLOGY_COLUMNS:
        assert np.ma.getmaskarray(table[name]).tolist() == missing, name
    for row, sid in enumerate(GALAXIES):
        if sid not in predicted:
            continue
        expected = _fractions(sid, version)
        got = [float(table[f"gz2_{c.lower().replace('.', '_')}"][row]) for c in gz2.ANSWER_COLUMNS]
        assert got == expected.tolist(), sid
        label = table["morph_class"][row]
        assert (label.decode() if isinstance(label, bytes) else label) == _label(sid)
        assert float(table["morph_class_probability"][row]) == expected[0]


def test_named_model_is_joined_and_galaxies_without_a_prediction_are_masked(seeded) -> None:
    table = build_results_table(seeded, morphology_model=OLD, chunk_rows=3)
    assert table.meta["MORPHVER"] == OLD
    _check_morphology(table, OLD)


def test_latest_is_the_newest_registered_model_with_predictions(seeded) -> None:
    table = build_results_table(seeded, morphology_model="latest")
    assert table.meta["MORPHVER"] == NEW
    _check_morphology(table, NEW)


def test_a_registered_model_without_predictions_masks_every_galaxy(seeded) -> None:
    table = build_results_table(seeded, morphology_model=EMPTY)
    assert all(np.ma.getmaskarray(table["morph_class"]))


def test_without_the_option_the_columns_are_the_radon_ones(seeded) -> None:
    plain = build_results_table(seeded)
    assert "MORPHVER" not in plain.meta
    assert not [n for n in plain.colnames if n.startswith(("morph", "gz2_"))]
    with_morphology = build_results_table(seeded, morphology_model=NEW)
    assert with_morphology.colnames == plain.colnames + list(MORPHOLOGY_COLUMNS)
    for name in plain.colnames:
        assert with_morphology[name].tolist() == plain[name].tolist(), name


def _read(path: Path) -> Table:
    # FITS text stays bytes: astropy masks empty strings only then (character_as_bytes=False
    # reads them back as plain empty strings).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="'nanomaggy' did not parse")
        return Table.read(path)


@pytest.mark.parametrize("fmt", ["fits", "ecsv", "parquet"])
def test_files_carry_the_predictions_masks_and_model(seeded, tmp_path: Path, fmt: str) -> None:
    if fmt == "parquet":
        pytest.importorskip("pandas", reason="astropy reads Parquet through pandas")
    out = tmp_path / f"morph.{fmt}"
    summary = export_results(seeded, out, morphology_model=OLD, now=NOW)
    assert summary.morphology_model == OLD
    read = _read(out)
    assert read.meta["MORPHVER"] == OLD
    _check_morphology(read, OLD)
    written = build_results_table(seeded, morphology_model=OLD, now=NOW)
    assert read.colnames == written.colnames
    for name in MORPHOLOGY_COLUMNS:
        assert read[name].description == written[name].description, name

    plain_out = tmp_path / f"plain.{fmt}"
    assert export_results(seeded, plain_out).morphology_model is None
    assert _read(plain_out).colnames == build_results_table(seeded).colnames


def test_fits_with_morphology_passes_fitsverify(seeded, tmp_path: Path) -> None:
    fitsverify = require_tool("fitsverify")
    out = tmp_path / "morph.fits"
    export_results(seeded, out, morphology_model=NEW)
    report = subprocess.run([fitsverify, str(out)], capture_output=True, text=True, check=False)
    assert "0 warning(s) and 0 error(s)" in report.stdout, report.stdout[-2000:]


def test_unknown_model_names_it_and_the_registered_ones(seeded) -> None:
    # Newest registration first.
    listed = f"registered morphology models: {EMPTY}, {NEW}, {OLD}$"
    with pytest.raises(ExportError, match=f"unknown morphology model 'nope'; {listed}"):
        build_results_table(seeded, morphology_model="nope")


def test_unknown_model_without_any_registered_says_so(seeded) -> None:
    with seeded.connection() as conn:
        conn.execute("DELETE FROM morphology_predictions")
        conn.execute("DELETE FROM models")
    with pytest.raises(ExportError, match=f"unknown morphology model '{OLD}'.*none are registered"):
        build_results_table(seeded, morphology_model=OLD)
    with pytest.raises(ExportError, match="latest: no registered morphology model has predictions"):
        build_results_table(seeded, morphology_model="latest")


def _run(argv: list[str], database_url: str, monkeypatch) -> int:
    monkeypatch.setenv("GALPIPE_DATABASE_URL", database_url)
    monkeypatch.setattr(galpipe.cli, "configure_logging", lambda *_: None)
    return galpipe.cli.main(argv)


def test_command(seeded, database_url, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "cat.ecsv"
    argv = ["export", str(out), "--morphology-model", "latest"]
    assert _run(argv, database_url, monkeypatch) == 0
    assert f"morphology model {NEW}" in capsys.readouterr().out
    assert Table.read(out).meta["MORPHVER"] == NEW

    bad = ["export", str(tmp_path / "x.fits"), "--morphology-model", "f" * 64]
    assert _run(bad, database_url, monkeypatch) == 1
    err = capsys.readouterr().err
    assert err.startswith("galpipe export: ")
    assert f"unknown morphology model '{'f' * 64}'" in err
    assert not (tmp_path / "x.fits").exists()
