"""Which science core a radon worker builds from GALPIPE_RADON_DEVICE / _PRECISION."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from galpipe.errors import ConfigurationError
from galpipe.gpu.sinograms import TorchSinogramFitter
from galpipe.pipelines.radon import gpu_sinogram_fitter
from galpipe.science.radon import RadonOperator
from galpipe.settings import Settings
from tests.unit.science import operator_for


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory) -> RadonOperator:
    return operator_for(tmp_path_factory)


def settings(**env: str) -> Settings:
    return Settings.from_env({f"GALPIPE_{k}": v for k, v in env.items()})


def test_cpu_is_the_numpy_core(operator: RadonOperator) -> None:
    assert settings().radon_device == "cpu"
    assert gpu_sinogram_fitter(settings(), operator) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_fails_at_start_naming_the_setting(operator: RadonOperator) -> None:
    with pytest.raises(ConfigurationError, match=r"GALPIPE_RADON_DEVICE=cuda: .*0 CUDA device"):
        gpu_sinogram_fitter(settings(RADON_DEVICE="cuda"), operator)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here (CI has none)")
def test_cuda_builds_the_torch_core_in_the_set_precision(operator: RadonOperator) -> None:
    fitter = gpu_sinogram_fitter(settings(RADON_DEVICE="cuda", RADON_PRECISION="float32"), operator)
    assert isinstance(fitter, TorchSinogramFitter)
    assert fitter.precision == "float32"
    assert fitter.device.type == "cuda"


def test_bad_values_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="GALPIPE_RADON_DEVICE"):
        settings(RADON_DEVICE="tpu")
    with pytest.raises(ConfigurationError, match="GALPIPE_RADON_PRECISION"):
        settings(RADON_PRECISION="bfloat16")
