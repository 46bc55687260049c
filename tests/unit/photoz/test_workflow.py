"""``galpipe.photoz.workflow``: train on the synthetic photo-z sky, score, report, round-trip."""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from galpipe.errors import CommandError, InputError
from galpipe.learning.dataset import split_by_id
from galpipe.learning.pixel_redshift import PixelRedshiftModel
from galpipe.photoz.datasets import SpectroscopicCutouts, synthetic_set
from galpipe.photoz.workflow import (
    INPUT_MODE,
    PIPELINE,
    PhotozTraining,
    evaluate_photoz,
    train_photoz,
    training_data_sha256,
    write_evaluation,
    write_report,
)
from galpipe.pipelines.model_artefacts import check_report_version, model_spec_from_report
from galpipe.science.photoz_metrics import redshift_metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = {"z_phot_vs_z_spec.png", "residual_vs_r_mag.png"}
TEST_FRACTION = 0.2


@pytest.fixture(scope="module")
def data() -> SpectroscopicCutouts:
    return synthetic_set(300, seed=3)


@pytest.fixture(scope="module")
def training(data: SpectroscopicCutouts) -> PhotozTraining:
    return train_photoz(
        data.cubes,
        data.sigmas,
        data.ids,
        data.z_spec,
        test_fraction=TEST_FRACTION,
        seed=5,
        n_jobs=2,
        source=data.source,
    )


