"""Cutout packs: the cutouts of one fetch batch in one HEALPix tile, stored as ONE object.

With ``GALPIPE_CUTOUT_PACKING=healpix`` the fetch pipeline does not PUT each galaxy's FITS
file on its own: it groups a batch's successful cutouts by their NESTED HEALPix tile at
``GALPIPE_CUTOUT_PACK_ORDER`` and stores each group as one *pack*, the galaxies' FITS byte
strings concatenated exactly as the service sent them. Plain concatenation, not a
multi-extension FITS: each galaxy's bytes stay byte for byte what was fetched, so its recorded
SHA-256 is checked on every read unchanged, a slice is read with one byte-range request, and
nothing has to be re-encoded on the way in or out. A pack's key is unique to the batch
(``cutouts/packs/<layer>/o<order>/<tile>/<batch id>.pack``), so a retried batch never
overwrites a pack that rows point into.

Writing (:class:`CutoutPacker`): a pack is PUT once, read back and checked (size and SHA-256 of
the whole pack) before any of its galaxies counts as fetched; a failed PUT or check retries
those galaxies and records nothing. The worker then records the pack (``cutout_packs``) and
its galaxies' ``cutouts`` rows (pack key, offset; the length is the galaxy's ``nbytes``) in the
transaction that completes their tasks (:func:`record_fetched`). A crash between the PUT and
the commit leaves a pack object no row names: :func:`galpipe.db.cutout_packs.pack_keys` against
a listing of ``cutouts/packs/`` finds it (docs/architecture.md).

Reading (:func:`read_units`, :func:`read_unit`): the galaxies of a claimed batch that share a
pack are read with one ranged GET spanning their slices; every galaxy's slice is checked
against its own SHA-256, so a corrupted galaxy fails alone and the rest of its pack still
serves. A galaxy stored as its own object is read as before.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace

import numpy as np
import psycopg
from astropy_healpix import lonlat_to_healpix

from galpipe.db.cutout_packs import CutoutPack, record_packs
from galpipe.db.cutouts import CutoutRecord, record_cutouts
from galpipe.pipelines.base import Done, Outcome, Retry
from galpipe.runtime import metrics
from galpipe.storage import ObjectStore, ObjectStoreError, sha256_hex
from galpipe.storage.base import range_url, verify_sha256

__all__ = [
    "MAX_READ_GAP_BYTES",
    "PACK_PREFIX",
    "CutoutPacker",
    "PackedCutout",
    "UnpackedCutout",
    "concatenate",
    "healpix_tiles",
    "pack_key",
    "read_cutout_bytes",
    "read_unit",
    "read_units",
    "record_fetched",
]

#: Where packs are stored; everything under it is a pack (what an orphan sweep lists).
PACK_PREFIX = "cutouts/packs"
#: Largest run of unwanted bytes one ranged read of a pack spans between two wanted slices;
#: past it the slices are read separately (about ten 40x40 griz cutouts: one more request
#: costs less than reading that much for nothing).
MAX_READ_GAP_BYTES = 1 << 20


def healpix_tiles(ra_deg: np.ndarray, dec_deg: np.ndarray, order: int) -> np.ndarray:
    """NESTED HEALPix index (ICRS) of each position at ``order`` (``nside = 2**order``).

    Parameters
    ----------
    ra_deg, dec_deg
        Right ascension and declination, degrees.
    order
        HEALPix order, 0 to 29.

    Returns
    -------
    numpy.ndarray
        int64 tile of each position, ``0 <= tile < 12 * 4**order``.
    """
    import astropy.units as u

    lon = np.asarray(ra_deg, dtype=float) * u.deg
    lat = np.asarray(dec_deg, dtype=float) * u.deg
    return np.asarray(lonlat_to_healpix(lon, lat, 2**order, order="nested"), dtype=np.int64)


def pack_key(layer: str, order: int, tile: int, batch_id: str) -> str:
    """The object key of the pack of tile ``tile`` (order ``order``) written by one batch."""
    return f"{PACK_PREFIX}/{layer}/o{order}/{tile}/{batch_id}.pack"


def concatenate(blobs: Sequence[bytes]) -> tuple[bytes, list[int]]:
    """``blobs`` joined end to end, and the byte offset of each in the result."""
    offsets: list[int] = []
    at = 0
    for blob in blobs:
        offsets.append(at)
        at += len(blob)
    return b"".join(blobs), offsets


@dataclass(frozen=True)
class UnpackedCutout:
    """A fetched cutout waiting for its pack: a fetch source's ``Done`` result in packing mode.

    Attributes
    ----------
    record
        The galaxy's ``cutouts`` row as a per-galaxy object would have it.
    data
        The FITS bytes as received.
    tile
        NESTED HEALPix tile of the galaxy at the packer's order.
    """

    record: CutoutRecord
    data: bytes
    tile: int


@dataclass(frozen=True)
class PackedCutout:
    """A cutout stored in a verified pack: what the worker records for it."""

    record: CutoutRecord
    pack: CutoutPack


class CutoutPacker:
    """Groups a fetch batch's cutouts by tile and stores each group as one verified pack.

    Parameters
    ----------
    objects
        The object store.
    pipeline
        The fetch pipeline's name (the stored-bytes metric's label).
    layer
        Survey layer of the cutouts (the packs' key prefix).
    order
        HEALPix order of the tiles.
    """

    def __init__(self, objects: ObjectStore, pipeline: str, layer: str, order: int) -> None:
        self.objects = objects
        self.pipeline = pipeline
        self.layer = layer
        self.order = order

    def tile_of(self, ra_deg: float, dec_deg: float) -> int:
        """The tile of one position (degrees)."""
        return int(healpix_tiles(np.array([ra_deg]), np.array([dec_deg]), self.order)[0])

    def pack(self, outcomes: Sequence[Outcome], executor: Executor | None = None) -> list[Outcome]:
        """``outcomes`` with every ``Done`` of an :class:`UnpackedCutout` stored in its pack.

        Each tile's galaxies become one pack, PUT, read back and checked; their outcomes become
        ``Done`` of a :class:`PackedCutout`, or ``Retry`` (all of that pack's galaxies) when the
        store failed or gave back other bytes. Other outcomes pass through. The packs of
        different tiles are stored concurrently on ``executor`` when given.
        """
        groups: dict[int, list[tuple[int, UnpackedCutout]]] = {}
        for i, outcome in enumerate(outcomes):
            if isinstance(outcome, Done) and isinstance(outcome.result, UnpackedCutout):
                groups.setdefault(outcome.result.tile, []).append((i, outcome.result))
        batch_id = uuid.uuid4().hex
        jobs = [(tile, members, batch_id) for tile, members in groups.items()]
        stored = executor.map(self._store, jobs) if executor else map(self._store, jobs)
        packed = list(outcomes)
        for (_, members, _), results in zip(jobs, stored, strict=True):
            for (i, _), result in zip(members, results, strict=True):
                packed[i] = result
        return packed

    def _store(self, job: tuple[int, list[tuple[int, UnpackedCutout]], str]) -> list[Outcome]:
        tile, members, batch_id = job
        blobs = [m.data for _, m in members]
        data, offsets = concatenate(blobs)
        key = pack_key(self.layer, self.order, tile, batch_id)
        expected = sha256_hex(data)
        try:
            stored = self.objects.put(key, data)
            readback = self.objects.get(key, expected)
        except ObjectStoreError as exc:
            return [
                Retry(m.record.source_id, f"object store: pack {key}: {exc}") for _, m in members
            ]
        if stored.sha256 != expected or len(readback) != len(data):
            reason = f"object store returned {len(readback)} bytes for pack {key} of {len(data)}"
            return [Retry(m.record.source_id, reason) for _, m in members]
        metrics.STORED_BYTES.labels(self.pipeline).inc(len(data))
        pack = CutoutPack(key, self.order, tile, expected, len(data), len(members))
        return [
            Done(
                m.record.source_id,
                PackedCutout(replace(m.record, pack_key=key, pack_offset=offset), pack),
            )
            for (_, m), offset in zip(members, offsets, strict=True)
        ]


def record_fetched(
    conn: psycopg.Connection, results: Sequence[CutoutRecord | PackedCutout]
) -> None:
    """Record a fetch batch's stored cutouts on ``conn``: the packs, then the ``cutouts`` rows.

    Only the packs of ``results`` are recorded: a pack whose galaxies all lost their lease is
    not, and its object is an orphan like one a crash leaves.
    """
    packs = {r.pack.pack_key: r.pack for r in results if isinstance(r, PackedCutout)}
    if packs:
        record_packs(conn, list(packs.values()))
    record_cutouts(conn, [r.record if isinstance(r, PackedCutout) else r for r in results])


# -- reading -----------------------------------------------------------------------------------


def read_cutout_bytes(store: ObjectStore, record: CutoutRecord) -> bytes:
    """One galaxy's stored bytes, checked against its SHA-256 (a ranged read if packed).

    Raises
    ------
    ObjectStoreError
        As :meth:`ObjectStore.get` and :meth:`ObjectStore.get_range` raise it (not found,
        checksum mismatch, the store failed).
    """
    if record.pack_key is None or record.pack_offset is None:
        return store.get(record.object_key, record.sha256)
    return store.get_range(record.pack_key, record.pack_offset, record.nbytes, record.sha256)


def read_units(records: Sequence[CutoutRecord | None]) -> list[list[int]]:
    """The reads that fetch ``records``: lists of indices into ``records``, one request each.

    A record stored as its own object (or a missing one, None) is a read of its own; the records
    of one pack are one read, split where two wanted slices lie more than
    :data:`MAX_READ_GAP_BYTES` apart. Units come in the order of their first record.
    """
    units: list[list[int]] = []
    by_pack: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        if record is None or record.pack_key is None:
            units.append([i])
        else:
            members = by_pack.get(record.pack_key)
            if members is None:
                members = by_pack[record.pack_key] = []
                units.append(members)
            members.append(i)
    split: list[list[int]] = []
    for unit in units:
        first = records[unit[0]]
        if len(unit) == 1 or first is None or first.pack_key is None:
            split.append(unit)
            continue
        ordered = sorted(unit, key=lambda i: _offset(records[i]))
        run = [ordered[0]]
        end = _end(records[ordered[0]])
        for i in ordered[1:]:
            if _offset(records[i]) - end > MAX_READ_GAP_BYTES:
                split.append(run)
                run = []
            run.append(i)
            end = max(end, _end(records[i]))
        split.append(run)
    return split


def read_unit(
    store: ObjectStore, records: Sequence[CutoutRecord]
) -> list[bytes | ObjectStoreError]:
    """Read one unit of :func:`read_units` with one request: each record's bytes, or its error.

    The records of a pack come from one ranged GET from the first wanted byte to the last, and
    each slice is checked against its own SHA-256: a corrupt galaxy gets its
    :class:`~galpipe.storage.ChecksumMismatch` and the others their bytes. An error of the
    request itself (missing pack, store outage) is every record's.
    """
    if len(records) == 1:
        try:
            return [read_cutout_bytes(store, records[0])]
        except ObjectStoreError as exc:
            return [exc]
    key = records[0].pack_key
    if key is None or any(r.pack_key != key for r in records):
        raise ValueError("read_unit: records of one read must share one pack")
    start = min(_offset(r) for r in records)
    stop = max(_end(r) for r in records)
    try:
        span = store.get_range(key, start, stop - start)
    except ObjectStoreError as exc:
        return [exc] * len(records)
    results: list[bytes | ObjectStoreError] = []
    for record in records:
        at = _offset(record) - start
        piece = span[at : at + record.nbytes]
        url = range_url(store.object_url(key), _offset(record), record.nbytes)
        try:
            verify_sha256(key, piece, record.sha256, url)
        except ObjectStoreError as exc:
            results.append(exc)
        else:
            results.append(piece)
    return results


def _offset(record: CutoutRecord | None) -> int:
    assert record is not None
    assert record.pack_offset is not None
    return record.pack_offset


def _end(record: CutoutRecord | None) -> int:
    assert record is not None
    return _offset(record) + record.nbytes
