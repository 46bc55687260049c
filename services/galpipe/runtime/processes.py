"""Children of process pools: one BLAS thread each, since the pool already uses every core."""

from __future__ import annotations

import os

from threadpoolctl import threadpool_limits

__all__ = ["single_blas_thread"]

#: Read by OpenBLAS, OpenMP and MKL when a library that uses them is loaded.
_ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def single_blas_thread() -> None:
    """Limit this process's BLAS and OpenMP thread pools to one thread each.

    A process pool's initializer (the radon worker's decode processes, the validation's
    pools). A library loaded before it runs (numpy, when the initializer's own module imports
    it: in a ``spawn`` child that happens before any initializer) has started its threads
    already, so the running pools are limited (``threadpoolctl``); one loaded later (scipy's
    own OpenBLAS, on first use of ``scipy.linalg``) reads the environment variables set here.
    """
    os.environ.update(_ONE_THREAD)
    threadpool_limits(limits=1)
