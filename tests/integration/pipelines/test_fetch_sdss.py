"""The fetch pipeline's SDSS source end to end: real PostgreSQL, the synthetic sky's frames on
loopback, a local object store, and the photo-z pipeline reading what fetch stored.

The synthetic sky serves SDSS frames drawn from its galaxies (``galpipe.synthetic.sdss_frames``);
each galaxy's catalogue columns name its field. The checks are made from the outside: the task
table, the ``cutouts`` rows, the stored bytes, the sky's request log and the shared bucket's
draws, and the error planes are compared with the error image computed here, straight from the
frame files' HDUs with the data model's recipe.
"""

from __future__ import annotations

import bz2
import io
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from psycopg_pool import ConnectionPool

from galpipe.db.breaker import BreakerPolicy, CircuitBreaker
from galpipe.db.connection import open_pool
from galpipe.db.cutouts import CutoutRecord, cutouts_for
from galpipe.db.galaxies import insert_galaxies
from galpipe.db.photoz import photoz_predictions_for
from galpipe.db.queue import RetryPolicy, TaskQueue
from galpipe.db.ratelimit import RateLimitPolicy, TokenBucket
from galpipe.db.routes import add_route
from galpipe.errors import ConfigurationError
from galpipe.learning.pixel_redshift import PixelRedshiftModel
from galpipe.pipelines.fetch import build_fetch_pipeline
from galpipe.pipelines.model_artefacts import ModelSpec, publish_model
from galpipe.pipelines.photoz import PhotozPipeline
from galpipe.pipelines.sdss_fetch import SdssFetchPipeline
from galpipe.pipelines.stored_cutouts import decode_cutout
from galpipe.pipelines.worker import Worker
from galpipe.science.photoz_pixels import pixel_vectors, sky_noise_errors
from galpipe.settings import Settings, SettingsError
from galpipe.storage import LocalObjectStore, ObjectNotFound
from galpipe.survey.cutout import parse_cutout
from galpipe.survey.sdss import (
    SdssFrameClient,
    dark_variance,
    error_image,
    frame_name,
    gain,
    interpolate_sky,
)
from galpipe.survey.sdss_cutout import stamp_wcs

pytest.importorskip("galsim", reason="the synthetic sky renders with GalSim")
pytest.importorskip("reproject", reason="registration needs reproject (the sdss extra)")

from reproject import reproject_interp

from galpipe.synthetic import SyntheticSky, TruthGalaxy, truth_for
from galpipe.synthetic.photoz_sky import sample_photoz_sky
from galpipe.synthetic.sdss_frames import FrameId, field_centre, field_of

TERMINAL = ("done", "failed", "skipped")
FRAMES_PATH = "/sas/dr10/boss/photoObj/frames/"
SIZE, PIXSCALE, BANDS = 40, 0.262, "griz"
# A field of the synthetic layout and its centre; galaxies are placed around it.
RUN, CAMCOL, FIELD = field_of(150.0, 2.0)
RA_C, DEC_C = field_centre(RUN, CAMCOL, FIELD)
ARCSEC = 1 / 3600


def at(east_arcsec: float, north_arcsec: float) -> tuple[float, float]:
    """(ra, dec) of an offset from the field's centre."""
    return RA_C + east_arcsec * ARCSEC / np.cos(np.radians(DEC_C)), DEC_C + north_arcsec * ARCSEC


def isolated(first_id: int, ra: float, dec: float) -> TruthGalaxy:
    """The first synthetic galaxy from ``first_id`` on with no neighbour within 8 arcsec."""
    for sid in range(first_id, first_id + 100):
        truth = truth_for(sid, ra, dec)
        if all(np.hypot(n.east_arcsec, n.north_arcsec) > 8.0 for n in truth.neighbours):
            return truth
    raise AssertionError(f"no isolated galaxy among ids {first_id} …")


def field_extras(run: int = RUN, camcol: int = CAMCOL, field: int = FIELD) -> dict[str, Any]:
    """The catalogue columns of a CasJobs PhotoObj query."""
    return {"run": run, "rerun": "301", "camcol": camcol, "field": field, "type": 3}


