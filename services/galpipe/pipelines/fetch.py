"""The fetch pipeline (paper, section 2): griz FITS cutouts of catalogued galaxies into storage.

For each claimed galaxy, one request to the cutout service, obeying the rate and the outage
decision that every fetch process shares through Postgres:

1. wait while the shared circuit breaker is open (the paper's auto-pause on an outage); after
   its cooldown exactly one request, across all replicas, probes the service;
2. take a token from the shared bucket (one global request rate, whatever the replica count);
3. GET the cutout and classify the answer (:mod:`galpipe.survey.legacysurvey`);
4. store the bytes exactly as received at a deterministic key, read them back and check size
   and SHA-256 before the galaxy counts as fetched; with ``GALPIPE_CUTOUT_PACKING=healpix`` the
   batch's cutouts of one HEALPix tile are stored together as one pack object instead, checked
   the same way (:mod:`galpipe.pipelines.cutout_packs`).

The worker then completes the task, writes the ``cutouts`` row and queues the task of every
route out of fetch (radon; morphology where that route is added) in one transaction. A thread
pool inside the process keeps several requests in flight, so the service's latency does not cap
the rate.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Generic, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from galpipe.db.breaker import CLOSED, BreakerPolicy, CircuitBreaker
from galpipe.db.cutouts import CutoutRecord
from galpipe.db.galaxies import positions
from galpipe.db.queue import Task
from galpipe.db.ratelimit import RateLimitPolicy, RateLimitTimeoutError, TokenBucket
from galpipe.errors import ConfigurationError
from galpipe.pipelines.base import Done, Fail, Outcome, Release, Retry, Skip
from galpipe.pipelines.cutout_packs import CutoutPacker, UnpackedCutout, record_fetched
from galpipe.runtime import metrics
from galpipe.settings import Settings
from galpipe.storage import (
    ObjectStore,
    ObjectStoreError,
    object_store_from_settings,
    sha256_hex,
)
from galpipe.storage.instrumented import InstrumentedObjectStore
from galpipe.survey.legacysurvey import (
    CutoutRequest,
    LegacySurveyClient,
    NoCoverage,
    Permanent,
    Retryable,
    Success,
)

if TYPE_CHECKING:
    from galpipe.pipelines.sdss_fetch import SdssFetchPipeline

log = logging.getLogger(__name__)

#: What a fetch source reads of each claimed galaxy from the catalogue.
RowT = TypeVar("RowT")

# How often a request waiting on an open breaker asks again (seconds).
BREAKER_POLL_S = 0.5
# Longest a request waits for its rate-limit token before the task is given back (seconds).
MAX_TOKEN_WAIT_S = 60.0
#: How long a fetch process trusts its view of a closed breaker (seconds).
BREAKER_VIEW_SECONDS = 0.25
#: How many seconds of the fetch rate one draw reserves for this process's threads.
TOKEN_BLOCK_SECONDS = 0.2


class FetchSource(Generic[RowT]):
    """What every fetch source shares: the claimed batch's catalogue rows read in one query,
    one galaxy per thread (:meth:`_fetch_one`, the source's own), the batch's cutouts packed
    when a packer is set, and their rows recorded in the completing transaction.

    Parameters are those of :class:`FetchPipeline`; ``thread_name`` prefixes the threads.
    """

    name = "fetch"

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        store: ObjectStore,
        bucket: TokenBucket,
        breaker: CircuitBreaker,
        owner: str,
        batch_size: int,
        threads: int,
        max_retries: int,
        stop: threading.Event | None,
        sleep: Callable[[float], None],
        packer: CutoutPacker | None,
        thread_name: str,
    ) -> None:
        self.pool = pool
        self.packer = packer
        self.objects = store
        self.bucket = bucket
        self.breaker = breaker
        self.owner = owner
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.stop = stop or threading.Event()
        self._sleep = sleep
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=thread_name)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.breaker.flush()

    # -- the pipeline interface ----------------------------------------------------------------

    def process(self, tasks: Sequence[Task]) -> Sequence[Outcome]:
        with self.pool.connection() as conn:
            rows = self._rows(conn, [t.source_id for t in tasks])
        outcomes = list(
            self._executor.map(lambda t: self._fetch_one(t, rows.get(t.source_id)), tasks)
        )
        return outcomes if self.packer is None else self.packer.pack(outcomes, self._executor)

    def store(self, conn: psycopg.Connection, done: Sequence[Done]) -> None:
        record_fetched(conn, [d.result for d in done])

    # -- the source's own ----------------------------------------------------------------------

    def _rows(self, conn: psycopg.Connection, source_ids: list[int]) -> Mapping[int, RowT]:
        """What a request of each galaxy needs from the catalogue (absent: not ingested)."""
        raise NotImplementedError

    def _fetch_one(self, task: Task, row: RowT | None) -> Outcome:
        """One galaxy's requests, stored cutout and outcome."""
        raise NotImplementedError


class FetchPipeline(FetchSource[tuple[float, float]]):
    """Fetches cutouts for claimed galaxies; see the module docstring for the steps.

    Parameters
    ----------
    pool
        Database pool (galaxy positions).
    client
        Cutout service client (real or the synthetic sky).
    store
        Where the FITS bytes go.
    bucket, breaker
        The shared token bucket and circuit breaker of the fetch pipeline (named ``fetch``).
    owner
        This process's lease owner name (also the breaker's probe owner).
    batch_size, threads
        Tasks per claim; concurrent requests inside this process.
    max_retries
        The queue's retry limit: on the last attempt a transient failure becomes final.
    stop
        Set when the process should stop; waiting requests then give their task back.
    packer
        Stores the batch's cutouts in one pack per HEALPix tile; None: one object per galaxy.
    """

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        client: LegacySurveyClient,
        store: ObjectStore,
        bucket: TokenBucket,
        breaker: CircuitBreaker,
        owner: str,
        batch_size: int = 32,
        threads: int = 8,
        max_retries: int = 3,
        stop: threading.Event | None = None,
        sleep: Callable[[float], None] = time.sleep,
        packer: CutoutPacker | None = None,
    ) -> None:
        super().__init__(
            pool=pool,
            store=store,
            bucket=bucket,
            breaker=breaker,
            owner=owner,
            batch_size=batch_size,
            threads=threads,
            max_retries=max_retries,
            stop=stop,
            sleep=sleep,
            packer=packer,
            thread_name="fetch",
        )
        self.client = client

    def object_key(self, source_id: int) -> str:
        """Deterministic key: a galaxy's cutout of one layout always lands at the same place."""
        r = self.client.request
        return f"cutouts/{r.layer}/{r.bands}-{r.size}px-{r.pixscale:g}as/{source_id}.fits"

    # -- one galaxy --------------------------------------------------------------------------

    def _rows(
        self, conn: psycopg.Connection, source_ids: list[int]
    ) -> Mapping[int, tuple[float, float]]:
        return positions(conn, source_ids)

    def _fetch_one(self, task: Task, position: tuple[float, float] | None) -> Outcome:
        sid = task.source_id
        if position is None:
            return Fail(sid, "galaxy is not in the galaxies table")
        refused = admit_request(self.breaker, self.bucket, self.owner, self.stop, self._sleep, sid)
        if refused is not None:
            return refused
        result = self.client.fetch(*position)
        final_attempt = task.attempts > self.max_retries
        match result:
            case Success():
                self.breaker.record_success(self.owner)
                metrics.CUTOUT_RESULTS.labels("success", "").inc()
                return self._keep(sid, result, position)
            case NoCoverage(reason=reason):
                self.breaker.record_success(self.owner)
                metrics.CUTOUT_RESULTS.labels("no_coverage", "").inc()
                return Skip(sid, f"no coverage: {reason}")
            case Permanent(reason=reason, kind=kind):
                # The service answered; the request itself was wrong: not an outage.
                self.breaker.record_success(self.owner)
                metrics.CUTOUT_RESULTS.labels("permanent", kind).inc()
                return Fail(sid, reason)
            case Retryable(reason=reason, kind=kind, retry_after_s=retry_after):
                breaker_state = self.breaker.record_failure(self.owner, reason)
                metrics.CUTOUT_RESULTS.labels("retryable", kind).inc()
                if final_attempt:
                    final = result.when_exhausted()
                    if not isinstance(final, NoCoverage):
                        return Fail(sid, final.reason)
                    if breaker_state != CLOSED:
                        # A run of 500s during an outage says nothing about this position.
                        return Fail(
                            sid,
                            f"{reason} on the last attempt while the cutout service was failing "
                            f"(breaker {breaker_state}); not taken as missing sky",
                        )
                    return Skip(sid, f"no coverage: {final.reason}")
                return Retry(sid, reason, delay_s=retry_after)
        raise AssertionError(f"unclassified fetch result {result!r}")  # pragma: no cover

    def _keep(self, sid: int, result: Success, position: tuple[float, float]) -> Outcome:
        """Store the bytes as received, read them back, and check them before success."""
        request = self.client.request
        survey = result.cutout.header.get("SURVEY")
        record = CutoutRecord(
            source_id=sid,
            layer=request.layer,
            bands=request.bands,
            missing_bands="".join(result.missing_bands),
            size=request.size,
            pixscale=request.pixscale,
            survey=None if survey is None else str(survey),
            object_key=self.object_key(sid),
            sha256=sha256_hex(result.raw_bytes),
            nbytes=len(result.raw_bytes),
        )
        return keep_cutout(self.objects, self.packer, self.name, record, result.raw_bytes, position)


