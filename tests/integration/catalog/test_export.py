"""``galpipe export`` against a real PostgreSQL: selection, layout, units, round trips."""

from __future__ import annotations

import json
import math
import subprocess
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
import pytest
from astropy.table import Table
from psycopg_pool import ConnectionPool

import galpipe.cli
from galpipe.catalog.export import (
    ExportError,
    build_results_table,
    export_results,
    format_for,
)
from galpipe.db.measurements import MEASUREMENT_COLUMNS, record_measurements
from tests.tools import require_tool

V1, V2 = "radon-v1+test", "radon-v2+test"
BANDS = ("g", "r", "i", "z")
NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)

# Galaxy id -> (fetch state, radon state); None: no task. Ids 1-3 transformed, 4 fetched,
# 5 pending, 6 failed at fetch.
STATES = {
    1: ("done", "done"),
    2: ("done", "done"),
    3: ("done", "done"),
    4: ("done", "queued"),
    5: ("queued", None),
    6: ("failed", None),
}


def _row(sid: int, version: str, band: str, pa: float | None, flags: int = 0) -> dict[str, Any]:
    values: dict[str, Any] = dict.fromkeys(MEASUREMENT_COLUMNS)
    values.update(source_id=sid, algo_version=version, band=band, flags=flags)
    if pa is not None:
        values.update(
            angle_image_deg=(pa + 10) % 180,
            position_angle_deg=pa,
            angle_err_deg=0.5 + sid / 10,
            anisotropy=0.3,
            nonfinite_pixels=sid,
        )
    if band == "combined":
        values.update(n_bands=4 if pa is not None else 0, contaminated=sid == 2)
        values.update(masked_fraction=0.125, band_spread_deg=None if pa is None else 1.5)
    else:
        values.update(sinusoid_a=100.0 + sid, sinusoid_b=30.0 + sid, moments_ellipticity=0.4)
    return values


def _band_pa(sid: int, b: int) -> float:
    return (20.0 * sid + b) % 180


