"""The photo-z pipeline on the worker loop: stored cutouts in, redshifts from pixels out."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from psycopg_pool import ConnectionPool

from galpipe.db.photoz import photoz_predictions_for
from galpipe.db.queue import TaskQueue
from galpipe.db.routes import add_route
from galpipe.learning.pixel_redshift import PixelRedshiftModel
from galpipe.pipelines.model_artefacts import (
    ModelArtefactError,
    ModelNotRegistered,
    ModelSpec,
    publish_model,
)
from galpipe.pipelines.photoz import PhotozPipeline, build_photoz_pipeline
from galpipe.pipelines.stored_cutouts import decode_cutout
from galpipe.pipelines.worker import Worker
from galpipe.science.photoz_metrics import redshift_metrics
from galpipe.science.photoz_pixels import pixel_vectors, sky_noise_errors
from galpipe.settings import Settings, SettingsError
from galpipe.storage import LocalObjectStore
from galpipe.survey.layout import BANDS, PIXSCALE_ARCSEC
from tests.integration.fetched_cutouts import store_fetched

pytest.importorskip("galsim", reason="the synthetic photo-z sky renders with GalSim")

from galpipe.synthetic.fitsfile import cube_fits_bytes
from galpipe.synthetic.photoz_sky import PhotozSample, sample_photoz_sky

CENTRE = 19.5


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    """A pixel kNN trained on 400 synthetic galaxies (ids from 1)."""
    train = sample_photoz_sky(400, seed=21, start_id=1)
    cubes = train.stamps.images
    vectors = pixel_vectors(cubes, sky_noise_errors(cubes), np.full((len(cubes), 2), CENTRE))
    model = PixelRedshiftModel(combiner="density_mode").fit(
        vectors, train.galaxies.redshift, train.galaxies.source_id, k_grid=(8, 16)
    )
    return model.to_bytes()


@pytest.fixture(scope="module")
def sky() -> PhotozSample:
    """The galaxies the pipeline measures: others than the training set's (ids from 10,001)."""
    return sample_photoz_sky(40, seed=22, start_id=10_001)


def _spec() -> ModelSpec:
    return ModelSpec(
        pipeline="photoz",
        architecture="pixel_knn",
        input_mode="pixel_vectors",
        input_size=40,
        input_channels=len(BANDS),
        training_data_sha256="0" * 64,
        metrics={},
    )


def _blobs(sky: PhotozSample) -> dict[int, bytes]:
    g = sky.galaxies
    return {
        int(sid): cube_fits_bytes(cube, float(ra), float(dec), PIXSCALE_ARCSEC, BANDS)
        for sid, cube, ra, dec in zip(g.source_id, sky.stamps.images, g.ra, g.dec, strict=True)
    }


def _fetched(pool: ConnectionPool, store: LocalObjectStore, sky: PhotozSample) -> dict:
    blobs = _blobs(sky)
    g = sky.galaxies
    positions = {
        int(s): (float(r), float(d)) for s, r, d in zip(g.source_id, g.ra, g.dec, strict=True)
    }
    # One stamp of sky only: no galaxy at the catalogue position.
    empty = int(g.source_id[0])
    blank = np.random.default_rng(0).normal(0.0, 0.01, size=(len(BANDS), 40, 40))
    blobs[empty] = cube_fits_bytes(blank, *positions[empty], PIXSCALE_ARCSEC, BANDS)
    store_fetched(pool, store, blobs, positions)
    TaskQueue(pool).enqueue("fetch", list(blobs))
    with pool.connection() as conn:
        conn.execute("UPDATE tasks SET state = 'done' WHERE pipeline = 'fetch'")
        assert add_route(conn, "fetch", "photoz") == len(blobs)
    return blobs


