"""Objects in an S3 bucket (or any S3-compatible server): :class:`S3ObjectStore`.

The sha256 travels with every upload (``x-amz-checksum-sha256``), so S3 refuses a body that was
corrupted in transit (``BadDigest``), and is kept as object metadata; reads are checked against
both the caller's digest and the stored ones. :func:`make_s3_client` makes the boto3 client with
galpipe's retry, timeout and connection-pool settings.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError, FlexibleChecksumError

from galpipe.storage.base import (
    MAX_KEY_BYTES,
    ChecksumMismatch,
    InvalidKey,
    InvalidStoreURL,
    ObjectNotFound,
    ObjectStoreError,
    StoredObject,
    check_byte_range,
    normalise_sha256,
    range_url,
    validate_key,
    verify_sha256,
)

if TYPE_CHECKING:
    import boto3
    from mypy_boto3_s3 import S3Client

__all__ = [
    "S3_CONNECT_TIMEOUT_S",
    "S3_MAX_ATTEMPTS",
    "S3_MAX_POOL_CONNECTIONS",
    "S3_READ_TIMEOUT_S",
    "SHA256_METADATA",
    "S3ObjectStore",
    "make_s3_client",
    "parse_s3_url",
]

#: Attempts per S3 request, the first one included (botocore "standard" retry mode: exponential
#: backoff with jitter on throttling, 5xx and connection errors).
S3_MAX_ATTEMPTS = 5
#: Seconds to wait for a TCP connection to the S3 endpoint.
S3_CONNECT_TIMEOUT_S = 5.0
#: Seconds to wait for the next bytes of an S3 response.
S3_READ_TIMEOUT_S = 30.0
#: HTTP connections one S3 client keeps open: enough for a radon worker's concurrent reads.
S3_MAX_POOL_CONNECTIONS = 32

#: Object metadata field (``x-amz-meta-sha256``) holding the hex sha256 of the body.
SHA256_METADATA = "sha256"

_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
#: What S3 answers for a range that starts past the object's end (HTTP 416).
_INVALID_RANGE_CODES = frozenset({"InvalidRange", "416"})
_UPLOAD_DIGEST_CODES = frozenset({"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"})
_READ_CHUNK_BYTES = 1 << 20


class S3ObjectStore:
    """Objects in an S3 bucket (or any S3-compatible server) under an optional prefix.

    :meth:`put` is one ``PutObject`` carrying ``ChecksumAlgorithm=SHA256`` and the base64 digest
    of the body, so S3 rejects a body that does not match it (``BadDigest``) and keeps the
    checksum with the object; the hex digest is also stored as metadata ``sha256``. :meth:`get`
    asks for the stored checksum (``ChecksumMode=ENABLED``) and verifies the body against the
    caller's digest, the metadata digest and S3's checksum.

    Parameters
    ----------
    client
        A boto3 S3 client (see :func:`make_s3_client`); clients are thread-safe.
    bucket
        Bucket name.
    prefix
        Key prefix without leading or trailing ``/`` (e.g. ``galpipe/dr10``); ``""`` for none.
    """

    def __init__(self, client: S3Client, bucket: str, prefix: str = "") -> None:
        if not bucket:
            raise ValueError("S3ObjectStore needs a bucket name")
        prefix = prefix.rstrip("/")
        if prefix:
            validate_key(prefix)
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.url!r})"

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def object_url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._s3_key(key)}"

    def put(self, key: str, data: bytes) -> StoredObject:
        s3_key = self._s3_key(key)
        digest = hashlib.sha256(data).digest()
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=s3_key,
                Body=data,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=base64.b64encode(digest).decode("ascii"),
                Metadata={SHA256_METADATA: digest.hex()},
            )
        except (ClientError, BotoCoreError) as exc:
            code = _client_error_code(exc)
            if code in _UPLOAD_DIGEST_CODES:
                raise ObjectStoreError(
                    f"S3 rejected the upload of key {key!r} to {self.url}: the body it received "
                    f"does not match its sha256 {digest.hex()} ({code}); the bytes were "
                    "corrupted on the way"
                ) from exc
            raise self._wrap("write", key, exc) from exc
        return StoredObject(key=key, sha256=digest.hex(), nbytes=len(data))

    def get(self, key: str, sha256: str | None = None) -> bytes:
        expected = normalise_sha256(sha256)
        s3_key = self._s3_key(key)
        object_url = f"s3://{self.bucket}/{s3_key}"
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=s3_key, ChecksumMode="ENABLED"
            )
            body = response["Body"]
            # Read in chunks: botocore checks S3's checksum when the stream ends and raises
            # then; by that time every byte is here, so the error can name the real digest.
            chunks = bytearray()
            server_rejected = False
            try:
                while chunk := body.read(_READ_CHUNK_BYTES):
                    chunks += chunk
            except FlexibleChecksumError:
                server_rejected = True
            data = bytes(chunks)
        except (ClientError, BotoCoreError) as exc:
            if _client_error_code(exc) in _NOT_FOUND_CODES:
                raise ObjectNotFound(key, self.url) from exc
            raise self._wrap("read", key, exc) from exc

        actual = verify_sha256(key, data, expected, object_url)
        recorded = response.get("Metadata", {}).get(SHA256_METADATA)
        if recorded is not None and recorded.lower() != actual:
            raise ChecksumMismatch(key, f"sha256 {recorded} (object metadata)", actual, object_url)
        server_sha256 = _server_sha256_hex(response.get("ChecksumSHA256"))
        if server_sha256 is not None and server_sha256 != actual:
            raise ChecksumMismatch(key, f"sha256 {server_sha256} (S3 checksum)", actual, object_url)
        if server_rejected:
            algorithm, value = _server_checksum(response)
            raise ChecksumMismatch(key, f"{algorithm}:{value} (S3 checksum)", actual, object_url)
        return data

    def get_range(self, key: str, offset: int, length: int, sha256: str | None = None) -> bytes:
        # One ranged GetObject. S3's stored checksum and the metadata digest cover the whole
        # object, so only the caller's digest of the slice can be checked here.
        check_byte_range(key, offset, length)
        expected = normalise_sha256(sha256)
        s3_key = self._s3_key(key)
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=s3_key, Range=f"bytes={offset}-{offset + length - 1}"
            )
            data = response["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            code = _client_error_code(exc)
            if code in _NOT_FOUND_CODES:
                raise ObjectNotFound(key, self.url) from exc
            if code not in _INVALID_RANGE_CODES:
                raise self._wrap("read", key, exc) from exc
            data = b""  # the object ends before the range: no bytes, as a short file reads
        object_url = range_url(f"s3://{self.bucket}/{s3_key}", offset, length)
        verify_sha256(key, data, expected, object_url)
        return data

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._s3_key(key))
        except (ClientError, BotoCoreError) as exc:
            if _client_error_code(exc) in _NOT_FOUND_CODES:
                return False
            raise self._wrap("look up", key, exc) from exc
        return True

    def delete(self, key: str) -> None:
        # S3's DeleteObject succeeds for a missing key, which makes this idempotent.
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._s3_key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._wrap("delete", key, exc) from exc

    def _s3_key(self, key: str) -> str:
        validate_key(key)
        s3_key = f"{self.prefix}/{key}" if self.prefix else key
        if len(s3_key.encode("utf-8")) > MAX_KEY_BYTES:
            raise InvalidKey(
                f"object key {key[:40]!r}…: with prefix {self.prefix!r} it is longer than "
                f"S3's {MAX_KEY_BYTES} bytes"
            )
        return s3_key

    def _wrap(self, action: str, key: str, exc: Exception) -> ObjectStoreError:
        """An :class:`ObjectStoreError` for a botocore failure, naming the key and the store."""
        return ObjectStoreError(f"cannot {action} key {key!r} in {self.url}: {exc}")


def _client_error_code(exc: Exception) -> str | None:
    """The S3 error code of a botocore ClientError (``NoSuchKey``, ``404`` …), else None."""
    if not isinstance(exc, ClientError):
        return None
    code = exc.response.get("Error", {}).get("Code")
    return str(code) if code is not None else None


def _server_sha256_hex(checksum: str | None) -> str | None:
    """S3's base64 ChecksumSHA256 as hex; None when absent or composite (multipart, ``-N``)."""
    if not checksum or "-" in checksum:
        return None
    try:
        return base64.b64decode(checksum, validate=True).hex()
    except (binascii.Error, ValueError):
        return None