class CountingBucket(TokenBucket):
    """The shared bucket, counting the tokens this process takes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.taken = 0
        self._count_lock = threading.Lock()

    def acquire(self, n: int = 1, *, max_wait: float | None = None) -> float:
        waited = super().acquire(n, max_wait=max_wait)
        with self._count_lock:
            self.taken += n
        return waited


@dataclass
class Rig:
    pool: ConnectionPool
    pipeline: SdssFetchPipeline
    worker: Worker
    store: LocalObjectStore
    bucket: CountingBucket

    def drive(self, ids: Sequence[int], timeout_s: float = 60.0) -> dict[int, tuple[str, int, str]]:
        """Run batches until every fetch task of ``ids`` is terminal; return the tasks."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            tasks = fetch_tasks(self.pool)
            if all(tasks[i][0] in TERMINAL for i in ids):
                return tasks
            if self.worker.run_once() == 0:
                time.sleep(0.02)
        raise AssertionError(f"tasks not finished after {timeout_s} s: {fetch_tasks(self.pool)}")


def fetch_tasks(pool: ConnectionPool) -> dict[int, tuple[str, int, str]]:
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT source_id, state::text, attempts, coalesce(last_error, '') FROM tasks "
            "WHERE pipeline = 'fetch'"
        ).fetchall()
    return {sid: (state, attempts, error) for sid, state, attempts, error in rows}


def ingest(
    pool: ConnectionPool, galaxies: Sequence[tuple[TruthGalaxy, dict[str, Any]]]
) -> list[int]:
    """Insert the galaxies with their catalogue columns and queue their fetch tasks."""
    rows = [(i, t.source_id, t.ra, t.dec, json.dumps(e)) for i, (t, e) in enumerate(galaxies)]
    ids = [t.source_id for t, _ in galaxies]
    with pool.connection() as conn, conn.transaction():
        assert insert_galaxies(conn, "sdss-test", rows).inserted == len(rows)
        TaskQueue(pool).enqueue("fetch", ids, conn=conn)
    return ids


def frame_requests(sky: SyntheticSky) -> list[dict[str, Any]]:
    return [e for e in sky.log if e["path"].startswith(FRAMES_PATH)]


@pytest.fixture
def sky_factory() -> Iterator[Callable[..., SyntheticSky]]:
    started: list[SyntheticSky] = []

    def start(truths: Sequence[TruthGalaxy], **kwargs: Any) -> SyntheticSky:
        sky = SyntheticSky(truths, rate=0, **kwargs)
        started.append(sky)
        return sky.start()

    yield start
    for sky in started:
        sky.stop()


