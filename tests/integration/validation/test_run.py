"""``galpipe validate --quick``: the report's structure, its numbers, determinism, the peer.

One quick run (400 truth galaxies, 2,000 augmented images, a tiny lensing check, seed 0) in
this process, and a second through the command's handler; both must agree byte for byte. A tiny
run checks that sizes given beside ``quick`` win and that a lensing size 0 switches the lensing
check off.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.table import Table

from galpipe.science.core import Flag, RadonConfig, measure_batch
from galpipe.science.orientation import image_angle_to_position_angle
from galpipe.synthetic.catalog import read_catalog
from galpipe.validation.cli import register
from galpipe.validation.peer import sep_orientation
from galpipe.validation.population import render_population
from galpipe.validation.report import FIGURES, write_report
from galpipe.validation.run import (
    FLOOR_REPEATS,
    QUICK_AUGMENT,
    QUICK_FLOOR_GALAXIES,
    QUICK_LENSING_GALAXIES,
    QUICK_LENSING_RINGS,
    QUICK_TRUTH,
    run_validation,
)
from galpipe.validation.summary import ValidationSummary
from galpipe.validation.truth import METHODS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ValidationSummary]:
    out = tmp_path_factory.mktemp("validate")
    return out, run_validation(out, quick=True, seed=0, workers=1)


def _summary_json(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


def _written(out: Path) -> ValidationSummary:
    """The summary as ``summary.json`` holds it."""
    return ValidationSummary.from_json(_summary_json(out))


def test_the_report_directory_has_every_part(quick_run: tuple[Path, ValidationSummary]) -> None:
    out, _ = quick_run
    for name in (
        "report.md",
        "summary.json",
        "catalogue.ecsv",
        "galaxies.ecsv",
        "protocol.npz",
        "floor.npz",
    ):
        assert (out / name).stat().st_size > 0, name
    for figure in FIGURES:
        assert (out / figure).read_bytes()[:8] == PNG_MAGIC, figure
    report = (out / "report.md").read_text()
    for section in (
        "## Headline",
        "S/N definition",
        "## 2. Accuracy",
        "## 3. Calibration",
        "## 4. The paper's augmentation protocol",
        "### The information floor",
        "## 5. Agreement with Gaia",
        "## 6. Fit for weak lensing",
        "no preferred direction",
        "shear calibration bias",
        "weak lensing: shear calibration bias m",
    ):
        assert section in report
    for figure in FIGURES:
        assert f"({figure})" in report
    document = _summary_json(out)
    # summary.json's shape, which users read.
    assert set(document) == {
        "headline",
        "config",
        "population",
        "truth",
        "protocol",
        "floor",
        "gaia",
        "lensing",
        "timing_s",
    }
    assert set(document["lensing"]) == {
        "isotropy",
        "bias",
        "alpha_weak",
        "shears",
        "n_isotropic",
        "n_ring",
    }
    for key in ("snr", "axis_ratio", "half_light_radius_arcsec", "sersic_n", "psf", "neighbours"):
        assert key in document["population"]
    written = _written(out)
    assert set(written.protocol.distributions) >= {"R", "B", "N", "subsets"}
    assert written.to_json() == document


def test_headline_accuracy_vs_truth_on_a_fixed_seed(
    quick_run: tuple[Path, ValidationSummary],
) -> None:
    """Combined median axial error < 2 deg for isolated galaxies with q < 0.5 and S/N > 50."""
    out, summary = quick_run
    assert _written(out).truth.headline.ours.n_measured >= 25  # enough for a median
    assert summary.headline.truth_median_deg < 2.0


def test_the_numbers_are_consistent(quick_run: tuple[Path, ValidationSummary]) -> None:
    out, summary = quick_run
    written = _written(out)
    assert written.headline == summary.headline
    tables = written.truth.tables
    for method in METHODS:
        for band in ("g", "r", "i", "z", "combined"):
            parts = [tables[s][method][band].overall.n for s in ("isolated", "neighbours")]
            assert sum(parts) == tables["all"][method][band].overall.n == QUICK_TRUTH
            by_q = tables["all"][method][band].by_axis_ratio
            assert sum(s.n for s in by_q) == QUICK_TRUTH
    # The paired comparison: the same galaxies for both methods, the ones both measured.
    for subset, paired in written.truth.paired.items():
        ours_n = [s.n for s in paired.ours]
        assert ours_n == [s.n for s in paired.peer]
        assert [s.n_measured for s in paired.peer] == ours_n
        peer_measured = tables[subset]["peer"]["combined"].overall.n_measured
        assert 0 < sum(ours_n) <= peer_measured
    # The peer's outcomes add up, and its angles are the measured ones.
    outcomes = written.truth.peer_outcomes
    assert outcomes.measured + outcomes.no_detection + outcomes.failed == QUICK_TRUTH
    assert outcomes.measured == tables["all"]["peer"]["combined"].overall.n_measured
    protocol = written.protocol
    assert protocol.n_images == QUICK_AUGMENT == summary.headline.n_augment
    assert protocol.ours.overall.mean_deg >= protocol.ours.overall.median_deg > 0
    augmented = protocol.peer_outcomes
    assert augmented.measured + augmented.no_detection + augmented.failed == QUICK_AUGMENT
    # The masked and unmasked measurements agree on isolated galaxies far more than on the rest.
    iso = tables["isolated"]
    ours, nomask = iso["ours"]["combined"].overall, iso["ours_nomask"]["combined"].overall
    assert abs(ours.median_deg - nomask.median_deg) < 1.0
    # The floor: the oracle's galaxies are isolated, and ours is the protocol's measurement.
    floor = written.floor
    assert floor.n_images == QUICK_FLOOR_GALAXIES * FLOOR_REPEATS
    with np.load(out / "floor.npz") as rows:
        isolated = Table.read(out / "galaxies.ecsv")["n_neighbours"][rows["galaxy_index"]] == 0
        assert isolated.all()
        assert floor.ours.deviation.overall.mean_deg == pytest.approx(
            float(np.mean(rows["deviation_ours_deg"]))
        )
    assert summary.headline.floor_aug_mean_deg == floor.oracle.deviation.overall.mean_deg
    calib = written.truth.calibration["all"]["ours_combined"]
    assert 0 < calib.within_1sigma <= calib.within_2sigma <= 1
    assert calib.within_1sigma == summary.headline.coverage_1sigma
    # Coverage per bin: the same galaxies as the overall figure, split by q and by S/N.
    for subset, coverage in written.truth.coverage.items():
        assert coverage.overall == written.truth.calibration[subset]["ours_combined"]
        for bins in (coverage.by_axis_ratio, coverage.by_snr):
            assert sum(c.n for c in bins) == coverage.overall.n
            within = sum(c.n * c.within_1sigma for c in bins if c.n) / coverage.overall.n
            assert within == pytest.approx(coverage.overall.within_1sigma)
    report = (out / "report.md").read_text()
    section = report.split("### Coverage of the combined angle's σ")[1].split("## 4.")[0]
    for label in (*written.truth.axis_ratio_bins, *written.truth.snr_bins):
        assert f"| {label} | " in section
    # The unreliable-angle rule: its sweep on this population, and the pair it chose.
    reliability = written.truth.reliability
    assert "### Detecting unreliable angles" in section
    assert len(section.split("| b/a < |")[1].splitlines()) >= len(reliability.sweep)
    chosen = reliability.chosen
    assert chosen is not None
    assert chosen.purity >= reliability.min_purity
    assert chosen.n == written.truth.tables["all"]["ours"]["combined"].overall.n_measured
    # The shipped UNRELIABLE flag: scored on the bits the measurement set, with the thresholds
    # of the run's RadonConfig; the same as the rule's sweep entry of that pair.
    shipped, config = reliability.shipped, RadonConfig()
    assert shipped is not None
    pair = (config.unreliable_min_anisotropy, config.unreliable_max_band_spread_deg)
    assert (shipped.min_anisotropy, shipped.max_band_spread_deg) == pair
    galaxies = Table.read(out / "galaxies.ecsv")
    has_angle = np.isfinite(np.asarray(galaxies["pa_ours"], dtype=float))
    unreliable = (np.asarray(galaxies["flags_ours"]) & Flag.UNRELIABLE) != 0
    assert shipped.n_flagged == int(unreliable[has_angle].sum()) > 0
    assert not unreliable[~has_angle].any()
    same_pair = [s for s in reliability.sweep if (s.min_anisotropy, s.max_band_spread_deg) == pair]
    assert same_pair == [shipped]
    assert "Shipped as the `UNRELIABLE` flag" in section


def test_the_lensing_check_is_part_of_the_run(
    quick_run: tuple[Path, ValidationSummary],
) -> None:
    """The quick sizes, ours and the peer measured, the estimator's own bias within its error."""
    out, summary = quick_run
    lensing = _written(out).lensing
    assert lensing is not None
    assert summary.lensing is not None
    assert lensing.to_json() == summary.lensing.to_json()
    assert (lensing.n_isotropic, lensing.n_ring) == (QUICK_LENSING_GALAXIES, QUICK_LENSING_RINGS)
    assert set(lensing.isotropy) == {"ours", "peer"}
    assert set(lensing.bias) == {"ours", "peer", "truth"}
    assert lensing.isotropy["ours"].n_measured == QUICK_LENSING_GALAXIES
    for fit in lensing.bias.values():
        assert all(math.isfinite(v) for v in (fit.m, fit.c1, fit.c2, fit.m_err))
    truth = lensing.bias["truth"]
    assert abs(truth.m) < 4 * truth.m_err + 0.005
    assert "lensing" in summary.timing.stages_s
    assert "--lensing-galaxies 200 --lensing-rings 10" in summary.config.command
    report = (out / "report.md").read_text()
    section = report[report.index("## 6. Fit for weak lensing") : report.index("## Reproduction")]
    assert f"{QUICK_LENSING_GALAXIES} galaxies with random orientations" in section
    assert f"{QUICK_LENSING_RINGS} galaxies, each rendered" in section
    assert f"{lensing.isotropy['ours'].n_measured}/{QUICK_LENSING_GALAXIES}" in section


