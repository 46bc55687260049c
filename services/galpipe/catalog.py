"""Catalog ingest: read a galaxy catalogue, check every row, store the good ones in bulk.

``galpipe ingest FILE`` and :func:`ingest_catalog` run the same steps:

1. **Read** the whole file with :meth:`astropy.table.Table.read` (CSV, ECSV, FITS, VOTable; any
   other astropy reader by name). A file that is missing, empty, not a table, or lacks the id or
   coordinate columns stops here with a :class:`CatalogError` naming the file and the problem.
2. **Validate** the id, ra and dec columns with vectorised numpy checks
   (:func:`validate_rows`). A rejected row keeps its 1-based data-row number and every reason.
3. **Store** the accepted rows in chunks (``chunk_rows``): each chunk is COPYed to a staging
   table, inserted with ``ON CONFLICT DO NOTHING`` and its ``fetch`` tasks are queued, all in
   one transaction. An interrupted ingest keeps the chunks it committed; running it again
   resumes, since rows already present change nothing.
4. **Report**: rejected rows go to a CSV (``row,source_id,reason,ra,dec``, raw values as read)
   and the :class:`IngestSummary` reconciles: ``read = ingested + already_present + rejected``.

Decisions worth knowing:

- Ids must be integers in ``[0, 2**63)`` (Gaia ``source_id`` is a positive int64). A
  floating-point id column is accepted only row by row where the value is integral and at most
  ``2**53``: above that a float cannot tell neighbouring integers apart, so the id may already
  be wrong (Gaia ids are ~1e18; export them as integers).
- Of several rows with one id, the first *otherwise valid* row is kept; later ones are rejected
  as ``duplicate source_id (first at row N)``.
- A galaxy is never modified once stored. An id already stored at the same position (within
  :data:`~galpipe.db.galaxies.SAME_POSITION_TOLERANCE_DEG`) counts as *already present* (its
  ``extra`` and ``catalog`` stay as first ingested); one stored at a different position is
  *rejected* with the stored coordinates in the reason, and gets no fetch task.
- Every column other than id/ra/dec (or the ``keep`` list) is stored in ``galaxies.extra`` as
  JSON, values verbatim: NaN, infinities and masked values become ``null``; float32 values
  keep their shortest decimal form (``0.1``, not ``0.10000000149011612``).
- Coordinate columns with an angle unit (FITS ``TUNIT``, VOTable or ECSV ``unit``) are
  converted to degrees; without a unit they are taken to be degrees.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from astropy import units as u
from astropy.io import registry
from astropy.table import Table
from psycopg_pool import ConnectionPool

from galpipe.db.galaxies import StagedRow, insert_galaxies
from galpipe.db.queue import TaskQueue
from galpipe.settings import Settings

log = logging.getLogger(__name__)

FETCH_PIPELINE = "fetch"
DEFAULT_CHUNK_ROWS = 100_000
REPORT_SUFFIX = ".rejected.csv"
REPORT_HEADER = ("row", "source_id", "reason", "ra", "dec")

_INT64_MAX = int(np.iinfo(np.int64).max)
_INT64_DIGITS = len(str(_INT64_MAX))
# Largest magnitude below which every integer is exactly representable in float64.
_FLOAT_EXACT_INT_MAX = 2**53

# Short names users type, mapped to astropy's reader names (astropy's bare "csv"/"ecsv" are
# deprecated aliases that warn).
FORMAT_ALIASES = {
    "csv": "ascii.csv",
    "ecsv": "ascii.ecsv",
    "fits": "fits",
    "fit": "fits",
    "votable": "votable",
    "vot": "votable",
    "xml": "votable",
}
_SUFFIX_FORMATS = {
    ".csv": "ascii.csv",
    ".ecsv": "ascii.ecsv",
    ".fits": "fits",
    ".fit": "fits",
    ".fts": "fits",
    ".vot": "votable",
    ".votable": "votable",
    ".xml": "votable",
}
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz")
_READER_NAMES = {"ascii.csv": "CSV", "ascii.ecsv": "ECSV", "fits": "FITS", "votable": "VOTable"}

# Columns of gaiadr3.galaxy_candidates: their presence without ra/dec identifies that table.
GAIA_GALAXY_CANDIDATES_COLUMNS = frozenset(
    {
        "classprob_dsc_combmod_galaxy",
        "ellipticity_sersic",
        "n_sersic",
        "posangle_sersic",
        "radius_sersic",
        "vari_best_class_name",
    }
)
GAIA_HINT = (
    "Gaia DR3 galaxy_candidates has no coordinates — join it with gaia_source "
    "for ra and dec, see the README (Ingesting a catalogue)"
)


class CatalogError(ValueError):
    """The catalogue cannot be ingested; the message names the file and the problem."""


# -- validation (pure numpy) ---------------------------------------------------------------


@dataclass(frozen=True)
class RowValidation:
    """Outcome of :func:`validate_rows`, one element per data row.

    Attributes
    ----------
    accepted
        True where the row may be stored.
    source_id
        Parsed ids (int64); 0 where the id could not be parsed.
    ra, dec
        Coordinates in degrees (float64); NaN where missing or not a number.
    reason
        Why the row was rejected (several reasons joined by ``"; "``), ``""`` where accepted.
    """

    accepted: npt.NDArray[np.bool_]
    source_id: npt.NDArray[np.int64]
    ra: npt.NDArray[np.float64]
    dec: npt.NDArray[np.float64]
    reason: npt.NDArray[np.object_]

    @property
    def rejected_rows(self) -> npt.NDArray[np.intp]:
        """0-based indices of the rejected rows, in file order."""
        return np.flatnonzero(~self.accepted)


_Problems = list[tuple[npt.NDArray[np.bool_], Any]]


def validate_rows(
    source_id: npt.ArrayLike,
    ra: npt.ArrayLike,
    dec: npt.ArrayLike,
    *,
    names: tuple[str, str, str] = ("source_id", "ra", "dec"),
) -> RowValidation:
    """Check ids and coordinates of every row at once; nothing is dropped silently.

    Parameters
    ----------
    source_id
        Galaxy ids: integers, floats, or strings (a text column with one bad value is read as
        strings); may be a masked array (masked = missing).
    ra, dec
        Right ascension and declination in degrees: numbers or strings, possibly masked.
    names
        Column names used in the reasons, so that they match the user's file.

    Returns
    -------
    RowValidation
        A row is accepted when its id is an integer in ``[0, 2**63)``, ``ra`` is finite in
        ``[0, 360)``, ``dec`` is finite in ``[-90, 90]`` and no earlier accepted row has the
        same id.

    Raises
    ------
    CatalogError
        If a column as a whole has the wrong type (boolean ids, array-valued cells, …) or the
        columns differ in length.
    """
    id_name, ra_name, dec_name = names
    ids, problems = _parse_ids(source_id, id_name)
    ra_deg, ra_problems = _parse_degrees(ra, ra_name)
    dec_deg, dec_problems = _parse_degrees(dec, dec_name)
    n = len(ids)
    if not len(ra_deg) == len(dec_deg) == n:
        raise CatalogError(
            f"columns differ in length: {id_name} {n}, {ra_name} {len(ra_deg)}, "
            f"{dec_name} {len(dec_deg)}"
        )
    with np.errstate(invalid="ignore"):
        ra_outside = np.isfinite(ra_deg) & ~((ra_deg >= 0) & (ra_deg < 360))
        dec_outside = np.isfinite(dec_deg) & ~((dec_deg >= -90) & (dec_deg <= 90))
    problems += [*ra_problems, (ra_outside, f"{ra_name} outside [0, 360)")]
    problems += [*dec_problems, (dec_outside, f"{dec_name} outside [-90, 90]")]

    rejected = np.zeros(n, dtype=bool)
    reason = np.full(n, "", dtype=object)
    for mask, text in problems:
        _add_reason(reason, mask, text)
        rejected |= mask

    duplicate, first = _later_duplicates(ids, ~rejected)
    if duplicate.any():
        first_rows = (first[duplicate] + 1).astype(str).astype(object)
        _add_reason(reason, duplicate, f"duplicate {id_name} (first at row " + first_rows + ")")
        rejected |= duplicate

    accepted = ~rejected
    return RowValidation(
        accepted=accepted,
        source_id=np.where(accepted, ids, 0).astype(np.int64),
        ra=ra_deg,
        dec=dec_deg,
        reason=reason,
    )


def _add_reason(reason: npt.NDArray[np.object_], mask: npt.NDArray[np.bool_], text: Any) -> None:
    """Append ``text`` (a string, or one string per selected row) to the reasons of ``mask``."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return
    previous = reason[idx]
    separator = np.where(previous == "", "", "; ").astype(object)
    reason[idx] = previous + separator + text


