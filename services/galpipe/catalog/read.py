"""Reading a catalogue file: the table, its id and coordinate columns in degrees, its rows checked.

:func:`load_catalog` reads a CSV, ECSV, FITS or VOTable file with astropy, finds the id and
coordinate columns, converts angle units to degrees and validates every row; it touches no
database.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from astropy import units as u
from astropy.io import registry
from astropy.table import Table

from galpipe.catalog.report import Rejection
from galpipe.catalog.validate import CatalogError, RowValidation, validate_rows

log = logging.getLogger(__name__)

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
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz")
_BOM = "\ufeff"
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
    if suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
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
    if table.colnames and table.colnames[0].startswith(_BOM):
        # A UTF-8 byte order mark (Excel writes one) is read into the first column's name.
        table.rename_column(table.colnames[0], table.colnames[0].removeprefix(_BOM))
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