def test_peer_and_ours_measured_the_catalogued_images(
    quick_run: tuple[Path, ValidationSummary],
) -> None:
    """Re-render the written catalogue; both methods on those images reproduce the table."""
    out, _ = quick_run
    truths = read_catalog(out / "catalogue.ecsv")[:40]
    images, jacobians = render_population(truths)
    galaxies = Table.read(out / "galaxies.ecsv")[:40]
    assert galaxies["source_id"].tolist() == [t.source_id for t in truths]
    ours = measure_batch(images, RadonConfig())
    peer = sep_orientation(images)
    np.testing.assert_allclose(
        image_angle_to_position_angle(ours.angle_image_deg, jacobians),
        galaxies["pa_ours"],
        atol=1e-9,
    )
    np.testing.assert_allclose(
        image_angle_to_position_angle(peer.angle_image_deg, jacobians),
        galaxies["pa_peer"],
        atol=1e-9,
    )
    digests = dict(_written(out).truth.images_sha256)
    # The neighbour oracle alone measures other images: the neighbours' light subtracted.
    oracle_digest = digests.pop("neighbour_oracle")
    assert len(set(digests.values())) == 1
    assert oracle_digest not in digests.values()


def test_the_neighbour_oracle_is_masking_off_without_neighbours_and_better_with_them(
    quick_run: tuple[Path, ValidationSummary],
) -> None:
    out, summary = quick_run
    galaxies = Table.read(out / "galaxies.ecsv")
    isolated = galaxies["n_neighbours"] == 0
    np.testing.assert_array_equal(
        galaxies["pa_neighbour_oracle"][isolated], galaxies["pa_ours_nomask"][isolated]
    )
    neighbours = summary.truth.tables["neighbours"]
    oracle = neighbours["neighbour_oracle"]["combined"].overall.median_deg
    # Subtracting the neighbours' exact light must beat measuring through it, and masking.
    assert oracle < neighbours["ours_nomask"]["combined"].overall.median_deg / 2
    assert oracle < neighbours["ours"]["combined"].overall.median_deg
    protocol = summary.protocol
    assert protocol.neighbour_oracle.overall.n == summary.protocol.n_sampled
    assert protocol.neighbour_oracle.isolated.mean_deg == pytest.approx(
        protocol.ours_nomask.isolated.mean_deg, abs=1e-9
    )
    assert protocol.neighbour_oracle.neighbours.mean_deg != pytest.approx(
        protocol.ours_nomask.neighbours.mean_deg, abs=1e-3
    )
    # The report puts it beside ours and masking off on the same images, by group.
    report = (out / "report.md").read_text()
    section = report[report.index("The paper's method (masking off) on the same images") :]
    assert "| neighbours | neighbour oracle (exact neighbour light subtracted" in section