def _strict_json(text: str) -> object:
    """JSON as the standard has it: NaN and Infinity are not numbers there."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} in report.json")

    return json.loads(text, parse_constant=refuse)


def test_only_the_test_split_by_id_is_scored(
    data: SpectroscopicCutouts, training: PhotozTraining
) -> None:
    _, _, test = split_by_id(data.ids, (1 - TEST_FRACTION, 0.0, TEST_FRACTION), seed=5)
    assert training.test.ids.tolist() == data.ids[test].tolist()
    assert training.test.z_spec.tolist() == data.z_spec[test].tolist()
    # The model learnt from the other galaxies only (those of them with pixels).
    n_train = len(data) - len(test)
    assert training.extra["split"] == {"train": n_train, "test": len(test)}
    without = training.extra["galaxies_without_pixels"]["train"]
    assert training.model.n_train_galaxies == n_train - without


def test_pixel_and_baseline_figures_are_finite_and_beat_a_constant_redshift(
    training: PhotozTraining,
) -> None:
    test = training.test
    pixel, baseline = test.pixel, test.baseline
    assert baseline is not None
    # Both methods are scored on the same galaxies: those with pixels.
    assert pixel.n == baseline.n == int((test.n_pixels > 0).sum()) > 30
    metrics = test.metrics()
    for key in ("sigma_nmad", "outlier_fraction", "bias"):
        assert math.isfinite(metrics[key]), key
        assert math.isfinite(metrics[f"baseline_{key}"]), key
    # A model that learnt nothing does no better than the training sample's median redshift.
    constant = redshift_metrics(np.full(test.z_spec.size, np.median(test.z_spec)), test.z_spec)
    assert pixel.sigma_nmad < constant.sigma_nmad
    assert baseline.sigma_nmad < constant.sigma_nmad


def test_binned_figures_count_every_scored_galaxy_in_range(training: PhotozTraining) -> None:
    binned = training.test.binned()
    for method in ("pixel", "baseline"):
        by_z = binned["z_spec"][method]
        assert sum(by_z["n"]) == training.test.pixel.n
        assert len(by_z["sigma_nmad"]) == len(by_z["edges"]) - 1
        assert sum(binned["r_mag"][method]["n"]) <= training.test.pixel.n


def test_the_report_round_trips_to_the_model_and_its_version(
    training: PhotozTraining, tmp_path: Path
) -> None:
    out = tmp_path / "model"
    written = write_report(training, out)
    assert {p.name for p in written} == {"model.bin", "report.json", *PLOTS}
    for name in PLOTS:
        assert (out / name).read_bytes().startswith(PNG_SIGNATURE), name
    model_bytes = (out / "model.bin").read_bytes()
    report = _strict_json((out / "report.json").read_text())
    assert isinstance(report, dict)
    assert report["model"]["model_version"] == hashlib.sha256(model_bytes).hexdigest()
    spec = model_spec_from_report(report, source="report.json")
    assert spec == training.spec
    assert (spec.pipeline, spec.input_mode, spec.architecture) == (
        PIPELINE,
        INPUT_MODE,
        "pixel_knn",
    )
    assert (spec.input_size, spec.input_channels) == (40, 4)
    assert spec.metrics["baseline_sigma_nmad"] == pytest.approx(training.test.baseline.sigma_nmad)  # type: ignore[union-attr]
    check_report_version(report, model_bytes, onnx_name="model.bin", report_name="report.json")
    with pytest.raises(InputError, match="does not hash"):
        check_report_version(report, model_bytes + b"x", onnx_name="m", report_name="r")
    assert [p["k"] for p in report["validation_curve"]] == [
        p.k for p in training.model.validation_curve
    ]
    # The bytes are the model: reloaded, it predicts the test galaxies as the trained one did.
    reloaded = PixelRedshiftModel.from_bytes(model_bytes, n_jobs=1)
    assert reloaded.k == training.model.k


def test_a_reloaded_model_evaluates_the_test_galaxies_as_training_scored_them(
    data: SpectroscopicCutouts, training: PhotozTraining, tmp_path: Path
) -> None:
    test = np.isin(data.ids, training.test.ids)
    model = PixelRedshiftModel.from_bytes(training.model_bytes, n_jobs=1)
    scores = evaluate_photoz(
        model, data.cubes[test], data.sigmas[test], data.ids[test], data.z_spec[test]
    )
    np.testing.assert_array_equal(scores.z_pixel, training.test.z_pixel)
    assert scores.z_baseline is None
    written = write_evaluation(scores, tmp_path, extra={"model": "x"})
    assert {p.name for p in written} == {"report.json", *PLOTS}
    report = _strict_json((tmp_path / "report.json").read_text())
    assert isinstance(report, dict)
    assert report["test"]["pixel"]["n"] == training.test.pixel.n
    assert "baseline" not in report["binned"]["z_spec"]


def test_without_matplotlib_the_report_says_no_plots_were_drawn(
    training: PhotozTraining, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    written = write_report(training, tmp_path)
    assert sorted(p.name for p in written) == ["model.bin", "report.json"]
    report = _strict_json((tmp_path / "report.json").read_text())
    assert isinstance(report, dict)
    assert "matplotlib" in report["plots"]


def test_the_training_data_hash_changes_with_any_input(data: SpectroscopicCutouts) -> None:
    ids, z, cubes, sigmas = data.ids[:5], data.z_spec[:5], data.cubes[:5], data.sigmas[:5]
    reference = training_data_sha256(ids, z, cubes, sigmas)
    assert training_data_sha256(ids, z, cubes, sigmas) == reference
    assert training_data_sha256(ids, z + 1e-6, cubes, sigmas) != reference
    assert training_data_sha256(ids[::-1], z, cubes, sigmas) != reference
    assert training_data_sha256(ids, z, cubes, sigmas * 2) != reference


def test_inputs_that_do_not_pair_up_are_refused_naming_them(data: SpectroscopicCutouts) -> None:
    with pytest.raises(InputError, match="z_spec"):
        train_photoz(data.cubes, data.sigmas, data.ids, data.z_spec[:-1])
    with pytest.raises(InputError, match="sigmas"):
        train_photoz(data.cubes, data.sigmas[:, :3], data.ids, data.z_spec)
    with pytest.raises(InputError, match="source_ids"):
        train_photoz(data.cubes, data.sigmas, data.z_spec, data.z_spec)
    with pytest.raises(InputError, match="test_fraction"):
        train_photoz(data.cubes, data.sigmas, data.ids, data.z_spec, test_fraction=1.0)


def test_too_few_galaxies_name_the_empty_split(data: SpectroscopicCutouts) -> None:
    with pytest.raises(CommandError, match=r"the (train|test) split of 3 galaxies"):
        train_photoz(data.cubes[:3], data.sigmas[:3], data.ids[:3], data.z_spec[:3])
