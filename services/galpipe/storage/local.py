"""Objects as files in a local directory: :class:`LocalObjectStore` (``file:///absolute/dir``).

Writes are atomic: a temporary file next to the target is fsynced and renamed into place, so a
reader sees either the old object or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

from galpipe.storage.base import (
    InvalidStoreURL,
    ObjectNotFound,
    ObjectStoreError,
    StoredObject,
    check_byte_range,
    normalise_sha256,
    range_url,
    sha256_hex,
    validate_key,
    verify_sha256,
)

__all__ = ["LocalObjectStore", "parse_file_url"]

_LOCAL_FILE_MODE = 0o644


class LocalObjectStore:
    """Objects as files under ``root``: the key is the path relative to it.

    Writes go to a temporary file in the target's directory (named ``.<name>.<random>.tmp``),
    are flushed and fsynced, renamed over the target with :func:`os.replace` and made durable by
    fsyncing the directory. A write that fails leaves the previous object (if any) untouched
    and removes its temporary file. Directories are created on demand and not removed by
    :meth:`delete`. The store records no digest of its own: :meth:`get` verifies the sha256 the
    caller recorded.

    Parameters
    ----------
    root
        Directory holding the objects; made absolute, created on the first write.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).absolute()

    def __repr__(self) -> str:
        return f"LocalObjectStore({self.url!r})"

    @property
    def url(self) -> str:
        return self.root.as_uri()

    def object_url(self, key: str) -> str:
        return self._path(key).as_uri()

    def put(self, key: str, data: bytes) -> StoredObject:
        path = self._path(key)
        digest = sha256_hex(data)
        try:
            self._ensure_directory(path.parent)
            self._write_atomically(path, data)
        except OSError as exc:
            raise ObjectStoreError(f"cannot write key {key!r} to {self.url}: {exc}") from exc
        return StoredObject(key=key, sha256=digest, nbytes=len(data))

    def get(self, key: str, sha256: str | None = None) -> bytes:
        expected = normalise_sha256(sha256)
        path = self._path(key)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            # A missing file, a file where a directory should be, or a directory (a "prefix"
            # of other keys): in every case no object has this key.
            raise ObjectNotFound(key, self.url) from None
        except OSError as exc:
            raise ObjectStoreError(f"cannot read key {key!r} from {self.url}: {exc}") from exc
        verify_sha256(key, data, expected, path.as_uri())
        return data

    def get_range(self, key: str, offset: int, length: int, sha256: str | None = None) -> bytes:
        check_byte_range(key, offset, length)
        expected = normalise_sha256(sha256)
        path = self._path(key)
        try:
            with path.open("rb") as file:
                file.seek(offset)
                data = file.read(length)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(key, self.url) from None
        except OSError as exc:
            raise ObjectStoreError(f"cannot read key {key!r} from {self.url}: {exc}") from exc
        verify_sha256(key, data, expected, range_url(path.as_uri(), offset, length))
        return data

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_dir():
            return
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise ObjectStoreError(f"cannot delete key {key!r} from {self.url}: {exc}") from exc

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def _ensure_directory(self, directory: Path) -> None:
        if directory.is_dir():
            return
        missing = []
        ancestor = directory
        while not ancestor.exists() and ancestor != ancestor.parent:
            missing.append(ancestor)
            ancestor = ancestor.parent
        directory.mkdir(parents=True, exist_ok=True)
        # A new directory survives a crash only once its parent's entry for it is on disk.
        for created in reversed(missing):
            _fsync_directory(created.parent)

    def _write_atomically(self, path: Path, data: bytes) -> None:
        fd, temp_name = tempfile.mkstemp(
            prefix=f".{path.name[:32]}.", suffix=".tmp", dir=path.parent
        )
        try:
            with os.fdopen(fd, "wb") as temp:
                os.fchmod(temp.fileno(), _LOCAL_FILE_MODE)
                temp.write(data)
                temp.flush()
                os.fsync(temp.fileno())
            os.replace(temp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_name)
            raise
        _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Flush a directory's entries (a rename or a new file in it) to disk."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def parse_file_url(url: str) -> Path:
    """The directory of a ``file:///absolute/dir`` (or ``file://localhost/…``) store URL.

    Raises
    ------
    InvalidStoreURL
        If the URL names another host or a relative path.
    """
    parts = urlsplit(url)
    netloc, path = parts.netloc, parts.path
    if netloc not in ("", "localhost"):
        raise InvalidStoreURL(
            f"object store URL {url!r}: names host {netloc!r}; a local directory needs an "
            f"absolute path with three slashes, e.g. file:///{netloc}{path}"
        )
    directory = unquote(path)
    if not directory.startswith("/"):
        raise InvalidStoreURL(
            f"object store URL {url!r}: {directory!r} is a relative path; "
            "expected file:///absolute/dir"
        )
    return Path(directory)
