"""Contract tests of the object store: the same tests run against both backends.

The S3 backend talks the real S3 HTTP protocol to moto's ``ThreadedMotoServer`` on 127.0.0.1
(one server per session, a fresh bucket per test); the local backend writes to a fresh
directory per test. Each backend comes with a way to tamper with stored bytes behind the
store's back, which is how corruption is simulated.
"""

from __future__ import annotations

import base64
import hashlib
import os
import resource
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from galpipe.storage import (
    MAX_KEY_BYTES,
    MAX_SEGMENT_BYTES,
    ChecksumMismatch,
    InvalidKey,
    LocalObjectStore,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    S3ObjectStore,
    StoredObject,
    open_object_store,
)

S3_PREFIX = "cutouts/dr10"

INVALID_KEYS = [
    "",
    "/abs/key",
    "a//b",
    "a/./b",
    "../escape",
    "a/..",
    ".",
    "trailing/",
    "back\\slash",
    "nul\x00byte",
    "x" * (MAX_SEGMENT_BYTES + 1),
    "/".join(["y" * 100] * 11),  # 1,110 bytes
    "é" * 513,  # 513 characters but 1,026 bytes of UTF-8
]


@dataclass
class Backend:
    """A store under test plus raw access to its storage, bypassing the store."""

    kind: str
    store: ObjectStore
    write_raw: Callable[[str, bytes], None]
    """Replace the stored bytes of a key without telling the store (simulated corruption)."""
    raw_names: Callable[[], set[str]]
    """Every name physically present: files under the root, or S3 keys in the bucket."""


@pytest.fixture(autouse=True)
def _dummy_aws_environment(aws_environment: dict[str, str]) -> None:
    """Every test here runs with dummy AWS credentials: no real AWS is ever asked."""


def _local_backend(root: Path) -> Backend:
    def write_raw(key: str, data: bytes) -> None:
        root.joinpath(*key.split("/")).write_bytes(data)

    def raw_names() -> set[str]:
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()}

    return Backend("local", LocalObjectStore(root), write_raw, raw_names)