def _data_and_missing(values: Any) -> tuple[np.ndarray, npt.NDArray[np.bool_]]:
    data = np.asarray(np.ma.getdata(values))
    missing = np.asarray(np.ma.getmaskarray(values))
    if data.ndim != 1:
        raise CatalogError(f"expected one value per row, got an array of shape {data.shape}")
    return data, missing


def _as_text(data: np.ndarray) -> np.ndarray:
    """Strings of a text column (``U``), stripped; bytes are decoded as UTF-8."""
    if data.dtype.kind == "S":
        data = np.char.decode(data, "utf-8", errors="replace")
    elif data.dtype.kind != "U":
        data = data.astype(str)
    return np.char.strip(data)


def _parse_ids(values: npt.ArrayLike, name: str) -> tuple[npt.NDArray[np.int64], _Problems]:
    try:
        data, missing = _data_and_missing(values)
    except CatalogError as exc:
        raise CatalogError(f"column {name!r}: {exc}") from None
    present = ~missing
    kind = data.dtype.kind
    ids = np.zeros(len(data), dtype=np.int64)
    if kind == "i":
        ids = data.astype(np.int64)
        problems: _Problems = [(present & (ids < 0), f"{name} is negative")]
    elif kind == "u":
        too_big = present & (data > _INT64_MAX)
        ids = np.where(too_big, 0, data).astype(np.int64)
        problems = [(too_big, f"{name} does not fit a 64-bit signed integer")]
    elif kind == "f":
        with np.errstate(invalid="ignore"):
            integral = np.isfinite(data) & (data == np.floor(data))
            exact = integral & (np.abs(data) <= _FLOAT_EXACT_INT_MAX)
        ids = np.where(exact, data, 0).astype(np.int64)
        problems = [
            (present & ~integral, f"{name} is not an integer"),
            (
                present & integral & ~exact,
                f"{name} is a floating-point number beyond 2**53 and may have been rounded "
                "(write ids as integers)",
            ),
            (present & exact & (ids < 0), f"{name} is negative"),
        ]
    elif kind in "USO":
        text = _as_text(data)
        missing = missing | (text == "")
        present = ~missing
        digits = np.char.isdigit(text)
        negative = np.char.startswith(text, "-") & np.char.isdigit(
            np.char.replace(text, "-", "", count=1)
        )
        too_long = digits & (np.char.str_len(text) > _INT64_DIGITS)
        fits_uint = digits & ~too_long
        unsigned = np.zeros(len(data), dtype=np.uint64)
        unsigned[fits_uint] = text[fits_uint].astype(np.uint64)
        too_big = too_long | (unsigned > _INT64_MAX)
        ids = np.where(too_big, 0, unsigned).astype(np.int64)
        problems = [
            (present & ~digits & ~negative, f"{name} is not an integer"),
            (present & negative, f"{name} is negative"),
            (present & too_big, f"{name} does not fit a 64-bit signed integer"),
        ]
    else:
        raise CatalogError(f"column {name!r} holds {data.dtype} values, expected integer ids")
    problems.insert(0, (missing, f"{name} is missing"))
    ids[missing] = 0
    return ids, problems


