"""The radon worker's decode processes: what each child process starts with."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from galpipe.pipelines.decode_processes import _start_child
from galpipe.science.core import RadonConfig
from tests.unit.runtime.test_processes import thread_pools


def test_a_decode_process_runs_one_blas_thread(tmp_path: Path) -> None:
    with ProcessPoolExecutor(
        1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_child,
        initargs=(f"file://{tmp_path}", None, RadonConfig()),
    ) as decoders:
        pools = decoders.submit(thread_pools).result()
    assert pools
    assert all(threads == 1 for _, threads in pools), pools
