"""Steps 3-5 of the paper (transform, pooling, sinusoid fits) on a PyTorch device.

:class:`TorchSinogramFitter` is a :data:`galpipe.science.core.FitSinograms`: pass it to
``measure_batch(..., sinogram_fitter=...)`` and the batch's transform, pooling, projection
variance, sinusoid fits and window-drop errors run on the device, while step 2 (sanitising,
the sky, neighbour masking: sep, on the CPU) and step 6 (combining ``B`` numbers per galaxy)
stay where they were. The results are those of :func:`galpipe.science.core.fit_sinograms`:

- ``precision="float64"``: the same products in the same dtype, equal to rounding (~1e-12
  relative in the fits);
- ``"float32"``: the operator and the products in float32 (the numpy path's float32 option),
  the fits in float64;
- ``"tf32"``: float32 with TensorFloat-32 matrix products (10-bit mantissa inputs, float32
  accumulation) on Ampere and later GPUs: about 8x the float32 rate. Whether its angles stay
  within 0.05 degrees (median) of float64 is measured on the truth population by
  ``bench/radon_gpu.py``, which is what allows it as the GPU worker's default;
- ``"bfloat16"``: bfloat16 products (8-bit mantissa), offered for the benchmark's comparison.

The curves are pooled from the folded sinogram halves exactly as on the CPU
(:class:`galpipe.science.radon.FoldedSinogram`): ``max`` as ``even + |odd|``, ``top`` as the
mean of the ``k`` largest unfolded values, the projection variance from the halves' moments.
The fits are the float64 closed forms of :func:`galpipe.science.features.fit_sinusoid` and
:func:`galpipe.science.features.window_drop_error`, on the device.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import numpy as np
import torch

from galpipe.science import features
from galpipe.science.core import RadonConfig, SinogramFits
from galpipe.science.radon import RadonOperator

__all__ = ["PRECISIONS", "Precision", "TorchSinogramFitter", "resolve_device"]

Precision = Literal["float64", "float32", "tf32", "bfloat16"]
#: The ``precision`` values :class:`TorchSinogramFitter` accepts.
PRECISIONS: tuple[Precision, ...] = ("float64", "float32", "tf32", "bfloat16")
_PRODUCT_DTYPE = {
    "float64": torch.float64,
    "float32": torch.float32,
    "tf32": torch.float32,
    "bfloat16": torch.bfloat16,
}


def resolve_device(device: str) -> torch.device:
    """The torch device named ``device`` ("cpu", "cuda", "cuda:1"), checked to exist.

    Raises
    ------
    ValueError
        If the name is not a device or names a CUDA device this process does not have.
    """
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device: {device!r} is not a torch device name ({exc})") from exc
    if resolved.type == "cuda":
        count = torch.cuda.device_count()
        index = resolved.index or 0
        if index >= count:
            raise ValueError(
                f"device: {device!r} asked for CUDA device {index}, "
                f"but this process sees {count} CUDA device(s)"
            )
    elif resolved.type != "cpu":
        raise ValueError(f"device: expected 'cpu' or 'cuda[:N]', got {device!r}")
    return resolved


@dataclass(frozen=True)
class _SinusoidDesign:
    """The least-squares design of :func:`features.fit_sinusoid`, on the device (float64)."""

    keep: torch.Tensor  # (A',) indices of the angles kept (one per angle mod 180)
    design: torch.Tensor  # (A', 3)
    pinv: torch.Tensor  # (3, A')
    normal_inv: np.ndarray  # (3, 3), host: its entries are scalars in the delta method
    angles: np.ndarray  # (A',) kept angles, degrees, on the host (the peaks index it there)

    @classmethod
    def for_angles(cls, angles_deg: np.ndarray, device: torch.device) -> _SinusoidDesign:
        keep = features._unique_period_indices(angles_deg)
        if keep.size < 4:
            raise ValueError(
                f"angles_deg: need at least 4 distinct angles mod 180, got {keep.size}"
            )
        kept = np.asarray(angles_deg, dtype=np.float64)[keep]
        theta = np.deg2rad(kept)
        design = np.stack([np.ones_like(theta), np.cos(2 * theta), np.sin(2 * theta)], axis=1)

        def on_device(values: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(values, dtype=torch.float64, device=device)

        return cls(
            keep=torch.as_tensor(keep, dtype=torch.long, device=device),
            design=on_device(design),
            pinv=on_device(np.linalg.pinv(design)),
            normal_inv=np.linalg.inv(design.T @ design),
            angles=kept,
        )


def _fit_sinusoid(curves: torch.Tensor, d: _SinusoidDesign) -> features.SinusoidFit:
    """:func:`features.fit_sinusoid` of float64 ``(..., A)`` curves on the device; numpy out."""
    y = curves.index_select(-1, d.keep)
    coef = y @ d.pinv.T
    residual = y - coef @ d.design.T
    n_keep = y.shape[-1]
    dof = n_keep - 3
    sum_sq = (residual * residual).sum(-1)
    res_var = sum_sq / dof
    lag_one = (residual * torch.roll(residual, 1, dims=-1)).sum(-1)
    safe_sum = torch.where(sum_sq > 0, sum_sq, torch.ones_like(sum_sq))
    rho = torch.clamp(lag_one / safe_sum, 0.0, features.MAX_RHO)
    cov_scale = res_var * (1.0 + rho) / (1.0 - rho)
    c0, c1, c2 = coef[..., 0], coef[..., 1], coef[..., 2]
    amplitude = torch.hypot(c1, c2)
    theta0 = torch.remainder(torch.rad2deg(0.5 * torch.atan2(c2, c1)), 180.0)
    n_inv = d.normal_inv
    v11, v12, v22 = (cov_scale * float(n_inv[i, j]) for i, j in ((1, 1), (1, 2), (2, 2)))
    b2 = amplitude**2
    positive = b2 > 0
    safe_b2 = torch.where(positive, b2, torch.ones_like(b2))
    var_theta = 0.25 * (c2**2 * v11 - 2 * c1 * c2 * v12 + c1**2 * v22) / safe_b2**2
    max_err = features.MAX_ANGLE_ERR_DEG
    theta_err = torch.where(
        positive,
        torch.clamp(torch.rad2deg(torch.sqrt(torch.clamp(var_theta, min=0.0))), max=max_err),
        torch.full_like(var_theta, max_err),
    )
    var_b = torch.where(positive, (c1**2 * v11 + 2 * c1 * c2 * v12 + c2**2 * v22) / safe_b2, v11)
    return features.SinusoidFit(
        offset=_host(c0),
        amplitude=_host(amplitude),
        theta0_deg=_host(torch.where(positive, theta0, torch.zeros_like(theta0))),
        theta0_err_deg=_host(theta_err),
        amplitude_err=_host(torch.sqrt(torch.clamp(var_b, min=0.0))),
        residual_rms=_host(torch.sqrt(res_var * dof / n_keep)),
    )


def _median(values: torch.Tensor) -> torch.Tensor:
    """numpy's median over the last axis (the mean of the two middle values for even sizes);
    ``torch.median`` returns the lower one."""
    ordered = torch.sort(values, dim=-1).values
    n = ordered.shape[-1]
    if n % 2 == 1:
        return ordered[..., n // 2]
    return 0.5 * (ordered[..., n // 2 - 1] + ordered[..., n // 2])


def _window_drop_error(
    curves: torch.Tensor, d: _SinusoidDesign, windows_deg: tuple[float, ...]
) -> features.WindowError:
    """:func:`features.window_drop_error` of float64 ``(..., A)`` curves on the device."""
    angles = d.angles
    n = angles.size
    step = 180.0 / n
    if not np.allclose(np.mod(angles - angles[0], 180.0), np.arange(n) * step, atol=1e-6):
        raise ValueError("angles_deg: the window-drop error needs a uniform grid over 180 degrees")
    y = curves.index_select(-1, d.keep)
    peak = torch.argmax(y, dim=-1)
    y_peak = torch.gather(y, -1, peak[..., None])[..., 0]
    second = torch.roll(y, -1, dims=-1) - 2 * y + torch.roll(y, 1, dims=-1)
    mad = _median(torch.abs(second - _median(second)[..., None]))
    noise = torch.maximum(1.4826 * mad / np.sqrt(6.0), 1e-7 * torch.abs(y_peak))
    steps_np = np.maximum(1, np.round(np.asarray(windows_deg, dtype=np.float64) / step))
    steps = torch.as_tensor(steps_np.astype(np.int64), device=y.device)
    idx_plus = torch.remainder(peak[..., None] + steps, n)
    idx_minus = torch.remainder(peak[..., None] - steps, n)
    drop = y_peak[..., None] - 0.5 * (
        torch.gather(y, -1, idx_plus) + torch.gather(y, -1, idx_minus)
    )
    width = torch.as_tensor(steps_np * step, dtype=torch.float64, device=y.device)
    positive = drop > 0
    ratio = noise[..., None] / torch.where(positive, drop, torch.ones_like(drop))
    max_err = features.MAX_ANGLE_ERR_DEG
    per_window = torch.where(
        positive,
        torch.clamp(width * torch.sqrt(ratio), max=max_err),
        torch.full_like(drop, max_err),
    )
    mean = per_window.mean(-1)
    return features.WindowError(
        mean_deg=_host(mean),
        # The population standard deviation written out: torch's std warns on an empty batch.
        std_deg=_host((per_window - mean[..., None]).square().mean(-1).sqrt()),
        per_window_deg=_host(per_window),
        peak_deg=np.mod(angles[_host(peak)], 180.0),
        noise=_host(noise),
    )


def _host(values: torch.Tensor) -> np.ndarray:
    return values.detach().cpu().numpy()


class TorchSinogramFitter:
    """Steps 3-5 of :func:`galpipe.science.core.measure_batch` on a PyTorch device.

    Holds the operator's two halves (the rows inside the circular mask) on the device; one
    instance serves every batch of its operator and config.

    Parameters
    ----------
    operator : RadonOperator
        The transform (its float32-stored entries are moved to the device).
    device : str
        "cuda", "cuda:N" or "cpu" (the CPU path of torch: for tests and for machines without
        a GPU).
    precision : {"float64", "float32", "tf32", "bfloat16"}
        dtype of the transform's products (module docstring). Pooling sums and the fits are
        float64 in every case.

    Raises
    ------
    ValueError
        For an unknown precision or a device this process does not have.
    """

    def __init__(
        self, operator: RadonOperator, device: str = "cuda", precision: Precision = "float64"
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
        self.device = resolve_device(device)
        self.precision: Precision = precision
        self.operator = operator
        self._dtype = _PRODUCT_DTYPE[precision]
        layout = operator._layout
        rows = slice(0, layout.n_inside)  # measure_batch applies the circular mask first

        def on_device(values: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(values), device=self.device).to(dtype)

        self._first = on_device(layout.half_pixels[rows], torch.long)
        self._second = on_device(layout.partner_pixels[rows], torch.long)
        self._sym = on_device(operator.sym[rows].astype(np.float32), self._dtype)
        self._anti = on_device(operator.anti[rows].astype(np.float32), self._dtype)
        self._n_pos = layout.n_pos
        self._design = _SinusoidDesign.for_angles(operator.angles, self.device)
        size = operator.size
        pos = np.arange(self._n_pos, dtype=np.float64) - (size - 1) / 2.0
        mult = np.full(self._n_pos, 2.0)
        if size % 2 == 1:
            mult[-1] = 1.0
        # (n_pos, 3): the total, first and second moments of a folded profile in one product.
        moments = np.stack([mult, mult * pos, mult * pos**2], axis=1)
        self._moments = torch.as_tensor(moments, dtype=torch.float64, device=self.device)

    def _products(self, stamps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Folded sinogram halves ``(n, B, A, n_pos)`` of float32 stamps ``(n, B, S, S)``."""
        size = self.operator.size
        flat = stamps.reshape(*stamps.shape[:2], size * size)
        first = flat.index_select(-1, self._first).to(self._dtype)
        second = flat.index_select(-1, self._second).to(self._dtype)
        tf32 = self.precision == "tf32"
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            even = (first + second) @ self._sym
            odd = (first - second) @ self._anti
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
        shape = (*stamps.shape[:2], self.operator.angles.size, self._n_pos)
        return even.reshape(shape).to(torch.float64), odd.reshape(shape).to(torch.float64)

    def _pooled(self, even: torch.Tensor, odd: torch.Tensor, config: RadonConfig) -> torch.Tensor:
        """Step 4 from the folded halves: ``(..., A)`` curves (see the module docstring)."""
        if config.pooling == "max":
            return (even + torch.abs(odd)).amax(-1)
        size = self.operator.size
        n_low = size // 2
        parts = [even[..., :n_low] + odd[..., :n_low], even[..., :n_low] - odd[..., :n_low]]
        if size % 2 == 1:
            parts.append(even[..., n_low:])
        # The CPU path pools the float32 sinogram (FoldedSinogram.unfold).
        unfolded = torch.cat(parts, dim=-1).to(torch.float32)
        k = max(1, round(config.top_fraction * size))
        top = torch.topk(unfolded, k, dim=-1, sorted=False).values
        return top.to(torch.float64).mean(-1).to(torch.float32).to(torch.float64)

    def _variance(self, even: torch.Tensor, odd: torch.Tensor) -> torch.Tensor:
        """:func:`features.projection_variance_folded` of the halves: ``(..., A)``."""
        total = even @ self._moments[:, 0]
        first = odd @ self._moments[:, 1]
        second = even @ self._moments[:, 2]
        filled = total > 0
        safe = torch.where(filled, total, torch.ones_like(total))
        mean = first / safe
        spread = torch.clamp(second / safe - mean**2, min=0.0)
        return torch.where(filled, spread, torch.zeros_like(spread))

    def curves(
        self, stamps: torch.Tensor, weights: torch.Tensor, config: RadonConfig
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Steps 3-4 of one chunk on the device: pooled and variance curves of the bands
        ``(n, B, A)`` and of the band stack ``(n, A)`` (its variance only for "moments")."""
        even, odd = self._products(stamps)
        stack_even = torch.einsum("nb,nbak->nak", weights, even)
        stack_odd = torch.einsum("nb,nbak->nak", weights, odd)
        stack_variance = None
        if config.estimator == "moments":
            stack_variance = self._variance(stack_even, stack_odd)
        return (
            self._pooled(even, odd, config),
            self._variance(even, odd),
            self._pooled(stack_even, stack_odd, config),
            stack_variance,
        )

    def __call__(
        self,
        images: np.ndarray,
        weights: np.ndarray,
        operator: RadonOperator,
        config: RadonConfig,
        chunk_size: int,
    ) -> SinogramFits:
        """:data:`galpipe.science.core.FitSinograms` on the device (arguments as there)."""
        if operator is not self.operator and not (
            operator.size == self.operator.size
            and operator.order == self.operator.order
            and np.array_equal(operator.angles, self.operator.angles)
        ):
            raise ValueError(
                f"operator: this fitter holds the operator of size {self.operator.size}, "
                f"order {self.operator.order}, {self.operator.angles.size} angles; "
                f"got size {operator.size}, order {operator.order}, {operator.angles.size}"
            )
        if chunk_size < 1:
            raise ValueError(
                f"chunk_size: expected a positive number of galaxies, got {chunk_size}"
            )
        n = images.shape[0]
        parts: list[SinogramFits] = []
        with torch.inference_mode():
            for start in range(0, max(n, 1), chunk_size):
                stop = min(n, start + chunk_size)
                stamps = torch.as_tensor(np.ascontiguousarray(images[start:stop], np.float32))
                w = torch.as_tensor(np.asarray(weights[start:stop], np.float64))
                parts.append(self.fit_chunk(stamps.to(self.device), w.to(self.device), config))
        return _concatenate(parts)

    def fit_chunk(
        self, stamps: torch.Tensor, weights: torch.Tensor, config: RadonConfig
    ) -> SinogramFits:
        """Steps 3-5 of one chunk already on the device: float32 stamps ``(n, B, S, S)``
        after step 2 and float64 weights ``(n, B)``; the fits come back as numpy."""
        pooled, variance, stack_pooled, stack_variance = self.curves(stamps, weights, config)
        d = self._design
        return SinogramFits(
            peak=_fit_sinusoid(pooled, d),
            window=_window_drop_error(pooled, d, config.windows_deg),
            moments=_fit_sinusoid(variance, d),
            stack_peak=_fit_sinusoid(stack_pooled, d),
            stack_moments=None if stack_variance is None else _fit_sinusoid(stack_variance, d),
        )


def _joined_fit(items: list[features.SinusoidFit]) -> features.SinusoidFit:
    return features.SinusoidFit(
        **{f.name: np.concatenate([getattr(i, f.name) for i in items]) for f in fields(items[0])}
    )


def _concatenate(parts: list[SinogramFits]) -> SinogramFits:
    """One :class:`SinogramFits` of the chunks' fits, in order."""
    if len(parts) == 1:
        return parts[0]
    windows = [p.window for p in parts]
    stack_moments = [p.stack_moments for p in parts]
    return SinogramFits(
        peak=_joined_fit([p.peak for p in parts]),
        window=features.WindowError(
            **{
                f.name: np.concatenate([getattr(w, f.name) for w in windows])
                for f in fields(windows[0])
            }
        ),
        moments=_joined_fit([p.moments for p in parts]),
        stack_peak=_joined_fit([p.stack_peak for p in parts]),
        stack_moments=(
            None
            if any(m is None for m in stack_moments)
            else _joined_fit([m for m in stack_moments if m is not None])
        ),
    )
