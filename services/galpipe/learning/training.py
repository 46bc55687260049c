"""(torch) Training a morphology network: the paper's schedule, augmentations and checkpoints.

The schedule of the GZ2 EfficientNet literature: Adam at a learning rate of 1.5e-4, reduced
by a factor 0.8 when the validation RMSE has not improved for 4 epochs, training stopped after
10 epochs without improvement; optionally a few first epochs train only the tail (the backbone
frozen, for ImageNet-initialised networks), then every layer. The loss is the mean square
error of the tree-normalised fractions (the square of the Kaggle RMSE).

The problem is rotation invariant, so each training image is rotated by a uniformly random
angle and mirrored with probability 1/2 (rotation and one mirror reach every orientation and
flip). Mixed precision (float16 autocast with a gradient scaler) is used on CUDA only.

Seeded runs are reproducible on the CPU: shuffling, augmentation and dropout draw from
generators seeded by ``TrainingConfig.seed``, whose states the checkpoints keep, so a run
resumed from its last checkpoint continues as if never interrupted.

Data come as numpy arrays held in memory (:class:`InMemoryDataset`); reading them from files
is :mod:`galpipe.catalog`'s job.
"""

from __future__ import annotations

import math
import os
import pickle
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from galpipe.errors import CommandError, InputError
from galpipe.learning.networks import MorphologyNetwork
from galpipe.science.gz2 import N_ANSWERS, rmse

__all__ = [
    "BEST_CHECKPOINT",
    "LAST_CHECKPOINT",
    "EpochRecord",
    "InMemoryDataset",
    "TrainingConfig",
    "TrainingResult",
    "augment_batch",
    "train",
]

#: File names of the checkpoints in the checkpoint directory.
BEST_CHECKPOINT = "best.pt"
LAST_CHECKPOINT = "last.pt"


