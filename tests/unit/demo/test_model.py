"""The network shipped with the demo, and reading a training report's model entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from galpipe.demo import DemoError, model
from galpipe.errors import InputError
from galpipe.learning.inference import MorphologyModel
from galpipe.pipelines.model_artefacts import model_spec_from_report
from galpipe.science.morphology_input import channels_for
from galpipe.storage import sha256_hex


def test_the_shipped_model_is_the_one_its_report_describes() -> None:
    onnx_bytes, report = model.shipped_model()
    assert report["model"]["model_version"] == sha256_hex(onnx_bytes)
    spec = model_spec_from_report(report)
    assert spec.pipeline == "morphology"
    assert spec.architecture == "small_cnn"
    assert channels_for(spec.input_mode) == spec.input_channels
    for metric in ("rmse", "six_class_accuracy"):
        assert 0 <= spec.metrics[metric] <= 1
    MorphologyModel.from_bytes(onnx_bytes, device="cpu")  # raises on bytes that are no model


def _fake_package(monkeypatch: pytest.MonkeyPatch, root: Path) -> Path:
    folder = root / "models"
    folder.mkdir()
    monkeypatch.setattr(model.resources, "files", lambda package: root)
    return folder


def test_a_model_that_does_not_match_its_report_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    folder = _fake_package(monkeypatch, tmp_path)
    (folder / "m.onnx").write_bytes(b"other bytes")
    (folder / "m.json").write_text(json.dumps({"model": {"model_version": "ab" * 32}}))
    with pytest.raises(DemoError, match=r"m\.onnx does not hash to the model_version abab"):
        model.shipped_model("m")


def test_a_missing_model_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_package(monkeypatch, tmp_path)
    with pytest.raises(DemoError, match=r"morphology model gone \(galpipe/demo/models/\)"):
        model.shipped_model("gone")


@pytest.mark.parametrize(
    ("report", "missing"),
    [
        ({}, "'model'"),
        ({"model": {"architecture": "small_cnn"}}, "'pipeline'"),
        (
            {
                "model": {
                    "pipeline": "morphology",
                    "architecture": "small_cnn",
                    "input_mode": "asinh_bands",
                    "input_size": "forty",
                    "input_channels": 4,
                    "training_data_sha256": "0" * 64,
                    "metrics": {},
                }
            },
            "forty",
        ),
    ],
)
def test_a_report_without_a_usable_model_entry_is_named(report: dict, missing: str) -> None:
    with pytest.raises(InputError, match=r"^run/report\.json: not a report of") as raised:
        model_spec_from_report(report, source="run/report.json")
    assert missing in str(raised.value)
