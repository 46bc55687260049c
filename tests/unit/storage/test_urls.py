"""Store URLs, key rules and error values of the object store (no server needed)."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import boto3
import pytest

from galpipe.settings import Settings, SettingsError
from galpipe.storage import (
    ChecksumMismatch,
    InvalidKey,
    InvalidStoreURL,
    LocalObjectStore,
    ObjectNotFound,
    ObjectStoreError,
    S3ObjectStore,
    make_s3_client,
    object_store_from_settings,
    open_object_store,
    sha256_hex,
    validate_key,
)
from galpipe.storage.s3 import (
    S3_CONNECT_TIMEOUT_S,
    S3_MAX_ATTEMPTS,
    S3_MAX_POOL_CONNECTIONS,
    S3_READ_TIMEOUT_S,
)


@pytest.fixture
def client():
    """A client that is never used to send anything (the endpoint has no listener)."""
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    return make_s3_client("http://127.0.0.1:9", session=session)


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://galpipe-data", "galpipe-data", ""),
        ("s3://galpipe-data/", "galpipe-data", ""),
        ("s3://galpipe-data/cutouts", "galpipe-data", "cutouts"),
        ("s3://galpipe-data/cutouts/dr10/", "galpipe-data", "cutouts/dr10"),
        ("s3://my.bucket-1/a", "my.bucket-1", "a"),
    ],
)
def test_s3_urls(client, url: str, bucket: str, prefix: str) -> None:
    store = open_object_store(url, client=client)
    assert isinstance(store, S3ObjectStore)
    assert (store.bucket, store.prefix, store.client) == (bucket, prefix, client)
    assert store.url == url.rstrip("/")
    assert open_object_store(store.url, client=client).url == store.url


@pytest.mark.parametrize(
    ("url", "root"),
    [
        ("file:///var/lib/galpipe", "/var/lib/galpipe"),
        ("file:///var/lib/galpipe/", "/var/lib/galpipe"),
        ("file://localhost/srv/cutouts", "/srv/cutouts"),
        ("file:///tmp/with%20space", "/tmp/with space"),
    ],
)
def test_file_urls(url: str, root: str) -> None:
    store = open_object_store(url)
    assert isinstance(store, LocalObjectStore)
    assert store.root == Path(root)
    assert open_object_store(store.url).url == store.url


def test_file_store_ignores_the_s3_endpoint() -> None:
    store = open_object_store("file:///data", endpoint_url="http://127.0.0.1:9000")
    assert isinstance(store, LocalObjectStore)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://bucket/prefix", "expected s3://bucket/prefix or file:///absolute/dir"),
        ("gs://bucket/prefix", "expected s3://"),
        ("/var/lib/galpipe", "expected s3://"),
        ("bucket/prefix", "expected s3://"),
        ("", "expected s3://"),
        ("s3://", "no bucket"),
        ("s3:///prefix", "no bucket"),
        ("s3://Upper-Case/p", "not a valid S3 bucket name"),
        ("s3://ab/p", "not a valid S3 bucket name"),
        ("s3://user@bucket/p", "not a valid S3 bucket name"),
        ("s3://bucket:9000/p", "not a valid S3 bucket name"),
        ("s3://bucket//p", "bad prefix"),
        ("s3://bucket/a/../b", "bad prefix"),
        ("s3://bucket/p?versionId=1", "no query or fragment"),
        ("file://relative/dir", "names host 'relative'"),
        ("file:relative/dir", "relative path"),
        ("file:", "relative path"),
        ("file:///data#frag", "no query or fragment"),
    ],
)
def test_bad_store_urls_are_clear_errors(client, url: str, reason: str) -> None:
    with pytest.raises(InvalidStoreURL, match=reason) as excinfo:
        open_object_store(url, client=client)
    assert repr(url) in str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)
    assert isinstance(excinfo.value, ObjectStoreError)


def test_make_s3_client_configuration() -> None:
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="eu-west-1"
    )
    config = make_s3_client(session=session).meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": S3_MAX_ATTEMPTS}
    assert (config.connect_timeout, config.read_timeout) == (
        S3_CONNECT_TIMEOUT_S,
        S3_READ_TIMEOUT_S,
    )
    assert config.max_pool_connections == S3_MAX_POOL_CONNECTIONS
    assert not (config.s3 or {}).get("addressing_style")

    custom = make_s3_client("http://127.0.0.1:9", session=session)
    assert custom.meta.endpoint_url == "http://127.0.0.1:9"
    assert custom.meta.config.s3 == {"addressing_style": "path"}


def test_store_from_settings(tmp_path: Path) -> None:
    settings = Settings.from_env({"GALPIPE_OBJECT_STORE": tmp_path.as_uri()})
    store = object_store_from_settings(settings)
    assert isinstance(store, LocalObjectStore)
    assert store.root == tmp_path


def test_store_from_settings_uses_the_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    settings = Settings.from_env(
        {
            "GALPIPE_OBJECT_STORE": "s3://galpipe-data/cutouts",
            "GALPIPE_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        }
    )
    store = object_store_from_settings(settings)
    assert isinstance(store, S3ObjectStore)
    assert store.client.meta.endpoint_url == "http://127.0.0.1:9000"
    assert store.url == "s3://galpipe-data/cutouts"


def test_store_from_settings_without_a_store_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="GALPIPE_OBJECT_STORE"):
        object_store_from_settings(Settings.from_env({}))


@pytest.mark.parametrize(
    "key", ["a", "a/b/c.fits", "cutouts/dr10/4295806720.fits", ".hidden/x", "a..b", "ключ"]
)
def test_valid_keys(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "empty"),
        ("/a", "relative"),
        ("a/", "segments"),
        ("a//b", "segments"),
        ("./a", "segments"),
        ("a/../b", "segments"),
        ("..", "segments"),
        ("a\\b", "backslash"),
        ("a\x00b", "NUL"),
        ("x" * 256, "longer than 255 bytes"),
        ("a/" * 512 + "b", "1025 bytes"),
        ("\ud800", "UTF-8"),
        (b"bytes/key", "expected a str"),
        (None, "expected a str"),
    ],
)
def test_invalid_keys_say_why(key: str, reason: str) -> None:
    with pytest.raises(InvalidKey, match=reason):
        validate_key(key)


def test_sha256_hex_is_hashlibs() -> None:
    assert sha256_hex(b"") == hashlib.sha256(b"").hexdigest()
    assert sha256_hex(b"galaxy") == hashlib.sha256(b"galaxy").hexdigest()


def test_errors_survive_pickling() -> None:
    """Errors cross process boundaries (multiprocessing workers) intact."""
    errors = [
        ObjectNotFound("a/b", "s3://bucket/p"),
        ChecksumMismatch("a/b", "sha256 " + "0" * 64, "1" * 64, "s3://bucket/p/a/b"),
        InvalidKey("object key '' is empty"),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert str(copy) == str(error)
        assert vars(copy) == vars(error)


def test_s3_store_refuses_a_bad_prefix(client) -> None:
    with pytest.raises(InvalidKey):
        S3ObjectStore(client, "bucket", "/abs")
    with pytest.raises(ValueError, match="bucket"):
        S3ObjectStore(client, "")
