"""Byte-range reads of both backends: a local directory and S3 over HTTP (moto's server).

A slice comes back with one request, is checked against the digest the caller hands in, and
behaves like a short read at the object's end, on either backend.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from galpipe.runtime import metrics
from galpipe.storage import (
    ChecksumMismatch,
    LocalObjectStore,
    ObjectNotFound,
    ObjectStore,
    S3ObjectStore,
    sha256_hex,
)
from galpipe.storage.instrumented import InstrumentedObjectStore

PAYLOAD = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(64))  # 2,048 bytes


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "store")
    request.getfixturevalue("aws_environment")
    client = request.getfixturevalue("s3_client")
    return S3ObjectStore(client, request.getfixturevalue("bucket"), "cutouts")


@pytest.mark.parametrize(("offset", "length"), [(0, 1), (0, 2048), (100, 333), (2047, 1)])
def test_a_range_is_exactly_those_bytes(store: ObjectStore, offset: int, length: int) -> None:
    store.put("packs/a.pack", PAYLOAD)
    piece = PAYLOAD[offset : offset + length]
    assert store.get_range("packs/a.pack", offset, length) == piece
    assert store.get_range("packs/a.pack", offset, length, sha256_hex(piece)) == piece


def test_a_range_is_checked_against_the_callers_digest(store: ObjectStore) -> None:
    store.put("packs/a.pack", PAYLOAD)
    other = sha256_hex(PAYLOAD[10:20])
    with pytest.raises(ChecksumMismatch, match=r"packs/a\.pack.*bytes 11-20") as caught:
        store.get_range("packs/a.pack", 11, 10, other)
    assert caught.value.actual == sha256_hex(PAYLOAD[11:21])


def test_a_range_past_the_end_reads_short(store: ObjectStore) -> None:
    store.put("packs/a.pack", PAYLOAD)
    assert store.get_range("packs/a.pack", 2000, 100) == PAYLOAD[2000:]
    assert store.get_range("packs/a.pack", 4096, 10) == b""
    with pytest.raises(ChecksumMismatch):
        store.get_range("packs/a.pack", 2000, 100, sha256_hex(PAYLOAD[1900:2000]))


def test_a_missing_object_is_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound, match=r"packs/none\.pack"):
        store.get_range("packs/none.pack", 0, 10)


@pytest.mark.parametrize(("offset", "length"), [(-1, 10), (0, 0), (3, -2)])
def test_a_bad_range_is_a_value_error(store: ObjectStore, offset: int, length: int) -> None:
    store.put("packs/a.pack", PAYLOAD)
    with pytest.raises(ValueError, match=r"packs/a\.pack"):
        store.get_range("packs/a.pack", offset, length)


def test_the_instrumented_store_counts_range_reads(store: ObjectStore) -> None:
    counted = InstrumentedObjectStore(store)
    counted.put("packs/a.pack", PAYLOAD)
    ok = metrics.OBJECT_STORE_OPERATIONS.labels("get_range", "ok")
    before = ok._value.get()
    assert counted.get_range("packs/a.pack", 5, 7) == PAYLOAD[5:12]
    assert ok._value.get() == before + 1
