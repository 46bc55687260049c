"""Fetch with cutout packs, then radon on what it stored: real PostgreSQL, the synthetic sky on
loopback, a local directory or S3 over HTTP (moto's server).

Packing must change how cutouts are stored and nothing else: fewer objects than galaxies, every
``cutouts`` row pointing into a recorded pack, one read per pack, the same measurements as from
per-galaxy objects, and a corrupted pack failing only its own galaxies.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from psycopg_pool import ConnectionPool

from galpipe.db.breaker import BreakerPolicy, CircuitBreaker
from galpipe.db.control import requeue_for_version
from galpipe.db.cutout_packs import CutoutPack
from galpipe.db.queue import TaskQueue
from galpipe.db.ratelimit import RateLimitPolicy, TokenBucket
from galpipe.ops.check import run_check
from galpipe.pipelines.cutout_packs import CutoutPacker, healpix_tiles
from galpipe.pipelines.decode_processes import DecodeProcesses
from galpipe.pipelines.fetch import FetchPipeline, build_fetch_pipeline
from galpipe.pipelines.radon import RadonPipeline
from galpipe.pipelines.worker import Worker
from galpipe.science.core import RadonConfig
from galpipe.science.radon import RadonOperator
from galpipe.settings import Settings
from galpipe.storage import LocalObjectStore, ObjectStore, S3ObjectStore, StoredObject, sha256_hex
from galpipe.survey.legacysurvey import CutoutRequest, LegacySurveyClient
from galpipe.synthetic import SyntheticSky, TruthGalaxy, make_truths
from galpipe.synthetic.truth import SkyConfig
from tests.integration.pipelines.test_fetch import all_cutouts, fetch_tasks, ingest

ORDER = 7
FETCH_BATCH = 16
BRIGHT_ELONGATED = SkyConfig(
    axis_ratio=(0.25, 0.5),
    r_mag=(16.5, 17.5),
    half_light_radius_arcsec=(1.2, 2.0),
    neighbour_fraction=0.0,
)


class CountingStore:
    """``inner`` with its reads counted by kind (which request a reader made)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.gets = 0
        self.range_gets = 0
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return self.inner.url

    def object_url(self, key: str) -> str:
        return self.inner.object_url(key)

    def put(self, key: str, data: bytes) -> StoredObject:
        return self.inner.put(key, data)

    def get(self, key: str, sha256: str | None = None) -> bytes:
        with self._lock:
            self.gets += 1
        return self.inner.get(key, sha256)

    def get_range(self, key: str, offset: int, length: int, sha256: str | None = None) -> bytes:
        with self._lock:
            self.range_gets += 1
        return self.inner.get_range(key, offset, length, sha256)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory) -> RadonOperator:
    from tests.unit.science import operator_for

    return operator_for(tmp_path_factory)


@pytest.fixture
def sky() -> Iterator[Callable[[Sequence[TruthGalaxy]], SyntheticSky]]:
    started: list[SyntheticSky] = []

    def start(truths: Sequence[TruthGalaxy]) -> SyntheticSky:
        started.append(SyntheticSky(truths, rate=1000.0).start())
        return started[-1]

    yield start
    for s in started:
        s.stop()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    request.getfixturevalue("aws_environment")
    return S3ObjectStore(
        request.getfixturevalue("s3_client"), request.getfixturevalue("bucket"), "run"
    )


def tile_sorted_truths(n: int, seed: int) -> list[TruthGalaxy]:
    """``n`` bright galaxies in a 0.6° box over a few order-7 tiles, in tile order (as a
    catalogue sorted by tile, or by Gaia source_id, is ingested)."""
    truths = make_truths(
        n, seed=seed, ra_range=(150.0, 150.6), dec_range=(1.0, 1.6), config=BRIGHT_ELONGATED
    )
    tiles = healpix_tiles(
        np.array([t.ra for t in truths]), np.array([t.dec for t in truths]), ORDER
    )
    return [truths[i] for i in np.argsort(tiles, kind="stable")]