def _server_checksum(response: Any) -> tuple[str, str]:
    """The first checksum S3 returned with an object, as (algorithm, base64 value)."""
    for name, value in response.items():
        if name.startswith("Checksum") and name != "ChecksumType" and isinstance(value, str):
            return name.removeprefix("Checksum"), value
    return "unknown", "?"


def make_s3_client(
    endpoint_url: str | None = None, *, session: boto3.session.Session | None = None
) -> S3Client:
    """A boto3 S3 client with galpipe's retry, timeout and connection-pool settings.

    Parameters
    ----------
    endpoint_url
        Endpoint of an S3-compatible server (MinIO, moto); None for AWS S3. With an endpoint,
        requests use path-style addressing (``http://host/bucket/key``), which such servers
        expect.
    session
        The boto3 session to create the client from; by default a new one, which takes its
        credentials and region from the standard AWS chain (environment, profile, IRSA web
        identity, instance metadata). galpipe's settings never hold credentials.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        # botocore's client-config "max_attempts" counts retries only; "total_max_attempts"
        # counts the first request too, which is what S3_MAX_ATTEMPTS means.
        retries={"mode": "standard", "total_max_attempts": S3_MAX_ATTEMPTS},
        connect_timeout=S3_CONNECT_TIMEOUT_S,
        read_timeout=S3_READ_TIMEOUT_S,
        max_pool_connections=S3_MAX_POOL_CONNECTIONS,
        s3={"addressing_style": "path"} if endpoint_url else None,
        # Checksums only where we ask for them (every put sends its SHA-256, every get asks
        # for the stored one), and no re-validation of parameters this module builds itself
        # (validate_key checks keys): CPU saved on the radon pipeline's hot path
        # (docs/decisions.md, "SHA-256 end to end").
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        parameter_validation=False,
    )
    # A session per client: boto3's default session is shared module state and not thread-safe.
    session = session or boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint_url, config=config)


def parse_s3_url(url: str) -> tuple[str, str]:
    """The bucket and key prefix of an ``s3://bucket`` or ``s3://bucket/prefix`` store URL.

    Raises
    ------
    InvalidStoreURL
        If the bucket name is missing or invalid, or the prefix breaks the key rules.
    """
    parts = urlsplit(url)
    netloc, path = parts.netloc, parts.path
    if not netloc:
        raise InvalidStoreURL(f"object store URL {url!r}: no bucket; expected s3://bucket/prefix")
    if not _BUCKET_NAME.fullmatch(netloc) or ".." in netloc:
        raise InvalidStoreURL(
            f"object store URL {url!r}: {netloc!r} is not a valid S3 bucket name "
            "(3-63 characters: lowercase letters, digits, '.' and '-')"
        )
    prefix = path.removeprefix("/").rstrip("/")
    if prefix:
        try:
            validate_key(prefix)
        except InvalidKey as exc:
            raise InvalidStoreURL(f"object store URL {url!r}: bad prefix: {exc}") from None
    return netloc, prefix