def wait_for_breaker(
    breaker: CircuitBreaker,
    owner: str,
    stop: threading.Event,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Block while the shared breaker is open; False if asked to stop meanwhile.

    Every request of a fetch source waits here before it takes its token.
    """
    started = time.monotonic()
    try:
        while not breaker.allow(owner):
            if stop.is_set():
                return False
            sleep(BREAKER_POLL_S)
    finally:
        waited = time.monotonic() - started
        if waited > 0.01:
            metrics.BREAKER_WAIT_SECONDS.labels(breaker.name).inc(waited)
    return not stop.is_set()


def admit_request(
    breaker: CircuitBreaker,
    bucket: TokenBucket,
    owner: str,
    stop: threading.Event,
    sleep: Callable[[float], None],
    source_id: int,
) -> Release | None:
    """Let one request of a fetch source go: None once the shared breaker lets it through and
    it holds a token of the shared bucket; else the galaxy's ``Release`` (stopping while the
    breaker was open, or a token queue longer than :data:`MAX_TOKEN_WAIT_S`)."""
    if not wait_for_breaker(breaker, owner, stop, sleep):
        return Release(source_id, "stopping while the circuit breaker was open")
    try:
        bucket.acquire(1, max_wait=MAX_TOKEN_WAIT_S)
    except RateLimitTimeoutError as exc:
        return Release(source_id, f"rate-limit queue too long: {exc}")
    return None


def keep_cutout(
    objects: ObjectStore,
    packer: CutoutPacker | None,
    pipeline: str,
    record: CutoutRecord,
    data: bytes,
    position: tuple[float, float],
) -> Outcome:
    """A fetched cutout's outcome: stored and checked on its own, or waiting for its pack.

    Without ``packer`` the bytes go to ``record.object_key`` (:func:`store_checked`); with it
    the galaxy's ``Done`` carries the bytes and its tile (of ``position``, ICRS degrees), and
    :meth:`CutoutPacker.pack` stores the batch's packs after every request is answered.
    """
    if packer is not None:
        return Done(record.source_id, UnpackedCutout(record, data, packer.tile_of(*position)))
    expected = store_checked(objects, pipeline, record.source_id, record.object_key, data)
    if isinstance(expected, Retry):
        return expected
    return Done(record.source_id, record)


def store_checked(
    objects: ObjectStore, pipeline: str, sid: int, key: str, data: bytes
) -> str | Retry:
    """Put ``data`` at ``key``, read it back and check size and SHA-256.

    Returns
    -------
    str or Retry
        The hex SHA-256 of the stored bytes, or the galaxy's :class:`Retry` when the store
        failed or gave back other bytes.
    """
    expected = sha256_hex(data)
    try:
        stored = objects.put(key, data)
        readback = objects.get(key, expected)
    except ObjectStoreError as exc:
        return Retry(sid, f"object store: {exc}")
    if stored.sha256 != expected or len(readback) != len(data):
        return Retry(sid, f"object store returned {len(readback)} bytes for {len(data)}")
    metrics.STORED_BYTES.labels(pipeline).inc(len(data))
    return expected


def breaker_policy(settings: Settings) -> BreakerPolicy:
    """The fetch pipeline's breaker policy: the ``GALPIPE_BREAKER_*`` settings."""
    return BreakerPolicy(
        failures=settings.breaker_failures,
        failure_ratio=settings.breaker_failure_ratio,
        min_requests=settings.breaker_min_requests,
        window_seconds=settings.breaker_window_seconds,
        cooldown_seconds=settings.breaker_cooldown_seconds,
        probe_timeout_seconds=settings.breaker_probe_timeout_seconds,
    )


