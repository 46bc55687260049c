"""``galpipe photoz`` through ``galpipe.cli.main``: argument errors, and a synthetic training.

Publishing, listing and the spectroscopic catalogue's matching to fetched cutouts need the
database and an object store: ``tests/integration/photoz``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import galpipe.cli
from galpipe.cli import main


@pytest.fixture(autouse=True)
def _no_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GALPIPE_* deployment leaks in: what a test needs without one must work without it."""
    for name in ("GALPIPE_DATABASE_URL", "GALPIPE_OBJECT_STORE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(galpipe.cli, "configure_logging", lambda *_: None)


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``galpipe photoz ...`` expecting exit 1; its error line."""
    assert main(["photoz", *argv]) == 1
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--synthetic", "1"], "--synthetic 1"),
        (["--synthetic", "50", "--test-fraction", "1.5"], "--test-fraction 1.5"),
        (["--synthetic", "50", "--assoc-radius-px", "0"], "--assoc-radius-px 0"),
        (["--synthetic", "50", "--processes", "0"], "--processes 0"),
        (["--synthetic", "50", "--match-radius-arcsec", "-1"], "--match-radius-arcsec -1"),
    ],
)
def test_bad_values_are_refused_naming_the_option(
    extra: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _fails(["train", *extra, "--out", str(tmp_path / "out")], capsys)
    assert named in err
    assert not (tmp_path / "out").exists()


def test_a_data_source_is_required(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["photoz", "train", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--synthetic" in capsys.readouterr().err


def test_a_spec_catalogue_without_a_column_is_named_before_any_connection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalogue = tmp_path / "specz.csv"
    catalogue.write_text("id,ra,dec,redshift,redshiftError\n1,180.0,45.0,0.3,1e-4\n")
    err = _fails(["train", "--spec-catalog", str(catalogue), "--out", str(tmp_path / "o")], capsys)
    assert str(catalogue) in err
    assert "class" in err
    assert "GALPIPE_DATABASE_URL" not in err


def test_a_spec_catalogue_without_galaxies_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalogue = tmp_path / "specz.csv"
    catalogue.write_text(
        "id,ra,dec,redshift,redshiftError,class\n"
        "1,180.0,45.0,0.3,1e-4,STAR\n"
        "2,180.1,45.0,nan,1e-4,GALAXY\n"
    )
    err = _fails(["train", "--spec-catalog", str(catalogue), "--out", str(tmp_path / "o")], capsys)
    assert str(catalogue) in err
    assert "GALAXY" in err


def test_a_missing_spec_catalogue_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none.csv"
    err = _fails(["train", "--spec-catalog", str(missing), "--out", str(tmp_path / "o")], capsys)
    assert str(missing) in err


def test_train_writes_the_model_report_and_plots_then_evaluate_scores_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model"
    assert main(["photoz", "train", "--synthetic", "200", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "pixel: σ_NMAD" in printed
    assert "integrated-flux kNN" in printed
    assert {p.name for p in out.iterdir()} == {
        "model.bin", "report.json", "z_phot_vs_z_spec.png", "residual_vs_r_mag.png",
    }  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    model_bytes = (out / "model.bin").read_bytes()
    assert report["model"]["model_version"] == hashlib.sha256(model_bytes).hexdigest()
    assert report["model"]["pipeline"] == "photoz"
    assert sum(report["split"].values()) == 200
    assert report["test"]["baseline"]["n"] == report["test"]["pixel"]["n"]

    evaluation = tmp_path / "evaluation"
    argv = ["photoz", "evaluate", "--synthetic", "40", "--model", str(out / "report.json")]
    assert main([*argv, "--out", str(evaluation)]) == 0
    scored = json.loads((evaluation / "report.json").read_text())
    assert scored["test"]["pixel"]["n"] + scored["test"]["pixel"]["n_excluded"] == 40


def test_evaluate_refuses_a_model_that_is_not_its_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model"
    assert main(["photoz", "train", "--synthetic", "60", "--out", str(out)]) == 0
    capsys.readouterr()
    (out / "model.bin").write_bytes((out / "model.bin").read_bytes() + b"tampered")
    argv = ["evaluate", "--synthetic", "10", "--model", str(out / "report.json")]
    err = _fails([*argv, "--out", str(tmp_path / "e")], capsys)
    assert "model.bin" in err
    assert "does not hash" in err
    assert not (tmp_path / "e").exists()


def test_the_command_lines_choices_are_the_learners() -> None:
    from galpipe.learning import pixel_redshift
    from galpipe.photoz import cli

    assert cli._LEARNERS == pixel_redshift.LEARNERS
    assert cli._COMBINERS == pixel_redshift.COMBINERS
