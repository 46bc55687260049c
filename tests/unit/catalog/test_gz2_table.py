"""Reading the Kaggle Galaxy Zoo solutions CSV (catalog.gz2_table)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from galpipe.catalog.gz2_table import KAGGLE_SUM_ATOL, SolutionsFileError, read_kaggle_solutions
from galpipe.errors import InputError
from galpipe.science.gz2 import ANSWER_COLUMNS, QUESTIONS, check_fractions, fractions_from_shares

HEADER = ["GalaxyID", *ANSWER_COLUMNS]


def kaggle_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ids and fractions as the Kaggle file has them: 6-digit ids, values to 6 decimals."""
    rng = np.random.default_rng(seed)
    shares = np.concatenate(
        [rng.dirichlet(np.full(len(q.answers), 0.5), size=n) for q in QUESTIONS], axis=1
    )
    ids = rng.choice(np.arange(100_000, 1_000_000), size=n, replace=False)
    return ids, np.round(fractions_from_shares(shares), 6)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    return path


def rows_of(ids: np.ndarray, fractions: np.ndarray) -> list[list[str]]:
    return [[str(i), *(f"{v:.6f}" for v in f)] for i, f in zip(ids, fractions, strict=True)]


@pytest.fixture
def table() -> tuple[np.ndarray, np.ndarray]:
    return kaggle_like(5)


def test_reads_a_well_formed_file(tmp_path: Path, table: tuple[np.ndarray, np.ndarray]) -> None:
    ids, fractions = table
    path = write_csv(tmp_path / "solutions.csv", HEADER, rows_of(ids, fractions))
    galaxy_id, read = read_kaggle_solutions(path)
    assert galaxy_id.dtype == np.int64
    assert read.dtype == np.float64
    np.testing.assert_array_equal(galaxy_id, ids)
    np.testing.assert_array_equal(read, fractions)


def test_reads_a_spreadsheet_export_with_bom_crlf_and_a_trailing_blank_line(
    tmp_path: Path, table: tuple[np.ndarray, np.ndarray]
) -> None:
    ids, fractions = table
    lines = [",".join(r) for r in [HEADER, *rows_of(ids, fractions)]]
    path = tmp_path / "training_solutions_rev1.csv"
    path.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n\r\n").encode())
    galaxy_id, read = read_kaggle_solutions(path)
    np.testing.assert_array_equal(galaxy_id, ids)
    np.testing.assert_array_equal(read, fractions)


def test_the_tolerance_admits_six_decimal_rounding_and_nothing_like_a_vote() -> None:
    _, fractions = kaggle_like(20_000, seed=1)
    check_fractions(fractions, atol=KAGGLE_SUM_ATOL)
    # One vote in forty moved from nowhere into Class8.3 must not pass.
    fractions[7, ANSWER_COLUMNS.index("Class8.3")] += 0.025
    with pytest.raises(ValueError, match="Q8"):
        check_fractions(fractions, atol=KAGGLE_SUM_ATOL)


def read_error(path: Path) -> str:
    with pytest.raises(SolutionsFileError) as info:
        read_kaggle_solutions(path)
    assert isinstance(info.value, InputError)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    return message


def test_a_missing_column_is_named(tmp_path: Path, table: tuple[np.ndarray, np.ndarray]) -> None:
    ids, fractions = table
    gone = HEADER.index("Class3.1")
    rows = [r[:gone] + r[gone + 1 :] for r in rows_of(ids, fractions)]
    header = HEADER[:gone] + HEADER[gone + 1 :]
    message = read_error(write_csv(tmp_path / "s.csv", header, rows))
    assert "missing Class3.1" in message
    assert "line 1" in message


def test_an_extra_column_is_named(tmp_path: Path, table: tuple[np.ndarray, np.ndarray]) -> None:
    ids, fractions = table
    rows = [[*r, "0.5"] for r in rows_of(ids, fractions)]
    message = read_error(write_csv(tmp_path / "s.csv", [*HEADER, "Class12.1"], rows))
    assert "unexpected 'Class12.1'" in message
    assert "missing" not in message


def test_reordered_columns_are_named(tmp_path: Path, table: tuple[np.ndarray, np.ndarray]) -> None:
    ids, fractions = table
    header = HEADER.copy()
    header[1], header[2] = header[2], header[1]
    message = read_error(write_csv(tmp_path / "s.csv", header, rows_of(ids, fractions)))
    assert "out of order: column 2 is 'Class1.2', expected 'Class1.1'" in message


def test_a_duplicate_id_names_both_lines(
    tmp_path: Path, table: tuple[np.ndarray, np.ndarray]
) -> None:
    ids, fractions = table
    ids = ids.copy()
    ids[3] = ids[1]
    message = read_error(write_csv(tmp_path / "s.csv", HEADER, rows_of(ids, fractions)))
    assert f"line 5: GalaxyID {ids[1]} repeats line 3" in message


@pytest.mark.parametrize(("text", "problem"), [("-4", "positive"), ("12.5", "not an integer")])
def test_a_bad_id_is_named(
    tmp_path: Path, table: tuple[np.ndarray, np.ndarray], text: str, problem: str
) -> None:
    ids, fractions = table
    rows = rows_of(ids, fractions)
    rows[2][0] = text
    message = read_error(write_csv(tmp_path / "s.csv", HEADER, rows))
    assert "line 4: GalaxyID" in message
    assert problem in message


def test_a_fraction_above_one_is_named(
    tmp_path: Path, table: tuple[np.ndarray, np.ndarray]
) -> None:
    ids, fractions = table
    rows = rows_of(ids, fractions)
    rows[1][ANSWER_COLUMNS.index("Class6.2") + 1] = "1.5"
    message = read_error(write_csv(tmp_path / "s.csv", HEADER, rows))
    assert f"line 3 (GalaxyID {ids[1]})" in message
    assert "Class6.2" in message
    assert "1.5 is outside [0, 1]" in message


def test_a_non_number_is_named(tmp_path: Path, table: tuple[np.ndarray, np.ndarray]) -> None:
    ids, fractions = table
    rows = rows_of(ids, fractions)
    rows[4][ANSWER_COLUMNS.index("Class10.2") + 1] = "n/a"
    message = read_error(write_csv(tmp_path / "s.csv", HEADER, rows))
    assert "line 6: Class10.2 'n/a' is not a number" in message


def test_fractions_off_the_tree_are_named(
    tmp_path: Path, table: tuple[np.ndarray, np.ndarray]
) -> None:
    ids, fractions = table
    fractions = fractions.copy()
    fractions[2, ANSWER_COLUMNS.index("Class11.6")] += 0.1
    message = read_error(write_csv(tmp_path / "s.csv", HEADER, rows_of(ids, fractions)))
    assert f"line 4 (GalaxyID {ids[2]})" in message
    assert "Q11" in message
    assert "parent Class4.1" in message


def test_a_short_line_is_named(tmp_path: Path, table: tuple[np.ndarray, np.ndarray]) -> None:
    ids, fractions = table
    rows = rows_of(ids, fractions)
    rows[0] = rows[0][:-1]
    message = read_error(write_csv(tmp_path / "s.csv", HEADER, rows))
    assert "line 2: 37 fields, expected 38" in message


def test_empty_and_header_only_files_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "empty" in read_error(empty)
    assert "no galaxies" in read_error(write_csv(tmp_path / "h.csv", HEADER, []))


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    assert "cannot read" in read_error(tmp_path / "nowhere.csv")
