"""Catalog ingest against a real PostgreSQL: every format, bad rows, re-ingest, the CLI.

Fixture files are built with astropy in ``tmp_path`` at run time.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.table import MaskedColumn, Table
from psycopg_pool import ConnectionPool

from galpipe.catalog import (
    FETCH_PIPELINE,
    CatalogError,
    IngestSummary,
    ingest_catalog,
    load_catalog,
)
from galpipe.cli import main

# Gaia DR3 source_ids are positive int64 values around 1e18: beyond float64's exact integers.
GAIA_ID = 6_917_528_997_577_384_320

FORMATS = {
    "csv": ("catalog.csv", "ascii.csv"),
    "ecsv": ("catalog.ecsv", "ascii.ecsv"),
    "fits": ("catalog.fits", "fits"),
    "votable": ("catalog.xml", "votable"),
}


def gaia_like_table(n: int, *, start: int = 0, seed: int = 0) -> Table:
    """``n`` valid galaxies with Gaia-sized ids and Gaia galaxy_candidates extra columns."""
    rng = np.random.default_rng(seed)
    ids = GAIA_ID + np.arange(start, start + n, dtype=np.int64) * 1024
    return Table(
        {
            "source_id": ids,
            "ra": rng.uniform(0.0, 360.0, n),
            "dec": np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n))),
            "posangle_sersic": rng.uniform(0.0, 180.0, n),
            "ellipticity_sersic": rng.uniform(0.0, 1.0, n),
            "n_sersic": rng.uniform(0.5, 6.0, n).astype(np.float32),
            "vari_best_class_name": np.where(np.arange(n) % 2 == 0, "GALAXY", "AGN"),
        }
    )


def write_csv(path: Path, header: str, *lines: str) -> Path:
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def galaxies(pool: ConnectionPool) -> list[tuple[Any, ...]]:
    with pool.connection() as conn:
        return conn.execute(
            "SELECT source_id, ra, dec, catalog, extra, ingested_at FROM galaxies "
            "ORDER BY source_id"
        ).fetchall()


def fetch_tasks(pool: ConnectionPool) -> list[tuple[Any, ...]]:
    with pool.connection() as conn:
        return conn.execute(
            "SELECT source_id, seq, state::text FROM tasks WHERE pipeline = %s ORDER BY seq",
            (FETCH_PIPELINE,),
        ).fetchall()


def read_report(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def assert_reconciles(summary: IngestSummary) -> None:
    assert summary.read == summary.ingested + summary.already_present + summary.rejected


# -- every format ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_round_trips_ids_coordinates_and_extras(
    pool: ConnectionPool, tmp_path: Path, fmt: str
) -> None:
    filename, writer = FORMATS[fmt]
    table = gaia_like_table(50, seed=1)
    path = tmp_path / filename
    table.write(path, format=writer)

    summary = ingest_catalog(pool, path)

    assert summary == IngestSummary(50, 50, 0, 0, 50, None)
    rows = galaxies(pool)
    assert [r[0] for r in rows] == table["source_id"].tolist()
    assert np.array_equal([r[1] for r in rows], table["ra"])  # bit-exact, every format
    assert np.array_equal([r[2] for r in rows], table["dec"])
    assert {r[3] for r in rows} == {"catalog"}
    for row, extra in zip(table, (r[4] for r in rows), strict=True):
        assert extra["posangle_sersic"] == float(row["posangle_sersic"])
        assert extra["ellipticity_sersic"] == float(row["ellipticity_sersic"])
        assert extra["vari_best_class_name"] == row["vari_best_class_name"]
        assert set(extra) == {
            "posangle_sersic",
            "ellipticity_sersic",
            "n_sersic",
            "vari_best_class_name",
        }
    assert [t[0] for t in fetch_tasks(pool)] == table["source_id"].tolist()  # FIFO = file order
    assert not (tmp_path / f"{filename}.rejected.csv").exists()


def test_format_given_explicitly_overrides_the_file_name(
    pool: ConnectionPool, tmp_path: Path
) -> None:
    path = tmp_path / "export.dat"
    gaia_like_table(5).write(path, format="votable")
    summary = ingest_catalog(pool, path, format="votable")
    assert summary.ingested == 5


def test_float32_extra_keeps_its_decimal_form(pool: ConnectionPool, tmp_path: Path) -> None:
    path = tmp_path / "f32.fits"
    table = gaia_like_table(2)
    table["n_sersic"] = np.array([0.1, 4.2], dtype=np.float32)
    table.write(path)
    ingest_catalog(pool, path)
    assert [r[4]["n_sersic"] for r in galaxies(pool)] == [0.1, 4.2]


def test_nan_and_masked_extras_are_stored_as_json_null(
    pool: ConnectionPool, tmp_path: Path
) -> None:
    path = tmp_path / "nulls.ecsv"
    table = gaia_like_table(3)
    table["posangle_sersic"] = [12.5, np.nan, np.inf]
    table["n_transits"] = MaskedColumn([7, 0, 9], mask=[False, True, False], dtype=np.int32)
    table.write(path)
    ingest_catalog(pool, path)
    extras = [r[4] for r in galaxies(pool)]
    assert [e["posangle_sersic"] for e in extras] == [12.5, None, None]
    assert [e["n_transits"] for e in extras] == [7, None, 9]


def test_keep_selects_the_extra_columns(pool: ConnectionPool, tmp_path: Path) -> None:
    path = tmp_path / "keep.csv"
    gaia_like_table(4).write(path)
    ingest_catalog(pool, path, keep=["posangle_sersic", "ELLIPTICITY_SERSIC", "ra"])
    assert {tuple(sorted(r[4])) for r in galaxies(pool)} == {
        ("ellipticity_sersic", "posangle_sersic")
    }


def test_keep_nothing_stores_an_empty_object(pool: ConnectionPool, tmp_path: Path) -> None:
    path = tmp_path / "bare.csv"
    gaia_like_table(3).write(path)
    ingest_catalog(pool, path, keep=[])
    assert [r[4] for r in galaxies(pool)] == [{}, {}, {}]


def test_other_column_names_units_and_catalog_name(pool: ConnectionPool, tmp_path: Path) -> None:
    # FITS upper-cases names in many exports; a unit of radians must be converted to degrees.
    path = tmp_path / "upper.fits"
    ra = np.array([0.5, 1.0])
    Table(
        {
            "GAL_ID": np.array([11, 12]),
            "RA_RAD": ra * u.rad,
            "DE": np.array([-10.0, 20.0]) * u.deg,
        }
    ).write(path)
    summary = ingest_catalog(
        pool, path, id_col="gal_id", ra_col="ra_rad", dec_col="DE", catalog_name="upper"
    )
    assert summary.ingested == 2
    rows = galaxies(pool)
    assert np.allclose([r[1] for r in rows], np.degrees(ra), rtol=0, atol=1e-12)
    assert [r[3] for r in rows] == ["upper", "upper"]


# -- bad rows ----------------------------------------------------------------------------------


def test_bad_rows_are_reported_with_row_number_and_reason(
    pool: ConnectionPool, tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path / "bad.csv",
        "source_id,ra,dec,posangle_sersic",
        "1,10.0,20.0,30",  # row 1 ok
        "2,nan,20.0,30",  # row 2 NaN ra
        "3,360.0,0.0,30",  # row 3 ra out of range
        "4,-0.5,0.0,30",  # row 4 ra out of range
        "5,10.0,90.5,30",  # row 5 dec out of range
        "6,10.0,,30",  # row 6 missing dec
        "seven,10.0,0.0,30",  # row 7 non-numeric id
        "1,11.0,21.0,30",  # row 8 duplicate of row 1
        "-9,10.0,0.0,30",  # row 9 negative id
        "10,0.0,-90.0,",  # row 10 ok (poles and ra=0 are valid)
        "11,359.999999,90.0,1",  # row 11 ok
        "12,inf,0.0,1",  # row 12 infinite ra
    )
    summary = ingest_catalog(pool, path)

    assert summary.read == 12
    assert summary.ingested == 3
    assert summary.rejected == 9
    assert summary.already_present == 0
    assert summary.fetch_queued == 3
    assert summary.report_path == tmp_path / "bad.csv.rejected.csv"
    report = read_report(summary.report_path)
    assert list(report[0]) == ["row", "source_id", "reason", "ra", "dec"]
    assert [(r["row"], r["source_id"], r["reason"]) for r in report] == [
        ("2", "2", "ra is not finite"),
        ("3", "3", "ra outside [0, 360)"),
        ("4", "4", "ra outside [0, 360)"),
        ("5", "5", "dec outside [-90, 90]"),
        ("6", "6", "dec is missing"),
        ("7", "seven", "source_id is not an integer"),
        ("8", "1", "duplicate source_id (first at row 1)"),
        ("9", "-9", "source_id is negative"),
        ("12", "12", "ra is not finite"),
    ]
    assert report[0]["ra"] == "nan"
    assert report[4]["dec"] == ""
    assert [r[0] for r in galaxies(pool)] == [1, 10, 11]
    assert galaxies(pool)[0][1:3] == (10.0, 20.0)  # the first occurrence was kept
    assert sorted(t[0] for t in fetch_tasks(pool)) == [1, 10, 11]


def test_non_numeric_coordinates_are_rejected_not_the_whole_file(
    pool: ConnectionPool, tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path / "text.csv", "source_id,ra,dec", "1,10.5,20", "2,ten,20", "3,11,north"
    )
    summary = ingest_catalog(pool, path)
    assert (summary.ingested, summary.rejected) == (1, 2)
    assert [r["reason"] for r in read_report(summary.report_path)] == [
        "ra is not a number",
        "dec is not a number",
    ]


def test_float_ids_are_accepted_only_when_exactly_integral(
    pool: ConnectionPool, tmp_path: Path
) -> None:
    path = tmp_path / "floats.ecsv"
    Table(
        {
            "source_id": np.array([5.0, 2.5, 2.0**53, 2.0**53 + 2, float(GAIA_ID)]),
            "ra": np.ones(5),
            "dec": np.zeros(5),
        }
    ).write(path)
    summary = ingest_catalog(pool, path)
    assert [r[0] for r in galaxies(pool)] == [5, 2**53]
    reasons = [r["reason"] for r in read_report(summary.report_path)]
    assert reasons[0] == "source_id is not an integer"
    assert reasons[1].startswith("source_id is a floating-point number beyond 2**53")
    assert reasons[2] == reasons[1]


def test_masked_values_in_binary_formats_are_reported_missing(
    pool: ConnectionPool, tmp_path: Path
) -> None:
    path = tmp_path / "masked.xml"
    Table(
        {
            "source_id": MaskedColumn([1, 2, 3], mask=[False, True, False], dtype=np.int64),
            "ra": MaskedColumn([1.0, 2.0, 3.0], mask=[False, False, True]),
            "dec": [0.0, 0.0, 0.0],
        }
    ).write(path, format="votable")
    summary = ingest_catalog(pool, path)
    assert [(r["row"], r["reason"]) for r in read_report(summary.report_path)] == [
        ("2", "source_id is missing"),
        ("3", "ra is missing"),
    ]
    assert summary.ingested == 1


# -- re-ingest, conflicts, chunks --------------------------------------------------------------


def test_reingesting_the_same_file_changes_nothing(pool: ConnectionPool, tmp_path: Path) -> None:
    path = tmp_path / "again.fits"
    table = gaia_like_table(30)
    table["ra"][3] = 400.0
    table["source_id"][7] = table["source_id"][6]
    table.write(path)

    first = ingest_catalog(pool, path)
    report_first = read_report(first.report_path)
    rows_first, tasks_first = galaxies(pool), fetch_tasks(pool)

    second = ingest_catalog(pool, path)

    assert first == IngestSummary(30, 28, 0, 2, 28, tmp_path / "again.fits.rejected.csv")
    assert second == IngestSummary(30, 0, 28, 2, 0, first.report_path)
    assert galaxies(pool) == rows_first  # including ingested_at: rows were not rewritten
    assert fetch_tasks(pool) == tasks_first  # same tasks, same FIFO positions
    assert read_report(second.report_path) == report_first


def test_an_id_stored_at_other_coordinates_is_rejected_not_counted_present(
    pool: ConnectionPool, tmp_path: Path
) -> None:
    first = write_csv(
        tmp_path / "first.csv",
        "source_id,ra,dec",
        "1,10.0,20.0",
        "2,30.0,40.0",
        "4,359.99999995,0.0",
    )
    ingest_catalog(pool, first)
    second = write_csv(
        tmp_path / "second.csv",
        "source_id,ra,dec",
        "1,10.0000001,20.0",  # 0.34 mas away: the same galaxy, rounded differently
        "2,31.0,40.0",  # about one degree away: another object under the same id
        "3,50.0,60.0",
        "4,0.00000002,0.0",  # across ra = 0/360, 0.25 mas away: the same galaxy
    )
    summary = ingest_catalog(pool, second, catalog_name="other")

    assert summary == IngestSummary(4, 1, 2, 1, 1, tmp_path / "second.csv.rejected.csv")
    report = read_report(summary.report_path)
    assert report == [
        {
            "row": "2",
            "source_id": "2",
            "reason": "source_id already ingested with different coordinates (ra=30.0, dec=40.0)",
            "ra": "31.0",
            "dec": "40.0",
        }
    ]
    rows = {r[0]: r for r in galaxies(pool)}
    assert rows[1][1:4] == (10.0, 20.0, "first")  # never modified
    assert rows[2][1:4] == (30.0, 40.0, "first")
    assert rows[3][3] == "other"


def test_chunked_ingest_gives_the_same_result_as_one_chunk(
    pool: ConnectionPool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [f"{i},{i % 360}.5,{(i % 170) - 85}" for i in range(1, 41)]
    lines[25] = "3,1.0,1.0"  # row 26 duplicates row 3, in a later chunk
    lines[30] = "31,999,0"  # row 31 out of range
    path = write_csv(tmp_path / "chunks.csv", "source_id,ra,dec", *lines)

    summary = ingest_catalog(pool, path, chunk_rows=7, progress=True)

    assert summary == IngestSummary(40, 38, 0, 2, 38, tmp_path / "chunks.csv.rejected.csv")
    assert "ingesting chunks.csv" in capsys.readouterr().err  # the progress bar (> 1 chunk)
    assert [r["row"] for r in read_report(summary.report_path)] == ["26", "31"]
    assert len(galaxies(pool)) == 38
    assert [t[0] for t in fetch_tasks(pool)] == [
        i for i in range(1, 41) if i not in (26, 31)
    ]  # tasks queued in file order across chunks


def test_a_stale_report_is_removed_when_nothing_is_rejected(
    pool: ConnectionPool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_csv(tmp_path / "fix.csv", "source_id,ra,dec", "1,1,1", "2,nan,1")
    assert ingest_catalog(pool, path, progress=True).report_path is not None
    assert "ingesting" not in capsys.readouterr().err  # one chunk: no progress bar
    write_csv(path, "source_id,ra,dec", "1,1,1", "2,2,1")
    summary = ingest_catalog(pool, path)
    assert summary == IngestSummary(2, 1, 1, 0, 1, None)
    assert not (tmp_path / "fix.csv.rejected.csv").exists()


def test_report_path_can_be_chosen(pool: ConnectionPool, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "r.csv", "source_id,ra,dec", "1,1,1", "1,1,1")
    report = tmp_path / "reports" / "mine.csv"
    report.parent.mkdir()
    summary = ingest_catalog(pool, path, report_path=report)
    assert summary.report_path == report
    assert read_report(report)[0]["reason"] == "duplicate source_id (first at row 1)"


def test_two_hundred_thousand_rows_in_chunks_fast(pool: ConnectionPool, tmp_path: Path) -> None:
    n = 200_000
    table = gaia_like_table(n, seed=7)
    bad = np.arange(0, n, 10_000)  # 20 rows out of range, spread over every chunk
    table["dec"][bad] = 91.0
    path = tmp_path / "large.fits"
    table.write(path)

    started = time.perf_counter()
    summary = ingest_catalog(pool, path, chunk_rows=50_000)
    elapsed = time.perf_counter() - started

    assert summary == IngestSummary(n, n - 20, 0, 20, n - 20, tmp_path / "large.fits.rejected.csv")
    assert [int(r["row"]) for r in read_report(summary.report_path)] == (bad + 1).tolist()
    with pool.connection() as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM galaxies), "
            "(SELECT count(*) FROM tasks WHERE pipeline = 'fetch' AND state = 'queued'), "
            "(SELECT count(*) FROM galaxies g WHERE NOT EXISTS (SELECT 1 FROM tasks t "
            " WHERE t.pipeline = 'fetch' AND t.source_id = g.source_id))"
        ).fetchone()
    assert counts == (n - 20, n - 20, 0)
    assert elapsed < 20.0, f"200k rows took {elapsed:.1f} s"


def test_a_file_of_only_bad_rows_is_reported_in_full_quickly(
    pool: ConnectionPool, tmp_path: Path
) -> None:
    n = 100_000
    table = gaia_like_table(n, seed=3)
    table["dec"] = 95.0
    path = tmp_path / "all_bad.fits"
    table.write(path)
    started = time.perf_counter()
    summary = ingest_catalog(pool, path)
    elapsed = time.perf_counter() - started
    assert summary == IngestSummary(n, 0, 0, n, 0, tmp_path / "all_bad.fits.rejected.csv")
    report = read_report(summary.report_path)
    assert len(report) == n
    assert {r["reason"] for r in report} == {"dec outside [-90, 90]"}
    assert report[-1]["row"] == str(n)
    assert report[-1]["source_id"] == str(table["source_id"][-1])
    assert galaxies(pool) == []
    assert elapsed < 10.0, f"{n} rejected rows took {elapsed:.1f} s"


# -- files that cannot be ingested -------------------------------------------------------------


def galaxy_candidates_without_coordinates(path: Path) -> Path:
    Table(
        {
            "solution_id": [375316653866487564],
            "source_id": [GAIA_ID],
            "classprob_dsc_combmod_galaxy": [0.99],
            "posangle_sersic": [45.0],
            "ellipticity_sersic": [0.3],
        }
    ).write(path)
    return path


def not_a_table(tmp_path: Path, kind: str) -> Path:
    if kind == "empty":
        path = tmp_path / "empty.csv"
        path.write_bytes(b"")
    elif kind == "binary":
        path = tmp_path / "noise.csv"
        path.write_bytes(np.random.default_rng(0).bytes(512))
    elif kind == "prose":
        path = tmp_path / "prose.csv"
        path.write_text("Dear colleague,\nplease find, attached, the catalogue\nBest\n")
    elif kind == "image":
        path = tmp_path / "image.fits"
        fits.PrimaryHDU(np.zeros((8, 8), dtype=np.float32)).writeto(path)
    else:
        path = tmp_path / "page.xml"
        path.write_text("<?xml version='1.0'?><html><body>not a VOTable</body></html>")
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "absent.csv", r"absent\.csv: no such file"),
        (lambda d: d, r": is a directory"),
        (lambda d: not_a_table(d, "empty"), r"empty\.csv: the file is empty \(0 bytes\)"),
        (
            lambda d: write_csv(d / "header.csv", "source_id,ra,dec"),
            r"header\.csv: the table has columns but no data rows",
        ),
        (
            lambda d: not_a_table(d, "binary"),
            r"noise\.csv: not a readable CSV table \(UnicodeDecodeError",
        ),
        (
            lambda d: not_a_table(d, "prose"),
            r"prose\.csv: not a readable CSV table \(InconsistentTableError",
        ),
        (lambda d: not_a_table(d, "image"), r"image\.fits: not a readable FITS table.*No table"),
        (lambda d: not_a_table(d, "html"), r"page\.xml: not a readable VOTable table"),
        (
            lambda d: write_csv(d / "cat.bin", "source_id,ra,dec", "1,2,3"),
            r"cat\.bin: cannot tell the format .*pass --format",
        ),
        (
            lambda d: write_csv(d / "noid.csv", "id,ra,dec", "1,2,3"),
            r"noid\.csv: no column 'source_id' \(columns: id, ra, dec\); name the id column "
            r"with --id-col",
        ),
        (
            lambda d: write_csv(d / "nora.csv", "source_id,alpha,delta", "1,2,3"),
            r"nora\.csv: no column 'ra', 'dec' \(columns: source_id, alpha, delta\); name the "
            r"coordinate columns with --ra-col/--dec-col\. Gaia DR3 galaxy_candidates has no "
            r"coordinates — join it with gaia_source",
        ),
        (
            lambda d: galaxy_candidates_without_coordinates(d / "galaxy_candidates.fits"),
            r"galaxy_candidates\.fits: no column 'ra', 'dec' .*this looks like Gaia DR3 "
            r"galaxy_candidates, which has no coordinates — join it with gaia_source for ra "
            r"and dec, see the README",
        ),
    ],
    ids=[
        "missing",
        "directory",
        "empty",
        "header-only",
        "binary",
        "prose",
        "fits-image",
        "html-xml",
        "unknown-suffix",
        "no-id-column",
        "no-coordinates",
        "gaia-galaxy-candidates",
    ],
)
def test_unusable_files_raise_clear_errors_and_store_nothing(
    pool: ConnectionPool, tmp_path: Path, make: Any, message: str
) -> None:
    path = make(tmp_path)
    with pytest.raises(CatalogError, match=message):
        ingest_catalog(pool, path)
    assert galaxies(pool) == []
    assert fetch_tasks(pool) == []


def test_unknown_format_name(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", "source_id,ra,dec", "1,2,3")
    with pytest.raises(CatalogError, match=r"c\.csv: unknown format 'parkay'; use csv, ecsv"):
        load_catalog(path, format="parkay")


def test_wrong_format_name_for_the_content(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", "source_id,ra,dec", "1,2,3")
    with pytest.raises(CatalogError, match=r"c\.csv: not a readable FITS table"):
        load_catalog(path, format="fits")


def test_keep_of_an_absent_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", "source_id,ra,dec", "1,2,3")
    with pytest.raises(CatalogError, match=r"c\.csv: no column 'posangle_sersic' to keep"):
        load_catalog(path, keep=["posangle_sersic"])


def test_coordinates_with_a_non_angle_unit(tmp_path: Path) -> None:
    path = tmp_path / "m.ecsv"
    Table({"source_id": [1], "ra": [1.0] * u.m, "dec": [0.0] * u.deg}).write(path)
    with pytest.raises(CatalogError, match=r"m\.ecsv: column 'ra' has unit m, expected an angle"):
        load_catalog(path)


def test_boolean_id_column(tmp_path: Path) -> None:
    path = tmp_path / "b.fits"
    Table({"source_id": [True], "ra": [1.0], "dec": [0.0]}).write(path)
    with pytest.raises(CatalogError, match=r"b\.fits: column 'source_id' holds bool values"):
        load_catalog(path)


# -- the command line --------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """``main`` configures the root logger for the process; give the next test its own."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.fixture
def cli_env(
    monkeypatch: pytest.MonkeyPatch, database_url: str, restore_logging: None
) -> pytest.MonkeyPatch:
    monkeypatch.setenv("GALPIPE_DATABASE_URL", database_url)
    return monkeypatch


