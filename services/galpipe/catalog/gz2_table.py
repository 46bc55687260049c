"""Reading the Galaxy Zoo 2 answer table of the Kaggle challenge (``training_solutions_rev1.csv``).

:func:`read_kaggle_solutions` reads the CSV with the standard ``csv`` module, checks its header
(``GalaxyID`` then the 37 answer columns of :data:`galpipe.science.gz2.ANSWER_COLUMNS`, in that
order), its ids (unique positive integers) and its fractions
(:func:`galpipe.science.gz2.check_fractions` with :data:`KAGGLE_SUM_ATOL`). Every problem is a
:class:`SolutionsFileError` naming the file, the line and the problem.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import numpy.typing as npt

from galpipe.errors import InputError
from galpipe.science.gz2 import ANSWER_COLUMNS, FractionsError, check_fractions

__all__ = ["ID_COLUMN", "KAGGLE_SUM_ATOL", "SolutionsFileError", "read_kaggle_solutions"]

ID_COLUMN = "GalaxyID"
_HEADER = (ID_COLUMN, *ANSWER_COLUMNS)
_INT64_MAX = int(np.iinfo(np.int64).max)

#: Largest accepted ``|sum of a question's answers - parent fraction|`` in the Kaggle file.
#: The file gives the fractions to 6 decimals, each rounded by up to 0.5e-6, so a question of
#: k answers with a parent can be off by (k + 1) * 0.5e-6: at most 4e-6 (Q8, 7 answers).
#: On a synthetic table of 61,578 galaxies (the file's size; Dirichlet shares, every column
#: rounded to 6 decimals) the largest error measured was 3e-6 (Q8 and Q11). 1e-5 leaves a
#: factor 2.5 over the bound and is still 2,500 times smaller than one vote in forty (0.025),
#: the smallest real inconsistency.
KAGGLE_SUM_ATOL = 1e-5


class SolutionsFileError(InputError, ValueError):
    """The Kaggle solutions file cannot be used; the message names the file, line and problem."""


def _check_header(path: Path, header: list[str]) -> None:
    if tuple(header) == _HEADER:
        return
    missing = [c for c in _HEADER if c not in header]
    unexpected = [c for c in header if c not in _HEADER]
    repeated = sorted({c for c in header if header.count(c) > 1})
    problems = []
    if missing:
        problems.append("missing " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected " + ", ".join(repr(c) for c in unexpected))
    if repeated:
        problems.append("repeated " + ", ".join(repeated))
    if not problems:
        # Same names, once each: only the order differs.
        position = next(
            i for i, (got, want) in enumerate(zip(header, _HEADER, strict=False)) if got != want
        )
        problems.append(
            f"columns out of order: column {position + 1} is {header[position]!r}, "
            f"expected {_HEADER[position]!r}"
        )
    raise SolutionsFileError(
        f"{path}: line 1: not a Kaggle Galaxy Zoo solutions header ({'; '.join(problems)}); "
        f"expected {ID_COLUMN} then Class1.1 .. Class11.6 in order ({len(_HEADER)} columns)"
    )


def _parse_id(path: Path, line: int, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise SolutionsFileError(
            f"{path}: line {line}: {ID_COLUMN} {text!r} is not an integer"
        ) from None
    if not 0 < value <= _INT64_MAX:
        raise SolutionsFileError(
            f"{path}: line {line}: {ID_COLUMN} {value} is not a positive 64-bit integer"
        )
    return value


def _parse_fractions(path: Path, line: int, fields: list[str]) -> list[float]:
    values = []
    for column, text in zip(ANSWER_COLUMNS, fields, strict=True):
        try:
            values.append(float(text))
        except ValueError:
            raise SolutionsFileError(
                f"{path}: line {line}: {column} {text!r} is not a number"
            ) from None
    return values


def read_kaggle_solutions(
    path: Path,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Read and validate a Kaggle "Galaxy Zoo -- The Galaxy Challenge" solutions CSV.

    Parameters
    ----------
    path : pathlib.Path
        The CSV: a header ``GalaxyID,Class1.1,...,Class11.6`` then one galaxy per line (the
        layout of ``training_solutions_rev1.csv``).

    Returns
    -------
    galaxy_id : numpy.ndarray
        ``(N,)`` int64 ids, in file order.
    fractions : numpy.ndarray
        ``(N, 37)`` float64 tree-normalised vote fractions, dimensionless, columns in the order
        of :data:`galpipe.science.gz2.ANSWER_COLUMNS`.

    Raises
    ------
    SolutionsFileError
        If the file cannot be read, is empty or has no data line, its header is not exactly
        the Kaggle one (missing, unexpected, repeated or reordered columns are named), a line
        has the wrong number of fields, an id is not a positive integer or repeats one, a
        fraction is not a number, or the fractions fail
        :func:`galpipe.science.gz2.check_fractions` with :data:`KAGGLE_SUM_ATOL`.
    """
    ids: list[int] = []
    lines: list[int] = []
    rows: list[list[float]] = []
    first_line: dict[int, int] = {}
    try:
        # utf-8-sig drops the byte order mark that spreadsheet programs write.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise SolutionsFileError(f"{path}: the file is empty, expected a header line")
            _check_header(path, header)
            for fields in reader:
                line = reader.line_num
                if not fields:
                    continue  # a blank line, e.g. at the end of the file
                if len(fields) != len(_HEADER):
                    raise SolutionsFileError(
                        f"{path}: line {line}: {len(fields)} fields, expected {len(_HEADER)}"
                    )
                galaxy = _parse_id(path, line, fields[0])
                if galaxy in first_line:
                    raise SolutionsFileError(
                        f"{path}: line {line}: {ID_COLUMN} {galaxy} repeats line "
                        f"{first_line[galaxy]}"
                    )
                first_line[galaxy] = line
                ids.append(galaxy)
                lines.append(line)
                rows.append(_parse_fractions(path, line, fields[1:]))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SolutionsFileError(f"{path}: cannot read the file: {exc}") from exc
    if not rows:
        raise SolutionsFileError(f"{path}: a header but no galaxies")
    galaxy_id = np.asarray(ids, dtype=np.int64)
    try:
        fractions = check_fractions(np.asarray(rows, dtype=np.float64), atol=KAGGLE_SUM_ATOL)
    except FractionsError as exc:
        where = "" if exc.row is None else f"line {lines[exc.row]} ({ID_COLUMN} {ids[exc.row]}): "
        raise SolutionsFileError(f"{path}: {where}{exc.detail}") from exc
    return galaxy_id, fractions
