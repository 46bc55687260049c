"""Prediction from ONNX bytes: devices, batching, refusals, and no torch in the process."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from galpipe.errors import ConfigurationError, InputError
from galpipe.learning.inference import MorphologyModel
from galpipe.science.gz2 import N_ANSWERS, check_fractions


@pytest.fixture
def onnx_bytes(small_cnn_onnx: bytes) -> bytes:
    return small_cnn_onnx


def test_batches_do_not_change_the_prediction(onnx_bytes: bytes) -> None:
    images = np.random.default_rng(2).normal(size=(7, 4, 40, 40)).astype(np.float32)
    whole = MorphologyModel.from_bytes(onnx_bytes, "cpu", batch_size=256).predict(images)
    in_threes = MorphologyModel.from_bytes(
        onnx_bytes, "cpu", batch_size=3, intra_op_threads=1
    ).predict(images)
    np.testing.assert_allclose(in_threes, whole, rtol=0.0, atol=1e-6)
    check_fractions(whole, atol=1e-5)


def test_the_model_reads_its_input_shape(onnx_bytes: bytes) -> None:
    model = MorphologyModel.from_bytes(onnx_bytes, "cpu")
    assert (model.in_channels, model.size) == (4, 40)
    assert model.providers == ("CPUExecutionProvider",)
    assert model.predict(np.zeros((0, 4, 40, 40), np.float32)).shape == (0, N_ANSWERS)


def test_auto_takes_cuda_only_where_onnxruntime_has_it(onnx_bytes: bytes) -> None:
    model = MorphologyModel.from_bytes(onnx_bytes, "auto")
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    assert (model.providers[0] == "CUDAExecutionProvider") == has_cuda


def test_cuda_without_a_cuda_onnxruntime_is_a_configuration_error(onnx_bytes: bytes) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(ConfigurationError, match=r"'cuda' asked for.*CPUExecutionProvider"):
        MorphologyModel.from_bytes(onnx_bytes, "cuda")


def test_bad_inputs_are_refused(onnx_bytes: bytes) -> None:
    with pytest.raises(InputError, match="unknown inference device 'tpu'"):
        MorphologyModel.from_bytes(onnx_bytes, "tpu")
    with pytest.raises(InputError, match="batch_size must be a positive integer, got 0"):
        MorphologyModel.from_bytes(onnx_bytes, batch_size=0)
    with pytest.raises(InputError, match="the 9 bytes given are not a loadable ONNX model"):
        MorphologyModel.from_bytes(b"not onnx!")
    model = MorphologyModel.from_bytes(onnx_bytes, "cpu")
    with pytest.raises(InputError, match=r"shape \(N, 4, 40, 40\).*got \(2, 3, 40, 40\)"):
        model.predict(np.zeros((2, 3, 40, 40), np.float32))
    images = np.zeros((3, 4, 40, 40), np.float32)
    images[1, 2, 5, 5] = np.nan
    with pytest.raises(InputError, match="image 1 of 3 has values that are not finite"):
        model.predict(images)


def test_predicting_imports_no_torch() -> None:
    code = (
        "import sys, galpipe.learning.inference, galpipe.learning.metrics; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