def _parse_float_or_nan(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return np.nan


def _parse_degrees(values: npt.ArrayLike, name: str) -> tuple[npt.NDArray[np.float64], _Problems]:
    try:
        data, missing = _data_and_missing(values)
    except CatalogError as exc:
        raise CatalogError(f"column {name!r}: {exc}") from None
    kind = data.dtype.kind
    not_a_number = np.zeros(len(data), dtype=bool)
    if kind in "iuf":
        degrees = data.astype(np.float64)
    elif kind in "USO":
        text = _as_text(data)
        missing = missing | (text == "")
        try:
            degrees = np.where(missing, "nan", text).astype(np.float64)
        except ValueError:
            # Some cell is not a number: parse cell by cell to find which (this path only runs
            # for text columns, which a reader produces only when a value did not parse).
            degrees = np.frompyfunc(_parse_float_or_nan, 1, 1)(text).astype(np.float64)
            spelled_nan = np.char.lower(text) == "nan"
            not_a_number = ~missing & np.isnan(degrees) & ~spelled_nan
    else:
        raise CatalogError(f"column {name!r} holds {data.dtype} values, expected degrees")
    degrees = np.where(missing | not_a_number, np.nan, degrees)
    problems: _Problems = [
        (missing, f"{name} is missing"),
        (not_a_number, f"{name} is not a number"),
        (~missing & ~not_a_number & ~np.isfinite(degrees), f"{name} is not finite"),
    ]
    return degrees, problems


def _later_duplicates(
    ids: npt.NDArray[np.int64], candidates: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.intp]]:
    """Among ``candidates``, mark every row whose id occurred in an earlier candidate row.

    Returns the mask of later duplicates and, per row, the index of the first row with its id
    (-1 for rows that are not candidates).
    """
    n = len(ids)
    idx = np.flatnonzero(candidates)
    order = idx[np.argsort(ids[idx], kind="stable")]  # stable: equal ids stay in file order
    sorted_ids = ids[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = sorted_ids[1:] != sorted_ids[:-1]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(len(order)), 0))
    first = np.full(n, -1, dtype=np.intp)
    first[order] = order[group_start]
    duplicate = np.zeros(n, dtype=bool)
    duplicate[order[~starts]] = True
    return duplicate, first


