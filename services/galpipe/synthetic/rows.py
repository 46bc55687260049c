"""Records of arrays with one row per galaxy, and samples drawn in seeded chunks.

The synthetic samplers (:mod:`galpipe.synthetic.galaxy_zoo`, :mod:`galpipe.synthetic.photoz_sky`)
describe a population as a frozen dataclass whose every field is an array with one row per
galaxy, and draw large samples chunk by chunk, each chunk from its own child of the root seed,
so that a sample is the same whatever the number of processes that drew it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = ["check_rows", "concatenate_rows", "run_in_chunks", "take_rows"]

_Record = TypeVar("_Record")
_Result = TypeVar("_Result")


def check_rows(record: Any, anchor: str, error: type[Exception]) -> int:
    """The number of rows of ``record``, every field having as many as field ``anchor``.

    Raises
    ------
    error
        Naming the first field that is not an array of that many rows.
    """
    n = len(getattr(record, anchor))
    for f in fields(record):
        value = np.asarray(getattr(record, f.name))
        if value.ndim == 0 or value.shape[0] != n:
            raise error(
                f"{type(record).__name__}.{f.name} has shape {value.shape}; every attribute "
                f"needs {n} rows (as {anchor})"
            )
    return n


def take_rows(record: _Record, index: npt.NDArray[np.integer] | npt.NDArray[np.bool_]) -> _Record:
    """The rows of ``record`` at ``index`` (integer indices or a boolean mask), in that order."""
    return type(record)(
        **{f.name: np.asarray(getattr(record, f.name))[index] for f in fields(record)}  # type: ignore[arg-type]
    )


def concatenate_rows(parts: Sequence[_Record]) -> _Record:
    """The rows of ``parts`` one after the other (at least one part)."""
    first = parts[0]
    return type(first)(
        **{
            f.name: np.concatenate([getattr(p, f.name) for p in parts])
            for f in fields(first)  # type: ignore[arg-type]
        }
    )


def run_in_chunks(
    work: Callable[[int, int, np.random.SeedSequence], _Result],
    n: int,
    chunk: int,
    seed: int,
    processes: int,
) -> list[_Result]:
    """``work(first, count, seed)`` for each chunk of at most ``chunk`` of ``n`` items, in order.

    Chunk ``k`` covers items ``first = k * chunk`` onwards and draws from the ``k``-th child of
    ``numpy.random.SeedSequence(seed)``, so the results do not depend on ``processes``, the
    number of worker processes the chunks are spread over (1: this process). ``work`` must be
    picklable when ``processes > 1``: a module-level function or a ``functools.partial`` of one.
    """
    starts = range(0, n, chunk)
    seeds = np.random.SeedSequence(seed).spawn(len(starts))
    counts = [min(chunk, n - first) for first in starts]
    if processes == 1 or len(counts) <= 1:
        return [work(*job) for job in zip(starts, counts, seeds, strict=True)]
    with ProcessPoolExecutor(max_workers=min(processes, len(counts))) as pool:
        return list(pool.map(work, starts, counts, seeds))