@pytest.fixture
def populated(pool: ConnectionPool) -> ConnectionPool:
    """Six galaxies in every galaxy state; results of V1 (older) and V2 for 1-3."""
    with pool.connection() as conn:
        for sid in STATES:
            extra = {"posangle_sersic": 10.0 * sid, "label": f"g{sid}", "n_obs": sid}
            if sid == 3:
                extra = {"posangle_sersic": None, "label": "g3"}  # null and absent keys
            conn.execute(
                "INSERT INTO galaxies (source_id, ra, dec, catalog, extra) "
                "VALUES (%s, %s, %s, 'gaia-test', %s::jsonb)",
                (sid, 10.0 + sid, -5.0 - sid, json.dumps(extra)),
            )
        for sid, (fetch, radon) in STATES.items():
            for pipeline, state in (("fetch", fetch), ("radon", radon)):
                if state is not None:
                    conn.execute(
                        "INSERT INTO tasks (pipeline, source_id, state) VALUES (%s, %s, %s)",
                        (pipeline, sid, state),
                    )
        rows = []
        for sid in (1, 2, 3):
            for b, band in enumerate(BANDS):
                rows.append(_row(sid, V1, band, 1.0))
                # Galaxy 3: blank z band (NULL angles, flag BAND_BLANK), nothing combined.
                blank = sid == 3 and band == "z"
                rows.append(_row(sid, V2, band, None if blank else _band_pa(sid, b), int(blank)))
            rows.append(_row(sid, V1, "combined", 1.0))
            pa = None if sid == 3 else 20.0 * sid
            rows.append(_row(sid, V2, "combined", pa, 32 if sid == 3 else 0))
        with conn.transaction():
            record_measurements(conn, rows[: len(rows) // 2])
        conn.execute("SELECT pg_sleep(0.01)")  # V2 measured strictly later than most of V1
        with conn.transaction():
            record_measurements(conn, rows[len(rows) // 2 :])
            conn.execute(
                "UPDATE radon_measurements SET measured_at = now() - interval '1 day' "
                "WHERE algo_version = %s",
                (V1,),
            )
    return pool


def test_default_is_the_most_recent_version_and_transformed_galaxies(populated) -> None:
    table = build_results_table(populated, now=NOW)
    assert table.meta["ALGOVER"] == V2
    assert list(table["source_id"]) == [1, 2, 3]
    assert set(table["state"]) == {"transformed"}
    assert "pa_g" not in table.colnames  # combined layout
    assert list(table["pa"][:2]) == [20.0, 40.0]
    assert table["pa"].mask.tolist() == [False, False, True]  # NULL -> masked, not NaN
    assert list(table["ra"]) == [11.0, 12.0, 13.0]
    assert list(table["contaminated"]) == [0, 1, 0]
    assert table["flags"][2] == 32
    assert table.meta["EXPORTED"] == "2026-11-23T12:00:00Z"


def test_older_version_on_request(populated) -> None:
    table = build_results_table(populated, algo_version=V1)
    assert table.meta["ALGOVER"] == V1
    assert list(table["pa"]) == [1.0, 1.0, 1.0]


def test_all_galaxies_carry_their_state_and_masked_measurements(populated) -> None:
    table = build_results_table(populated, selection="all")
    assert list(table["source_id"]) == [1, 2, 3, 4, 5, 6]
    assert list(table["state"]) == ["transformed"] * 3 + ["fetched", "pending", "failed"]
    for name in ("pa", "pa_err", "flags", "n_bands", "contaminated", "masked_fraction"):
        assert table[name].mask.tolist()[3:] == [True] * 3, name


def test_wide_layout_puts_each_band_beside_the_combined_row(populated) -> None:
    table = build_results_table(populated, bands="all")
    for b, band in enumerate(BANDS):
        assert table[f"pa_{band}"][0] == _band_pa(1, b)
        assert table[f"sinusoid_b_{band}"][1] == 32.0
        assert table[f"pa_err_{band}"].unit == u.deg
    assert table["pa_z"].mask.tolist() == [False, False, True]
    assert table["flags_z"][2] == 1
    assert table["pa_r"][2] == _band_pa(3, 1)


def test_extra_columns_are_flattened_with_types_and_units(populated) -> None:
    table = build_results_table(populated, selection="all")
    assert table["posangle_sersic"].unit == u.deg
    assert table["posangle_sersic"].dtype == np.float64
    assert table["posangle_sersic"].mask.tolist() == [False, False, True, False, False, False]
    assert table["n_obs"].dtype == np.int64
    assert table["n_obs"].mask.tolist()[2] is True  # absent key
    assert list(table["label"]) == ["g1", "g2", "g3", "g4", "g5", "g6"]
    assert "not recorded" in table["label"].description


def test_every_column_is_documented(populated) -> None:
    table = build_results_table(populated, bands="all", selection="all")
    for name in table.colnames:
        assert table[name].description, name
        if name not in ("label", "n_obs"):  # catalogue columns without a known unit
            assert table[name].unit is not None, name


def test_chunked_streaming_gives_the_same_table(populated) -> None:
    whole = build_results_table(populated, bands="all", selection="all", now=NOW)
    chunked = build_results_table(populated, bands="all", selection="all", now=NOW, chunk_rows=4)
    assert whole.colnames == chunked.colnames
    for name in whole.colnames:
        assert whole[name].tolist() == chunked[name].tolist(), name


def _same_unit(written: Any, read: Any, fmt: str) -> bool:
    # FITS (no TUNIT for dimensionless) and astropy's Parquet layout for masked columns both
    # read a dimensionless unit back as no unit.
    if fmt in ("fits", "parquet") and written == u.dimensionless_unscaled:
        return read in (None, u.dimensionless_unscaled)
    if fmt == "fits" and written == u.nanomaggy:  # not a FITS unit: kept by name
        return str(read) == "nanomaggy"
    return written == read


@pytest.mark.parametrize("fmt", ["fits", "ecsv", "parquet"])
def test_round_trip_through_astropy(populated, tmp_path: Path, fmt: str) -> None:
    if fmt == "parquet":
        pytest.importorskip("pandas", reason="astropy reads Parquet through pandas")
    out = tmp_path / f"results.{fmt}"
    summary = export_results(populated, out, selection="all", bands="all", now=NOW)
    assert (summary.rows, summary.format, summary.algo_version) == (6, fmt, V2)
    written = build_results_table(populated, selection="all", bands="all", now=NOW)
    kwargs = {"character_as_bytes": False} if fmt == "fits" else {}
    with warnings.catch_warnings():
        # FITS: astropy warns that TUNIT 'nanomaggy' is no FITS unit, and keeps it by name.
        warnings.filterwarnings("ignore", message="'nanomaggy' did not parse")
        read = Table.read(out, **kwargs)
    assert read.colnames == written.colnames
    for key in ("ALGOVER", "EXPORTED", "SELSTATE", "SELBANDS"):
        assert read.meta[key] == written.meta[key], key
    for name in written.colnames:
        w, r = written[name], read[name]
        assert r.description == w.description, name
        assert _same_unit(w.unit, r.unit, fmt), (name, w.unit, r.unit)
        w_mask = np.ma.getmaskarray(w).tolist()
        assert np.ma.getmaskarray(r).tolist() == w_mask, name
        kept = ~np.ma.getmaskarray(w)
        assert np.asarray(r)[kept].tolist() == np.asarray(w)[kept].tolist(), name


def test_fits_names_descriptions_on_the_column_cards(populated, tmp_path: Path) -> None:
    from astropy.io import fits

    out = tmp_path / "r.fits"
    export_results(populated, out)
    header = fits.getheader(out, 1)
    names = [header[f"TTYPE{i}"] for i in range(1, header["TFIELDS"] + 1)]
    pa = names.index("pa") + 1
    assert header.comments[f"TTYPE{pa}"].startswith("combined major-axis position angle")
    assert header[f"TUNIT{pa}"] == "deg"
    assert header["ALGOVER"] == V2


def test_parquet_keeps_nulls_explicit(populated, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "r.parquet"
    export_results(populated, out, selection="all")
    stored = pq.read_table(out)
    assert stored.column("pa.mask").to_pylist() == [False, False, True, True, True, True]
    assert b"combined major-axis position angle" in stored.schema.metadata[b"table_meta_yaml"]


def test_format_from_suffix_and_errors() -> None:
    assert format_for(Path("a.FITS"), None) == "fits"
    assert format_for(Path("a.fits.gz"), None) == "fits"
    assert format_for(Path("a.ecsv"), None) == "ecsv"
    assert format_for(Path("a.txt"), "parquet") == "parquet"
    with pytest.raises(ExportError, match=r"a\.csv.*'\.csv'"):
        format_for(Path("a.csv"), None)
    with pytest.raises(ExportError, match="unknown format 'votable'"):
        format_for(Path("a.fits"), "votable")


def test_unknown_version_names_it_and_the_present_ones(populated) -> None:
    with pytest.raises(ExportError, match=r"unknown algo_version 'v9'.*radon-v2\+test"):
        build_results_table(populated, algo_version="v9")


def test_no_results_at_all_is_an_error(pool) -> None:
    with pytest.raises(ExportError, match="no radon results"):
        build_results_table(pool)


def test_a_version_without_transformed_galaxies_is_an_error(populated) -> None:
    with populated.connection() as conn:
        conn.execute("UPDATE tasks SET state = 'failed' WHERE pipeline = 'radon'")
    with pytest.raises(ExportError, match=r"no transformed galaxies .*radon-v2\+test"):
        build_results_table(populated)


def _run(argv: list[str], database_url: str, monkeypatch) -> int:
    """``galpipe ARGV``'s exit status; the root logger stays the test run's."""
    monkeypatch.setenv("GALPIPE_DATABASE_URL", database_url)
    monkeypatch.setattr(galpipe.cli, "configure_logging", lambda *_: None)
    return galpipe.cli.main(argv)


def test_command_writes_the_file(populated, database_url, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "cat.ecsv"
    assert _run(["export", str(out), "--bands", "all"], database_url, monkeypatch) == 0
    assert "wrote 3 galaxies" in capsys.readouterr().out
    assert "pa_i" in Table.read(out).colnames


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["x.csv"], "cannot tell the format"),
        (["x.fits", "--format", "hdf5"], "unknown format 'hdf5'"),
        (["x.fits", "--algo-version", "nope"], "unknown algo_version 'nope'"),
    ],
)
def test_command_bad_input_exits_1(
    populated, database_url, tmp_path, monkeypatch, capsys, argv, message
) -> None:
    argv = ["export", str(tmp_path / argv[0]), *argv[1:]]
    assert _run(argv, database_url, monkeypatch) == 1
    err = capsys.readouterr().err
    assert err.startswith("galpipe export: ")
    assert message in err
    assert not any(tmp_path.iterdir())


def test_no_nan_is_written_for_a_present_value(populated) -> None:
    table = build_results_table(populated, bands="all", selection="all")
    for name in table.colnames:
        column = table[name]
        if column.dtype.kind == "f":
            present = np.asarray(column)[~np.ma.getmaskarray(column)]
            assert all(math.isfinite(v) for v in present.tolist()), name


def test_fits_passes_fitsverify(populated, tmp_path: Path) -> None:
    fitsverify = require_tool("fitsverify")
    out = tmp_path / "wide.fits"
    export_results(populated, out, selection="all", bands="all")
    report = subprocess.run([fitsverify, str(out)], capture_output=True, text=True, check=False)
    assert "0 warning(s) and 0 error(s)" in report.stdout, report.stdout[-2000:]