def _s3_backend(client, bucket: str, prefix: str) -> Backend:
    def write_raw(key: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=data)

    def raw_names() -> set[str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return {obj["Key"] for page in pages for obj in page.get("Contents", [])}

    return Backend("s3", S3ObjectStore(client, bucket, prefix), write_raw, raw_names)


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return _local_backend(tmp_path / "store")
    client = request.getfixturevalue("s3_client")
    return _s3_backend(client, request.getfixturevalue("bucket"), S3_PREFIX)


@pytest.fixture
def store(backend: Backend) -> ObjectStore:
    return backend.store


def _payload(nbytes: int, seed: int = 0) -> bytes:
    """Deterministic, incompressible-looking bytes."""
    blocks = (nbytes + 31) // 32
    return b"".join(hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(blocks))[:nbytes]


# --------------------------------------------------------------------------------------------
# The contract: both backends


def test_store_satisfies_the_protocol(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)


@pytest.mark.parametrize("nbytes", [0, 1, 3 * 1024 * 1024 + 7])
def test_round_trip_returns_the_same_bytes_and_their_sha256(
    store: ObjectStore, nbytes: int
) -> None:
    data = _payload(nbytes)
    stored = store.put("cutouts/4295806720.fits", data)
    assert stored == StoredObject(
        "cutouts/4295806720.fits", hashlib.sha256(data).hexdigest(), nbytes
    )
    assert store.get("cutouts/4295806720.fits") == data
    assert store.get("cutouts/4295806720.fits", sha256=stored.sha256) == data


def test_get_accepts_an_uppercase_sha256(store: ObjectStore) -> None:
    stored = store.put("k", b"abc")
    assert store.get("k", sha256=stored.sha256.upper()) == b"abc"


def test_get_with_a_malformed_sha256_is_a_value_error(store: ObjectStore) -> None:
    store.put("k", b"abc")
    with pytest.raises(ValueError, match="not 64 hexadecimal"):
        store.get("k", sha256="abc")


def test_overwrite_replaces_the_object(store: ObjectStore) -> None:
    first = store.put("a/b.fits", b"first version")
    second = store.put("a/b.fits", b"second, longer version")
    assert first.sha256 != second.sha256
    assert store.get("a/b.fits", sha256=second.sha256) == b"second, longer version"
    with pytest.raises(ChecksumMismatch):
        store.get("a/b.fits", sha256=first.sha256)


def test_get_with_the_wrong_sha256_raises_checksum_mismatch(store: ObjectStore) -> None:
    store.put("k.fits", b"payload")
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(ChecksumMismatch) as excinfo:
        store.get("k.fits", sha256=wrong)
    error = excinfo.value
    assert error.key == "k.fits"
    assert wrong in error.expected
    assert error.actual == hashlib.sha256(b"payload").hexdigest()
    assert "k.fits" in str(error)
    assert error.object_url == store.object_url("k.fits")


def test_corrupted_object_is_detected_on_get(backend: Backend) -> None:
    stored = backend.store.put("deep/nested/obj.fits", b"the original bytes")
    backend.write_raw("deep/nested/obj.fits", b"the 0riginal bytes")
    with pytest.raises(ChecksumMismatch) as excinfo:
        backend.store.get("deep/nested/obj.fits", sha256=stored.sha256)
    assert excinfo.value.actual == hashlib.sha256(b"the 0riginal bytes").hexdigest()


def test_missing_key_raises_object_not_found_naming_key_and_store(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound) as excinfo:
        store.get("no/such/key.fits")
    assert excinfo.value.key == "no/such/key.fits"
    assert excinfo.value.store_url == store.url
    assert "no/such/key.fits" in str(excinfo.value)
    assert store.url in str(excinfo.value)
    assert isinstance(excinfo.value, ObjectStoreError)


def test_a_prefix_of_other_keys_is_not_an_object(store: ObjectStore) -> None:
    store.put("dir/child", b"x")
    assert not store.exists("dir")
    with pytest.raises(ObjectNotFound):
        store.get("dir")
    store.delete("dir")
    assert store.get("dir/child") == b"x"


def test_exists_and_delete(store: ObjectStore) -> None:
    assert not store.exists("x/y")
    store.put("x/y", b"1")
    assert store.exists("x/y")
    store.delete("x/y")
    assert not store.exists("x/y")
    with pytest.raises(ObjectNotFound):
        store.get("x/y")


def test_delete_is_idempotent(store: ObjectStore) -> None:
    store.delete("never/written")
    store.put("once", b"1")
    store.delete("once")
    store.delete("once")
    assert not store.exists("once")


def test_nested_keys_are_independent_objects(store: ObjectStore) -> None:
    keys = ["a", "b/c", "b/d/e", "b/d/f.fits", "ünïcode/ключ/銀河.fits"]
    for i, key in enumerate(keys):
        store.put(key, f"object {i}".encode())
    for i, key in enumerate(keys):
        assert store.get(key) == f"object {i}".encode()
    store.delete("b/d/e")
    assert [store.exists(k) for k in keys] == [True, True, False, True, True]


def test_longest_valid_key_works(store: ObjectStore) -> None:
    # Segments of 255, 255, 255, 254 and 1 bytes plus 4 slashes: exactly 1,024 bytes. S3 also
    # counts the prefix, so the S3 store under a prefix must refuse it.
    key = "/".join(["s" * MAX_SEGMENT_BYTES] * 3 + ["t" * (MAX_SEGMENT_BYTES - 1), "u"])
    assert len(key.encode()) == MAX_KEY_BYTES
    if isinstance(store, S3ObjectStore):
        with pytest.raises(InvalidKey, match="prefix"):
            store.put(key, b"long")
        key = key[len(S3_PREFIX) + 1 :]
    store.put(key, b"long")
    assert store.get(key) == b"long"


@pytest.mark.parametrize("key", INVALID_KEYS, ids=repr)
def test_invalid_keys_are_refused_by_every_method(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        store.put(key, b"data")
    with pytest.raises(InvalidKey):
        store.get(key)
    with pytest.raises(InvalidKey):
        store.exists(key)
    with pytest.raises(InvalidKey):
        store.delete(key)
    with pytest.raises(InvalidKey):
        store.object_url(key)


def test_object_url_names_the_object_under_the_store_url(store: ObjectStore) -> None:
    assert store.object_url("a/b.fits") == store.url + "/a/b.fits"


def test_store_url_reopens_the_same_store(backend: Backend) -> None:
    client = backend.store.client if isinstance(backend.store, S3ObjectStore) else None
    stored = backend.store.put("shared/key", b"seen by both")
    reopened = open_object_store(backend.store.url, client=client)
    assert reopened.url == backend.store.url
    assert reopened.get("shared/key", sha256=stored.sha256) == b"seen by both"


def test_concurrent_puts_of_different_keys(store: ObjectStore) -> None:
    keys = [f"batch/{i // 8}/{i}.fits" for i in range(64)]

    def put(i: int) -> StoredObject:
        return store.put(keys[i], _payload(10_000 + i, seed=i))

    with ThreadPoolExecutor(max_workers=16) as pool:
        stored = list(pool.map(put, range(len(keys))))
    for i, obj in enumerate(stored):
        assert obj.key == keys[i]
        assert store.get(keys[i], sha256=obj.sha256) == _payload(10_000 + i, seed=i)


def test_concurrent_overwrites_of_one_key_are_never_torn(backend: Backend) -> None:
    """Readers racing writers of one key only ever see one complete version."""
    store = backend.store
    versions = [_payload(200_000, seed=v) for v in range(4)]
    digests = {hashlib.sha256(v).hexdigest() for v in versions}
    store.put("hot.fits", versions[0])
    stop = threading.Event()
    seen: set[str] = set()

    def write(v: int) -> None:
        for _ in range(10):
            store.put("hot.fits", versions[v])

    def read() -> None:
        while not stop.is_set():
            seen.add(hashlib.sha256(store.get("hot.fits")).hexdigest())

    with ThreadPoolExecutor(max_workers=6) as pool:
        readers = [pool.submit(read) for _ in range(2)]
        for writer in [pool.submit(write, v) for v in range(4)]:
            writer.result()
        stop.set()
        for reader in readers:
            reader.result()
    assert seen
    assert seen <= digests
    if backend.kind == "local":
        assert backend.raw_names() == {"hot.fits"}


# --------------------------------------------------------------------------------------------
# Local backend: atomic writes


def test_local_failed_rename_leaves_no_partial_object_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = _local_backend(tmp_path / "store")
    backend.store.put("a/old.fits", b"old")

    def failing_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(ObjectStoreError, match=r"'a/new.fits'.*No space left"):
        backend.store.put("a/new.fits", b"new")
    with pytest.raises(ObjectStoreError, match=r"'a/old.fits'"):
        backend.store.put("a/old.fits", b"replacement")
    monkeypatch.undo()
    assert backend.raw_names() == {"a/old.fits"}
    assert backend.store.get("a/old.fits") == b"old"


def test_local_write_that_fails_midway_leaves_nothing_behind(tmp_path: Path) -> None:
    """A real short write: the kernel refuses bytes beyond RLIMIT_FSIZE with EFBIG.

    Python ignores SIGXFSZ, so the write fails with an OSError instead of killing the process.
    """
    backend = _local_backend(tmp_path / "store")
    backend.store.put("obj", b"old")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, hard))
    try:
        with pytest.raises(ObjectStoreError, match="'obj'"):
            backend.store.put("obj", _payload(1024 * 1024))
        with pytest.raises(ObjectStoreError, match="'fresh/obj'"):
            backend.store.put("fresh/obj", _payload(1024 * 1024))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert backend.raw_names() == {"obj"}
    assert backend.store.get("obj") == b"old"


