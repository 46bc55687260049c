"""Decode processes of the radon worker: stored cutouts read, decoded and prepared in a pool.

With ``GALPIPE_RADON_DECODE_PROCESSES`` > 0 the radon worker splits each claimed batch into
chunks, and a pool of worker processes reads each chunk's objects from the store (checked
against their SHA-256), decodes the FITS and runs step 2 of the science core (sanitising, the
sky, neighbour masking, the circular mask: :func:`galpipe.science.core.prepare_stamps`). The
worker process gathers the prepared stamps and measures the whole batch at once
(:func:`galpipe.science.core.measure_prepared`). On a GPU node steps 3-5 take microseconds per
galaxy on the device, so the CPU's part (reading, decoding, neighbour masking) is what limits
the worker; the processes spread it over the node's cores while the one worker process keeps
the claim, the GPU and the transaction.

The children open their own object-store client (a client does not cross a process boundary)
and start with ``spawn``: the parent may already hold a CUDA context, which must not be forked.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from galpipe.db.cutouts import CutoutRecord
from galpipe.pipelines.base import Outcome
from galpipe.pipelines.cutout_packs import read_units
from galpipe.pipelines.stored_cutouts import DecodedCutout, load_read_unit
from galpipe.runtime.processes import single_blas_thread
from galpipe.science.core import RadonConfig, Stamps, prepare_stamps
from galpipe.storage import ObjectStore, open_object_store

__all__ = ["DecodeProcesses", "PreparedChunk", "prepare_stored"]

#: Object reads in flight per decode process (object-store latency, not CPU, bounds a read).
READ_THREADS_PER_PROCESS = 4


@dataclass(frozen=True)
class PreparedChunk:
    """One chunk of a batch after reading, decoding and step 2.

    Attributes
    ----------
    source_ids
        The galaxies whose cutouts were prepared, in the chunk's order.
    stamps
        Their stamps after step 2 (``None`` when no cutout of the chunk could be read).
    jacobians
        ``(n, 2, 2)`` pixel-to-sky Jacobians of those cutouts, degrees per pixel.
    failed
        The outcomes of the galaxies whose cutout could not be read (missing, corrupt, store
        unreachable), as :func:`galpipe.pipelines.stored_cutouts.load_stored_cutout` gives them.
    """

    source_ids: list[int]
    stamps: Stamps | None
    jacobians: np.ndarray
    failed: list[Outcome]


def prepare_stored(
    store: ObjectStore,
    config: RadonConfig,
    items: Sequence[tuple[int, CutoutRecord | None]],
    reads: ThreadPoolExecutor | None = None,
) -> PreparedChunk:
    """Read, decode and prepare (step 2) the stored cutouts of ``items`` (id, cutouts row).

    Parameters
    ----------
    store
        The object store the fetch pipeline wrote to.
    config
        The science choices (stamp size; neighbour masking).
    items
        ``(source_id, record)`` pairs; ``record`` is the galaxy's ``cutouts`` row or ``None``
        (the galaxy then fails: no cutout was recorded).
    reads
        Threads for the object reads (one at a time without).

    Returns
    -------
    PreparedChunk
    """

    # The galaxies of one pack are one read (one ranged GET), each checked on its own.
    units = read_units([record for _, record in items])

    def load(unit: list[int]) -> list[DecodedCutout | Outcome]:
        return load_read_unit(store, [items[i] for i in unit], errors=False)

    loaded: list[DecodedCutout | Outcome | None] = [None] * len(items)
    results_of_units = reads.map(load, units) if reads else map(load, units)
    for unit, results in zip(units, results_of_units, strict=True):
        for i, result in zip(unit, results, strict=True):
            loaded[i] = result
    good = [
        (sid, c) for (sid, _), c in zip(items, loaded, strict=True) if isinstance(c, DecodedCutout)
    ]
    failed = [c for c in loaded if c is not None and not isinstance(c, DecodedCutout)]
    if not good:
        return PreparedChunk([], None, np.zeros((0, 2, 2)), failed)
    images = np.stack([c.data for _, c in good])
    return PreparedChunk(
        source_ids=[sid for sid, _ in good],
        stamps=prepare_stamps(images, config, None),
        jacobians=np.stack([c.jacobian for _, c in good]),
        failed=failed,
    )


# The decode process's own store, config and read threads (set by _start_child).
_CHILD: tuple[ObjectStore, RadonConfig, ThreadPoolExecutor] | None = None


def _start_child(store_url: str, endpoint_url: str | None, config: RadonConfig) -> None:
    global _CHILD
    single_blas_thread()
    store = open_object_store(store_url, endpoint_url=endpoint_url)
    _CHILD = (store, config, ThreadPoolExecutor(READ_THREADS_PER_PROCESS, "decode-read"))


def _prepare_in_child(items: Sequence[tuple[int, CutoutRecord | None]]) -> PreparedChunk:
    if _CHILD is None:  # pragma: no cover - the pool's initializer always runs first
        raise RuntimeError("decode process used before its initializer ran")
    store, config, reads = _CHILD
    return prepare_stored(store, config, items, reads)


class DecodeProcesses:
    """A pool of decode processes (module docstring).

    Parameters
    ----------
    processes
        How many (at least 1).
    store_url, endpoint_url
        The object store, as ``GALPIPE_OBJECT_STORE`` and ``GALPIPE_S3_ENDPOINT_URL`` name it.
    config
        The science choices.
    """

    def __init__(
        self, processes: int, store_url: str, endpoint_url: str | None, config: RadonConfig
    ) -> None:
        if processes < 1:
            raise ValueError(f"processes: expected at least 1 decode process, got {processes}")
        self.processes = processes
        self._pool = ProcessPoolExecutor(
            processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_child,
            initargs=(store_url, endpoint_url, config),
        )

    def submit(
        self, items: Sequence[tuple[int, CutoutRecord | None]]
    ) -> list[Future[PreparedChunk]]:
        """Put ``items`` in flight as one chunk per process.

        A chunk holds whole reads (:func:`~galpipe.pipelines.cutout_packs.read_units`): the
        galaxies of one pack stay in one process, which reads them with one request.
        """
        size = max(1, -(-len(items) // self.processes))
        chunks: list[list[tuple[int, CutoutRecord | None]]] = [[]]
        for unit in read_units([record for _, record in items]):
            if len(chunks[-1]) >= size:
                chunks.append([])
            chunks[-1].extend(items[i] for i in unit)
        return [self._pool.submit(_prepare_in_child, chunk) for chunk in chunks if chunk]

    def close(self) -> None:
        """Stop the processes (after the chunks in flight)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