def rate_limit_policy(settings: Settings) -> RateLimitPolicy:
    """The fetch pipeline's request rate: ``GALPIPE_FETCH_RATE_LIMIT`` and ``_BURST``."""
    return RateLimitPolicy(rate=settings.fetch_rate_limit, burst=settings.fetch_rate_burst)


def build_fetch_pipeline(
    settings: Settings, pool: ConnectionPool, stop: threading.Event
) -> FetchPipeline | SdssFetchPipeline:
    """The production fetch pipeline, everything from ``GALPIPE_*`` settings.

    The one place it is wired: the cutout client, the object store, and the token bucket and
    circuit breaker named after the pipeline, with their policies, each reporting to the
    process's metrics. The bucket's row takes this process's policy before the first draw.
    With ``GALPIPE_FETCH_SOURCE=sdss`` the client is the SDSS frame client
    (``GALPIPE_SDSS_BASE_URL``) and the pipeline the SDSS source
    (:class:`~galpipe.pipelines.sdss_fetch.SdssFetchPipeline`), on the same bucket and breaker.

    Parameters
    ----------
    settings
        The process's configuration.
    pool
        Database pool (galaxy positions, the shared bucket and breaker).
    stop
        The worker's stop event: requests waiting on the breaker give their task back.
    """
    if settings.fetch_source == "sdss":
        return _build_sdss_fetch_pipeline(settings, pool, stop)
    request = CutoutRequest(
        base_url=settings.cutout_base_url,
        layer=settings.cutout_layer,
        bands=settings.cutout_bands,
        size=settings.cutout_size,
        pixscale=settings.cutout_pixscale,
        invvar=settings.cutout_invvar,
    )
    client = LegacySurveyClient(
        request,
        connect_timeout=settings.cutout_connect_timeout_seconds,
        read_timeout=settings.cutout_read_timeout_seconds,
        observer=observe_request,
    )
    bucket, breaker = _shared_bucket_and_breaker(settings, pool)
    store = InstrumentedObjectStore(object_store_from_settings(settings))
    return FetchPipeline(
        pool=pool,
        client=client,
        store=store,
        bucket=bucket,
        breaker=breaker,
        owner=settings.owner,
        batch_size=settings.fetch_batch_size,
        threads=settings.fetch_threads,
        max_retries=settings.max_retries,
        stop=stop,
        packer=cutout_packer(settings, store, settings.cutout_layer),
    )


