"""``galaxies.extra``: the columns kept with each galaxy, as JSON objects in text.

Values are stored verbatim: NaN, infinities and masked values become ``null``; float32 values
keep their shortest decimal form. The one exception is the NUL character, which PostgreSQL's
``jsonb`` cannot hold (``\u0000`` is refused): in names and text it becomes U+FFFD, the
character that already stands for bytes that are not UTF-8.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from galpipe.catalog.read import LoadedCatalog


_NUL = "\x00"
_REPLACEMENT = "\ufffd"


def _without_nul(text: str) -> str:
    return text.replace(_NUL, _REPLACEMENT)


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
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return _without_nul(value)
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, int | float | bool):
        return value
    return _without_nul(str(value))


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
    elif kind in "SU":
        if kind == "S":
            data = np.char.decode(data, "utf-8", errors="replace")
        # Cell by cell: numpy's own string functions read "\x00" as the empty string.
        data = np.frompyfunc(_without_nul, 1, 1)(data)
    elif kind == "O":
        data = np.frompyfunc(_jsonable, 1, 1)(data).astype(object)
    elif kind not in "iub":
        data = data.astype(str)  # datetimes, complex numbers: keep them readable
    cells = data.astype(object)
    cells[masked] = None
    return cells.tolist()


def extra_json(catalog: LoadedCatalog, index: npt.NDArray[np.intp]) -> list[str]:
    """``galaxies.extra`` of rows ``index`` as JSON objects in text."""
    if not catalog.extra_cols:
        return ["{}"] * len(index)
    columns = [_json_values(catalog.table[name], index) for name in catalog.extra_cols]
    names = [_without_nul(name) for name in catalog.extra_cols]
    return [
        json.dumps(dict(zip(names, values, strict=True)), allow_nan=False, separators=(",", ":"))
        for values in zip(*columns, strict=True)
    ]
