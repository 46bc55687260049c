"""The GPU science core (torch) against the numpy core, on torch's CPU device and, where one
exists, on CUDA: the same measurement of the same batch."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from galpipe.gpu.sinograms import PRECISIONS, TorchSinogramFitter, resolve_device
from galpipe.science.core import BatchMeasurement, RadonConfig, measure_batch
from galpipe.science.features import axial_difference
from galpipe.science.radon import RadonOperator
from tests.unit.science import SIZE, gaussian, operator_for

CUDA = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here (CI has none); CPU torch is tested"
)
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory) -> RadonOperator:
    return operator_for(tmp_path_factory)


def noisy_batch(n: int, size: int = SIZE, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy elongated Gaussians ``(n, 4, size, size)`` float32 with a blank band in one,
    and their true image angles."""
    rng = np.random.default_rng(seed)
    angles = rng.uniform(0.0, 180.0, n)
    images = np.empty((n, 4, size, size), dtype=np.float32)
    for i, beta in enumerate(angles):
        clean = gaussian(beta, q=rng.uniform(0.3, 0.9), sigma_major=rng.uniform(3, 6), size=size)
        flux = rng.uniform(5.0, 50.0, 4)[:, None, None]
        images[i] = clean[None] * flux + rng.normal(0.0, 1.0, (4, size, size))
    images[1, 2] = 0.0  # a missing band: blank, NaN fields
    return images, angles


def as_arrays(m: BatchMeasurement) -> dict[str, np.ndarray]:
    return {
        f.name: np.asarray(getattr(m, f.name))
        for f in dataclasses.fields(m)
        if f.name != "algo_version"
    }


def assert_same_measurement(a: BatchMeasurement, b: BatchMeasurement, rtol: float) -> None:
    for name, value in as_arrays(a).items():
        other = as_arrays(b)[name]
        assert value.shape == other.shape, name
        if np.issubdtype(value.dtype, np.floating):
            np.testing.assert_array_equal(np.isnan(value), np.isnan(other), err_msg=name)
            np.testing.assert_allclose(value, other, rtol=rtol, atol=rtol, err_msg=name)
        else:
            np.testing.assert_array_equal(value, other, err_msg=name)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "config",
    [
        RadonConfig(mask_neighbours=False),
        RadonConfig(mask_neighbours=False, pooling="max", estimator="moments"),
        RadonConfig(mask_neighbours=True),
    ],
    ids=["top-peak", "max-moments", "masking"],
)
def test_float64_on_torch_is_the_numpy_measurement(
    operator: RadonOperator, device: str, config: RadonConfig
) -> None:
    images, _ = noisy_batch(24)
    cpu = measure_batch(images, config, operator, chunk_size=7)
    fitter = TorchSinogramFitter(operator, device=device, precision="float64")
    gpu = measure_batch(images, config, operator, chunk_size=7, sinogram_fitter=fitter)
    assert np.isnan(cpu.band_angle_image_deg[1, 2])  # the blank band stayed blank
    assert_same_measurement(cpu, gpu, rtol=1e-7)


@pytest.mark.parametrize("precision", ["float32", "tf32"])
def test_reduced_precision_keeps_the_angles(operator: RadonOperator, precision: str) -> None:
    images, truth = noisy_batch(32)
    config = RadonConfig(mask_neighbours=False)
    exact = measure_batch(images, config, operator)
    fitter = TorchSinogramFitter(operator, device="cpu", precision=precision)  # type: ignore[arg-type]
    reduced = measure_batch(images, config, operator, sinogram_fitter=fitter)
    change = axial_difference(exact.angle_image_deg, reduced.angle_image_deg)
    assert np.nanmax(change) < 1e-3
    # ...and both follow the truth (an independent check that the angles mean something).
    assert np.nanmedian(axial_difference(reduced.angle_image_deg, truth)) < 2.0


def test_odd_stamp_size_pools_the_middle_position(tmp_path_factory: pytest.TempPathFactory) -> None:
    op = operator_for(tmp_path_factory, size=21)
    images, _ = noisy_batch(6, size=21)
    config = RadonConfig(size=21, mask_neighbours=False)
    fitter = TorchSinogramFitter(op, device="cpu")
    assert_same_measurement(
        measure_batch(images, config, op),
        measure_batch(images, config, op, sinogram_fitter=fitter),
        rtol=1e-7,
    )


def test_empty_batch(operator: RadonOperator) -> None:
    fitter = TorchSinogramFitter(operator, device="cpu")
    empty = np.zeros((0, 4, SIZE, SIZE), dtype=np.float32)
    m = measure_batch(empty, RadonConfig(), operator, sinogram_fitter=fitter)
    assert m.angle_image_deg.shape == (0,)
    assert m.band_angle_image_deg.shape == (0, 4)


def test_refuses_what_it_cannot_do(
    operator: RadonOperator, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with pytest.raises(ValueError, match="precision: expected one of"):
        TorchSinogramFitter(operator, device="cpu", precision="float16")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="device: expected 'cpu' or 'cuda"):
        resolve_device("meta")
    with pytest.raises(ValueError, match="is not a torch device name"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees 0 CUDA device"):
            TorchSinogramFitter(operator, device="cuda")
    fitter = TorchSinogramFitter(operator, device="cpu")
    other = operator_for(tmp_path_factory, size=21)
    images = np.zeros((2, 4, 21, 21), dtype=np.float32)
    with pytest.raises(ValueError, match="this fitter holds the operator of size 40"):
        measure_batch(images, RadonConfig(size=21), other, sinogram_fitter=fitter)
    assert set(PRECISIONS) == {"float64", "float32", "tf32", "bfloat16"}
