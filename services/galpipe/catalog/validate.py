"""Row validation of a catalogue: ids and coordinates checked with vectorised numpy.

Pure functions, no I/O. :func:`validate_rows` takes the id, ra and dec columns as read and says,
row by row, whether the row may be stored and, if not, every reason why (the rules are listed
in :mod:`galpipe.catalog.ingest`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from galpipe.errors import InputError

_INT64_MAX = int(np.iinfo(np.int64).max)
_INT64_DIGITS = len(str(_INT64_MAX))
# Largest magnitude below which every integer is exactly representable in float64.
_FLOAT_EXACT_INT_MAX = 2**53
#: Smallest positive normal float64; below it numbers are subnormal.
_FLOAT_TINY = float(np.finfo(np.float64).tiny)


class CatalogError(InputError, ValueError):
    """The catalogue cannot be ingested; the message names the file and the problem."""


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
        ra=_flush_subnormal(ra_deg),
        dec=_flush_subnormal(dec_deg),
        reason=reason,
    )


def _flush_subnormal(degrees: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``degrees`` with subnormal numbers (below 2.2e-308, after the range checks) set to 0.

    PostgreSQL's double precision refuses them ("value out of range: underflow"), and an angle
    that small is 0 for any purpose.
    """
    with np.errstate(invalid="ignore"):
        return np.where(np.abs(degrees) < _FLOAT_TINY, 0.0, degrees)


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
