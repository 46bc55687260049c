"""``galpipe export --format parquet-dataset``: the results catalogue as a Hive-partitioned
Parquet dataset, one directory per HEALPix tile, written streaming in bounded memory.

Layout (Hive style, read as one dataset by pyarrow.dataset, DuckDB, Spark and Dask)::

    OUT/_common_metadata                                  the schema (Dask, Spark)
    OUT/algo=<a>/healpix_order=<k>/healpix=<n>/part-0.parquet

``<a>`` is :func:`algo_key` of the ``algo_version``: the first 16 hex digits of its SHA-256. The
version itself (about 200 characters for the default configuration) would not fit the 255 bytes
of a file name; it is the ``algo_version`` column of every file instead (one dictionary entry
per file). ``<k>`` is the HEALPix order and ``<n>`` the galaxy's tile: its NESTED HEALPix index
at order ``k`` (``nside = 2**k``) in ICRS, so the tile of order ``k - 1`` is ``n // 4``. The
three are partition columns: in the paths, not in the files.

The columns, their units and descriptions are those of :mod:`galpipe.catalog.export` (one
definition, :class:`~galpipe.catalog.export.ColumnDoc`): each field's Parquet metadata holds
``description`` and ``unit`` (astropy's string, ``""`` for dimensionless; no ``unit`` key where
none was recorded), the schema's metadata the export's (``ALGOVER``, ``EXPORTED``, ...,
``HPXORDER``, ``ORDERING``, ``COORDSYS``). A missing value is a Parquet null, never a NaN.

How memory stays bounded: a first pass streams the selected galaxies' positions, computes
their tiles with astropy-healpix and COPYs ``(source_id, healpix)`` into a temporary table; the
results query then joins it and lets PostgreSQL sort by tile (on disk past ``work_mem``), so
the rows arrive one tile after another and one Parquet file is open at a time. The process
holds one chunk of :data:`CHUNK_ROWS` rows, whatever the catalogue's size. Both passes run in
one REPEATABLE READ transaction, so they see the same galaxies.

Nothing half-written: the dataset is written into a hidden directory beside ``OUT`` and renamed
onto ``OUT`` at the end; a failure removes it. An ``OUT`` that exists and is not an empty
directory is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from astropy_healpix import lonlat_to_healpix
from psycopg_pool import ConnectionPool

from galpipe.catalog.export import (
    GALAXY_DOCS,
    STATE_DOC,
    ColumnDoc,
    ExportError,
    check_choices,
    choose_morphology_model,
    choose_version,
    export_meta,
    extra_column_doc,
    measured_docs,
)
from galpipe.db import results as db

__all__ = [
    "CHUNK_ROWS",
    "DATASET_FORMAT",
    "DEFAULT_HEALPIX_ORDER",
    "MAX_HEALPIX_ORDER",
    "VERSION_DOC",
    "DatasetSummary",
    "algo_key",
    "check_healpix_order",
    "export_dataset",
    "healpix_tiles",
    "tile_directory",
]

#: ``--format`` value of the partitioned dataset.
DATASET_FORMAT = "parquet-dataset"
#: Rows fetched from PostgreSQL, converted and written at a time: the memory of an export.
CHUNK_ROWS = 10_000
#: Order 3: 768 tiles of 53.7 deg² (about 7.3° across). Gaia DR3's 4.8 million galaxy
#: candidates make about 6,000 rows (a file of a megabyte or two) a tile; order 5 would make
#: 12,288 files of a few hundred rows, and small files are what slows every dataset reader.
#: A region query still reads only the tiles it overlaps.
DEFAULT_HEALPIX_ORDER = 3
#: Order 10 has 12.6 million tiles of 11.8 arcmin: finer gives a directory per galaxy.
MAX_HEALPIX_ORDER = 10
#: The one file of each tile (rows arrive tile by tile, so a tile is written in one go).
PART_FILE = "part-0.parquet"
_COMMON_METADATA = "_common_metadata"
_COMPRESSION = "zstd"  # read by pyarrow, DuckDB and Spark (>= 3.2); smaller than snappy


@dataclass(frozen=True)
class DatasetSummary:
    """What :func:`export_dataset` wrote.

    Attributes
    ----------
    path
        The dataset's root directory.
    rows, columns
        Galaxies written, and columns in each file (the partition columns not counted).
    tiles
        Tiles with at least one galaxy: one directory and one file each.
    algo_version, healpix_order, morphology_model
        What was exported.
    """

    path: Path
    rows: int
    columns: int
    tiles: int
    algo_version: str
    healpix_order: int
    morphology_model: str | None = None


def check_healpix_order(order: int) -> int:
    """``order`` if it is a HEALPix order this export writes (0 to :data:`MAX_HEALPIX_ORDER`).

    Raises
    ------
    ExportError
        Naming ``--healpix-order``, the value and the range.
    """
    if isinstance(order, bool) or not isinstance(order, int | np.integer):
        raise ExportError(f"--healpix-order {order!r}: expected an integer")
    if not 0 <= order <= MAX_HEALPIX_ORDER:
        raise ExportError(
            f"--healpix-order {order}: expected 0 to {MAX_HEALPIX_ORDER} "
            f"(order k has 12 * 4**k tiles; default {DEFAULT_HEALPIX_ORDER})"
        )
    return int(order)


def healpix_tiles(ra_deg: np.ndarray, dec_deg: np.ndarray, order: int) -> np.ndarray:
    """NESTED HEALPix index of each position at ``order`` (``nside = 2**order``).

    Parameters
    ----------
    ra_deg, dec_deg
        ICRS right ascension and declination, degrees.
    order
        HEALPix order, 0 to :data:`MAX_HEALPIX_ORDER`.

    Returns
    -------
    numpy.ndarray
        int64 tile indices in ``[0, 12 * 4**order)``.
    """
    nside = 2 ** check_healpix_order(order)
    lon = np.asarray(ra_deg, dtype=np.float64) * u.deg
    lat = np.asarray(dec_deg, dtype=np.float64) * u.deg
    return np.asarray(lonlat_to_healpix(lon, lat, nside, order="nested"), dtype=np.int64)


def algo_key(algo_version: str) -> str:
    """The ``algo`` partition value of ``algo_version``: 16 hex digits of its SHA-256."""
    return hashlib.sha256(algo_version.encode()).hexdigest()[:16]


def tile_directory(algo_version: str, order: int, tile: int) -> Path:
    """The directory of one tile, relative to the dataset's root (Hive ``key=value`` names)."""
    return Path(f"algo={algo_key(algo_version)}") / f"healpix_order={order}" / f"healpix={tile}"


