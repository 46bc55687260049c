"""Labelled images for the morphology network (catalog.morphology_data)."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from PIL import Image

from galpipe.catalog.morphology_data import (
    KAGGLE_IMAGE_DIR,
    KAGGLE_SOLUTIONS_FILE,
    MorphologyDataError,
    read_fits_with_labels,
    read_kaggle_layout,
)
from galpipe.errors import InputError
from galpipe.learning.dataset import LabelledImages
from galpipe.pipelines.stored_cutouts import decode_cutout
from galpipe.science.gz2 import ANSWER_COLUMNS, QUESTIONS, fractions_from_shares
from galpipe.science.morphology_input import network_input
from galpipe.survey.layout import BANDS, CUTOUT_SIZE_PX, PIXSCALE_ARCSEC
from galpipe.synthetic.fitsfile import cube_fits_bytes

SIZE = CUTOUT_SIZE_PX
# Distinct colours for the galaxies of the Kaggle fixture, far apart after JPEG compression.
COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 210), (200, 200, 30), (30, 190, 190)]


def random_fractions(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shares = np.concatenate(
        [rng.dirichlet(np.full(len(q.answers), 0.7), size=n) for q in QUESTIONS], axis=1
    )
    return np.round(fractions_from_shares(shares), 6)


def write_kaggle(directory: Path, ids: list[int], fractions: np.ndarray) -> None:
    """The Kaggle layout: each 424×424 JPG has its galaxy's colour in the central half and
    white outside it, and the CSV lists the galaxies in the given order."""
    image_dir = directory / KAGGLE_IMAGE_DIR
    image_dir.mkdir(parents=True)
    for k, galaxy in enumerate(ids):
        pixels = np.full((424, 424, 3), 255, dtype=np.uint8)
        pixels[106:318, 106:318] = COLOURS[k % len(COLOURS)]
        Image.fromarray(pixels).save(image_dir / f"{galaxy}.jpg", quality=95)
    with (directory / KAGGLE_SOLUTIONS_FILE).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["GalaxyID", *ANSWER_COLUMNS])
        for galaxy, row in zip(ids, fractions, strict=True):
            writer.writerow([galaxy, *(f"{v:.6f}" for v in row)])


@pytest.fixture
def kaggle(tmp_path: Path) -> tuple[Path, list[int], np.ndarray]:
    ids = [100263, 100023, 999967, 100078]  # not sorted: the CSV order must be kept
    fractions = random_fractions(len(ids), seed=1)
    write_kaggle(tmp_path / "gz", ids, fractions)
    return tmp_path / "gz", ids, fractions


def test_kaggle_layout_shapes_order_and_crop(kaggle: tuple[Path, list[int], np.ndarray]) -> None:
    directory, ids, fractions = kaggle
    data = read_kaggle_layout(directory, size=SIZE)
    assert data.images.shape == (4, 3, SIZE, SIZE)
    assert data.images.dtype == np.float32
    assert data.fractions.dtype == np.float64
    np.testing.assert_array_equal(data.ids, ids)
    np.testing.assert_allclose(data.fractions, fractions, atol=1e-9)
    assert data.images.min() >= 0
    assert data.images.max() <= 1
    assert len(data.unmatched) == 0
    # The crop is the central half: each image is its galaxy's colour, none of the white
    # border (the outermost pixels may take a little of it through the resampling filter).
    for k in range(4):
        inner = data.images[k, :, 2:-2, 2:-2].reshape(3, -1)
        expected = np.asarray(COLOURS[k]) / 255
        assert np.abs(inner - expected[:, None]).max() < 0.06


def test_kaggle_layout_size_and_limit(kaggle: tuple[Path, list[int], np.ndarray]) -> None:
    directory, ids, _ = kaggle
    data = read_kaggle_layout(directory, size=64, limit=2)
    assert data.images.shape == (2, 3, 64, 64)
    np.testing.assert_array_equal(data.ids, ids[:2])


def test_kaggle_hash_is_of_the_data(kaggle: tuple[Path, list[int], np.ndarray]) -> None:
    directory, _, _ = kaggle
    first, again = read_kaggle_layout(directory), read_kaggle_layout(directory)
    assert first.sha256 == again.sha256
    assert len(first.sha256) == 64
    changed = first.fractions.copy()
    changed[0, 0] += 1e-6
    other = LabelledImages(first.ids, first.images, changed, source="changed")
    assert other.sha256 != first.sha256
    fewer = LabelledImages(first.ids[:3], first.images[:3], first.fractions[:3], source="x")
    assert fewer.sha256 != first.sha256


def test_kaggle_missing_jpg_names_the_id(kaggle: tuple[Path, list[int], np.ndarray]) -> None:
    directory, ids, _ = kaggle
    (directory / KAGGLE_IMAGE_DIR / f"{ids[2]}.jpg").unlink()
    with pytest.raises(MorphologyDataError, match=rf"no image .*{ids[2]}") as info:
        read_kaggle_layout(directory)
    assert isinstance(info.value, InputError)


def test_kaggle_jpg_without_row_is_named(kaggle: tuple[Path, list[int], np.ndarray]) -> None:
    directory, _, _ = kaggle
    Image.new("RGB", (424, 424)).save(directory / KAGGLE_IMAGE_DIR / "555555.jpg")
    with pytest.raises(MorphologyDataError, match=r"no row in .*555555\.jpg"):
        read_kaggle_layout(directory)


def test_kaggle_undecodable_jpg_is_named(kaggle: tuple[Path, list[int], np.ndarray]) -> None:
    directory, ids, _ = kaggle
    (directory / KAGGLE_IMAGE_DIR / f"{ids[1]}.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(MorphologyDataError, match=rf"{ids[1]}\.jpg: cannot decode"):
        read_kaggle_layout(directory)


def test_kaggle_missing_directory_or_csv(tmp_path: Path) -> None:
    with pytest.raises(MorphologyDataError, match="no such directory"):
        read_kaggle_layout(tmp_path / "absent")
    (tmp_path / KAGGLE_IMAGE_DIR).mkdir()
    with pytest.raises(MorphologyDataError, match=KAGGLE_SOLUTIONS_FILE):
        read_kaggle_layout(tmp_path)


def test_kaggle_invalid_csv_is_an_input_error(kaggle: tuple[Path, list[int], np.ndarray]) -> None:
    directory, _, _ = kaggle
    path = directory / KAGGLE_SOLUTIONS_FILE
    lines = path.read_text().splitlines()
    fields = lines[1].split(",")
    fields[1] = "1.5"  # Class1.1 out of [0, 1]
    path.write_text("\n".join([lines[0], ",".join(fields), *lines[2:]]) + "\n")
    with pytest.raises(InputError, match=r"Class1\.1"):
        read_kaggle_layout(directory)


# --- FITS cutouts with labels ----------------------------------------------------------------


def galaxy_cubes(n: int, seed: int) -> np.ndarray:
    """(n, 4, S, S) griz nanomaggies: a Gaussian galaxy on sky noise; the z band of the
    first one unobserved (zeros)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    profile = np.exp(-0.5 * (x**2 + y**2) / 3.0**2)
    cubes = rng.uniform(0.5, 5, size=(n, 4, 1, 1)) * profile + rng.normal(
        0, 0.01, size=(n, 4, SIZE, SIZE)
    )
    cubes[0, 3] = 0.0
    return cubes.astype(np.float32)