@pytest.fixture
def rig_factory(database_url: str, tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []
    pool = open_pool(database_url, max_size=6)

    def make(sky: SyntheticSky, *, bands: str = BANDS, threads: int = 1) -> Rig:
        stop = threading.Event()
        bucket = CountingBucket(pool, "fetch", RateLimitPolicy(200.0, 1.0))
        bucket.configure()
        breaker = CircuitBreaker(pool, "fetch", BreakerPolicy(failures=5))
        store = LocalObjectStore(tmp_path / "objects")
        pipeline = SdssFetchPipeline(
            pool=pool,
            client=SdssFrameClient(f"{sky.url}/sas"),
            store=store,
            bucket=bucket,
            breaker=breaker,
            owner="rig",
            bands=bands,
            size=SIZE,
            pixscale=PIXSCALE,
            threads=threads,
            max_retries=3,
            stop=stop,
        )
        queue = TaskQueue(pool, RetryPolicy(max_retries=3, delays=(0.05,)))
        worker = Worker(pipeline, queue, owner="rig", lease_seconds=60.0, stop_event=stop)
        rig = Rig(pool, pipeline, worker, store, bucket)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.pipeline.close()
        rig.pipeline.client.close()
    pool.close()


def errors_by_hand(frame_bz2: bytes, band: str, ra: float, dec: float) -> tuple[np.ndarray, ...]:
    """Image and error of one band's stamp, from the frame file's HDUs: the data model's recipe,
    then the same bilinear resampling onto the stamp grid."""
    with fits.open(io.BytesIO(bz2.decompress(frame_bz2))) as hdul:
        image = np.asarray(hdul[0].data, dtype=np.float64)
        wcs = WCS(hdul[0].header, naxis=2)
        calib = np.asarray(hdul[1].data, dtype=np.float64)
        sky_row = hdul[2].data[0]
        allsky = np.asarray(sky_row["ALLSKY"], dtype=np.float64)
        xinterp = np.asarray(sky_row["XINTERP"], dtype=np.float64)
        yinterp = np.asarray(sky_row["YINTERP"], dtype=np.float64)
    sky_dn = interpolate_sky(allsky, image.shape, xinterp, yinterp)
    error = error_image(
        image,
        calib,
        sky_dn,
        gain=gain(CAMCOL, band, RUN),
        dark_variance=dark_variance(CAMCOL, band, RUN),
    )
    target = stamp_wcs(ra, dec, SIZE, PIXSCALE)
    planes = np.stack([image, error.astype(np.float64)])
    resampled, _ = reproject_interp((planes, wcs), target, shape_out=(SIZE, SIZE))
    return resampled[0], resampled[1]


# --------------------------------------------------------------------------------------------


def test_sdss_cutouts_are_stored_like_cutouts_with_the_frames_error_planes(
    rig_factory: Callable[..., Rig], sky_factory: Callable[..., SyntheticSky]
) -> None:
    near = [truth_for(1001, *at(-15.0, 5.0)), truth_for(1002, *at(18.0, -8.0))]
    # A galaxy of another field: its own four frames.
    other_run, other_camcol, other_field = field_of(151.0, 2.0)
    far = truth_for(1003, *field_centre(other_run, other_camcol, other_field))
    sky = sky_factory([*near, far])
    rig = rig_factory(sky)
    ids = ingest(
        rig.pool,
        [
            (near[0], field_extras()),
            (near[1], field_extras()),
            (far, field_extras(other_run, other_camcol, other_field)),
        ],
    )
    tasks = rig.drive(ids)
    assert {sid: row[0] for sid, row in tasks.items()} == dict.fromkeys(ids, "done")

    # One frame request per band per field: the second galaxy of a field reuses its frames,
    # and every request took one token of the shared bucket.
    requests_sent = frame_requests(sky)
    assert len(requests_sent) == 2 * len(BANDS)
    assert {e["status"] for e in requests_sent} == {200}
    assert rig.bucket.taken == len(requests_sent)

    with rig.pool.connection() as conn:
        records = cutouts_for(conn, ids)
    assert set(records) == set(ids)
    for sid, record in records.items():
        assert record == CutoutRecord(
            source_id=sid,
            layer="sdss-dr10",
            bands=BANDS,
            missing_bands="",
            size=SIZE,
            pixscale=PIXSCALE,
            survey="SDSS",
            object_key=f"cutouts/sdss-dr10/{BANDS}-{SIZE}px-{PIXSCALE:g}as/{sid}.fits",
            sha256=record.sha256,
            nbytes=record.nbytes,
        )
        raw = rig.store.get(record.object_key, record.sha256)  # raises unless it hashes
        assert len(raw) == record.nbytes
        # The Legacy Survey parser reads it as a cutout centred on the galaxy.
        truth = next(t for t in [*near, far] if t.source_id == sid)
        parse_cutout(raw, bands=BANDS, size=SIZE, center=(truth.ra, truth.dec), pixscale=PIXSCALE)

    # The photo-z decoder gets the error planes; they are the frames' error images, computed
    # here from each frame file's HDUs, resampled onto the stamp grid.
    truth = near[0]
    decoded = decode_cutout(rig.store.get(records[truth.source_id].object_key), SIZE, BANDS)
    assert decoded.error_source == "sdss_sky_hdu"
    assert decoded.errors is not None
    for b, band in enumerate(BANDS):
        body = sky.frames.frame_bytes(FrameId("301", RUN, CAMCOL, FIELD, band))
        assert body is not None
        image, error = errors_by_hand(body, band, truth.ra, truth.dec)
        np.testing.assert_allclose(decoded.data[b], image, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(decoded.errors[b], error, rtol=1e-5, atol=1e-7)
        # The error has the source's Poisson term: larger at the galaxy than in its outskirts.
        assert decoded.errors[b, 19:21, 19:21].min() > np.median(decoded.errors[b])
    # The galaxy is at the stamp's centre.
    peak = np.unravel_index(np.argmax(decoded.data[1]), decoded.data[1].shape)
    assert abs(peak[0] - 19.5) <= 3
    assert abs(peak[1] - 19.5) <= 3


def test_the_photoz_pipeline_reads_the_sdss_error_planes(
    rig_factory: Callable[..., Rig], sky_factory: Callable[..., SyntheticSky]
) -> None:
    # Galaxies without a companion blended with them: photo-z segments them on their own.
    truths = [isolated(6001, *at(-12.0, 0.0)), isolated(6101, *at(14.0, 6.0))]
    sky = sky_factory(truths)
    rig = rig_factory(sky)
    with rig.pool.connection() as conn:
        add_route(conn, "fetch", "photoz")
    ids = ingest(rig.pool, [(t, field_extras()) for t in truths])
    assert {row[0] for row in rig.drive(ids).values()} == {"done"}

    train = sample_photoz_sky(60, seed=21, start_id=1)
    cubes = train.stamps.images
    vectors = pixel_vectors(cubes, sky_noise_errors(cubes), np.full((len(cubes), 2), 19.5))
    model = PixelRedshiftModel(combiner="density_mode").fit(
        vectors, train.galaxies.redshift, train.galaxies.source_id, k_grid=(4,)
    )
    spec = ModelSpec(
        pipeline="photoz",
        architecture="pixel_knn",
        input_mode="pixel_vectors",
        input_size=SIZE,
        input_channels=len(BANDS),
        training_data_sha256="0" * 64,
        metrics={},
    )
    with rig.pool.connection() as conn:
        record = publish_model(conn, rig.store, model.to_bytes(), spec)
    photoz = PhotozPipeline(pool=rig.pool, store=rig.store, model=model, record=record)
    try:
        Worker(photoz, TaskQueue(rig.pool), owner="photoz-test").run(stop_when_idle=True)
    finally:
        photoz.close()
    with rig.pool.connection() as conn:
        states: dict[int, tuple[str, str]] = {
            sid: (state, error)
            for sid, state, error in conn.execute(
                "SELECT source_id, state::text, coalesce(last_error, '') FROM tasks "
                "WHERE pipeline = 'photoz'"
            )
        }
        rows = photoz_predictions_for(conn, record.model_version, ids)
    assert states == dict.fromkeys(ids, ("done", ""))
    assert list(rows.source_ids) == sorted(ids)
    assert list(rows.error_source) == ["sdss_sky_hdu"] * len(ids)
    assert np.isfinite(rows.z_phot).all()


def test_missing_field_columns_fail_the_task_naming_the_galaxy_and_column(
    rig_factory: Callable[..., Rig], sky_factory: Callable[..., SyntheticSky]
) -> None:
    truth = truth_for(2001, *at(0.0, 0.0))
    sky = sky_factory([truth])
    rig = rig_factory(sky)
    (sid,) = ingest(rig.pool, [(truth, {"run": RUN, "field": FIELD})])
    state, attempts, error = rig.drive([sid])[sid]
    assert (state, attempts) == ("failed", 1)
    assert str(sid) in error
    assert "'camcol'" in error
    assert frame_requests(sky) == []
    assert rig.bucket.taken == 0


def test_a_truncated_frame_fails_at_once_naming_the_frame(
    rig_factory: Callable[..., Rig], sky_factory: Callable[..., SyntheticSky]
) -> None:
    truth = truth_for(3001, *at(0.0, 0.0))
    damaged = frame_name(RUN, CAMCOL, FIELD, "i")
    sky = sky_factory([truth], damaged_frames={damaged})
    rig = rig_factory(sky)
    (sid,) = ingest(rig.pool, [(truth, field_extras())])
    state, attempts, error = rig.drive([sid])[sid]
    # Not retried: the whole file arrived and is itself cut short.
    assert (state, attempts) == ("failed", 1)
    assert f"SDSS frame {damaged}" in error
    assert "truncated" in error
    assert [e["fault"] for e in frame_requests(sky)] == [None, None, "damaged"]
    with rig.pool.connection() as conn:
        assert cutouts_for(conn, [sid]) == {}
    with pytest.raises(ObjectNotFound):
        rig.store.get(rig.pipeline.object_key(sid))


def test_a_missing_band_fails_at_once_naming_the_frame(
    rig_factory: Callable[..., Rig], sky_factory: Callable[..., SyntheticSky]
) -> None:
    truth = truth_for(4001, *at(0.0, 0.0))
    sky = sky_factory([truth])
    rig = rig_factory(sky, bands="ugr")  # the synthetic sky has no u frames: 404
    (sid,) = ingest(rig.pool, [(truth, field_extras())])
    state, attempts, error = rig.drive([sid])[sid]
    assert (state, attempts) == ("failed", 1)
    assert "missing band 'u'" in error
    assert frame_name(RUN, CAMCOL, FIELD, "u") in error
    assert [e["status"] for e in frame_requests(sky)] == [404]


def test_a_stamp_off_its_frame_fails_at_once_naming_the_frame(
    rig_factory: Callable[..., Rig], sky_factory: Callable[..., SyntheticSky]
) -> None:
    inside = truth_for(5001, *at(0.0, 0.0))
    # Within the field's box, but 36" north of its centre: the 10" stamp crosses the edge of
    # the 76"-high frame.
    edge = truth_for(5002, *at(0.0, 36.0))
    # The catalogue names a field this position is not on.
    elsewhere = truth_for(5003, *at(0.0, -10.0))
    sky = sky_factory([inside, edge, elsewhere])
    rig = rig_factory(sky, bands="gr")
    ids = ingest(
        rig.pool,
        [
            (inside, field_extras()),
            (edge, field_extras()),
            (elsewhere, field_extras(field=FIELD + 3)),
        ],
    )
    tasks = rig.drive(ids)
    assert tasks[inside.source_id][0] == "done"
    state, attempts, error = tasks[edge.source_id]
    assert (state, attempts) == ("failed", 1)
    assert f"SDSS frame {frame_name(RUN, CAMCOL, FIELD, 'g')}" in error
    assert "leaves the frame's edge" in error
    state, attempts, error = tasks[elsewhere.source_id]
    assert (state, attempts) == ("failed", 1)
    assert frame_name(RUN, CAMCOL, FIELD + 3, "g") in error
    assert "outside" in error


def test_settings_select_the_sdss_source_on_the_shared_bucket_and_breaker(
    database_url: str, pool: ConnectionPool, tmp_path: Path
) -> None:
    env = {
        "GALPIPE_DATABASE_URL": database_url,
        "GALPIPE_OBJECT_STORE": (tmp_path / "objects").as_uri(),
        "GALPIPE_FETCH_SOURCE": "sdss",
        "GALPIPE_SDSS_BASE_URL": "http://127.0.0.1:9/sas",
        "GALPIPE_FETCH_RATE_LIMIT": "2.5",
    }
    pipeline = build_fetch_pipeline(Settings.from_env(env), pool, threading.Event())
    try:
        assert isinstance(pipeline, SdssFetchPipeline)
        assert pipeline.name == pipeline.bucket.name == pipeline.breaker.name == "fetch"
        assert pipeline.bucket.policy.rate == 2.5
        assert pipeline.client.base_url == "http://127.0.0.1:9/sas"
        assert (pipeline.bands, pipeline.size, pipeline.pixscale) == (BANDS, SIZE, PIXSCALE)
    finally:
        pipeline.close()
    with pytest.raises(SettingsError, match="GALPIPE_CUTOUT_BANDS='grY'"):
        build_fetch_pipeline(
            Settings.from_env({**env, "GALPIPE_CUTOUT_BANDS": "grY"}), pool, threading.Event()
        )
    with pytest.raises(SettingsError, match="GALPIPE_FETCH_SOURCE='sdss9'"):
        Settings.from_env({**env, "GALPIPE_FETCH_SOURCE": "sdss9"})


def test_the_sdss_source_without_reproject_fails_at_start_naming_the_extra(
    database_url: str, pool: ConnectionPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker image carries no reproject: the worker must stop at start with the fix, not
    fail every galaxy's registration."""
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "reproject" else real_find_spec(name, *a),
    )
    env = {
        "GALPIPE_DATABASE_URL": database_url,
        "GALPIPE_OBJECT_STORE": (tmp_path / "objects").as_uri(),
        "GALPIPE_FETCH_SOURCE": "sdss",
    }
    with pytest.raises(ConfigurationError, match=r"galpipe\[sdss\]"):
        build_fetch_pipeline(Settings.from_env(env), pool, threading.Event())