# -- reading -------------------------------------------------------------------------------


def resolve_format(path: Path, format: str | None) -> str | None:
    """astropy reader name for ``format`` (an alias or reader name) or for ``path``'s suffix.

    Returns None when neither says, leaving astropy to identify the file by its content.

    Raises
    ------
    CatalogError
        If ``format`` names no astropy table reader.
    """
    if format is not None:
        name = FORMAT_ALIASES.get(format.strip().lower(), format.strip())
        try:
            registry.get_reader(name, Table)
        except registry.IORegistryError:
            raise CatalogError(
                f"{path}: unknown format {format!r}; use csv, ecsv, fits or votable "
                "(or another astropy.table reader name)"
            ) from None
        return name
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes.pop()
    return _SUFFIX_FORMATS.get(suffixes[-1]) if suffixes else None


def read_table(path: Path, format: str | None = None) -> Table:
    """Read ``path`` as a table with at least one data row.

    Raises
    ------
    CatalogError
        If the file is missing, empty, of unknown format, not a table, or has no rows.
    """
    if not path.exists():
        raise CatalogError(f"{path}: no such file")
    if path.is_dir():
        raise CatalogError(f"{path}: is a directory, not a catalogue file")
    if path.stat().st_size == 0:
        raise CatalogError(f"{path}: the file is empty (0 bytes), expected a table")
    reader = resolve_format(path, format)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            table = Table.read(path, format=reader)
        except Exception as exc:  # any parse failure means the file is not a readable table
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            if reader is None and isinstance(exc, registry.IORegistryError):
                raise CatalogError(
                    f"{path}: cannot tell the format from the file name or content; "
                    "pass --format csv, ecsv, fits or votable"
                ) from None
            kind = _READER_NAMES.get(reader or "", reader or "")
            raise CatalogError(
                f"{path}: not a readable {kind + ' ' if kind else ''}table "
                f"({type(exc).__name__}: {first_line})"
            ) from None
    for message in dict.fromkeys(str(w.message) for w in caught):
        log.warning("%s: %s", path, message)
    if not table.colnames:
        raise CatalogError(f"{path}: no columns found, expected a table")
    if len(table) == 0:
        raise CatalogError(f"{path}: the table has columns but no data rows")
    return table


def _find_column(table: Table, wanted: str) -> str | None:
    """``wanted`` itself, else the one column equal to it ignoring case (FITS upper-cases)."""
    if wanted in table.colnames:
        return wanted
    folded = [c for c in table.colnames if c.lower() == wanted.lower()]
    return folded[0] if len(folded) == 1 else None


def _column_list(names: Sequence[str], shown: int = 15) -> str:
    listed = ", ".join(names[:shown])
    return listed + (f", … ({len(names) - shown} more)" if len(names) > shown else "")