def test_every_galaxy_gets_a_redshift_or_fails_with_its_reason(
    pool: ConnectionPool, tmp_path: Path, model_bytes: bytes, sky: PhotozSample
) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    blobs = _fetched(pool, store, sky)
    empty = int(sky.galaxies.source_id[0])
    with pool.connection() as conn:
        record = publish_model(conn, store, model_bytes, _spec())
    model = PixelRedshiftModel.from_bytes(model_bytes)
    pipeline = PhotozPipeline(pool=pool, store=store, model=model, record=record, batch_size=16)
    worker = Worker(pipeline, TaskQueue(pool), owner="photoz-test")
    worker.run(stop_when_idle=True)
    pipeline.close()

    with pool.connection() as conn:
        states = dict(
            conn.execute("SELECT source_id, state FROM tasks WHERE pipeline = 'photoz'").fetchall()
        )
        (error,) = conn.execute(
            "SELECT last_error FROM tasks WHERE pipeline = 'photoz' AND source_id = %s", (empty,)
        ).fetchone()
        rows = photoz_predictions_for(conn, record.model_version, list(blobs))
    assert set(states) == set(blobs)
    assert states[empty] == "failed"
    assert "no source detected" in error
    done = sorted(s for s, state in states.items() if state == "done")
    assert rows.source_ids == done
    assert len(done) >= len(blobs) - 3  # faint galaxies may have no segment; never silently
    assert set(rows.error_source) == {"sky_noise"}
    # What was stored is the model's answer for the decoded cutouts, done by hand.
    cubes = np.stack([decode_cutout(blobs[s], 40).data for s in rows.source_ids])
    vectors = pixel_vectors(cubes, sky_noise_errors(cubes), np.full((len(cubes), 2), CENTRE))
    expected = model.predict_galaxies(vectors)
    np.testing.assert_allclose(rows.z_phot, np.maximum(expected.z, 0.0), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(rows.n_pixels, expected.n_pixels)
    # And it measures redshift: far better than guessing the training set's median.
    truth = dict(zip(sky.galaxies.source_id.tolist(), sky.galaxies.redshift, strict=True))
    z_spec = np.array([truth[s] for s in rows.source_ids])
    ours = redshift_metrics(rows.z_phot, z_spec)
    guess = redshift_metrics(np.full_like(z_spec, np.median(z_spec)), z_spec)
    assert ours.sigma_nmad < 0.6 * guess.sigma_nmad


def test_cutouts_with_the_services_inverse_variance_use_it_as_each_pixels_error(
    pool: ConnectionPool, tmp_path: Path, model_bytes: bytes, sky: PhotozSample
) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    g = sky.galaxies
    invvars = {}
    blobs = {}
    for sid, cube, sigma, ra, dec in zip(
        g.source_id, sky.stamps.images, g.sky_sigma, g.ra, g.dec, strict=True
    ):
        invvar = np.broadcast_to((sigma**-2)[:, None, None], cube.shape).astype(np.float32)
        invvar[0, :, :6] = 0.0  # columns no g exposure covers: no data there
        invvars[int(sid)] = invvar
        blobs[int(sid)] = cube_fits_bytes(
            cube, float(ra), float(dec), PIXSCALE_ARCSEC, BANDS, invvar=invvar
        )
    positions = {
        int(s): (float(r), float(d)) for s, r, d in zip(g.source_id, g.ra, g.dec, strict=True)
    }
    store_fetched(pool, store, blobs, positions)
    TaskQueue(pool).enqueue("fetch", list(blobs))
    with pool.connection() as conn:
        conn.execute("UPDATE tasks SET state = 'done' WHERE pipeline = 'fetch'")
        add_route(conn, "fetch", "photoz")
        record = publish_model(conn, store, model_bytes, _spec())
    model = PixelRedshiftModel.from_bytes(model_bytes)
    pipeline = PhotozPipeline(pool=pool, store=store, model=model, record=record, batch_size=16)
    Worker(pipeline, TaskQueue(pool), owner="photoz-invvar").run(stop_when_idle=True)
    pipeline.close()

    with pool.connection() as conn:
        rows = photoz_predictions_for(conn, record.model_version, list(blobs))
    assert len(rows.source_ids) >= len(blobs) - 3
    assert set(rows.error_source) == {"invvar"}
    cubes = np.stack([sky.stamps.images[list(g.source_id).index(s)] for s in rows.source_ids])
    with np.errstate(divide="ignore"):
        errors = np.stack([invvars[s] ** -0.5 for s in rows.source_ids]).astype(np.float32)
    vectors = pixel_vectors(cubes, errors, np.full((len(cubes), 2), CENTRE))
    expected = model.predict_galaxies(vectors)
    np.testing.assert_allclose(rows.z_phot, np.maximum(expected.z, 0.0), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(rows.n_pixels, expected.n_pixels)
    # The stamp's sky noise would have given other answers: the errors did come from the file.
    with_sky_noise = model.predict_galaxies(
        pixel_vectors(cubes, sky_noise_errors(cubes), np.full((len(cubes), 2), CENTRE))
    )
    assert (rows.n_pixels != with_sky_noise.n_pixels).any()


def test_the_worker_refuses_a_model_that_does_not_hash_or_is_not_photoz(
    pool: ConnectionPool, tmp_path: Path, model_bytes: bytes, database_url: str
) -> None:
    store_dir = tmp_path / "objects"
    store = LocalObjectStore(store_dir)
    with pool.connection() as conn:
        record = publish_model(conn, store, model_bytes, _spec())
        other = publish_model(
            conn, store, b"a morphology network", replace(_spec(), pipeline="morphology")
        )
    settings = Settings.from_env(
        {
            "GALPIPE_DATABASE_URL": database_url,
            "GALPIPE_OBJECT_STORE": store_dir.as_uri(),
            "GALPIPE_PHOTOZ_MODEL": record.model_version,
        }
    )
    pipeline = build_photoz_pipeline(settings, pool, threading.Event())
    assert pipeline.model_version == record.model_version
    pipeline.close()
    assert record.object_key.endswith(".bin")
    with pytest.raises(ModelNotRegistered, match="morphology model, not a photoz"):
        build_photoz_pipeline(
            replace(settings, photoz_model=other.model_version), pool, threading.Event()
        )
    (store_dir / record.object_key).write_bytes(model_bytes[:-1] + b"\x00")
    with pytest.raises(ModelArtefactError, match="do not hash"):
        build_photoz_pipeline(settings, pool, threading.Event())
    with pytest.raises(SettingsError, match="GALPIPE_PHOTOZ_MODEL"):
        build_photoz_pipeline(replace(settings, photoz_model=None), pool, threading.Event())