#: The version column of every file (the ``algo`` directory names it by a hash only).
VERSION_DOC = ColumnDoc(
    "algo_version",
    "U",
    u.dimensionless_unscaled,
    "the measurement's algo_version (the algo partition is the first 16 hex digits of its SHA-256)",
)

# Arrow type of each ColumnDoc dtype.
_ARROW_TYPES = {
    "int16": "int16",
    "int32": "int32",
    "int64": "int64",
    "float32": "float32",
    "float64": "float64",
    "U": "string",
}


def _field(doc: ColumnDoc) -> pa.Field:
    """The Parquet field of ``doc``: its type, and its unit and description as metadata."""
    metadata = {"description": doc.description}
    if doc.unit is not None:
        metadata["unit"] = doc.unit.to_string()  # "" is dimensionless, as astropy reads it
    return pa.field(doc.name, getattr(pa, _ARROW_TYPES[doc.dtype])(), metadata=metadata)


def _measured_array(doc: ColumnDoc, values: Sequence[Any]) -> pa.Array:
    """Database values of one column as Arrow; NULL (``None``) and NaN become nulls."""
    if doc.dtype == "U":
        return pa.array(values, type=pa.string())
    if doc.dtype == "int64":  # ids: exact only as integers
        return pa.array(values, type=pa.int64())
    # Through float64 (None -> NaN) in C: exact for the int16/int32 columns and booleans too.
    as_float = np.array(values, dtype=np.float64)
    mask = np.isnan(as_float)
    if np.dtype(doc.dtype).kind in "iu":
        as_float[mask] = 0
    return pa.array(as_float.astype(doc.dtype), mask=mask)