@pytest.fixture
def survey() -> dict[str, object]:
    """Five cutouts (source_id -> FITS bytes), their positions and cubes."""
    ids = [7001, 7002, 7003, 7004, 7005]
    cubes = galaxy_cubes(len(ids), seed=2)
    positions = {g: (150.0 + 0.01 * k, 2.0 + 0.01 * k) for k, g in enumerate(ids)}
    raw = {
        g: cube_fits_bytes(cubes[k], *positions[g], PIXSCALE_ARCSEC, BANDS, source_id=g)
        for k, g in enumerate(ids)
    }
    return {"ids": ids, "cubes": cubes, "positions": positions, "raw": raw}


def labels_table(rows: Sequence[Mapping[str, float]], fractions: np.ndarray) -> Table:
    table = Table(rows=rows)
    for j, name in enumerate(ANSWER_COLUMNS):
        table[name] = fractions[:, j]
    return table


@pytest.mark.parametrize("suffix", [".csv", ".ecsv", ".fits"])
def test_fits_labels_by_source_id(tmp_path: Path, survey: dict, suffix: str) -> None:
    ids, cubes, raw = survey["ids"], survey["cubes"], survey["raw"]
    # Labels for 7004, 7002, 7001, 7005 and a galaxy without a cutout; 7003 has none.
    label_ids = [7004, 7002, 9999, 7001, 7005]
    fractions = random_fractions(len(label_ids), seed=3)
    path = tmp_path / f"labels{suffix}"
    labels_table([{"source_id": g} for g in label_ids], fractions).write(path)
    data = read_fits_with_labels(raw, path, match="source_id", mode="asinh_bands")
    # Order of the cutouts, matched ones only; the unlabelled one reported.
    np.testing.assert_array_equal(data.ids, [7001, 7002, 7004, 7005])
    np.testing.assert_array_equal(data.unmatched, [7003])
    row = {g: k for k, g in enumerate(label_ids)}
    np.testing.assert_allclose(data.fractions, fractions[[row[g] for g in data.ids]], atol=1e-9)
    kept = [ids.index(g) for g in data.ids]
    np.testing.assert_array_equal(data.images, network_input(cubes[kept], "asinh_bands"))
    assert data.images.shape == (4, 4, SIZE, SIZE)
    # The unobserved z band of 7001 stays zero.
    assert (data.images[0, 3] == 0).all()
    assert "7003" not in data.source
    assert str(path) in data.source