def cutout_packer(settings: Settings, store: ObjectStore, layer: str) -> CutoutPacker | None:
    """The packer of ``GALPIPE_CUTOUT_PACKING`` (``GALPIPE_CUTOUT_PACK_ORDER``), or None.

    Parameters
    ----------
    settings
        The process's configuration.
    store
        The fetch pipeline's object store.
    layer
        The survey layer of the cutouts (the packs' key prefix).
    """
    if settings.cutout_packing == "none":
        return None
    return CutoutPacker(store, FetchPipeline.name, layer, settings.cutout_pack_order)


def _shared_bucket_and_breaker(
    settings: Settings, pool: ConnectionPool
) -> tuple[TokenBucket, CircuitBreaker]:
    """The fetch pipeline's token bucket (configured) and circuit breaker, from settings."""
    bucket = TokenBucket(
        pool,
        FetchPipeline.name,
        rate_limit_policy(settings),
        block_seconds=TOKEN_BLOCK_SECONDS,
        observer=observe_token_wait,
    )
    bucket.configure()
    breaker = CircuitBreaker(
        pool,
        FetchPipeline.name,
        breaker_policy(settings),
        view_seconds=BREAKER_VIEW_SECONDS,
        observer=observe_breaker_rejection,
    )
    return bucket, breaker