@dataclass(frozen=True)
class TrainingConfig:
    """How to train; the defaults are the paper's schedule.

    Attributes
    ----------
    learning_rate : float
        Adam's initial learning rate.
    plateau_factor : float
        Factor applied to the learning rate on a plateau of the validation RMSE, in (0, 1).
    plateau_patience : int
        Epochs without improvement before the learning rate is reduced.
    early_stop_patience : int
        Epochs without improvement before training stops.
    frozen_epochs : int
        First epochs that train only the tail (the backbone frozen, its batch norms in
        inference mode); 0 trains every layer from the start.
    max_epochs : int
        Epochs at most, frozen ones included.
    batch_size : int
        Images per optimisation step.
    eval_batch_size : int
        Images per forward pass when computing the validation RMSE.
    seed : int
        Seed of the shuffling, augmentation, dropout and stochastic depth.
    augment : bool
        Rotate and mirror each training image at random.
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or any torch device string.
    max_seconds : float or None
        Wall-clock budget of one call of :func:`train`, in s: no epoch is started that the
        longest epoch so far says would end past it (a batch job's time limit; ``resume``
        continues where it stopped, with a fresh budget). None: no limit.
    """

    learning_rate: float = 1.5e-4
    plateau_factor: float = 0.8
    plateau_patience: int = 4
    early_stop_patience: int = 10
    frozen_epochs: int = 0
    max_epochs: int = 100
    batch_size: int = 64
    eval_batch_size: int = 256
    seed: int = 0
    augment: bool = True
    device: str = "auto"
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        if not (self.learning_rate > 0.0 and math.isfinite(self.learning_rate)):
            raise InputError(f"learning_rate must be a positive number, got {self.learning_rate!r}")
        if not 0.0 < self.plateau_factor < 1.0:
            raise InputError(f"plateau_factor must lie in (0, 1), got {self.plateau_factor!r}")
        for name in ("plateau_patience", "early_stop_patience", "frozen_epochs"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("max_epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.max_seconds is not None and not (
            self.max_seconds > 0.0 and math.isfinite(self.max_seconds)
        ):
            raise InputError(f"max_seconds must be a positive number, got {self.max_seconds!r}")


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of training.

    Attributes
    ----------
    epoch : int
        1-based epoch number.
    train_rmse : float
        RMSE of the fractions over the epoch's (augmented) training batches, in training mode.
    val_rmse : float
        RMSE of the fractions on the validation set, in eval mode (the monitored metric).
    learning_rate : float
        Learning rate during the epoch.
    frozen : bool
        Whether the backbone was frozen (only the tail trained).
    seconds : float
        Wall-clock time of the epoch, validation included, in s.
    images_per_second : float
        Training images processed per second of the training part, in s^-1.
    """

    epoch: int
    train_rmse: float
    val_rmse: float
    learning_rate: float
    frozen: bool
    seconds: float
    images_per_second: float


@dataclass
class TrainingResult:
    """What :func:`train` returns.

    Attributes
    ----------
    model : MorphologyNetwork
        The network with the weights of its best epoch, in eval mode, on the training device.
    history : list of EpochRecord
        Every epoch run, resumed ones included.
    best_epoch : int
        Epoch of the lowest validation RMSE.
    best_val_rmse : float
        That RMSE.
    stopped_early : bool
        Training stopped because the validation RMSE stopped improving.
    stopped_for_time : bool
        Training stopped before ``max_epochs`` because another epoch would have run past
        ``max_seconds`` (``resume`` continues it).
    """

    model: MorphologyNetwork
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_val_rmse: float = math.inf
    stopped_early: bool = False
    stopped_for_time: bool = False

    @property
    def images_per_second(self) -> float:
        """Mean training throughput over the epochs, in images per second."""
        if not self.history:
            return 0.0
        return float(np.mean([r.images_per_second for r in self.history]))


class InMemoryDataset(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Images and their fractions held in memory as float32 tensors.

    Indexing takes an int or a tensor of indices, so a whole batch is one gather.

    Parameters
    ----------
    images : array_like
        ``(N, C, S, S)`` float32 network inputs.
    fractions : array_like
        ``(N, 37)`` fractions in the order of :data:`galpipe.science.gz2.ANSWER_COLUMNS`.
    name : str
        What the data are ("training", "validation"), for error messages.

    Raises
    ------
    InputError
        If the shapes are wrong, N differ or is 0, or a value is not finite.
    """

    def __init__(self, images: npt.ArrayLike, fractions: npt.ArrayLike, name: str) -> None:
        x = np.asarray(images, dtype=np.float32)
        y = np.asarray(fractions, dtype=np.float64)
        if x.ndim != 4 or x.shape[2] != x.shape[3]:
            raise InputError(f"{name} images must have shape (N, C, S, S), got {x.shape}")
        if y.shape != (x.shape[0], N_ANSWERS):
            raise InputError(
                f"{name} fractions must have shape ({x.shape[0]}, {N_ANSWERS}) to match the "
                f"{x.shape[0]} images, got {y.shape}"
            )
        if x.shape[0] == 0:
            raise InputError(f"{name} set is empty")
        for what, values in (("images", x), ("fractions", y)):
            if not np.isfinite(values).all():
                row = int(np.argwhere(~np.isfinite(values))[0][0])
                raise InputError(f"{name} {what}: row {row} has values that are not finite")
        self.name = name
        self.images = torch.from_numpy(np.ascontiguousarray(x))
        self.fractions = torch.from_numpy(y.astype(np.float32))
        self.truth = y

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.fractions[index]

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches in a random order drawn from ``generator``, or in order without one."""
        n = len(self)
        order = torch.arange(n) if generator is None else torch.randperm(n, generator=generator)
        for indices in order.split(batch_size):
            yield self[indices]


def augment_batch(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image rotated by a uniform random angle and mirrored with probability 1/2.

    One bilinear resampling (``affine_grid`` + ``grid_sample``) does both. The corners that
    rotate in from outside the cutout are zero: the network inputs are sky-subtracted, so zero
    is the sky.

    Parameters
    ----------
    images : torch.Tensor
        ``(N, C, S, S)`` float images, on any device.
    generator : torch.Generator
        CPU generator of the angles and mirrors.
    """
    n = images.shape[0]
    angle = torch.rand(n, generator=generator) * (2.0 * math.pi)
    mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos * mirror
    theta[:, 0, 1] = -sin
    theta[:, 1, 0] = sin * mirror
    theta[:, 1, 1] = cos
    theta = theta.to(device=images.device, dtype=images.dtype)
    grid = nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    return nn.functional.grid_sample(
        images, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise InputError(f"unknown training device {name!r}: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"training device {name!r} asked for, but this torch sees no CUDA GPU")
    return device


def _set_frozen(model: MorphologyNetwork, frozen: bool) -> None:
    """Freeze (or unfreeze) every backbone parameter; the tail always trains."""
    for module in model.backbone_modules():
        for p in module.parameters():
            p.requires_grad_(not frozen)


def _train_mode(model: MorphologyNetwork, frozen: bool) -> None:
    """Training mode, with a frozen backbone in eval mode: its batch-norm statistics stay put."""
    model.train()
    if frozen:
        for module in model.backbone_modules():
            module.eval()


@torch.no_grad()
def _validation_rmse(
    model: nn.Module, data: InMemoryDataset, batch_size: int, device: torch.device, amp: bool
) -> float:
    model.eval()
    out = []
    for x, _ in data.batches(batch_size):
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            out.append(model(x.to(device, non_blocking=True)).double().cpu().numpy())
    predicted = np.concatenate(out)
    if not np.isfinite(predicted).all():
        raise CommandError(
            "training diverged: the network predicts fractions that are not finite on the "
            "validation set; lower the learning rate"
        )
    return rmse(predicted, data.truth)


def _save_atomically(state: dict[str, Any], path: Path) -> None:
    """Write a checkpoint so that ``path`` is always either the old or the complete new file."""
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by :func:`train` (tensors and plain values only: ``weights_only``)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as exc:
        raise InputError(f"{path}: not a readable training checkpoint: {exc}") from exc
    if not isinstance(state, dict) or "model" not in state:
        raise InputError(f"{path}: not a training checkpoint (no model state in it)")
    return state


def _model_identity(model: MorphologyNetwork) -> dict[str, Any]:
    return {"architecture": model.architecture, "in_channels": model.in_channels}


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def train(
    model: MorphologyNetwork,
    train_images: npt.ArrayLike,
    train_fractions: npt.ArrayLike,
    val_images: npt.ArrayLike,
    val_fractions: npt.ArrayLike,
    config: TrainingConfig | None = None,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> TrainingResult:
    """Train ``model`` on the training set, monitoring the validation RMSE.

    Parameters
    ----------
    model : MorphologyNetwork
        The network (:func:`galpipe.learning.networks.build_network`, ImageNet weights loaded
        or not); trained in place, then given the weights of its best epoch.
    train_images, val_images : array_like
        ``(N, C, S, S)`` float32 network inputs; C must be the network's.
    train_fractions, val_fractions : array_like
        ``(N, 37)`` float64 tree-normalised fractions.
    config : TrainingConfig, optional
        The schedule; the paper's by default.
    checkpoint_dir : str or pathlib.Path, optional
        Where to write ``best.pt`` (the best epoch's weights) and ``last.pt`` (everything
        needed to resume: weights, optimizer, scheduler, scaler, random states, history) after
        every epoch. None keeps nothing on disk.
    resume : bool, optional
        Continue from ``checkpoint_dir/last.pt`` when it exists (from the epoch after the
        saved one); start afresh when it does not.
    on_epoch : callable, optional
        Called with each epoch's :class:`EpochRecord` as it ends (progress reporting).
    clock : callable, optional
        Seconds from an arbitrary origin, for ``config.max_seconds``; :func:`time.monotonic`.

    Returns
    -------
    TrainingResult
        The network with its best weights (eval mode), the history, the best epoch.

    Raises
    ------
    InputError
        If the data are malformed or do not fit the network, the device is unavailable,
        ``resume`` is asked without a checkpoint directory, or the checkpoint is unreadable
        or belongs to another network.
    CommandError
        If training diverges (the network's validation fractions are not finite).
    """
    config = config or TrainingConfig()
    train_data = InMemoryDataset(train_images, train_fractions, "training")
    val_data = InMemoryDataset(val_images, val_fractions, "validation")
    for data in (train_data, val_data):
        if data.images.shape[1] != model.in_channels:
            raise InputError(
                f"{data.name} images have {data.images.shape[1]} channels but the "
                f"{model.architecture} network takes {model.in_channels}"
            )
    if resume and checkpoint_dir is None:
        raise InputError("resume asked for without a checkpoint directory to resume from")
    directory = None if checkpoint_dir is None else Path(checkpoint_dir)
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)

    device = _device(config.device)
    amp = device.type == "cuda"
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)  # dropout and stochastic depth draw from the global RNG

    result = TrainingResult(model=model)
    best_state = _cpu_state(model)
    bad_epochs = 0
    start_epoch = 1
    last_path = None if directory is None else directory / LAST_CHECKPOINT
    if resume and last_path is not None and last_path.exists():
        state = _load_checkpoint(last_path)
        if state.get("identity") != _model_identity(model):
            raise InputError(
                f"{last_path}: checkpoint of a {state.get('identity')} network, cannot resume "
                f"a {_model_identity(model)} one"
            )
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            if amp and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(state["cuda_rng"])
            result.history = [EpochRecord(**r) for r in state["history"]]
            result.best_epoch = state["best_epoch"]
            result.best_val_rmse = state["best_val_rmse"]
            bad_epochs = state["bad_epochs"]
            start_epoch = state["epoch"] + 1
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"{last_path}: incomplete training checkpoint: {exc!r}") from exc
        best_path = last_path.with_name(BEST_CHECKPOINT)
        best_state = (
            _load_checkpoint(best_path)["model"] if best_path.exists() else _cpu_state(model)
        )
        if bad_epochs >= config.early_stop_patience:
            result.stopped_early = True
            start_epoch = config.max_epochs + 1

    budget_started = clock()
    longest_epoch = 0.0
    for epoch in range(start_epoch, config.max_epochs + 1):
        epoch_began = clock()
        frozen = epoch <= config.frozen_epochs
        if epoch == config.frozen_epochs + 1 and config.frozen_epochs > 0:
            bad_epochs = 0  # every layer trains from now on: a new phase, a fresh patience
        _set_frozen(model, frozen)
        _train_mode(model, frozen)
        learning_rate = float(optimizer.param_groups[0]["lr"])
        started = time.perf_counter()
        # Summed on the device: reading the loss every step would wait for the GPU each time.
        squared_error = torch.zeros((), device=device)
        for x, y in train_data.batches(config.batch_size, generator):
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            if config.augment:
                x = augment_batch(x, generator)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                predicted = model(x)
            loss = nn.functional.mse_loss(predicted.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            squared_error += loss.detach() * x.shape[0]
        train_seconds = time.perf_counter() - started
        val_rmse = _validation_rmse(model, val_data, config.eval_batch_size, device, amp)
        scheduler.step(val_rmse)
        record = EpochRecord(
            epoch=epoch,
            train_rmse=math.sqrt(float(squared_error) / len(train_data)),
            val_rmse=val_rmse,
            learning_rate=learning_rate,
            frozen=frozen,
            seconds=time.perf_counter() - started,
            images_per_second=len(train_data) / train_seconds if train_seconds > 0 else math.inf,
        )
        result.history.append(record)
        improved = val_rmse < result.best_val_rmse
        if improved:
            result.best_val_rmse = val_rmse
            result.best_epoch = epoch
            best_state = _cpu_state(model)
            bad_epochs = 0
        else:
            bad_epochs += 1
        if directory is not None:
            if improved:
                _save_atomically(
                    {
                        "model": best_state,
                        "epoch": epoch,
                        "val_rmse": val_rmse,
                        "identity": _model_identity(model),
                    },
                    directory / BEST_CHECKPOINT,
                )
            _save_atomically(
                {
                    "identity": _model_identity(model),
                    "config": asdict(config),
                    "epoch": epoch,
                    "model": _cpu_state(model),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state() if amp else None,
                    "history": [asdict(r) for r in result.history],
                    "best_epoch": result.best_epoch,
                    "best_val_rmse": result.best_val_rmse,
                    "bad_epochs": bad_epochs,
                },
                directory / LAST_CHECKPOINT,
            )
        if on_epoch is not None:
            on_epoch(record)
        if bad_epochs >= config.early_stop_patience:
            result.stopped_early = True
            break
        now = clock()
        longest_epoch = max(longest_epoch, now - epoch_began)
        if (
            config.max_seconds is not None
            and epoch < config.max_epochs
            and now - budget_started + longest_epoch > config.max_seconds
        ):
            result.stopped_for_time = True
            break

    _set_frozen(model, False)
    model.load_state_dict(best_state)
    model.eval()
    result.model = model
    return result
