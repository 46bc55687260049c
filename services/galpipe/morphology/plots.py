"""Figures of a morphology model's report: RMSE per answer, the six-class confusion matrix, and
the training curves. matplotlib (the ``local`` extra) draws them off-screen (Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from galpipe.learning.metrics import Evaluation
from galpipe.science.gz2 import ANSWER_COLUMNS, SIX_CLASSES

__all__ = ["plot_confusion", "plot_history", "plot_rmse_per_answer"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_rmse_per_answer(
    evaluation: Evaluation, path: Path, floor: np.ndarray | None = None
) -> Path:
    """Bar chart of the RMSE of each of the 37 answers (and the vote-noise floor if given)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 3.5))
    x = np.arange(len(ANSWER_COLUMNS))
    ax.bar(x, evaluation.rmse_per_answer, color="tab:blue", label="model")
    if floor is not None:
        ax.plot(x, floor, "k_", markersize=12, label="vote-noise floor")
        ax.legend()
    ax.set_xticks(x, [c.removeprefix("Class") for c in ANSWER_COLUMNS], rotation=90, fontsize=7)
    ax.set_ylabel("RMSE (fraction of volunteers)")
    ax.set_title(f"RMSE per answer; overall {evaluation.rmse:.4f} on {evaluation.n_galaxies}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusion(evaluation: Evaluation, path: Path) -> Path:
    """The six-class confusion matrix, rows true, columns predicted, counts annotated."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.8))
    counts = evaluation.confusion
    ax.imshow(counts, cmap="Blues")
    ticks = np.arange(len(SIX_CLASSES))
    ax.set_xticks(ticks, SIX_CLASSES, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(ticks, SIX_CLASSES, fontsize=8)
    for (i, j), count in np.ndenumerate(counts):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (largest vote fraction)")
    ax.set_title(f"six classes: accuracy {evaluation.six_class_accuracy:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_history(history: list[dict[str, Any]], path: Path) -> Path:
    """Training and validation RMSE per epoch, and the learning rate."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(epochs, [h["train_rmse"] for h in history], label="train (augmented)")
    ax.plot(epochs, [h["val_rmse"] for h in history], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("RMSE")
    ax.legend(loc="upper right")
    lr = ax.twinx()
    lr.plot(epochs, [h["learning_rate"] for h in history], "k:", label="learning rate")
    lr.set_ylabel("learning rate")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
