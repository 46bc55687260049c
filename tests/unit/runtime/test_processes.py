"""Children of process pools: one BLAS thread each."""

from __future__ import annotations

import importlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from threadpoolctl import threadpool_info

from galpipe.runtime.processes import single_blas_thread


def thread_pools() -> list[tuple[str, int]]:
    """This process's BLAS/OpenMP thread pools, (API, threads), numpy's and scipy's loaded."""
    for library in ("numpy", "scipy.linalg"):
        importlib.import_module(library)
    return [(pool["internal_api"], pool["num_threads"]) for pool in threadpool_info()]


def test_the_initializer_limits_the_pools_loaded_before_and_after_it() -> None:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as plain:
        unlimited = plain.submit(thread_pools).result()
    with ProcessPoolExecutor(1, mp_context=context, initializer=single_blas_thread) as pool:
        limited = pool.submit(thread_pools).result()
    assert limited
    assert {api for api, _ in limited} == {api for api, _ in unlimited}
    assert all(threads == 1 for _, threads in limited), limited