def test_local_store_creates_its_root_and_writes_readable_files(tmp_path: Path) -> None:
    root = tmp_path / "not" / "yet" / "there"
    store = LocalObjectStore(root)
    store.put("k/v.fits", b"data")
    assert (root / "k" / "v.fits").read_bytes() == b"data"
    assert (root / "k" / "v.fits").stat().st_mode & 0o777 == 0o644
    assert store.object_url("k/v.fits") == (root / "k" / "v.fits").as_uri()


def test_local_key_that_collides_with_a_file_is_a_clear_error(tmp_path: Path) -> None:
    # S3 allows both "a" and "a/b"; a directory cannot hold a file and a directory of one name.
    store = LocalObjectStore(tmp_path)
    store.put("a", b"file")
    with pytest.raises(ObjectStoreError, match="'a/b'"):
        store.put("a/b", b"under a file")
    with pytest.raises(ObjectNotFound):
        store.get("a/b")
    assert not store.exists("a/b")
    store.delete("a/b")
    assert store.get("a") == b"file"


# --------------------------------------------------------------------------------------------
# S3 backend: the checksummed PUT and the digests S3 keeps


@pytest.fixture
def s3_store(s3_client, bucket: str) -> S3ObjectStore:
    return S3ObjectStore(s3_client, bucket, S3_PREFIX)