def _require_columns(
    table: Table, path: Path, id_col: str, ra_col: str, dec_col: str
) -> tuple[str, str, str]:
    """The names in ``table`` of the id, ra and dec columns, or an error saying what is missing."""
    id_name, ra_name, dec_name = (_find_column(table, c) for c in (id_col, ra_col, dec_col))
    if id_name is not None and ra_name is not None and dec_name is not None:
        return id_name, ra_name, dec_name
    wanted = ((id_col, id_name), (ra_col, ra_name), (dec_col, dec_name))
    missing = ", ".join(repr(want) for want, found in wanted if found is None)
    message = f"{path}: no column {missing} (columns: {_column_list(table.colnames)})"
    if id_name is None:
        message += "; name the id column with --id-col"
    if ra_name is None or dec_name is None:
        if GAIA_GALAXY_CANDIDATES_COLUMNS & {c.lower() for c in table.colnames}:
            message += (
                "; this looks like Gaia DR3 galaxy_candidates, which has no coordinates — "
                "join it with gaia_source for ra and dec, see the README (Ingesting a catalogue)"
            )
        else:
            message += f"; name the coordinate columns with --ra-col/--dec-col. {GAIA_HINT}"
    raise CatalogError(message)


def _extra_columns(
    table: Table, path: Path, keep: Sequence[str] | None, core: tuple[str, str, str]
) -> tuple[str, ...]:
    if keep is None:
        return tuple(c for c in table.colnames if c not in core)
    names = []
    for want in keep:
        name = _find_column(table, want)
        if name is None:
            raise CatalogError(
                f"{path}: no column {want!r} to keep (columns: {_column_list(table.colnames)})"
            )
        if name not in core and name not in names:
            names.append(name)
    return tuple(names)


def _in_degrees(table: Table, name: str, path: Path) -> Any:
    """Column ``name`` converted to degrees according to its unit (none = degrees)."""
    column = table[name]
    unit = column.unit
    if unit is None or unit == u.dimensionless_unscaled:
        return column
    if isinstance(unit, u.UnrecognizedUnit):
        if str(unit).strip().lower() in {"deg", "degree", "degrees"}:
            return column
        raise CatalogError(f"{path}: column {name!r} has unit {unit!s}, expected an angle (deg)")
    try:
        scale = unit.to(u.deg)
    except u.UnitConversionError:
        raise CatalogError(
            f"{path}: column {name!r} has unit {unit!s}, expected an angle (deg)"
        ) from None
    if scale == 1.0 or column.dtype.kind not in "iuf":
        return column
    data = np.asarray(np.ma.getdata(column), dtype=np.float64) * scale
    return np.ma.MaskedArray(data, mask=np.ma.getmaskarray(column))


@dataclass(frozen=True)
class Rejection:
    """One line of the report: a data row (1-based), raw values as read, and why."""

    row: int
    source_id: str
    reason: str
    ra: str
    dec: str


@dataclass(frozen=True)
class LoadedCatalog:
    """A catalogue read and validated, not yet stored (see :func:`load_catalog`).

    Attributes
    ----------
    path
        The file it was read from.
    table
        Every column as read (raw values for the report and the extra columns).
    id_col, ra_col, dec_col
        The names of the id and coordinate columns in ``table``.
    extra_cols
        Columns stored in ``galaxies.extra``.
    rows
        The validation of every row.
    """

    path: Path
    table: Table
    id_col: str
    ra_col: str
    dec_col: str
    extra_cols: tuple[str, ...]
    rows: RowValidation

    @property
    def n_rows(self) -> int:
        return len(self.table)

    def rejections(self, index: npt.ArrayLike, reasons: Sequence[str]) -> list[Rejection]:
        """Report lines of 0-based data rows ``index``, with raw values as read."""
        index = np.asarray(index, dtype=np.intp)
        raw = [_raw_texts(self.table[c], index) for c in (self.id_col, self.ra_col, self.dec_col)]
        return [
            Rejection(row=int(i) + 1, source_id=sid, reason=why, ra=ra, dec=dec)
            for i, why, sid, ra, dec in zip(index, reasons, *raw, strict=True)
        ]


def _raw_texts(column: Any, index: npt.NDArray[np.intp]) -> list[str]:
    """Cells ``index`` of ``column`` as text for the report; masked cells are empty."""
    values = np.asarray(np.ma.getdata(column))[index].tolist()
    masked = np.asarray(np.ma.getmaskarray(column))[index].tolist()
    return [_cell_text(v) if not m else "" for v, m in zip(values, masked, strict=True)]


