"""Bad catalogues through ``galpipe ingest``'s steps: good rows stored, bad rows in the report,
or the whole file refused with a ``CatalogError`` naming it and nothing stored."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg_pool import ConnectionPool

from galpipe.catalog.ingest import ingest_catalog
from tests.fuzz.generators import CatalogCase, catalog_case
from tests.fuzz.oracles import try_catalog

_ECSV_WITH_NUL = (
    b"# %ECSV 1.0\n# ---\n# datatype:\n# - {name: source_id, datatype: int64}\n"
    b"# - {name: ra, datatype: float64}\n# - {name: dec, datatype: float64}\n"
    b"# - {name: note, datatype: string}\nsource_id ra dec note\n1 10.0 20.0 a\x00b\n"
)


def _rows(n: int, first: int = 1) -> str:
    return "".join(f"{first + i},{(i * 0.5) % 360},{(i % 300) * 0.25 - 40}\n" for i in range(n))


def _hand_made() -> list[CatalogCase]:
    """The corpus: each case a problem found or guarded against, written out by hand."""
    header = "source_id,ra,dec"
    return [
        CatalogCase(
            "NUL in an extra column (PostgreSQL's jsonb refused the whole chunk)",
            "nul.csv",
            f"{header},note\n1,10.0,20.0,a\x00b\n2,11.0,21.0,ok\n".encode(),
            frozenset({1, 2}),
            may_refuse=False,
        ),
        CatalogCase(
            "NUL in an ECSV value (PostgreSQL's jsonb refused the whole chunk)",
            "nul.ecsv",
            _ECSV_WITH_NUL,
            frozenset({1}),
            may_refuse=False,
        ),
        CatalogCase(
            "NUL in an extra column's name",
            "nul_name.csv",
            f"{header},no\x00te\n1,10.0,20.0,x\n".encode(),
            frozenset({1}),
            may_refuse=False,
        ),
        CatalogCase(
            "UTF-8 byte order mark (the id column was not found)",
            "bom.csv",
            b"\xef\xbb\xbf" + f"{header}\n{_rows(3)}".encode(),
            frozenset({1, 2, 3}),
            may_refuse=False,
        ),
        CatalogCase(
            "every coordinate problem, one per row",
            "coords.csv",
            (
                f"{header}\n1,nan,0\n2,inf,0\n3,360,0\n4,-0.5,0\n5,10,91\n6,10,-inf\n7,abc,0\n"
                "8,,0\n9,10,\n10,359.999,-90\n11,0,90\n"
            ).encode(),
            frozenset({10, 11}),
            may_refuse=False,
        ),
        CatalogCase(
            "subnormal coordinates (PostgreSQL refused them: value out of range: underflow)",
            "subnormal.csv",
            f"{header}\n1,1e-320,-1e-310\n2,5e-324,0\n".encode(),
            frozenset({1, 2}),
            may_refuse=False,
        ),
        CatalogCase(
            "duplicate ids: the first valid row wins",
            "dups.csv",
            f"{header}\n1,nan,0\n1,10,0\n1,11,0\n2,12,0\n2,12,0\n".encode(),
            frozenset({1, 2}),
            may_refuse=False,
        ),
        CatalogCase(
            "SQL in values and names",
            "sql.csv",
            f"{header},\"x'); DROP TABLE galaxies;--\"\n1,10,0,'; DELETE FROM tasks; --\n".encode(),
            frozenset({1}),
            may_refuse=False,
        ),
        CatalogCase("UTF-16", "utf16.csv", f"{header}\n{_rows(2)}".encode("utf-16")),
        CatalogCase("latin-1", "latin1.csv", f"{header},n\n1,10,0,café\n".encode("latin-1")),
        CatalogCase("no id column", "noid.csv", f"ra,dec\n{10},{0}\n".encode(), must_refuse=True),
        CatalogCase("header only", "empty_rows.csv", f"{header}\n".encode(), must_refuse=True),
        CatalogCase("empty file", "empty.csv", b"", must_refuse=True),
        CatalogCase("binary garbage", "garbage.fits", bytes(range(256)) * 20, must_refuse=True),
        CatalogCase("html page", "page.vot", b"<html><body>502</body></html>", must_refuse=True),
        CatalogCase(
            "a line of 4 MB",
            "long.csv",
            f"{header},blob\n1,10,0,{'y' * (4 << 20)}\n".encode(),
            frozenset({1}),
            may_refuse=False,
        ),
        CatalogCase(
            "50 000 rows",
            "many.csv",
            f"{header}\n{_rows(50_000, first=10**6)}".encode(),
            frozenset(range(10**6, 10**6 + 50_000)),
            may_refuse=False,
        ),
    ]


@pytest.mark.parametrize("case", _hand_made(), ids=lambda case: case.filename)
def test_hand_made_catalogues(case: CatalogCase, pool: ConnectionPool, tmp_path: Path) -> None:
    verdict = try_catalog(case, pool, tmp_path)
    assert verdict.handled, f"{case.name}: {verdict.detail}"


def test_a_nul_is_stored_as_the_replacement_character(pool: ConnectionPool, tmp_path: Path) -> None:
    # ECSV's reader keeps a NUL inside a value (the fast CSV reader ends the value there).
    path = tmp_path / "nul.ecsv"
    path.write_bytes(_ECSV_WITH_NUL)
    summary = ingest_catalog(pool, path)
    assert (summary.ingested, summary.rejected) == (1, 0)
    with pool.connection() as conn:
        row = conn.execute("SELECT extra->>'note' FROM galaxies WHERE source_id = 1").fetchone()
    assert row == ("a\ufffdb",)


def test_rejected_rows_are_reported_with_their_reasons(
    pool: ConnectionPool, tmp_path: Path
) -> None:
    path = tmp_path / "mixed.csv"
    path.write_text("source_id,ra,dec\n1,10,0\n2,nan,0\n-3,10,0\n1,11,0\n")
    summary = ingest_catalog(pool, path)
    assert (summary.read, summary.ingested, summary.rejected) == (4, 1, 3)
    assert summary.report_path is not None
    with summary.report_path.open(newline="") as fh:
        lines = list(csv.DictReader(fh))
    assert [line["row"] for line in lines] == ["2", "3", "4"]
    assert "ra is not finite" in lines[0]["reason"]
    assert "negative" in lines[1]["reason"]
    assert "duplicate" in lines[2]["reason"]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rng=st.randoms(use_true_random=False))
def test_generated_catalogues(rng: random.Random, pool: ConnectionPool, tmp_path: Path) -> None:
    # The database outlives the examples: each judgement compares counts before and after.
    case = catalog_case(rng, big=False)
    verdict = try_catalog(case, pool, tmp_path)
    assert verdict.handled, f"{case.name}: {verdict.detail}"