def _build_sdss_fetch_pipeline(
    settings: Settings, pool: ConnectionPool, stop: threading.Event
) -> SdssFetchPipeline:
    """The SDSS source of the fetch pipeline (``GALPIPE_FETCH_SOURCE=sdss``).

    Raises
    ------
    SettingsError
        If ``GALPIPE_CUTOUT_BANDS`` holds a band SDSS does not have.
    ConfigurationError
        If the ``reproject`` package (the ``sdss`` extra) is not installed.
    """
    from galpipe.pipelines.sdss_fetch import SdssFetchPipeline
    from galpipe.settings import SettingsError
    from galpipe.survey.sdss import BANDS as SDSS_BANDS
    from galpipe.survey.sdss import SdssFrameClient
    from galpipe.survey.sdss_cutout import LAYER as SDSS_LAYER

    if importlib.util.find_spec("reproject") is None:
        # Checked at start: without it every galaxy's registration would fail in the batch.
        raise ConfigurationError(
            "GALPIPE_FETCH_SOURCE=sdss registers the frames with the reproject package, which "
            "is not installed here; install galpipe's sdss extra (pip install 'galpipe[sdss]') "
            "in the fetch image, or use GALPIPE_FETCH_SOURCE=legacysurvey"
        )
    unknown = sorted(set(settings.cutout_bands) - set(SDSS_BANDS))
    if unknown:
        raise SettingsError(
            f"GALPIPE_CUTOUT_BANDS={settings.cutout_bands!r}: band(s) {', '.join(unknown)} are "
            f"not SDSS bands ({SDSS_BANDS}), which GALPIPE_FETCH_SOURCE=sdss needs"
        )
    client = SdssFrameClient(
        settings.sdss_base_url,
        connect_timeout=settings.cutout_connect_timeout_seconds,
        read_timeout=settings.cutout_read_timeout_seconds,
        observer=observe_request,
    )
    bucket, breaker = _shared_bucket_and_breaker(settings, pool)
    store = InstrumentedObjectStore(object_store_from_settings(settings))
    return SdssFetchPipeline(
        pool=pool,
        client=client,
        store=store,
        bucket=bucket,
        breaker=breaker,
        owner=settings.owner,
        bands=settings.cutout_bands,
        size=settings.cutout_size,
        pixscale=settings.cutout_pixscale,
        batch_size=settings.fetch_batch_size,
        threads=settings.fetch_threads,
        max_retries=settings.max_retries,
        stop=stop,
        packer=cutout_packer(settings, store, SDSS_LAYER),
    )


def observe_request(status_class: str, latency_s: float, nbytes: int) -> None:
    """Count one cutout request in the Prometheus metrics."""
    metrics.CUTOUT_REQUESTS.labels(status_class).inc()
    metrics.CUTOUT_REQUEST_SECONDS.labels(status_class).observe(latency_s)
    metrics.CUTOUT_RESPONSE_BYTES.inc(nbytes)


def observe_token_wait(bucket: str, waited_s: float) -> None:
    """Count one wait for a token of the shared bucket in the Prometheus metrics."""
    metrics.RATE_LIMIT_WAIT_SECONDS.labels(bucket=bucket).observe(waited_s)


def observe_breaker_rejection(breaker: str) -> None:
    """Count one request the shared breaker refused in the Prometheus metrics."""
    metrics.BREAKER_REJECTIONS.labels(breaker=breaker).inc()
