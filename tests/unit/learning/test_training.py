"""Training: a small network learns, runs are reproducible, resumable, and keep the best epoch."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from galpipe.errors import InputError
from galpipe.learning.networks import build_network, predict_fractions
from galpipe.learning.training import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    TrainingConfig,
    augment_batch,
    train,
)
from galpipe.science.gz2 import N_ANSWERS, fractions_from_logits, rmse

FAST = TrainingConfig(max_epochs=4, batch_size=16, learning_rate=3e-3, seed=3)


def _task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A learnable, rotation-invariant task: a central blob's signed amplitude sets the logits."""
    rng = np.random.default_rng(seed)
    amplitude = rng.uniform(-1.0, 1.0, n)
    yy, xx = np.mgrid[:40, :40] - 19.5
    blob = np.exp(-(xx**2 + yy**2) / (2 * 6.0**2))
    images = amplitude[:, None, None, None] * blob + 0.05 * rng.normal(size=(n, 3, 40, 40))
    weights = np.random.default_rng(99).normal(size=N_ANSWERS) * 3.0
    return images.astype(np.float32), fractions_from_logits(amplitude[:, None] * weights)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (*_task(160, 0), *_task(48, 1))


def _network(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network("small_cnn", 3)


def test_a_small_network_learns_and_returns_its_best_epoch(data: tuple) -> None:
    x, y, xv, yv = data
    model = _network()
    before = rmse(predict_fractions(model, x), y)

    result = train(model, x, y, xv, yv, FAST)

    assert rmse(predict_fractions(result.model, x), y) < 0.5 * before
    assert [r.epoch for r in result.history] == [1, 2, 3, 4]
    best = min(result.history, key=lambda r: r.val_rmse)
    assert (result.best_epoch, result.best_val_rmse) == (best.epoch, best.val_rmse)
    # The model returned carries the best epoch's weights.
    assert rmse(predict_fractions(result.model, xv), yv) == pytest.approx(best.val_rmse, abs=1e-6)
    assert not result.model.training
    assert all(r.learning_rate == FAST.learning_rate for r in result.history)
    assert all(r.images_per_second > 0 and r.seconds > 0 for r in result.history)


def test_a_seeded_run_resumed_from_its_last_checkpoint_matches_an_uninterrupted_one(
    data: tuple, tmp_path: Path
) -> None:
    x, y, xv, yv = data
    whole = train(_network(), x, y, xv, yv, FAST, checkpoint_dir=tmp_path / "whole")

    interrupted = dataclasses.replace(FAST, max_epochs=2)
    train(_network(), x, y, xv, yv, interrupted, checkpoint_dir=tmp_path / "parts")
    assert torch.load(tmp_path / "parts" / LAST_CHECKPOINT, weights_only=True)["epoch"] == 2
    # A differently initialised network: everything must come from the checkpoint.
    resumed = train(
        _network(seed=7), x, y, xv, yv, FAST, checkpoint_dir=tmp_path / "parts", resume=True
    )

    assert [r.epoch for r in resumed.history] == [1, 2, 3, 4]
    for a, b in zip(whole.history, resumed.history, strict=True):
        assert a.train_rmse == pytest.approx(b.train_rmse, abs=1e-6)
        assert a.val_rmse == pytest.approx(b.val_rmse, abs=1e-6)
    assert resumed.best_epoch == whole.best_epoch
    for key, value in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, atol=1e-6, rtol=0.0)
    best = torch.load(tmp_path / "parts" / BEST_CHECKPOINT, weights_only=True)
    assert best["epoch"] == whole.best_epoch


def test_resuming_another_network_is_refused(data: tuple, tmp_path: Path) -> None:
    x, y, xv, yv = data
    one_epoch = TrainingConfig(max_epochs=1, batch_size=32)
    train(_network(), x, y, xv, yv, one_epoch, checkpoint_dir=tmp_path)
    other = build_network("small_cnn", 4)
    x4, xv4 = np.repeat(x, 2, axis=1)[:, :4], np.repeat(xv, 2, axis=1)[:, :4]
    with pytest.raises(InputError, match=r"last\.pt: checkpoint of a .*'in_channels': 3"):
        train(other, x4, y, xv4, yv, one_epoch, checkpoint_dir=tmp_path, resume=True)


