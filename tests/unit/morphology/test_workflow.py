"""Training, exporting, checking and reporting a morphology network (morphology.workflow)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import galpipe.learning.onnx_export
from galpipe.errors import CommandError, ConfigurationError
from galpipe.learning.dataset import LabelledImages, split_by_id
from galpipe.learning.inference import MorphologyModel
from galpipe.learning.metrics import Evaluation, evaluate
from galpipe.learning.networks import predict_fractions
from galpipe.learning.training import TrainingConfig
from galpipe.morphology.workflow import (
    ONNX_TOLERANCE,
    TrainedModel,
    require_torch,
    train_model,
    write_report,
)
from galpipe.science.gz2 import QUESTIONS, fractions_from_shares

#: One short epoch on the CPU: what is tested is the recipe around training, not learning.
ONE_EPOCH = TrainingConfig(max_epochs=1, batch_size=32, device="cpu", seed=1)
SPLIT_SEED = 5
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def labelled(n: int, seed: int) -> LabelledImages:
    """``n`` random 4-band 40x40 images with valid random fractions, under scattered ids
    (not 0..n-1, so indices and ids cannot be confused)."""
    rng = np.random.default_rng(seed)
    shares = np.concatenate(
        [rng.dirichlet(np.full(len(q.answers), 0.7), size=n) for q in QUESTIONS], axis=1
    )
    return LabelledImages(
        ids=rng.choice(10**9, size=n, replace=False).astype(np.int64),
        images=rng.normal(size=(n, 4, 40, 40)).astype(np.float32),
        fractions=fractions_from_shares(shares),
        source=f"random images, seed {seed}",
    )


@pytest.fixture(scope="module")
def data() -> LabelledImages:
    return labelled(240, seed=0)


@pytest.fixture(scope="module")
def trained(data: LabelledImages) -> TrainedModel:
    torch.manual_seed(0)
    return train_model(
        data,
        architecture="small_cnn",
        input_mode="asinh_bands",
        config=ONE_EPOCH,
        split_seed=SPLIT_SEED,
    )


def test_the_onnx_bytes_give_the_returned_networks_fractions(
    trained: TrainedModel, data: LabelledImages
) -> None:
    onnx = MorphologyModel.from_bytes(trained.onnx_bytes, device="cpu")
    assert (onnx.in_channels, onnx.size) == (4, 40)
    assert (trained.input_channels, trained.input_size) == (4, 40)
    assert (trained.architecture, trained.input_mode) == ("small_cnn", "asinh_bands")
    # Every image, not only the test ones the check ran on.
    diff = np.abs(onnx.predict(data.images) - predict_fractions(trained.network, data.images))
    assert diff.max() <= ONNX_TOLERANCE
    assert 0.0 <= trained.onnx_max_abs_diff <= ONNX_TOLERANCE
    assert trained.metrics["onnx_max_abs_diff"] == trained.onnx_max_abs_diff
    assert trained.training_data_sha256 == data.sha256
    assert [h["epoch"] for h in trained.history] == [1]


def test_the_test_split_is_split_by_ids_and_only_it_is_scored(
    trained: TrainedModel, data: LabelledImages
) -> None:
    train, val, test = split_by_id(data.ids, seed=SPLIT_SEED)
    np.testing.assert_array_equal(trained.test_index, test)
    assert trained.extra["split"] == {
        "train": len(train),
        "validation": len(val),
        "test": len(test),
    }
    assert 0 < len(test) < len(data)
    # The scores are those of the exported model on the test rows, and on nothing else.
    onnx = MorphologyModel.from_bytes(trained.onnx_bytes, device="cpu")
    on_test = evaluate(onnx, data.images[test], data.fractions[test])
    assert trained.test.n_galaxies == len(test)
    assert trained.test.rmse == pytest.approx(on_test.rmse, abs=1e-12)
    np.testing.assert_array_equal(trained.test.confusion, on_test.confusion)
    on_all = evaluate(onnx, data.images, data.fractions)
    assert trained.test.rmse != pytest.approx(on_all.rmse, abs=1e-9)


def test_an_empty_split_is_refused_naming_it() -> None:
    few = labelled(2, seed=3)
    splits = dict(zip(("train", "validation", "test"), split_by_id(few.ids), strict=True))
    empty = next(name for name, index in splits.items() if len(index) == 0)
    with pytest.raises(CommandError, match=rf"the {empty} split of 2 galaxies is empty"):
        train_model(few, architecture="small_cnn", config=ONE_EPOCH)


def test_an_export_that_disagrees_with_pytorch_is_refused(
    trained: TrainedModel, data: LabelledImages, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The export hands back another network's bytes: those of the module's model, while this
    # run starts from other weights.
    monkeypatch.setattr(galpipe.learning.onnx_export, "export_onnx", lambda *_: trained.onnx_bytes)
    torch.manual_seed(1)
    with pytest.raises(CommandError, match=r"ONNX export of small_cnn .* not publishing it"):
        train_model(data, architecture="small_cnn", config=ONE_EPOCH, split_seed=SPLIT_SEED)


def test_missing_torch_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    require_torch("galpipe morphology train")  # installed here: nothing to say
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(ConfigurationError, match=r"pip install 'galpipe\[train\]'") as error:
        require_torch("galpipe morphology train")
    assert "galpipe morphology train" in str(error.value)


class _Constant:
    """A predictor of the same fractions for every image."""

    def __init__(self, fractions: np.ndarray) -> None:
        self.fractions = fractions

    def predict(self, images: np.ndarray) -> np.ndarray:
        return np.repeat(self.fractions[None, :], len(images), axis=0)


@pytest.fixture(scope="module")
def evaluation() -> Evaluation:
    data = labelled(30, seed=4)
    return evaluate(_Constant(data.fractions.mean(axis=0)), data.images, data.fractions)


HISTORY = [
    {"epoch": 1, "train_rmse": 0.2, "val_rmse": 0.18, "learning_rate": 1.5e-4},
    {"epoch": 2, "train_rmse": 0.15, "val_rmse": 0.16, "learning_rate": 1.2e-4},
]


def _strict_json(text: str) -> object:
    """JSON as the standard has it: NaN and Infinity are not numbers there."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} in report.json")

    return json.loads(text, parse_constant=refuse)