def fetch_packed(pool: ConnectionPool, sky: SyntheticSky, store: ObjectStore, ids: list[int]):
    """Run one fetch worker with packing until every fetch task is finished."""
    request = CutoutRequest(base_url=sky.url)
    bucket = TokenBucket(pool, "fetch", RateLimitPolicy(1000.0, 50))
    bucket.configure()
    pipeline = FetchPipeline(
        pool=pool,
        client=LegacySurveyClient(request, read_timeout=5.0),
        store=store,
        bucket=bucket,
        breaker=CircuitBreaker(pool, "fetch", BreakerPolicy()),
        owner="packs",
        batch_size=FETCH_BATCH,
        threads=4,
        packer=CutoutPacker(store, "fetch", request.layer, ORDER),
    )
    worker = Worker(pipeline, TaskQueue(pool), owner="packs")
    try:
        worker.run(stop_when_idle=True)
    finally:
        pipeline.close()
        pipeline.client.close()
    tasks = fetch_tasks(pool)
    assert {tasks[i].state for i in ids} == {"done"}, tasks


def packs(pool: ConnectionPool) -> dict[str, CutoutPack]:
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT pack_key, healpix_order, tile, sha256, nbytes, n_cutouts FROM cutout_packs"
        ).fetchall()
    return {r[0]: CutoutPack(*r) for r in rows}


def run_radon(
    pool: ConnectionPool,
    store: ObjectStore,
    operator: RadonOperator,
    decoders: DecodeProcesses | None = None,
) -> tuple[dict[str, int], dict[tuple[int, str], tuple[Any, ...]], dict[int, str]]:
    """One radon worker over the queue: its outcome counts, the rows, the failures' errors; the
    rows are then deleted and the tasks queued again, for the next run."""
    config = RadonConfig()
    pipeline = RadonPipeline(
        pool=pool,
        store=store,
        config=config,
        operator=operator,
        batch_size=256,
        decode_processes=decoders,
    )
    worker = Worker(pipeline, TaskQueue(pool), owner="radon-packs")
    worker.run(stop_when_idle=True)
    pipeline.close()
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT source_id, band, angle_image_deg, position_angle_deg, angle_err_deg, flags, "
            "masked_fraction FROM radon_measurements"
        ).fetchall()
        errors: dict[int, str] = dict(
            conn.execute(
                "SELECT source_id, last_error FROM tasks WHERE pipeline = 'radon' "
                "AND state = 'failed'"
            ).fetchall()
        )
        conn.execute("DELETE FROM radon_measurements")
        requeue_for_version(conn, "radon", algo_version=config.algo_version, dry_run=False)
    return dict(worker.stats.outcomes), {(r[0], r[1]): r[2:] for r in rows}, errors


def unpack_into_own_objects(pool: ConnectionPool, store: ObjectStore) -> None:
    """Rewrite every packed cutout as its own object at its own key (per-galaxy storage)."""
    for sid, record in all_cutouts(pool).items():
        assert record.pack_key is not None
        assert record.pack_offset is not None
        data = store.get_range(record.pack_key, record.pack_offset, record.nbytes, record.sha256)
        store.put(record.object_key, data)
        with pool.connection() as conn:
            conn.execute(
                "UPDATE cutouts SET pack_key = NULL, pack_offset = NULL WHERE source_id = %s",
                (sid,),
            )


def test_packed_fetch_stores_fewer_objects_and_radon_measures_them_identically(
    pool: ConnectionPool, sky, store: ObjectStore, operator: RadonOperator, tmp_path: Path
) -> None:
    truths = tile_sorted_truths(40, seed=21)
    ids = ingest(pool, truths)
    fetch_packed(pool, sky(truths), store, ids)

    recorded = packs(pool)
    rows = all_cutouts(pool)
    print(f"{len(ids)} galaxies, {len(recorded)} packs")
    assert set(rows) == set(ids)
    # 40 galaxies in 3 batches over a few tiles: a pack per (batch, tile), far fewer than 40.
    assert len(recorded) <= 3 + len({p.tile for p in recorded.values()})
    assert sum(p.n_cutouts for p in recorded.values()) == len(ids)
    for pack in recorded.values():
        data = store.get(pack.pack_key, pack.sha256)  # verified against the recorded digest
        assert len(data) == pack.nbytes
        assert pack.healpix_order == ORDER
    for sid, record in rows.items():
        assert record.pack_key in recorded, sid
        assert record.pack_offset is not None
        assert not store.exists(record.object_key)  # no per-galaxy object
        piece = store.get_range(record.pack_key, record.pack_offset, record.nbytes)
        assert sha256_hex(piece) == record.sha256
    # Every galaxy of a pack lies in the pack's tile.
    ra, dec = np.array([t.ra for t in truths]), np.array([t.dec for t in truths])
    tile = dict(zip(ids, healpix_tiles(ra, dec, ORDER).tolist(), strict=True))
    assert all(recorded[r.pack_key].tile == tile[sid] for sid, r in rows.items() if r.pack_key)

    counted = CountingStore(store)
    outcomes, packed_rows, _ = run_radon(pool, counted, operator)
    assert outcomes == {"done": len(ids)}
    # One radon batch: one ranged GET per pack, nothing read galaxy by galaxy.
    assert (counted.range_gets, counted.gets) == (len(recorded), 0)

    if isinstance(store, LocalObjectStore):  # the decode processes open the store by its URL
        decoders = DecodeProcesses(2, store.url, None, RadonConfig())
        outcomes, in_processes, _ = run_radon(pool, store, operator, decoders)
        assert outcomes == {"done": len(ids)}
        assert in_processes == packed_rows

    unpack_into_own_objects(pool, store)
    counted = CountingStore(store)
    outcomes, own_rows, _ = run_radon(pool, counted, operator)
    assert outcomes == {"done": len(ids)}
    assert (counted.range_gets, counted.gets) == (0, len(ids))
    assert len(own_rows) == 5 * len(ids)
    assert own_rows.keys() == packed_rows.keys()
    for key, values in own_rows.items():
        np.testing.assert_array_equal(
            np.array(packed_rows[key], dtype=float), np.array(values, dtype=float), str(key)
        )


