"""``galpipe morphology train / evaluate / publish / models`` through ``galpipe.cli.main``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import psycopg
import pytest

import galpipe.cli
import galpipe.morphology.datasets
from galpipe.cli import main
from galpipe.db.models import get_model, list_models

torch = pytest.importorskip("torch", reason="training needs the train extra")
torch.set_num_threads(2)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = ("rmse_per_answer.png", "confusion.png", "history.png")


@pytest.fixture
def objects(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The deployment the commands see: the test's database and a local object store."""
    monkeypatch.setattr(galpipe.cli, "configure_logging", lambda *_: None)
    monkeypatch.setenv("GALPIPE_DATABASE_URL", database_url)
    monkeypatch.setenv("GALPIPE_OBJECT_STORE", (tmp_path / "objects").as_uri())
    return tmp_path / "objects"


def _registered(database_url: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        return [m.model_version for m in list_models(conn)]


def _report(path: Path) -> dict:
    report = json.loads(path.read_text())
    assert isinstance(report, dict)
    return report


def _not_to_be_called(*args: object, **kwargs: object) -> None:
    raise AssertionError("the images were made before the model's input mode was checked")


def test_train_publish_list_and_evaluate(
    objects: Path,
    database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "model"
    train = ["morphology", "train", "--synthetic", "300", "--architecture", "small_cnn"]
    assert main([*train, "--epochs", "1", "--processes", "1", "--out", str(out), "--publish"]) == 0

    onnx_bytes = (out / "model.onnx").read_bytes()
    version = hashlib.sha256(onnx_bytes).hexdigest()
    for name in PLOTS:
        assert (out / name).read_bytes().startswith(PNG_SIGNATURE), name
    report = _report(out / "report.json")
    assert report["model"]["model_version"] == version
    assert report["model"]["architecture"] == "small_cnn"
    assert report["model"]["input_mode"] == "asinh_bands"
    assert [h["epoch"] for h in report["history"]] == [1]
    assert sum(report["split"].values()) == 300
    assert report["test"]["n_galaxies"] == report["split"]["test"]
    assert f"registered model {version}" in capsys.readouterr().out
    # Registered under its hash, its bytes in the store, the report's test scores with it.
    with psycopg.connect(database_url) as conn:
        record = get_model(conn, version)
    assert record is not None
    assert (record.architecture, record.input_mode, record.input_size) == (
        "small_cnn", "asinh_bands", 40,
    )  # fmt: skip
    assert (objects / record.object_key).read_bytes() == onnx_bytes
    assert record.metrics["rmse"] == pytest.approx(report["test"]["rmse"])

    assert main(["morphology", "models"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith(f"{version}  morphology")
    assert "small_cnn" in line

    by_version = tmp_path / "by-version"
    evaluate = ["morphology", "evaluate", "--synthetic", "200", "--seed", "9"]
    assert main([*evaluate, "--model", version, "--out", str(by_version)]) == 0
    scored = _report(by_version / "report.json")
    assert scored["model"] == version
    assert scored["test"]["n_galaxies"] == 200
    assert "200 galaxies" in scored["data_source"]
    assert (by_version / "confusion.png").read_bytes().startswith(PNG_SIGNATURE)

    # The file itself scores the same galaxies the same.
    by_file = tmp_path / "by-file"
    assert main([*evaluate, "--model", str(out / "model.onnx"), "--out", str(by_file)]) == 0
    assert _report(by_file / "report.json")["test"] == scored["test"]

    # Images of another rendering are refused before any is rendered or read.
    capsys.readouterr()
    other_mode = tmp_path / "other-mode"
    with monkeypatch.context() as patch:
        patch.setattr(galpipe.morphology.datasets, "synthetic_set", _not_to_be_called)
        assert main([
            "morphology", "evaluate", "--synthetic", "300", "--input-mode", "lupton_rgb",
            "--model", version, "--out", str(other_mode),
        ]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert err.startswith(f"galpipe morphology: model {version} takes asinh_bands images")
    assert "(pass --input-mode asinh_bands)" in err
    assert not other_mode.exists()

    # Publishing the pair again changes nothing.
    publish = ["morphology", "publish", str(out / "model.onnx"), "--report"]
    assert main([*publish, str(out / "report.json")]) == 0
    assert _registered(database_url) == [version]

    # The same model with a report of another one is refused.
    report["model"]["model_version"] = "0" * 64
    (tmp_path / "other-report.json").write_text(json.dumps(report))
    capsys.readouterr()
    assert main([*publish, str(tmp_path / "other-report.json")]) == 1
    err = capsys.readouterr().err
    assert "does not hash to the model_version " + "0" * 64 in err
    assert "model.onnx" in err


def test_publish_refuses_a_report_of_other_bytes_and_bytes_that_are_not_onnx(
    objects: Path, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = b"these bytes are not a network"
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(junk)
    model = {
        "pipeline": "morphology",
        "architecture": "small_cnn",
        "input_mode": "asinh_bands",
        "input_size": 40,
        "input_channels": 4,
        "training_data_sha256": "ab" * 32,
        "metrics": {"rmse": 0.1},
    }
    report = tmp_path / "report.json"

    other = hashlib.sha256(b"the trained network").hexdigest()
    report.write_text(json.dumps({"model": {**model, "model_version": other}}))
    assert main(["morphology", "publish", str(onnx), "--report", str(report)]) == 1
    err = capsys.readouterr().err
    assert f"{onnx} does not hash to the model_version {other} of {report}" in err

    own = hashlib.sha256(junk).hexdigest()
    report.write_text(json.dumps({"model": {**model, "model_version": own}}))
    assert main(["morphology", "publish", str(onnx), "--report", str(report)]) == 1
    assert f"the {len(junk)} bytes given are not a loadable ONNX model" in capsys.readouterr().err

    report.write_text(json.dumps({"model": {"pipeline": "morphology"}}))
    assert main(["morphology", "publish", str(onnx), "--report", str(report)]) == 1
    assert "not a report of `galpipe morphology train`" in capsys.readouterr().err

    assert _registered(database_url) == []
    assert not objects.exists() or not any(objects.rglob("*.onnx"))


def test_models_says_when_none_is_registered(
    objects: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["morphology", "models"]) == 0
    assert capsys.readouterr().out.startswith("no models registered")


def test_train_stops_at_its_time_budget_and_resume_finishes(
    objects: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "model"
    train = ["morphology", "train", "--synthetic", "200", "--architecture", "small_cnn"]
    train += ["--epochs", "3", "--processes", "1", "--out", str(out)]
    # A budget no epoch fits in: the first epoch runs, no second starts.
    assert main([*train, "--max-minutes", "1e-6"]) == 0
    report = _report(out / "report.json")
    assert [h["epoch"] for h in report["history"]] == [1]
    assert report["stopped_for_time"] is True
    assert "stopped after epoch 1 at the --max-minutes budget" in capsys.readouterr().out
    # Resumed without a budget: the remaining epochs, from the checkpoint.
    assert main([*train, "--resume"]) == 0
    report = _report(out / "report.json")
    assert [h["epoch"] for h in report["history"]] == [1, 2, 3]
    assert report["stopped_for_time"] is False
    # A budget that is no time is refused before a galaxy is rendered.
    capsys.readouterr()
    monkeypatch.setattr(galpipe.morphology.datasets, "synthetic_set", _not_to_be_called)
    assert main([*train, "--max-minutes", "-1"]) == 1
    assert "--max-minutes must be a positive number, got -1" in capsys.readouterr().err
