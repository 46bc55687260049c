"""The radon worker's decode processes: what each child process starts with."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from threadpoolctl import threadpool_info

from galpipe.pipelines.decode_processes import _start_child
from galpipe.science.core import RadonConfig


def _thread_pools() -> list[tuple[str, int]]:
    return [(pool["internal_api"], pool["num_threads"]) for pool in threadpool_info()]


def test_a_decode_process_runs_one_blas_thread(tmp_path: Path) -> None:
    # numpy's BLAS starts its threads when numpy is imported, before the initializer runs:
    # the limit must hold in the child, not only in its environment.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as plain:
        unlimited = plain.submit(_thread_pools).result()
    with ProcessPoolExecutor(
        1,
        mp_context=context,
        initializer=_start_child,
        initargs=(f"file://{tmp_path}", None, RadonConfig()),
    ) as decoders:
        limited = decoders.submit(_thread_pools).result()
    assert limited
    assert {api for api, _ in limited} == {api for api, _ in unlimited}
    assert all(threads == 1 for _, threads in limited), limited