def test_cli_ingests_and_prints_a_summary(
    cli_env: pytest.MonkeyPatch,
    pool: ConnectionPool,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "cat.ecsv"
    gaia_like_table(6).write(path)
    assert main(["ingest", str(path), "--keep", "posangle_sersic", "--catalog-name", "dr3"]) == 0
    out = capsys.readouterr().out
    assert "read                          6" in out
    assert "ingested                      6" in out
    assert "fetch tasks queued            6" in out
    assert "rejected                      0" in out
    assert "see" not in out
    assert {(r[3], tuple(r[4])) for r in galaxies(pool)} == {("dr3", ("posangle_sersic",))}


def test_cli_reports_rejected_rows_and_still_succeeds(
    cli_env: pytest.MonkeyPatch,
    pool: ConnectionPool,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_csv(tmp_path / "c.csv", "source_id,ra,dec", "1,1,1", "2,1,-95")
    report = tmp_path / "why.csv"
    assert main(["ingest", str(path), "--report", str(report), "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert "rejected                      1" in out
    assert f"1 row(s) rejected: see {report}" in out
    assert read_report(report)[0]["reason"] == "dec outside [-90, 90]"


def test_cli_bad_file_exits_1_with_the_reason(
    cli_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = galaxy_candidates_without_coordinates(tmp_path / "gc.fits")
    assert main(["ingest", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"galpipe ingest: {path}: no column 'ra', 'dec'")
    assert "join it with gaia_source" in err


def test_cli_without_database_url_exits_2(
    monkeypatch: pytest.MonkeyPatch,
    restore_logging: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("GALPIPE_DATABASE_URL", raising=False)
    path = write_csv(tmp_path / "c.csv", "source_id,ra,dec", "1,1,1")
    assert main(["ingest", str(path)]) == 2
    assert "GALPIPE_DATABASE_URL is not set" in capsys.readouterr().err


def test_cli_usage_error_exits_2(restore_logging: None) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["ingest"])
    assert exc.value.code == 2