def test_the_report_holds_the_scores_history_model_and_plots(
    evaluation: Evaluation, tmp_path: Path
) -> None:
    out = tmp_path / "new" / "dir"
    extra = {"seed": np.int64(7), "checkpoints": tmp_path / "c", "rmse": np.float32(0.5)}
    written = write_report(out, evaluation, history=HISTORY, onnx_bytes=b"onnx bytes", extra=extra)

    names = {"report.json", "model.onnx", "rmse_per_answer.png", "confusion.png", "history.png"}
    assert {p.name for p in written} == names
    assert {p.name for p in out.iterdir()} == names
    assert (out / "model.onnx").read_bytes() == b"onnx bytes"
    for name in names - {"report.json", "model.onnx"}:
        assert (out / name).read_bytes().startswith(PNG_SIGNATURE), name
    report = _strict_json((out / "report.json").read_text())
    assert isinstance(report, dict)
    assert report["test"]["n_galaxies"] == 30
    assert report["test"]["rmse"] == pytest.approx(evaluation.rmse)
    assert len(report["test"]["rmse_per_answer"]) == 37
    assert report["history"] == HISTORY
    assert report["seed"] == 7
    assert report["checkpoints"] == str(tmp_path / "c")
    assert "plots" not in report


def test_without_matplotlib_the_report_says_no_plots_were_drawn(
    evaluation: Evaluation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    written = write_report(tmp_path, evaluation, history=HISTORY)
    assert [p.name for p in written] == ["report.json"]
    assert not list(tmp_path.glob("*.png"))
    report = _strict_json((tmp_path / "report.json").read_text())
    assert isinstance(report, dict)
    assert report["plots"].startswith("not drawn: ")
    assert "matplotlib" in report["plots"]
    assert report["test"]["n_galaxies"] == 30


def test_the_command_lines_choices_are_the_networks_and_renderings() -> None:
    from galpipe.learning.networks import ARCHITECTURES
    from galpipe.morphology import cli
    from galpipe.science.morphology_input import INPUT_MODES

    assert cli._ARCHITECTURES == ARCHITECTURES
    assert cli._INPUT_MODES == INPUT_MODES