def _extra_converter(
    key: db.ExtraKey, taken: Collection[str]
) -> tuple[ColumnDoc, Callable[[Sequence[Any]], pa.Array]]:
    """The column of one ``extra`` key and how its values become Arrow.

    The same types as the single-file export: booleans as int16 0/1, integers as int64, other
    numbers as float64, anything else as text (non-strings as JSON).
    """
    if key.present and key.booleans == key.present:
        doc = extra_column_doc(key.key, taken, "int16")
        return doc, lambda values: _measured_array(doc, values)
    if key.present and key.integers == key.present:
        doc = extra_column_doc(key.key, taken, "int64")
        return doc, lambda values: pa.array(values, type=pa.int64())
    if key.present and key.numbers == key.present:
        doc = extra_column_doc(key.key, taken, "float64")
        return doc, lambda values: _measured_array(doc, values)
    doc = extra_column_doc(key.key, taken, "U")

    def text(values: Sequence[Any]) -> pa.Array:
        strings = [v if v is None or isinstance(v, str) else json.dumps(v) for v in values]
        return pa.array(strings, type=pa.string())

    return doc, text


class _Layout:
    """The dataset's schema, and how one chunk of database rows becomes a RecordBatch."""

    def __init__(
        self,
        measured: Sequence[ColumnDoc],
        extra_keys: Sequence[db.ExtraKey],
        meta: dict[str, Any],
        algo_version: str,
    ) -> None:
        self._measured = list(measured)
        self._version = algo_version
        galaxy = list(GALAXY_DOCS)
        taken = {d.name for d in (*galaxy, *measured, STATE_DOC)}
        self._extras = [(key.key, *_extra_converter(key, taken)) for key in extra_keys]
        docs = [*galaxy, *(doc for _, doc, _ in self._extras), STATE_DOC, *measured, VERSION_DOC]
        schema_meta = {k: "\n".join(v) if isinstance(v, list) else str(v) for k, v in meta.items()}
        self.schema: pa.Schema = pa.schema([_field(d) for d in docs], metadata=schema_meta)

    def batch(self, rows: Sequence[tuple[Any, ...]]) -> pa.RecordBatch:
        """The RecordBatch of ``rows`` (database order: galaxy, measured columns, tile)."""
        columns = list(zip(*rows, strict=True))
        source_id, ra, dec, catalog, extra, state = columns[: len(db.GALAXY_COLUMNS)]
        measured = columns[len(db.GALAXY_COLUMNS) : len(db.GALAXY_COLUMNS) + len(self._measured)]
        arrays = [
            pa.array(source_id, type=pa.int64()),
            pa.array(ra, type=pa.float64()),
            pa.array(dec, type=pa.float64()),
            pa.array(catalog, type=pa.string()),
            *(convert([e.get(key) for e in extra]) for key, _, convert in self._extras),
            pa.array(state, type=pa.string()),
            *(_measured_array(d, v) for d, v in zip(self._measured, measured, strict=True)),
            pa.array([self._version] * len(rows), type=pa.string()),
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


class _TileFiles:
    """Writes the rows of one tile after another: one Parquet file open at a time."""

    def __init__(self, root: Path, schema: pa.Schema, version: str, order: int) -> None:
        self._root = root
        self._schema = schema
        self._version = version
        self._order = order
        self._tile: int | None = None
        self._writer: pq.ParquetWriter | None = None
        self.tiles = 0
        self.rows = 0

    def write(self, tile: int, batch: pa.RecordBatch) -> None:
        if tile != self._tile:
            if self._tile is not None and tile < self._tile:
                # The query orders by tile; a tile seen again would overwrite its file.
                raise RuntimeError(f"rows of tile {tile} arrived after tile {self._tile}")
            self.close()
            directory = self._root / tile_directory(self._version, self._order, tile)
            directory.mkdir(parents=True)
            self._writer = pq.ParquetWriter(
                directory / PART_FILE, self._schema, compression=_COMPRESSION
            )
            self._tile = tile
            self.tiles += 1
        assert self._writer is not None
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _runs(tiles: np.ndarray) -> Iterator[tuple[int, int, int]]:
    """``(tile, start, stop)`` of each run of equal tiles in ``tiles`` (sorted)."""
    starts = np.concatenate(([0], np.flatnonzero(np.diff(tiles)) + 1))
    stops = np.concatenate((starts[1:], [len(tiles)]))
    for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
        yield int(tiles[start]), start, stop


def _refuse_existing(out: Path) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ExportError(f"{out}: exists and is not a directory; choose a new dataset directory")
    if out.is_dir() and any(out.iterdir()):
        raise ExportError(
            f"{out}: already exists and is not empty; choose a new dataset directory "
            "(an export never adds to or replaces an existing one)"
        )
    if not out.parent.is_dir():
        raise ExportError(f"{out}: its parent directory {out.parent} does not exist")


def _publish(partial: Path, out: Path) -> None:
    """Rename the finished dataset onto ``out`` (missing, or an empty directory)."""
    try:
        os.rename(partial, out)
    except OSError as exc:
        raise ExportError(f"{out}: cannot put the dataset in place: {exc.strerror}") from None


def export_dataset(
    pool: ConnectionPool,
    out: Path,
    *,
    algo_version: str | None = None,
    selection: str = "transformed",
    bands: str = "combined",
    morphology_model: str | None = None,
    healpix_order: int = DEFAULT_HEALPIX_ORDER,
    now: datetime | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> DatasetSummary:
    """Write the results catalogue to the directory ``out`` as a tile-partitioned dataset.

    Parameters
    ----------
    pool
        Connection pool on the galpipe database.
    out
        The dataset's root directory: must not exist, or be empty; its parent must exist.
    algo_version, selection, bands, morphology_model, now
        As :func:`galpipe.catalog.export.build_results_table`.
    healpix_order
        HEALPix order of the tiles, 0 to :data:`MAX_HEALPIX_ORDER`.
    chunk_rows
        Rows fetched, converted and written at a time.

    Raises
    ------
    ExportError
        If ``out`` exists and is not an empty directory, an option is not valid, there are no
        results, no galaxy matches, pyarrow is missing, or the files cannot be written; nothing
        is left at ``out`` then.
    """
    out = Path(out)
    order = check_healpix_order(healpix_order)
    check_choices(selection, bands)
    if chunk_rows <= 0:
        raise ExportError(f"chunk_rows must be positive, got {chunk_rows}")
    _refuse_existing(out)
    version = choose_version(pool, algo_version)
    model = None if morphology_model is None else choose_morphology_model(pool, morphology_model)
    measured = measured_docs(bands, morphology=model is not None)
    try:
        partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as exc:
        raise ExportError(f"{out}: cannot write beside it: {exc.strerror}") from None
    try:
        with pool.connection() as conn, db.tile_table(conn):
            for rows in db.stream_positions(
                conn, version, selection=selection, chunk_rows=chunk_rows
            ):
                source_ids, ra, dec = zip(*rows, strict=True)
                tiles = healpix_tiles(np.array(ra), np.array(dec), order)
                db.store_tiles(conn, zip(source_ids, tiles.tolist(), strict=True))
            db.analyze_tiles(conn)
            meta = export_meta(version, selection, bands, model, now)
            meta |= {"HPXORDER": order, "ORDERING": "NESTED", "COORDSYS": "C"}
            meta["comments"].append(
                f"Partitioned by NESTED HEALPix tile of order {order} (ICRS) in "
                "algo=<SHA-256 of algo_version, 16 hex>/healpix_order=<k>/healpix=<n>/ "
                "directories."
            )
            layout = _Layout(measured, db.extra_keys(conn), meta, version)
            files = _TileFiles(partial, layout.schema, version, order)
            try:
                for rows in db.stream_results(
                    conn,
                    version,
                    selection=selection,
                    wide=bands == "all",
                    morphology_model=model,
                    chunk_rows=chunk_rows,
                    tiled=True,
                ):
                    tiles = np.fromiter((row[-1] for row in rows), np.int64, len(rows))
                    batch = layout.batch(rows)
                    for tile, start, stop in _runs(tiles):
                        files.write(tile, batch.slice(start, stop - start))
            finally:
                files.close()
        if files.rows == 0:
            what = "transformed galaxies" if selection == "transformed" else "galaxies"
            raise ExportError(f"no {what} with results of algo_version {version!r}")
        pq.write_metadata(layout.schema, partial / _COMMON_METADATA)
        _publish(partial, out)
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise ExportError(f"{out}: cannot write the dataset: {exc}") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return DatasetSummary(out, files.rows, len(layout.schema), files.tiles, version, order, model)