def test_identical_inputs_give_identical_outputs(
    quick_run: tuple[Path, ValidationSummary],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, summary = quick_run
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["validate", str(tmp_path), "--quick", "--workers", "1"])
    args.handler(args, None)
    printed = json.loads(capsys.readouterr().out.splitlines()[0])
    assert printed["truth_median_deg"] == summary.headline.truth_median_deg
    assert printed["out_dir"] == str(tmp_path)
    first, second = _summary_json(out), _summary_json(tmp_path)
    for document in (first, second):
        document.pop("timing_s")
        document["config"].pop("command")
    assert first == second
    assert (out / "galaxies.ecsv").read_bytes() == (tmp_path / "galaxies.ecsv").read_bytes()
    assert (out / "catalogue.ecsv").read_bytes() == (tmp_path / "catalogue.ecsv").read_bytes()
    with np.load(out / "protocol.npz") as a, np.load(tmp_path / "protocol.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for name in a.files:
            assert np.array_equal(a[name], b[name], equal_nan=True), name
    with np.load(out / "floor.npz") as a, np.load(tmp_path / "floor.npz") as b:
        for name in a.files:
            assert np.array_equal(a[name], b[name], equal_nan=True), name


def test_the_report_is_reproducible_from_summary_json(
    quick_run: tuple[Path, ValidationSummary], tmp_path: Path
) -> None:
    out, _ = quick_run
    write_report(_written(out), tmp_path)
    assert (tmp_path / "report.md").read_text() == (out / "report.md").read_text()
    assert (tmp_path / "summary.json").read_text() == (out / "summary.json").read_text()


def test_sizes_given_beside_quick_win(tmp_path: Path) -> None:
    summary = run_validation(
        tmp_path, n_truth=24, n_augment=30, n_floor=0, n_lensing=0, quick=True, workers=1
    )
    assert (summary.headline.n_truth, summary.headline.n_augment) == (24, 30)
    assert (summary.protocol.n_images, summary.floor.n_images) == (30, 0)
    assert len(Table.read(tmp_path / "galaxies.ecsv")) == 24
    assert "--n-truth 24 --n-augment 30 --n-floor 0 --lensing-galaxies 0" in summary.config.command
    assert summary.config.quick
    # Lensing size 0: no lensing stage, null in summary.json, the section says it was not run.
    assert summary.lensing is None
    assert "lensing" not in summary.timing.stages_s
    document = json.loads((tmp_path / "summary.json").read_text())
    assert document["lensing"] is None
    assert ValidationSummary.from_json(document).to_json() == document
    report = (tmp_path / "report.md").read_text()
    assert "## 6. Fit for weak lensing" in report
    assert "Not run" in report
    assert "weak lensing: shear calibration bias m" not in report
