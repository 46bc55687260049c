"""Train, export, check and score a morphology network; the steps behind ``galpipe morphology``.

:func:`train_model` is the whole recipe of the GZ2 literature on a :class:`LabelledImages` set:

1. split train / validation / test by a hash of each id (:func:`split_by_id`, 80/10/10);
2. build the network (EfficientNet-B0 with the GZ2 tail by default), load user-supplied
   ImageNet weights if given (nothing can be downloaded here), and train it with the paper's
   schedule (:func:`galpipe.learning.training.train`: Adam 1.5e-4, x0.8 after 4 epochs without
   improvement, early stop after 10, frozen base first when pretrained), rotations and flips;
3. export to ONNX and check that ONNX Runtime gives PyTorch's fractions to
   :data:`ONNX_TOLERANCE` on test images, or refuse to go on;
4. score the test split through ONNX Runtime (the runtime the workers use): RMSE overall and
   per answer, six-class accuracy and confusion matrix.

:func:`write_report` writes ``model.onnx``, ``report.json`` and the plots to a directory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from galpipe.errors import CommandError, ConfigurationError
from galpipe.learning.dataset import LabelledImages, split_by_id
from galpipe.learning.inference import MorphologyModel
from galpipe.learning.metrics import Evaluation, evaluate

if TYPE_CHECKING:  # PyTorch loads only when a network is trained
    from galpipe.learning.training import TrainingConfig

__all__ = [
    "ONNX_TOLERANCE",
    "TrainedModel",
    "evaluate_model",
    "require_torch",
    "train_model",
    "write_report",
]

log = logging.getLogger(__name__)

#: Largest difference allowed between ONNX Runtime's and PyTorch's fractions on the same
#: images (float32 arithmetic in different orders differs by ~1e-7).
ONNX_TOLERANCE = 1e-5
#: Test images the ONNX check runs on.
_ONNX_CHECK_IMAGES = 256


@dataclass
class TrainedModel:
    """What :func:`train_model` made.

    Attributes
    ----------
    onnx_bytes : bytes
        The exported network; its SHA-256 is its ``model_version``.
    architecture, input_mode : str
        The network, and the rendering of its input images.
    input_channels, input_size : int
        The input's channels and side, pixels.
    training_data_sha256 : str
        SHA-256 of the whole labelled set the splits were drawn from.
    test : Evaluation
        Scores on the test split, through ONNX Runtime.
    test_index : numpy.ndarray
        Rows of the data set in the test split.
    history : list of dict
        Per-epoch training record (train/validation RMSE, learning rate, images/s).
    onnx_max_abs_diff : float
        Largest |ONNX - PyTorch| fraction on the checked test images.
    extra : dict
        Further report entries (split sizes, parameters, best epoch).
    network : torch.nn.Module or None
        The trained PyTorch network (best epoch, eval mode, on the CPU).
    """

    @property
    def metrics(self) -> dict[str, Any]:
        """The test scores recorded with the model."""
        return {**self.test.as_dict(), "onnx_max_abs_diff": self.onnx_max_abs_diff}

    onnx_bytes: bytes
    architecture: str
    input_mode: str
    input_channels: int
    input_size: int
    training_data_sha256: str
    test: Evaluation
    test_index: npt.NDArray[np.intp]
    history: list[dict[str, Any]]
    onnx_max_abs_diff: float
    extra: dict[str, Any] = field(default_factory=dict)
    network: Any = None


def train_model(
    data: LabelledImages,
    *,
    architecture: str = "efficientnet_b0",
    input_mode: str = "asinh_bands",
    config: TrainingConfig,
    split_seed: int = 0,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    pretrained: Path | None = None,
    on_epoch: Callable[[Any], None] | None = None,
) -> TrainedModel:
    """Train a morphology network on ``data`` and export it (module docstring).

    Parameters
    ----------
    data : LabelledImages
        Network inputs of ``input_mode`` and their vote fractions.
    architecture : str
        One of :data:`galpipe.learning.networks.ARCHITECTURES`.
    input_mode : str
        How the images were rendered (recorded with the model; the worker renders the same).
    config : galpipe.learning.training.TrainingConfig
        The schedule (learning rate, frozen epochs, batches, device).
    split_seed : int
        Seed of the split by id.
    checkpoint_dir : pathlib.Path, optional
        Where checkpoints go (``best.pt``, ``last.pt``).
    resume : bool
        Continue from ``checkpoint_dir/last.pt``.
    pretrained : pathlib.Path, optional
        A torchvision-style ImageNet state dict to start from.

    Raises
    ------
    InputError
        If the data do not fit the network.
    CommandError
        If a split is empty (too few galaxies; the message names the split), or the ONNX
        export disagrees with PyTorch beyond :data:`ONNX_TOLERANCE`.
    ConfigurationError
        If PyTorch (the ``train`` extra) is not installed.
    """
    require_torch("galpipe morphology train")
    from galpipe.learning.networks import (
        build_network,
        count_parameters,
        load_pretrained,
        predict_fractions,
    )
    from galpipe.learning.onnx_export import export_onnx
    from galpipe.learning.training import train

    train_idx, val_idx, test_idx = split_by_id(data.ids, seed=split_seed)
    for name, index in (("train", train_idx), ("validation", val_idx), ("test", test_idx)):
        if len(index) == 0:
            raise CommandError(
                f"the {name} split of {len(data)} galaxies is empty: give more galaxies"
            )
    channels, size = int(data.images.shape[1]), int(data.images.shape[2])
    model = build_network(architecture, channels)
    extra: dict[str, Any] = {"parameters": count_parameters(model)}
    if pretrained is not None:
        report = load_pretrained(model, pretrained)
        log.info("pretrained weights %s: %s", pretrained, report.summary())
        extra["pretrained"] = {"path": str(pretrained), "summary": report.summary()}
    result = train(
        model,
        data.images[train_idx],
        data.fractions[train_idx],
        data.images[val_idx],
        data.fractions[val_idx],
        config,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        on_epoch=on_epoch,
    )
    onnx_bytes = export_onnx(result.model.cpu(), channels, size)
    onnx_model = MorphologyModel.from_bytes(onnx_bytes, device="cpu")
    check = data.images[test_idx[:_ONNX_CHECK_IMAGES]]
    diff = float(np.max(np.abs(onnx_model.predict(check) - predict_fractions(result.model, check))))
    if not diff <= ONNX_TOLERANCE:
        raise CommandError(
            f"the ONNX export of {architecture} gives fractions up to {diff:.2e} away from "
            f"PyTorch's (tolerance {ONNX_TOLERANCE:g}); not publishing it"
        )
    test = evaluate(onnx_model, data.images[test_idx], data.fractions[test_idx])
    history = [vars(r).copy() for r in result.history]
    extra.update(
        split={"train": len(train_idx), "validation": len(val_idx), "test": len(test_idx)},
        best_epoch=result.best_epoch,
        best_val_rmse=result.best_val_rmse,
        stopped_early=result.stopped_early,
        stopped_for_time=result.stopped_for_time,
        train_images_per_s=result.images_per_second,
        config=vars(config).copy(),
        data_source=data.source,
    )
    return TrainedModel(
        onnx_bytes=onnx_bytes,
        architecture=architecture,
        input_mode=input_mode,
        input_channels=channels,
        input_size=size,
        training_data_sha256=data.sha256,
        test=test,
        test_index=test_idx,
        history=history,
        onnx_max_abs_diff=diff,
        extra=extra,
        network=result.model,
    )


def require_torch(command: str) -> None:
    """Fail with the install command when PyTorch, an optional extra, is missing.

    Raises
    ------
    ConfigurationError
        If ``import torch`` fails.
    """
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            f"{command} trains with PyTorch, which is not installed: "
            "pip install 'galpipe[train]' (a CPU build is enough to try it; train on a GPU)"
        ) from None


def evaluate_model(model: MorphologyModel, data: LabelledImages) -> Evaluation:
    """Score ``model`` on every galaxy of ``data`` (``galpipe morphology evaluate``)."""
    return evaluate(model, data.images, data.fractions)


def write_report(
    out: Path,
    evaluation: Evaluation,
    *,
    history: list[dict[str, Any]] | None = None,
    onnx_bytes: bytes | None = None,
    extra: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write ``report.json``, the plots and (if given) ``model.onnx`` into ``out``.

    Returns the paths written. Plots need matplotlib (the ``local`` extra); without it the
    report says so and no figure is written.
    """
    from galpipe.morphology.plots import plot_confusion, plot_history, plot_rmse_per_answer

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    report: dict[str, Any] = {"test": evaluation.as_dict(), **(extra or {})}
    if history is not None:
        report["history"] = history
    if onnx_bytes is not None:
        path = out / "model.onnx"
        path.write_bytes(onnx_bytes)
        written.append(path)
    try:
        written.append(plot_rmse_per_answer(evaluation, out / "rmse_per_answer.png"))
        written.append(plot_confusion(evaluation, out / "confusion.png"))
        if history:
            written.append(plot_history(history, out / "history.png"))
    except ImportError as exc:
        report["plots"] = f"not drawn: {exc}"
    path = out / "report.json"
    path.write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    written.append(path)
    return written


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