def test_s3_put_records_sha256_as_checksum_and_metadata(s3_store: S3ObjectStore) -> None:
    data = _payload(5000)
    stored = s3_store.put("obj.fits", data)
    head = s3_store.client.head_object(
        Bucket=s3_store.bucket, Key=f"{S3_PREFIX}/obj.fits", ChecksumMode="ENABLED"
    )
    digest = hashlib.sha256(data).digest()
    assert head["ChecksumSHA256"] == base64.b64encode(digest).decode()
    assert head["Metadata"] == {"sha256": digest.hex()}
    assert head["ContentLength"] == stored.nbytes == 5000
    assert s3_store.object_url("obj.fits") == f"s3://{s3_store.bucket}/{S3_PREFIX}/obj.fits"


def _put_with_stale_digests(store: S3ObjectStore, key: str, data: bytes, original: bytes) -> None:
    """Store ``data`` as if it were ``original``: the at-rest corruption S3 would catch."""
    digest = hashlib.sha256(original).digest()
    store.client.put_object(
        Bucket=store.bucket,
        Key=f"{store.prefix}/{key}",
        Body=data,
        ChecksumAlgorithm="SHA256",
        ChecksumSHA256=base64.b64encode(digest).decode(),
        Metadata={"sha256": digest.hex()},
    )


def test_s3_get_verifies_stored_digests_even_without_a_caller_sha256(
    s3_store: S3ObjectStore,
) -> None:
    s3_store.put("obj.fits", b"original")
    _put_with_stale_digests(s3_store, "obj.fits", b"corrupted", b"original")
    with pytest.raises(ChecksumMismatch) as excinfo:
        s3_store.get("obj.fits")
    assert excinfo.value.expected.startswith(f"sha256 {hashlib.sha256(b'original').hexdigest()}")
    assert excinfo.value.actual == hashlib.sha256(b"corrupted").hexdigest()


def test_s3_get_verifies_the_metadata_digest(s3_store: S3ObjectStore) -> None:
    s3_store.client.put_object(
        Bucket=s3_store.bucket,
        Key=f"{S3_PREFIX}/obj.fits",
        Body=b"corrupted",
        Metadata={"sha256": hashlib.sha256(b"original").hexdigest()},
    )
    with pytest.raises(ChecksumMismatch, match="object metadata"):
        s3_store.get("obj.fits")


