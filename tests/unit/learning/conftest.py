"""Shared set-up of the learning tests: torch on two threads (CI has two cores), one export."""

from __future__ import annotations

import pytest
import torch

from galpipe.learning.networks import build_network
from galpipe.learning.onnx_export import export_onnx

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def small_cnn_onnx() -> bytes:
    """A freshly initialised 4-channel small CNN exported for 40x40 px images (seconds)."""
    torch.manual_seed(0)
    return export_onnx(build_network("small_cnn", 4), 4, 40)