def test_fits_labels_iterable_and_lupton(tmp_path: Path, survey: dict) -> None:
    ids, raw = survey["ids"], survey["raw"]
    path = tmp_path / "labels.ecsv"
    labels_table([{"source_id": g} for g in ids], random_fractions(5, seed=4)).write(path)
    data = read_fits_with_labels(((g, raw[g]) for g in ids), path, mode="lupton_rgb")
    assert data.images.shape == (5, 3, SIZE, SIZE)
    assert len(data.unmatched) == 0
    decoded = np.stack([decode_cutout(raw[g], SIZE).data for g in ids])
    np.testing.assert_array_equal(data.images, network_input(decoded, "lupton_rgb"))


def test_fits_labels_by_position(tmp_path: Path, survey: dict) -> None:
    ids, positions, raw = survey["ids"], survey["positions"], survey["raw"]
    arcsec = 1 / 3600
    rows: list[dict[str, float]] = []
    # 7001..7004 labelled 0.3" off; 7005's label lies 5" away: unmatched at 1".
    offsets = {7001: 0.3, 7002: -0.3, 7003: 0.3, 7004: 0.2, 7005: 5.0}
    order = [7003, 7005, 7001, 7004, 7002]
    for g in order:
        ra, dec = positions[g]
        rows.append({"ra": ra, "dec": dec + offsets[g] * arcsec})
    fractions = random_fractions(len(order), seed=5)
    path = tmp_path / "labels.fits"
    labels_table(rows, fractions).write(path)
    data = read_fits_with_labels(raw, path, match="radec", positions=positions, radius_arcsec=1.0)
    np.testing.assert_array_equal(data.ids, [7001, 7002, 7003, 7004])
    np.testing.assert_array_equal(data.unmatched, [7005])
    expected = fractions[[order.index(g) for g in data.ids]]
    np.testing.assert_allclose(data.fractions, expected, atol=1e-9)
    # A wider radius takes 7005 in too.
    wide = read_fits_with_labels(raw, path, match="radec", positions=positions, radius_arcsec=6)
    assert len(wide) == len(ids)


def test_fits_labels_nothing_matches(tmp_path: Path, survey: dict) -> None:
    path = tmp_path / "labels.csv"
    labels_table([{"source_id": 1}, {"source_id": 2}], random_fractions(2, 6)).write(path)
    with pytest.raises(MorphologyDataError, match=r"none of the 5 cutouts .*7001"):
        read_fits_with_labels(survey["raw"], path)


def test_fits_labels_duplicate_ids(tmp_path: Path, survey: dict) -> None:
    path = tmp_path / "labels.csv"
    rows = [{"source_id": 7001}, {"source_id": 7002}, {"source_id": 7001}]
    labels_table(rows, random_fractions(3, 7)).write(path)
    with pytest.raises(MorphologyDataError, match=r"source_id repeated .*7001"):
        read_fits_with_labels(survey["raw"], path)


def test_fits_labels_table_problems(tmp_path: Path, survey: dict) -> None:
    raw = survey["raw"]
    fractions = random_fractions(2, 8)
    missing = labels_table([{"source_id": 7001}, {"source_id": 7002}], fractions)
    missing.remove_column("Class8.4")
    missing.write(tmp_path / "missing.csv")
    with pytest.raises(MorphologyDataError, match=r"missing\.csv.*Class8\.4"):
        read_fits_with_labels(raw, tmp_path / "missing.csv")
    bad = labels_table([{"source_id": 7001}, {"source_id": 7002}], fractions)
    bad["Class1.1"][1] = 0.0  # Q1 no longer sums to 1
    bad.write(tmp_path / "bad.csv")
    with pytest.raises(MorphologyDataError, match=r"bad\.csv.*Q1"):
        read_fits_with_labels(raw, tmp_path / "bad.csv")
    with pytest.raises(MorphologyDataError, match=r"absent\.csv"):
        read_fits_with_labels(raw, tmp_path / "absent.csv")
    no_key = labels_table([{"ra": 1.0}, {"ra": 2.0}], fractions)
    no_key.write(tmp_path / "no_key.csv")
    with pytest.raises(MorphologyDataError, match="no source_id column"):
        read_fits_with_labels(raw, tmp_path / "no_key.csv")
    with pytest.raises(MorphologyDataError, match="no dec column"):
        read_fits_with_labels(
            raw, tmp_path / "no_key.csv", match="radec", positions=survey["positions"]
        )
    with pytest.raises(MorphologyDataError, match="'rgb'"):
        read_fits_with_labels(raw, tmp_path / "no_key.csv", mode="rgb")


def test_fits_undecodable_cutout_names_the_id(tmp_path: Path, survey: dict) -> None:
    raw = dict(survey["raw"])
    raw[7002] = b"SIMPLE  = garbage"
    path = tmp_path / "labels.csv"
    labels_table([{"source_id": g} for g in raw], random_fractions(5, 9)).write(path)
    with pytest.raises(MorphologyDataError, match="source_id 7002"):
        read_fits_with_labels(raw, path)


# --- Splits ----------------------------------------------------------------------------------