def test_s3_get_verifies_the_checksum_s3_keeps(s3_store: S3ObjectStore) -> None:
    original = base64.b64encode(hashlib.sha256(b"original").digest()).decode()
    s3_store.client.put_object(
        Bucket=s3_store.bucket,
        Key=f"{S3_PREFIX}/obj.fits",
        Body=b"corrupted",
        ChecksumAlgorithm="SHA256",
        ChecksumSHA256=original,
    )
    with pytest.raises(ChecksumMismatch, match="S3 checksum") as excinfo:
        s3_store.get("obj.fits")
    original_hex = hashlib.sha256(b"original").hexdigest()
    assert excinfo.value.expected == f"sha256 {original_hex} (S3 checksum)"
    assert excinfo.value.actual == hashlib.sha256(b"corrupted").hexdigest()


def test_s3_reads_objects_written_by_other_tools(s3_store: S3ObjectStore) -> None:
    # No metadata, botocore's default CRC checksum: readable, and checked against the caller.
    s3_store.client.put_object(Bucket=s3_store.bucket, Key=f"{S3_PREFIX}/ext", Body=b"external")
    assert s3_store.get("ext", sha256=hashlib.sha256(b"external").hexdigest()) == b"external"


def test_s3_without_prefix_uses_the_key_as_is(s3_client, bucket: str) -> None:
    store = S3ObjectStore(s3_client, bucket)
    assert store.url == f"s3://{bucket}"
    store.put("top/level", b"1")
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["top/level"]
    assert store.object_url("top/level") == f"s3://{bucket}/top/level"


def test_s3_prefix_keeps_objects_apart(s3_client, bucket: str) -> None:
    one = S3ObjectStore(s3_client, bucket, "one")
    two = S3ObjectStore(s3_client, bucket, "two/")
    one.put("k", b"1")
    assert two.url == f"s3://{bucket}/two"
    assert not two.exists("k")
    two.put("k", b"2")
    assert (one.get("k"), two.get("k")) == (b"1", b"2")


def test_s3_missing_bucket_is_a_wrapped_error_naming_the_key(s3_client) -> None:
    store = S3ObjectStore(s3_client, "galpipe-no-such-bucket")
    for call in (lambda: store.put("k", b"1"), lambda: store.get("k")):
        with pytest.raises(ObjectStoreError, match=r"'k'.*NoSuchBucket") as excinfo:
            call()
        assert not isinstance(excinfo.value, ObjectNotFound)
        assert isinstance(excinfo.value.__cause__, ClientError)


def test_s3_unreachable_endpoint_is_a_wrapped_error() -> None:
    # Port 9 on loopback (discard) has no listener: connection refused at once. One attempt
    # only, so the test does not sit through the retry backoff.
    client = boto3.session.Session().client(
        "s3", endpoint_url="http://127.0.0.1:9", config=Config(retries={"total_max_attempts": 1})
    )
    store = S3ObjectStore(client, "galpipe-x", "p")
    with pytest.raises(ObjectStoreError, match=r"'k'.*127\.0\.0\.1:9") as excinfo:
        store.exists("k")
    assert isinstance(excinfo.value.__cause__, BotoCoreError)


def test_open_object_store_with_endpoint_talks_to_the_server(
    moto_endpoint: str, bucket: str
) -> None:
    store = open_object_store(f"s3://{bucket}/via/factory", endpoint_url=moto_endpoint)
    assert isinstance(store, S3ObjectStore)
    stored = store.put("k", b"factory")
    assert store.get("k", sha256=stored.sha256) == b"factory"
    assert store.exists("k")


@pytest.mark.xfail(
    strict=True,
    raises=pytest.fail.Exception,
    reason=(
        "moto 5.2.5 stores x-amz-checksum-sha256 without comparing it to the body "
        "(moto/s3/responses.py S3Response._get_checksum); real S3 answers 400 BadDigest"
    ),
)
def test_s3_server_rejects_a_body_that_does_not_match_its_checksum(s3_client, bucket: str) -> None:
    wrong = base64.b64encode(hashlib.sha256(b"what we meant to send").digest()).decode()
    with pytest.raises(ClientError) as excinfo:
        s3_client.put_object(
            Bucket=bucket,
            Key="k",
            Body=b"what arrived",
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=wrong,
        )
    assert excinfo.value.response["Error"]["Code"] == "BadDigest"