def _cell_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, float):
        return repr(value)
    return str(value)


def load_catalog(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    id_col: str = "source_id",
    ra_col: str = "ra",
    dec_col: str = "dec",
    keep: Sequence[str] | None = None,
) -> LoadedCatalog:
    """Read and validate a catalogue file; touches no database.

    Parameters
    ----------
    path
        CSV, ECSV, FITS or VOTable file (any astropy.table format with ``format``).
    format
        ``csv``, ``ecsv``, ``fits``, ``votable`` or an astropy reader name; guessed from the
        file name, then the content, when None.
    id_col, ra_col, dec_col
        Column names of the integer id and of ICRS ra, dec in degrees. Matched exactly, or
        ignoring case when exactly one column matches that way.
    keep
        Extra columns to store with each galaxy; None keeps every other column.

    Raises
    ------
    CatalogError
        If the file cannot be read as a table or lacks a required column.
    """
    path = Path(path)
    table = read_table(path, format)
    core = _require_columns(table, path, id_col, ra_col, dec_col)
    extra = _extra_columns(table, path, keep, core)
    id_name, ra_name, dec_name = core
    try:
        rows = validate_rows(
            table[id_name],
            _in_degrees(table, ra_name, path),
            _in_degrees(table, dec_name, path),
            names=(id_name, ra_name, dec_name),
        )
    except CatalogError as exc:
        raise CatalogError(f"{path}: {exc}") from None
    return LoadedCatalog(path, table, id_name, ra_name, dec_name, extra, rows)


# -- extra columns as JSON ------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """A cell of an object column (e.g. a VOTable variable-length array) as plain JSON."""
    if value is None or value is np.ma.masked:
        return None
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _json_values(column: Any, index: npt.NDArray[np.intp]) -> list[Any]:
    """JSON-ready values of ``column`` at rows ``index``: masked, NaN and ±inf become None."""
    data = np.asarray(np.ma.getdata(column))[index]
    masked = np.asarray(np.ma.getmaskarray(column))[index]
    kind = data.dtype.kind
    if kind == "f":
        if data.dtype.itemsize < 8:
            # Via text: a float32 keeps its shortest decimal form instead of binary noise.
            data = data.astype(str).astype(np.float64)
        with np.errstate(invalid="ignore"):
            masked = masked | ~np.isfinite(data)
    elif kind == "S":
        data = np.char.decode(data, "utf-8", errors="replace")
    elif kind == "O":
        data = np.frompyfunc(_jsonable, 1, 1)(data).astype(object)
    elif kind not in "iubU":
        data = data.astype(str)  # datetimes, complex numbers: keep them readable
    cells = data.astype(object)
    cells[masked] = None
    return cells.tolist()


def _extra_json(catalog: LoadedCatalog, index: npt.NDArray[np.intp]) -> list[str]:
    """``galaxies.extra`` of rows ``index`` as JSON objects in text."""
    if not catalog.extra_cols:
        return ["{}"] * len(index)
    names = catalog.extra_cols
    columns = [_json_values(catalog.table[name], index) for name in names]
    return [
        json.dumps(dict(zip(names, values, strict=True)), allow_nan=False, separators=(",", ":"))
        for values in zip(*columns, strict=True)
    ]


# -- storing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestSummary:
    """What an ingest did. ``read = ingested + already_present + rejected`` always holds.

    Attributes
    ----------
    read
        Data rows in the file.
    ingested
        Galaxies newly stored.
    already_present
        Rows whose galaxy was already stored with the same coordinates (left as it was).
    rejected
        Rows not stored; each is in the report with its reasons.
    fetch_queued
        ``fetch`` tasks newly queued (galaxies that already had one keep it).
    report_path
        The report of rejected rows, or None when no row was rejected.
    """

    read: int
    ingested: int
    already_present: int
    rejected: int
    fetch_queued: int
    report_path: Path | None

    def __post_init__(self) -> None:
        counts = (self.read, self.ingested, self.already_present, self.rejected)
        if min(*counts, self.fetch_queued) < 0:
            raise ValueError(f"negative count in {self}")
        if self.read != self.ingested + self.already_present + self.rejected:
            raise ValueError(
                f"ingest counts do not reconcile: read {self.read} != ingested "
                f"{self.ingested} + already present {self.already_present} + rejected "
                f"{self.rejected}"
            )
        if (self.report_path is None) != (self.rejected == 0):
            raise ValueError(f"rejected rows need a report and only they do: {self}")


