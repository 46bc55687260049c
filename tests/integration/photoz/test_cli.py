"""``galpipe photoz train / publish / models / evaluate`` on a deployment's fetched cutouts.

The cutouts are the synthetic photo-z sky's, stored as a fetch leaves them (galaxies rows,
objects in a local store, cutouts rows); their redshifts come from a spectroscopic catalogue in
the document's CasJobs columns.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg_pool import ConnectionPool

import galpipe.cli
from galpipe.cli import main
from galpipe.db.models import get_model, list_models
from galpipe.photoz.datasets import SpectroscopicDataError, fetched_cutouts_with_redshifts
from galpipe.storage import LocalObjectStore
from galpipe.survey.layout import BANDS, PIXSCALE_ARCSEC
from galpipe.synthetic.fitsfile import cube_fits_bytes
from galpipe.synthetic.photoz_sky import PhotozSample, sample_photoz_sky
from tests.integration.fetched_cutouts import store_fetched

N_GALAXIES = 60


@pytest.fixture(scope="module")
def sample() -> PhotozSample:
    return sample_photoz_sky(N_GALAXIES, seed=11)


@pytest.fixture
def objects(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The deployment the commands see: the test's database and a local object store."""
    monkeypatch.setattr(galpipe.cli, "configure_logging", lambda *_: None)
    monkeypatch.setenv("GALPIPE_DATABASE_URL", database_url)
    monkeypatch.setenv("GALPIPE_OBJECT_STORE", (tmp_path / "objects").as_uri())
    return tmp_path / "objects"


def _fetch(pool: ConnectionPool, store: LocalObjectStore, sample: PhotozSample) -> None:
    g = sample.galaxies
    blobs = {
        int(sid): cube_fits_bytes(
            sample.stamps.images[k], float(g.ra[k]), float(g.dec[k]), PIXSCALE_ARCSEC, BANDS
        )
        for k, sid in enumerate(g.source_id)
    }
    where = {int(sid): (float(g.ra[k]), float(g.dec[k])) for k, sid in enumerate(g.source_id)}
    store_fetched(pool, store, blobs, where)


def _catalogue(path: Path, sample: PhotozSample, *, id_offset: int = 0) -> Path:
    """The CasJobs CSV of the sample: its first galaxy a STAR, its second without redshift."""
    table = sample.catalog()
    table["id"] = table["id"] + id_offset
    table["class"] = table["class"].astype("U8")
    table["class"][0] = "STAR"
    table["redshift"][1] = np.nan
    table.write(path, format="ascii.csv", overwrite=True)
    return path


def test_the_catalogue_matches_fetched_cutouts_by_id_or_position(
    pool: ConnectionPool, tmp_path: Path, sample: PhotozSample
) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    _fetch(pool, store, sample)
    ids = sample.galaxies.source_id
    by_id = fetched_cutouts_with_redshifts(pool, store, _catalogue(tmp_path / "a.csv", sample))
    # The STAR and the galaxy without redshift are left out; every other galaxy kept in order.
    assert by_id.ids.tolist() == ids[2:].tolist()
    assert by_id.unmatched.tolist() == ids[:2].tolist()
    np.testing.assert_array_equal(by_id.z_spec, sample.galaxies.redshift[2:])
    np.testing.assert_allclose(by_id.cubes, sample.stamps.images[2:], rtol=1e-6)
    assert by_id.sigmas.shape == by_id.cubes.shape

    # Ids that match nothing: by position they still pair up.
    shifted = _catalogue(tmp_path / "b.csv", sample, id_offset=10**9)
    with pytest.raises(SpectroscopicDataError, match=r"b\.csv: none of the 60 fetched"):
        fetched_cutouts_with_redshifts(pool, store, shifted)
    by_position = fetched_cutouts_with_redshifts(pool, store, shifted, match="radec")
    assert by_position.ids.tolist() == by_id.ids.tolist()
    np.testing.assert_array_equal(by_position.z_spec, by_id.z_spec)


def test_train_publish_list_and_evaluate(
    objects: Path,
    database_url: str,
    tmp_path: Path,
    sample: PhotozSample,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with ConnectionPool(database_url, open=True) as pool:
        _fetch(pool, LocalObjectStore(objects), sample)
    catalogue = _catalogue(tmp_path / "specz.csv", sample)
    out = tmp_path / "model"
    argv = ["photoz", "train", "--spec-catalog", str(catalogue), "--out", str(out), "--publish"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 fetched galaxies have no spectroscopic redshift" in printed

    model_bytes = (out / "model.bin").read_bytes()
    version = hashlib.sha256(model_bytes).hexdigest()
    assert f"registered model {version}" in printed
    report = json.loads((out / "report.json").read_text())
    assert sum(report["split"].values()) == N_GALAXIES - 2
    with psycopg.connect(database_url) as conn:
        record = get_model(conn, version)
    assert record is not None
    assert (record.pipeline, record.architecture, record.input_mode) == (
        "photoz", "pixel_knn", "pixel_vectors",
    )  # fmt: skip
    assert (objects / record.object_key).read_bytes() == model_bytes
    assert record.metrics["sigma_nmad"] == pytest.approx(report["test"]["pixel"]["sigma_nmad"])

    # Publishing the directory again registers nothing new.
    assert main(["photoz", "publish", str(out)]) == 0
    assert f"registered model {version}" in capsys.readouterr().out
    with psycopg.connect(database_url) as conn:
        assert [m.model_version for m in list_models(conn, "photoz")] == [version]

    assert main(["photoz", "models"]) == 0
    assert version in capsys.readouterr().out
    # Each pipeline lists its own models.
    assert main(["morphology", "models"]) == 0
    assert version not in capsys.readouterr().out

    evaluation = tmp_path / "evaluation"
    argv = ["photoz", "evaluate", "--spec-catalog", str(catalogue), "--model", version]
    assert main([*argv, "--out", str(evaluation)]) == 0
    scored = json.loads((evaluation / "report.json").read_text())
    assert scored["model"] == version
    pixel = scored["test"]["pixel"]
    assert pixel["n"] + pixel["n_excluded"] == N_GALAXIES - 2


def test_models_says_when_none_is_registered(
    objects: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["photoz", "models"]) == 0
    assert "no photo-z models registered" in capsys.readouterr().out
