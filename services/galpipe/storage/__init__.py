"""Object store for cutouts: one small interface, two backends (S3 and a local directory).

- :mod:`.base` -- the :class:`ObjectStore` interface, key rules, errors and sha256 helpers;
- :mod:`.local` -- :class:`LocalObjectStore`, files under a directory, written atomically;
- :mod:`.s3` -- :class:`S3ObjectStore` and :func:`make_s3_client`;
- :mod:`.instrumented` -- a wrapper that counts every call in the Prometheus metrics.

Open a store from its URL with :func:`open_object_store` (``s3://bucket/prefix`` or
``file:///absolute/dir``) or from the process settings with :func:`object_store_from_settings`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from galpipe.storage.base import (
    MAX_KEY_BYTES,
    MAX_SEGMENT_BYTES,
    ChecksumMismatch,
    InvalidKey,
    InvalidStoreURL,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    StoredObject,
    sha256_hex,
    validate_key,
)
from galpipe.storage.local import LocalObjectStore, parse_file_url
from galpipe.storage.s3 import S3ObjectStore, make_s3_client, parse_s3_url

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from galpipe.settings import Settings

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_SEGMENT_BYTES",
    "ChecksumMismatch",
    "InvalidKey",
    "InvalidStoreURL",
    "LocalObjectStore",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectStoreError",
    "S3ObjectStore",
    "StoredObject",
    "make_s3_client",
    "object_store_from_settings",
    "open_object_store",
    "sha256_hex",
    "validate_key",
]


def open_object_store(
    url: str, *, endpoint_url: str | None = None, client: S3Client | None = None
) -> ObjectStore:
    """Open the store named by ``url``.

    Parameters
    ----------
    url
        ``s3://bucket`` or ``s3://bucket/prefix`` for S3; ``file:///absolute/dir`` (or
        ``file://localhost/absolute/dir``) for a local directory.
    endpoint_url
        S3-compatible endpoint, used when ``client`` is None; ignored for ``file://`` URLs.
    client
        An S3 client to use instead of creating one with :func:`make_s3_client`.

    Raises
    ------
    InvalidStoreURL
        If ``url`` is not one of the forms above; the message quotes it and says why.
    """
    if not isinstance(url, str):
        raise InvalidStoreURL(f"object store URL {url!r}: expected a str")
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise InvalidStoreURL(f"object store URL {url!r}: no query or fragment allowed")
    if parts.scheme == "s3":
        bucket, prefix = parse_s3_url(url)
        return S3ObjectStore(client or make_s3_client(endpoint_url), bucket, prefix)
    if parts.scheme == "file":
        return LocalObjectStore(parse_file_url(url))
    raise InvalidStoreURL(
        f"object store URL {url!r}: expected s3://bucket/prefix or file:///absolute/dir"
    )


def object_store_from_settings(settings: Settings) -> ObjectStore:
    """Open the store of ``GALPIPE_OBJECT_STORE`` (with ``GALPIPE_S3_ENDPOINT_URL`` for S3).

    Raises
    ------
    galpipe.settings.SettingsError
        If ``GALPIPE_OBJECT_STORE`` is not set.
    """
    url: str = settings.require("object_store")
    return open_object_store(url, endpoint_url=settings.s3_endpoint_url)