def default_report_path(path: Path) -> Path:
    """``<file>.rejected.csv`` next to the input file."""
    return path.with_name(path.name + REPORT_SUFFIX)


def default_catalog_name(path: Path) -> str:
    """The file name without its table and compression suffixes (``gaia.fits.gz`` → ``gaia``)."""
    name = path.name
    for suffix in _COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    stem = Path(name).stem
    return stem or path.name


def _prepare_report(catalog_path: Path, report_path: Path) -> None:
    """Fail early if the report cannot be written; remove a stale one from an earlier run."""
    if report_path.resolve() == catalog_path.resolve():
        raise CatalogError(f"{catalog_path}: the report would overwrite the catalogue itself")
    parent = report_path.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise CatalogError(f"{report_path}: cannot write the report there; pass --report PATH")
    try:
        report_path.unlink(missing_ok=True)
    except OSError as exc:
        raise CatalogError(f"{report_path}: cannot remove the stale report: {exc}") from None


def write_report(path: Path, rejections: Sequence[Rejection]) -> None:
    """Write ``rejections`` as CSV (header ``row,source_id,reason,ra,dec``), atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(REPORT_HEADER)
        writer.writerows((r.row, r.source_id, r.reason, r.ra, r.dec) for r in rejections)
    os.replace(tmp, path)


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int, label: str) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(rows)``; draws a rich bar on stderr only when ``enabled``."""
    if not enabled:
        yield lambda rows: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda rows: bar.advance(task, rows)


