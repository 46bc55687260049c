"""What every object store shares: the interface, the key rules, the errors, the digests.

Every object is addressed by a *key*: a relative, ``/``-separated path such as
``cutouts/dr10/4295806720.fits``. The rules for keys are the same for every backend (see
:func:`validate_key`), so a pipeline written against a local directory runs unchanged on S3.

Integrity is end to end. :meth:`ObjectStore.put` returns the sha256 of the bytes it stored; the
caller records it (``cutouts.sha256``) and hands it back to :meth:`ObjectStore.get`, which
re-hashes what it read and raises :class:`ChecksumMismatch` if the two differ.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from galpipe.errors import StorageError

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_SEGMENT_BYTES",
    "ChecksumMismatch",
    "InvalidKey",
    "InvalidStoreURL",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectStoreError",
    "StoredObject",
    "check_byte_range",
    "normalise_sha256",
    "range_url",
    "sha256_hex",
    "validate_key",
    "verify_sha256",
]

#: Longest key in bytes of UTF-8 (S3's own limit, prefix included).
MAX_KEY_BYTES = 1024
#: Longest ``/``-separated segment of a key in bytes of UTF-8 (NAME_MAX of POSIX filesystems),
#: so that every valid key is also a valid relative path for the local backend.
MAX_SEGMENT_BYTES = 255

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


# --------------------------------------------------------------------------------------------
# Errors


class ObjectStoreError(StorageError):
    """An object store operation failed; the message names the key and the store."""


# The error names read as conditions (``except ObjectNotFound``), hence the N818 waivers.


class ObjectNotFound(ObjectStoreError):  # noqa: N818
    """No object is stored under ``key`` in the store at ``store_url``."""

    def __init__(self, key: str, store_url: str) -> None:
        self.key = key
        self.store_url = store_url
        super().__init__(f"no object with key {key!r} in {store_url}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key, self.store_url))


class ChecksumMismatch(ObjectStoreError):  # noqa: N818
    """The bytes read for ``key`` do not hash to the sha256 recorded for them.

    Parameters
    ----------
    key
        Key of the object.
    expected
        The recorded digest (hex sha256, or a server checksum in the form ``ALGO:base64``).
    actual
        Hex sha256 of the bytes that were read.
    object_url
        Where the object lives (``s3://…`` or ``file://…``).
    """

    def __init__(self, key: str, expected: str, actual: str, object_url: str = "") -> None:
        self.key = key
        self.expected = expected
        self.actual = actual
        self.object_url = object_url
        where = f" at {object_url}" if object_url else ""
        super().__init__(
            f"checksum mismatch for key {key!r}{where}: recorded {expected}, "
            f"but the bytes read hash to sha256 {actual} (corrupted or overwritten object)"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key, self.expected, self.actual, self.object_url))


class InvalidKey(ObjectStoreError, ValueError):  # noqa: N818
    """A key breaks the key rules of :func:`validate_key`; the message says which."""


class InvalidStoreURL(ObjectStoreError, ValueError):  # noqa: N818
    """A store URL is neither ``s3://bucket/prefix`` nor ``file:///absolute/dir``."""


# --------------------------------------------------------------------------------------------
# The interface, key rules and digests


@dataclass(frozen=True)
class StoredObject:
    """What :meth:`ObjectStore.put` wrote: the key, the hex sha256 and the size in bytes."""

    key: str
    sha256: str
    nbytes: int


@runtime_checkable
class ObjectStore(Protocol):
    """A flat namespace of immutable-by-convention byte objects addressed by key.

    Every method validates its key with :func:`validate_key` and raises :class:`InvalidKey`
    for a bad one. Other failures raise :class:`ObjectStoreError` (or a subclass) naming the
    key and the store.
    """

    @property
    def url(self) -> str:
        """The store URL; :func:`open_object_store` of it opens the same store."""
        ...

    def put(self, key: str, data: bytes) -> StoredObject:
        """Store ``data`` under ``key`` atomically (replacing any object there)."""
        ...

    def get(self, key: str, sha256: str | None = None) -> bytes:
        """Return the bytes under ``key``; verify them against ``sha256`` (hex) when given.

        Raises
        ------
        ObjectNotFound
            If nothing is stored under ``key``.
        ChecksumMismatch
            If the bytes read do not hash to ``sha256`` or to a digest the backend recorded.
        """
        ...

    def get_range(self, key: str, offset: int, length: int, sha256: str | None = None) -> bytes:
        """Return ``length`` bytes of the object under ``key`` from byte ``offset`` (one request).

        Reads a slice of a larger object (a cutout inside a pack,
        :mod:`galpipe.pipelines.cutout_packs`) without reading the rest. Fewer bytes come back
        where the object ends before ``offset + length`` (none past its end). With ``sha256``
        (hex) the slice is verified against it; the object's own digest covers the whole object
        and is not checked.

        Raises
        ------
        ValueError
            If ``offset`` is negative or ``length`` is not positive.
        ObjectNotFound
            If nothing is stored under ``key``.
        ChecksumMismatch
            If the bytes read do not hash to ``sha256``.
        """
        ...

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object under ``key``; deleting a missing key does nothing."""
        ...

    def object_url(self, key: str) -> str:
        """Absolute URL of the object under ``key`` (``s3://…`` or ``file://…``)."""
        ...


def validate_key(key: str) -> str:
    """Return ``key`` if it is a valid object key, else raise :class:`InvalidKey`.

    A key is a relative, ``/``-separated path: no leading ``/``, no empty, ``.`` or ``..``
    segment (so no trailing ``/`` either), no backslash or NUL, at most
    :data:`MAX_KEY_BYTES` bytes of UTF-8 and at most :data:`MAX_SEGMENT_BYTES` bytes per
    segment. The same key therefore names the same object on S3 and on a local filesystem,
    and can never point outside a local store's root.
    """
    if not isinstance(key, str):
        raise InvalidKey(f"object key {key!r}: expected a str, got {type(key).__name__}")
    if not key:
        raise InvalidKey("object key is empty")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidKey(f"object key {key!r}: not encodable as UTF-8") from None
    if len(encoded) > MAX_KEY_BYTES:
        raise InvalidKey(
            f"object key {key[:40]!r}…: {len(encoded)} bytes of UTF-8, at most {MAX_KEY_BYTES}"
        )
    if "\\" in key or "\x00" in key:
        raise InvalidKey(f"object key {key!r}: backslashes and NUL are not allowed")
    if key.startswith("/"):
        raise InvalidKey(f"object key {key!r}: must be relative (no leading '/')")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKey(
                f"object key {key!r}: empty, '.' and '..' segments are not allowed "
                "(no '//', no trailing '/')"
            )
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise InvalidKey(
                f"object key {key[:40]!r}…: segment {segment[:40]!r}… is longer than "
                f"{MAX_SEGMENT_BYTES} bytes"
            )
    return key


def sha256_hex(data: bytes) -> str:
    """Hex sha256 digest of ``data`` (64 lowercase characters)."""
    return hashlib.sha256(data).hexdigest()


def normalise_sha256(sha256: str | None) -> str | None:
    """Lowercase a hex sha256 given by a caller; reject anything that is not one."""
    if sha256 is None:
        return None
    normalised = sha256.strip().lower() if isinstance(sha256, str) else ""
    if not _SHA256_HEX.fullmatch(normalised):
        raise ValueError(f"expected sha256 {sha256!r}: not 64 hexadecimal characters")
    return normalised


def check_byte_range(key: str, offset: int, length: int) -> None:
    """Raise ``ValueError`` unless ``offset >= 0`` and ``length > 0`` (a slice of ``key``)."""
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"byte range of key {key!r}: offset {offset!r} is not an integer >= 0")
    if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
        raise ValueError(f"byte range of key {key!r}: length {length!r} is not an integer > 0")


def range_url(object_url: str, offset: int, length: int) -> str:
    """``object_url`` with the byte range ``offset … offset + length - 1`` (for messages)."""
    return f"{object_url} (bytes {offset}-{offset + length - 1})"


def verify_sha256(key: str, data: bytes, expected: str | None, object_url: str) -> str:
    """Hash ``data``; raise :class:`ChecksumMismatch` if it differs from ``expected``."""
    actual = sha256_hex(data)
    if expected is not None and actual != expected:
        raise ChecksumMismatch(key, f"sha256 {expected}", actual, object_url)
    return actual