class _Clock:
    """A clock that advances ``step`` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_a_time_budget_stops_before_an_epoch_that_would_overrun_it_and_resume_continues(
    data: tuple, tmp_path: Path
) -> None:
    x, y, xv, yv = data
    # Read at the start, then at each epoch's start and end: every epoch "takes" 100 s and
    # epoch k ends at 200 k s. After epoch 2 (400 s, + the longest epoch 100 s = 500 s) a third
    # would end past 450 s: two epochs run.
    budget = dataclasses.replace(FAST, max_epochs=6, max_seconds=450.0)
    first = train(_network(), x, y, xv, yv, budget, checkpoint_dir=tmp_path, clock=_Clock(100.0))
    assert [r.epoch for r in first.history] == [1, 2]
    assert first.stopped_for_time
    assert not first.stopped_early
    assert (tmp_path / LAST_CHECKPOINT).exists()
    # Resumed with a fresh budget: two more epochs, then two more, and the last call ends at
    # max_epochs without claiming the budget stopped it.
    second = train(
        _network(), x, y, xv, yv, budget, checkpoint_dir=tmp_path, resume=True, clock=_Clock(100.0)
    )
    assert [r.epoch for r in second.history] == [1, 2, 3, 4]
    third = train(
        _network(), x, y, xv, yv, budget, checkpoint_dir=tmp_path, resume=True, clock=_Clock(100.0)
    )
    assert [r.epoch for r in third.history] == [1, 2, 3, 4, 5, 6]
    assert not third.stopped_for_time
    # Without a budget the same clock stops nothing.
    whole = train(
        _network(), x, y, xv, yv, dataclasses.replace(FAST, max_epochs=3), clock=_Clock(1e6)
    )
    assert len(whole.history) == 3
    assert not whole.stopped_for_time


def test_an_unreadable_checkpoint_is_refused(data: tuple, tmp_path: Path) -> None:
    x, y, xv, yv = data
    (tmp_path / LAST_CHECKPOINT).write_bytes(b"half a checkpoint")
    with pytest.raises(InputError, match=r"last\.pt: not a readable training checkpoint"):
        train(_network(), x, y, xv, yv, FAST, checkpoint_dir=tmp_path, resume=True)


def test_frozen_epochs_train_only_the_tail(data: tuple) -> None:
    x, y, xv, yv = data
    model = _network()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainingConfig(max_epochs=1, frozen_epochs=1, batch_size=32, learning_rate=1e-2)

    result = train(model, x, y, xv, yv, config)

    after = result.model.state_dict()
    assert result.history[0].frozen
    for key, value in before.items():
        changed = not torch.equal(after[key], value)
        assert changed == key.startswith("head."), key
    assert all(p.requires_grad for p in result.model.parameters())


def test_augmentation_rotates_and_mirrors() -> None:
    yy, xx = torch.meshgrid(torch.arange(40.0) - 19.5, torch.arange(40.0) - 19.5, indexing="ij")
    round_blob = torch.exp(-(xx**2 + yy**2) / 50.0)
    off_centre = torch.exp(-((xx - 8.0) ** 2 + yy**2) / 8.0)
    images = torch.stack([round_blob, off_centre])[:, None].repeat(1, 2, 1, 1)

    out = augment_batch(images, torch.Generator().manual_seed(5))
    again = augment_batch(images, torch.Generator().manual_seed(5))

    assert out.shape == images.shape
    assert torch.equal(out, again)
    # A round blob looks the same at any angle and mirrored; an off-centre one moves, keeping
    # its distance from the centre and its flux (it stays inside the cutout).
    assert (out[0] - images[0]).abs().max() < 0.02
    assert (out[1] - images[1]).abs().max() > 0.5
    for image in (images[1, 0], out[1, 0]):
        row, col = divmod(int(image.argmax()), 40)
        assert np.hypot(row - 19.5, col - 19.5) == pytest.approx(8.0, abs=1.5)
    assert float(out[1].sum()) == pytest.approx(float(images[1].sum()), rel=0.02)


def test_bad_configuration_and_data_are_refused(data: tuple, tmp_path: Path) -> None:
    x, y, xv, yv = data
    with pytest.raises(InputError, match=r"plateau_factor must lie in \(0, 1\), got 1.5"):
        TrainingConfig(plateau_factor=1.5)
    with pytest.raises(InputError, match="batch_size must be >= 1, got 0"):
        TrainingConfig(batch_size=0)
    for seconds in (0.0, -5.0, float("inf"), float("nan")):
        with pytest.raises(InputError, match="max_seconds must be a positive number"):
            TrainingConfig(max_seconds=seconds)
    with pytest.raises(InputError, match="training images have 3 channels but the small_cnn"):
        train(build_network("small_cnn", 4), x, y, xv, yv, FAST)
    with pytest.raises(InputError, match=r"validation fractions must have shape \(48, 37\)"):
        train(_network(), x, y, xv, yv[:, :36], FAST)
    with pytest.raises(InputError, match="resume asked for without a checkpoint directory"):
        train(_network(), x, y, xv, yv, FAST, resume=True)