def test_a_corrupted_pack_fails_only_its_galaxies(
    pool: ConnectionPool, sky, tmp_path: Path, operator: RadonOperator
) -> None:
    truths = tile_sorted_truths(24, seed=5)
    ids = ingest(pool, truths)
    store = LocalObjectStore(tmp_path / "objects")
    fetch_packed(pool, sky(truths), store, ids)
    rows = all_cutouts(pool)
    by_pack: dict[str, list[int]] = {}
    for sid, record in rows.items():
        assert record.pack_key is not None
        by_pack.setdefault(record.pack_key, []).append(sid)
    multi = sorted((k for k, v in by_pack.items() if len(v) > 1), key=lambda k: -len(by_pack[k]))
    assert len(multi) >= 2, by_pack
    ruined, nicked = multi[0], multi[1]
    report = run_check(pool, store, Settings())
    assert report.objects_verified == len(ids)
    assert not [b for b in report.breaches if "object" in b.kind]
    # The whole of one pack overwritten (same size), one byte of one galaxy of another.
    path = tmp_path / "objects" / Path(*ruined.split("/"))
    path.write_bytes(bytes(len(path.read_bytes())))
    victim = by_pack[nicked][0]
    nicked_path = tmp_path / "objects" / Path(*nicked.split("/"))
    data = bytearray(nicked_path.read_bytes())
    data[(rows[victim].pack_offset or 0) + 3000] ^= 0x01
    nicked_path.write_bytes(bytes(data))

    # galpipe check reads each packed galaxy's slice and finds exactly the damaged ones.
    report = run_check(pool, store, Settings())
    object_breaches = {b.kind: b.count for b in report.breaches if "object" in b.kind}
    assert object_breaches == {"object_checksum_mismatch": len(by_pack[ruined]) + 1}

    outcomes, measured, errors = run_radon(pool, store, operator)
    assert set(errors) == {*by_pack[ruined], victim}
    assert outcomes == {"done": len(ids) - len(errors), "failed": len(errors)}
    assert {sid for sid, _ in measured} == set(ids) - set(errors)
    for sid, error in errors.items():
        assert "checksum mismatch" in error, error
        assert str(rows[sid].pack_key) in error  # names the pack and the galaxy's byte range


@pytest.mark.parametrize(("packing", "order"), [("none", None), ("healpix", 5)])
def test_production_wiring_packs_only_when_asked(
    database_url: str, pool: ConnectionPool, tmp_path: Path, packing: str, order: int | None
) -> None:
    env = {
        "GALPIPE_DATABASE_URL": database_url,
        "GALPIPE_OBJECT_STORE": (tmp_path / "objects").as_uri(),
        "GALPIPE_CUTOUT_PACKING": packing,
    }
    if order is not None:
        env["GALPIPE_CUTOUT_PACK_ORDER"] = str(order)
    pipeline = build_fetch_pipeline(Settings.from_env(env), pool, threading.Event())
    try:
        packer = pipeline.packer
        if order is None:
            assert packer is None
        else:
            assert packer is not None
            assert (packer.order, packer.layer, packer.objects) == (5, "ls-dr10", pipeline.objects)
    finally:
        pipeline.close()