def store_catalog(
    pool: ConnectionPool,
    catalog: LoadedCatalog,
    *,
    catalog_name: str | None = None,
    report_path: str | os.PathLike[str] | None = None,
    progress: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> IngestSummary:
    """Store the accepted rows of ``catalog`` and queue their fetch tasks, chunk by chunk.

    Parameters
    ----------
    pool
        Connection pool on the galpipe database.
    catalog
        The output of :func:`load_catalog`.
    catalog_name
        Recorded in ``galaxies.catalog``; defaults to the file name without suffixes.
    report_path
        Where rejected rows are listed; defaults to ``<file>.rejected.csv`` next to the file.
        A report left by an earlier run is removed, and one is written only if a row is
        rejected.
    progress
        Draw a progress bar on stderr when the file has more than one chunk of rows.
    chunk_rows
        Accepted rows per COPY and transaction (bounds memory and transaction size).
    """
    if chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    path = catalog.path
    name = catalog_name if catalog_name is not None else default_catalog_name(path)
    if not name.strip():
        raise CatalogError(f"{path}: the catalog name is empty")
    report = Path(report_path) if report_path is not None else default_report_path(path)
    _prepare_report(path, report)

    rows = catalog.rows
    rejected = rows.rejected_rows
    rejections = catalog.rejections(rejected, rows.reason[rejected].tolist())
    accepted = np.flatnonzero(rows.accepted)
    queue = TaskQueue(pool)
    ingested = already_present = fetch_queued = 0
    show_bar = progress and catalog.n_rows > chunk_rows
    with _progress_bar(show_bar, catalog.n_rows, f"ingesting {path.name}") as advance:
        advance(len(rejections))
        for start in range(0, len(accepted), chunk_rows):
            index = accepted[start : start + chunk_rows]
            ids = rows.source_id[index]
            staged: list[StagedRow] = list(
                zip(
                    (index + 1).tolist(),
                    ids.tolist(),
                    rows.ra[index].tolist(),
                    rows.dec[index].tolist(),
                    _extra_json(catalog, index),
                    strict=True,
                )
            )
            with pool.connection() as conn, conn.transaction():
                outcome = insert_galaxies(conn, name, staged)
                conflicting = np.array([c.source_id for c in outcome.conflicts], dtype=np.int64)
                to_fetch = ids[~np.isin(ids, conflicting)]
                fetch_queued += queue.enqueue(FETCH_PIPELINE, to_fetch.tolist(), conn=conn)
            rejections += catalog.rejections(
                [c.row - 1 for c in outcome.conflicts],
                [
                    f"{catalog.id_col} already ingested with different coordinates "
                    f"(ra={c.ra!r}, dec={c.dec!r})"
                    for c in outcome.conflicts
                ],
            )
            ingested += outcome.inserted
            already_present += len(index) - outcome.inserted - len(outcome.conflicts)
            advance(len(index))

    if rejections:
        rejections.sort(key=lambda r: r.row)
        write_report(report, rejections)
    summary = IngestSummary(
        read=catalog.n_rows,
        ingested=ingested,
        already_present=already_present,
        rejected=len(rejections),
        fetch_queued=fetch_queued,
        report_path=report if rejections else None,
    )
    log.info(
        "ingested %s as %r: read %d, ingested %d, already present %d, rejected %d",
        path,
        name,
        summary.read,
        summary.ingested,
        summary.already_present,
        summary.rejected,
        extra={"catalog": name, "fetch_queued": summary.fetch_queued},
    )
    return summary


def ingest_catalog(
    pool: ConnectionPool,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    id_col: str = "source_id",
    ra_col: str = "ra",
    dec_col: str = "dec",
    keep: Sequence[str] | None = None,
    catalog_name: str | None = None,
    report_path: str | os.PathLike[str] | None = None,
    progress: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> IngestSummary:
    """Read, validate and store a catalogue file: :func:`load_catalog` + :func:`store_catalog`.

    Idempotent: ingesting the same file again stores nothing new, queues no new task and
    reports every valid row as already present.

    Raises
    ------
    CatalogError
        If the file cannot be read as a catalogue (nothing is stored then).
    """
    catalog = load_catalog(
        path, format=format, id_col=id_col, ra_col=ra_col, dec_col=dec_col, keep=keep
    )
    return store_catalog(
        pool,
        catalog,
        catalog_name=catalog_name,
        report_path=report_path,
        progress=progress,
        chunk_rows=chunk_rows,
    )


# -- command line ---------------------------------------------------------------------------


def parse_keep(raw: str | None) -> list[str] | None:
    """``--keep a,b`` as a list; None (option absent) keeps every column; ``""`` keeps none."""
    if raw is None:
        return None
    return [name.strip() for name in raw.split(",") if name.strip()]


def format_summary(summary: IngestSummary, path: Path) -> str:
    """The lines ``galpipe ingest`` prints."""
    lines = [
        f"{path}:",
        f"  read               {summary.read:>12,}",
        f"  ingested           {summary.ingested:>12,}",
        f"  already present    {summary.already_present:>12,}",
        f"  rejected           {summary.rejected:>12,}",
        f"  fetch tasks queued {summary.fetch_queued:>12,}",
    ]
    if summary.report_path is not None:
        lines.append(
            f"{summary.rejected:,} row(s) rejected: see {summary.report_path} "
            "for each row number and reason"
        )
    return "\n".join(lines)


def ingest_cli(args: argparse.Namespace, settings: Settings) -> int:
    """``galpipe ingest``: 0 when the file was ingested (even with rejected rows), 1 if not.

    A missing ``GALPIPE_DATABASE_URL`` raises :class:`~galpipe.settings.SettingsError` before
    the file is read (the CLI exits 2).
    """
    from galpipe.db.connection import pool_from_settings

    settings.require("database_url")
    path = Path(args.file)
    progress = not args.no_progress and sys.stderr.isatty()
    try:
        status = _reading_status(progress, path)
        with status:
            catalog = load_catalog(
                path,
                format=args.format,
                id_col=args.id_col,
                ra_col=args.ra_col,
                dec_col=args.dec_col,
                keep=parse_keep(args.keep),
            )
        with pool_from_settings(settings) as pool:
            summary = store_catalog(
                pool,
                catalog,
                catalog_name=args.catalog_name,
                report_path=args.report,
                progress=progress,
            )
    except CatalogError as exc:
        print(f"galpipe ingest: {exc}", file=sys.stderr)
        return 1
    except psycopg.Error as exc:
        print(f"galpipe ingest: {path}: database error: {exc}", file=sys.stderr)
        return 1
    print(format_summary(summary, path))
    return 0


def _reading_status(enabled: bool, path: Path) -> contextlib.AbstractContextManager[Any]:
    """A spinner while astropy reads the whole file (it reports no progress of its own)."""
    if not enabled:
        return contextlib.nullcontext()
    from rich.console import Console

    return Console(stderr=True).status(f"reading {path.name} …")
