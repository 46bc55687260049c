"""An :class:`~galpipe.storage.base.ObjectStore` that counts its calls in the Prometheus metrics.

Wrap any backend (S3 or a local directory) once where the process opens its store; every
call is then counted by operation and outcome in ``galpipe_object_store_operations_total`` and
timed in ``galpipe_object_store_operation_seconds``, which feed the *object store errors*
alert and the storage dashboard. Outcomes are the conditions callers already tell apart:
``ok``, ``not_found`` (:class:`ObjectNotFound`), ``checksum_mismatch``
(:class:`ChecksumMismatch`) and ``error`` (any other :class:`ObjectStoreError`: the store
itself failed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from galpipe.runtime import metrics
from galpipe.storage.base import ChecksumMismatch, ObjectNotFound, ObjectStore, StoredObject

OPERATIONS = ("put", "get", "get_range", "exists", "delete")


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, ObjectNotFound):
        return "not_found"
    if isinstance(exc, ChecksumMismatch):
        return "checksum_mismatch"
    return "error"


class InstrumentedObjectStore:
    """``store`` with every call counted and timed; otherwise identical (same errors).

    Parameters
    ----------
    store
        The backend to delegate to.
    clock
        Monotonic clock, seconds; injected for tests.
    """

    def __init__(self, store: ObjectStore, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = store
        self._clock = clock
        for operation in OPERATIONS:
            # Zero-valued series from the start, so that error ratios are defined at once.
            metrics.OBJECT_STORE_OPERATIONS.labels(operation, "ok")
            metrics.OBJECT_STORE_OPERATIONS.labels(operation, "error")

    def __repr__(self) -> str:
        return f"InstrumentedObjectStore({self.inner!r})"

    @property
    def url(self) -> str:
        return self.inner.url

    def object_url(self, key: str) -> str:
        return self.inner.object_url(key)

    @contextmanager
    def _counted(self, operation: str) -> Iterator[None]:
        started = self._clock()
        outcome = "ok"
        try:
            yield
        except Exception as exc:
            outcome = _outcome(exc)
            raise
        finally:
            metrics.OBJECT_STORE_SECONDS.labels(operation).observe(self._clock() - started)
            metrics.OBJECT_STORE_OPERATIONS.labels(operation, outcome).inc()

    def put(self, key: str, data: bytes) -> StoredObject:
        with self._counted("put"):
            return self.inner.put(key, data)

    def get(self, key: str, sha256: str | None = None) -> bytes:
        with self._counted("get"):
            data = self.inner.get(key, sha256)
        metrics.OBJECT_STORE_READ_BYTES.inc(len(data))
        return data

    def get_range(self, key: str, offset: int, length: int, sha256: str | None = None) -> bytes:
        with self._counted("get_range"):
            data = self.inner.get_range(key, offset, length, sha256)
        metrics.OBJECT_STORE_READ_BYTES.inc(len(data))
        return data

    def exists(self, key: str) -> bool:
        with self._counted("exists"):
            return self.inner.exists(key)

    def delete(self, key: str) -> None:
        with self._counted("delete"):
            self.inner.delete(key)
