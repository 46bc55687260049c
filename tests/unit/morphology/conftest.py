"""Shared set-up of the morphology tests: torch, where installed, on two threads (CI has two
cores)."""

from __future__ import annotations

try:
    import torch
except ImportError:  # the data sets need no torch; the training tests import it themselves
    pass
else:
    torch.set_num_threads(2)
