"""Cutout packs without servers: tiles, keys, concatenation, grouping into packs and reads."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from galpipe.db.cutouts import CutoutRecord
from galpipe.pipelines.base import Done, Fail, Outcome, Retry
from galpipe.pipelines.cutout_packs import (
    MAX_READ_GAP_BYTES,
    CutoutPacker,
    PackedCutout,
    UnpackedCutout,
    concatenate,
    healpix_tiles,
    pack_key,
    read_unit,
    read_units,
)
from galpipe.storage import (
    ChecksumMismatch,
    LocalObjectStore,
    ObjectNotFound,
    ObjectStoreError,
    StoredObject,
    sha256_hex,
    validate_key,
)


def _blob(i: int, n: int = 100) -> bytes:
    return b"".join(hashlib.sha256(f"{i}:{k}".encode()).digest() for k in range(n // 32 + 1))[:n]


def _record(sid: int, data: bytes, pack: str | None = None, offset: int | None = None):
    return CutoutRecord(
        sid, "ls-dr10", "griz", "", 40, 0.262, "south", f"c/{sid}.fits", sha256_hex(data),
        len(data), pack, offset,
    )  # fmt: skip


# -- tiles and keys ----------------------------------------------------------------------------


def test_tiles_nest_from_one_order_to_the_next() -> None:
    rng = np.random.default_rng(1)
    ra, dec = rng.uniform(0, 360, 500), np.degrees(np.arcsin(rng.uniform(-1, 1, 500)))
    fine, coarse = healpix_tiles(ra, dec, 7), healpix_tiles(ra, dec, 6)
    assert ((fine >= 0) & (fine < 12 * 4**7)).all()
    # NESTED numbering: the four children of tile t at order k are 4t .. 4t+3 at order k+1.
    np.testing.assert_array_equal(fine // 4, coarse)
    assert len(set(fine.tolist())) > 400  # 500 random positions rarely share a 0.2 deg² tile


def test_neighbouring_positions_share_a_tile_and_far_ones_do_not() -> None:
    tiles = healpix_tiles(np.array([150.0, 150.001, 30.0]), np.array([2.0, 2.001, -40.0]), 7)
    assert tiles[0] == tiles[1] != tiles[2]


def test_a_pack_key_is_a_valid_key_naming_its_layer_order_and_tile() -> None:
    key = pack_key("ls-dr10", 7, 123456, "ab" * 16)
    assert validate_key(key) == key
    assert key.split("/")[2:5] == ["ls-dr10", "o7", "123456"]
    assert key.endswith(".pack")


def test_concatenated_blobs_slice_back_to_each_blob() -> None:
    blobs = [_blob(i, 50 + 7 * i) for i in range(5)]
    data, offsets = concatenate(blobs)
    assert len(data) == sum(map(len, blobs))
    for blob, offset in zip(blobs, offsets, strict=True):
        assert data[offset : offset + len(blob)] == blob


# -- grouping into packs -----------------------------------------------------------------------


class _FailingStore(LocalObjectStore):
    """Fails every PUT whose key holds ``bad``; or returns other bytes on read-back."""

    def __init__(self, root: Path, bad: str, mode: str) -> None:
        super().__init__(root)
        self.bad, self.mode = bad, mode

    def put(self, key: str, data: bytes) -> StoredObject:
        if self.bad in key and self.mode == "put":
            raise ObjectStoreError(f"cannot write key {key!r}: disk full")
        if self.bad in key and self.mode == "short":
            return super().put(key, data[:-1])
        return super().put(key, data)


def _unpacked(sid: int, tile: int) -> Done:
    data = _blob(sid, 80 + sid)
    return Done(sid, UnpackedCutout(_record(sid, data), data, tile))


def test_a_batch_becomes_one_pack_per_tile(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    packer = CutoutPacker(store, "fetch", "ls-dr10", 7)
    outcomes: list[Outcome] = [_unpacked(1, 10), _unpacked(2, 11), Fail(3, "bad"), _unpacked(4, 10)]
    packed = packer.pack(outcomes)
    assert packed[2] == outcomes[2]
    results = [o.result for o in packed if isinstance(o, Done)]
    assert all(isinstance(r, PackedCutout) for r in results)
    keys = {r.pack.pack_key for r in results}
    assert len(keys) == 2
    by_sid = {r.record.source_id: r for r in results}
    assert by_sid[1].pack == by_sid[4].pack != by_sid[2].pack
    assert by_sid[1].pack.tile == 10
    assert by_sid[1].pack.n_cutouts == 2
    for r in results:
        pack = store.get(r.pack.pack_key, r.pack.sha256)
        assert len(pack) == r.pack.nbytes
        assert r.record.pack_offset is not None
        piece = pack[r.record.pack_offset : r.record.pack_offset + r.record.nbytes]
        assert sha256_hex(piece) == r.record.sha256  # the galaxy's own digest, unchanged
        assert r.record.object_key == f"c/{r.record.source_id}.fits"
    assert not any(tmp_path.rglob("*.fits"))  # no per-galaxy objects


def test_two_batches_of_one_tile_write_two_packs(tmp_path: Path) -> None:
    packer = CutoutPacker(LocalObjectStore(tmp_path), "fetch", "ls-dr10", 7)
    first = packer.pack([_unpacked(1, 10)])[0]
    second = packer.pack([_unpacked(1, 10)])[0]
    assert isinstance(first, Done)
    assert isinstance(second, Done)
    assert first.result.pack.pack_key != second.result.pack.pack_key


@pytest.mark.parametrize("mode", ["put", "short"])
def test_a_failed_pack_retries_its_galaxies_only(tmp_path: Path, mode: str) -> None:
    store = _FailingStore(tmp_path, "/11/", mode)
    packer = CutoutPacker(store, "fetch", "ls-dr10", 7)
    packed = packer.pack([_unpacked(1, 10), _unpacked(2, 11), _unpacked(3, 11)])
    assert isinstance(packed[0], Done)
    assert [type(o) for o in packed[1:]] == [Retry, Retry]
    for retry in packed[1:]:
        assert isinstance(retry, Retry)
        assert "/o7/11/" in retry.error  # names the pack
    if mode == "put":
        assert "disk full" in packed[1].error  # type: ignore[union-attr]


# -- reading ---------------------------------------------------------------------------------


def _packed_records(blobs: list[bytes], key: str = "p/a.pack") -> list[CutoutRecord]:
    _, offsets = concatenate(blobs)
    return [_record(i, b, key, o) for i, (b, o) in enumerate(zip(blobs, offsets, strict=True))]


def test_read_units_group_a_packs_galaxies_and_keep_others_alone() -> None:
    a = _packed_records([_blob(i) for i in range(3)], "p/a.pack")
    b = _packed_records([_blob(i) for i in range(2)], "p/b.pack")
    own = _record(9, _blob(9))
    records = [a[0], own, b[1], a[2], None, b[0], a[1]]
    units = read_units(records)
    assert sorted(map(sorted, units)) == [[0, 3, 6], [1], [2, 5], [4]]


def test_read_units_split_a_pack_where_the_wanted_slices_are_far_apart() -> None:
    near, far = _record(1, _blob(1), "p/a.pack", 0), _record(2, _blob(2), "p/a.pack", 100)
    # far ends at byte 200: a gap of MAX_READ_GAP_BYTES is still spanned, one more byte is not.
    spanned = _record(3, _blob(3), "p/a.pack", 200 + MAX_READ_GAP_BYTES)
    assert sorted(map(sorted, read_units([spanned, near, far]))) == [[0, 1, 2]]
    distant = replace(spanned, pack_offset=201 + MAX_READ_GAP_BYTES)
    assert sorted(map(sorted, read_units([distant, near, far]))) == [[0], [1, 2]]


def test_one_read_serves_a_packs_galaxies_and_checks_each(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    blobs = [_blob(i, 60 + i) for i in range(4)]
    data, _ = concatenate(blobs)
    records = _packed_records(blobs)
    store.put("p/a.pack", data)
    assert read_unit(store, records[1:]) == blobs[1:]
    # One galaxy's bytes corrupted behind the store's back: it alone fails, with its range.
    corrupt = bytearray(data)
    corrupt[records[2].pack_offset or 0] ^= 0xFF
    (tmp_path / "p" / "a.pack").write_bytes(bytes(corrupt))
    results = read_unit(store, records)
    assert [isinstance(r, ChecksumMismatch) for r in results] == [False, False, True, False]
    assert "p/a.pack" in str(results[2])
    offset = records[2].pack_offset
    assert offset is not None
    assert f"bytes {offset}-{offset + records[2].nbytes - 1}" in str(results[2])


def test_a_missing_pack_is_every_galaxys_error(tmp_path: Path) -> None:
    records = _packed_records([_blob(i) for i in range(3)])
    results = read_unit(LocalObjectStore(tmp_path), records)
    assert all(isinstance(r, ObjectNotFound) for r in results)


def test_a_read_of_several_packs_is_refused(tmp_path: Path) -> None:
    a = _packed_records([_blob(1)], "p/a.pack")[0]
    with pytest.raises(ValueError, match="share one pack"):
        read_unit(LocalObjectStore(tmp_path), [a, replace(a, pack_key="p/b.pack")])
