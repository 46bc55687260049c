"""The fetch pipeline's SDSS source: a galaxy's cutout built from its SDSS DR10 frames.

With ``GALPIPE_FETCH_SOURCE=sdss`` the fetch stage gets each galaxy's cutout from the SAS
instead of the Legacy Survey cutout service, on the same machinery (the ``fetch`` queue, the
shared token bucket and circuit breaker, the object store, the ``cutouts`` row):

1. the galaxy's field comes from its catalogue columns (``galaxies.extra``, as a CasJobs
   ``PhotoObj`` query gives them): ``run``, ``camcol``, ``field`` and, optionally, ``rerun``
   (:func:`field_from_extras`); a galaxy without them fails at once, naming the column;
2. one frame per band of the cutout (``GALPIPE_CUTOUT_BANDS``, default griz), each request
   obeying the shared breaker and taking its own token from the shared bucket, as a cutout
   request does; :class:`~galpipe.survey.sdss.SdssFrameClient` parses each frame and computes
   its error image from the sky HDU. The frames of the last field are kept in a small
   per-process cache (:data:`FRAME_CACHE_FIELDS`), so a catalogue ordered by field costs one
   request per frame rather than per galaxy;
3. the frames are registered with ``reproject`` onto the grid of a Legacy Survey cutout of the
   configured layout centred on the galaxy, and written as one cutout file with error planes
   (:mod:`galpipe.survey.sdss_cutout`);
4. the file is stored at a deterministic key, read back and checked (size, SHA-256) exactly as
   a Legacy Survey cutout is, and the ``cutouts`` row records layer ``sdss-dr10``.

Outcomes: a missing frame (404), a frame that is not a usable frame file, or a stamp off the
frame's edge fail the galaxy with a reason that names the frame; transient failures (429, 5xx,
timeouts, a body broken in transit) retry the galaxy, and count against the breaker, as they do
for a cutout.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from galpipe.db.breaker import CircuitBreaker
from galpipe.db.cutouts import CutoutRecord
from galpipe.db.galaxies import positions_and_extras
from galpipe.db.queue import Task
from galpipe.db.ratelimit import TokenBucket
from galpipe.errors import InputError
from galpipe.pipelines.base import Fail, Outcome, Retry
from galpipe.pipelines.cutout_packs import CutoutPacker
from galpipe.pipelines.fetch import FetchSource, admit_request, keep_cutout
from galpipe.runtime import metrics
from galpipe.storage import ObjectStore, sha256_hex
from galpipe.survey import layout
from galpipe.survey.legacysurvey import NoCoverage, Permanent, Retryable
from galpipe.survey.sdss import BANDS as SDSS_BANDS
from galpipe.survey.sdss import FrameSuccess, SdssFrame, SdssFrameClient, frame_name
from galpipe.survey.sdss_cutout import (
    LAYER,
    SURVEY,
    StampOffFrameError,
    sdss_cutout_bytes,
    sdss_stamp,
)

__all__ = [
    "FIELD_COLUMNS",
    "FRAME_CACHE_FIELDS",
    "SdssFetchPipeline",
    "SdssField",
    "SdssFieldError",
    "field_from_extras",
]

log = logging.getLogger(__name__)

#: Catalogue columns that name a galaxy's field (``rerun`` is optional).
FIELD_COLUMNS = ("run", "camcol", "field")
#: Fields whose frames one fetch process keeps (every band of each): neighbouring galaxies of
#: a catalogue ordered by field share them. A full frame and its error image take about 25 MB,
#: so one griz field is about 100 MB.
FRAME_CACHE_FIELDS = 1


class SdssFieldError(InputError, ValueError):
    """A galaxy's catalogue columns do not name an SDSS field; the message names the galaxy and
    the column."""


@dataclass(frozen=True)
class SdssField:
    """The SDSS field that holds a galaxy: imaging ``run``, ``rerun``, ``camcol``, ``field``."""

    run: int
    rerun: str
    camcol: int
    field: int


def _integer(source_id: int, name: str, value: object) -> int:
    """A catalogue cell as a non-negative integer: an integral number or a string of digits."""
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        number = None
    if number is None or number < 0:
        raise SdssFieldError(
            f"galaxy {source_id}: catalogue column {name!r} = {value!r} is not a non-negative "
            "integer; SDSS frames need the galaxy's run, camcol and field"
        )
    return number


def field_from_extras(source_id: int, extras: Mapping[str, Any], rerun: str) -> SdssField:
    """The galaxy's SDSS field from its catalogue columns (names compared case-insensitively).

    Parameters
    ----------
    source_id
        The galaxy (for messages).
    extras
        Its ``galaxies.extra`` columns.
    rerun
        The rerun the frames are fetched from; a catalogue ``rerun`` column must agree.

    Raises
    ------
    SdssFieldError
        If ``run``, ``camcol`` or ``field`` is missing or not an integer, ``camcol`` is not
        1 … 6, or the catalogue's ``rerun`` is another one.
    """
    columns = {str(k).lower(): v for k, v in extras.items()}
    missing = [name for name in FIELD_COLUMNS if columns.get(name) is None]
    if missing:
        raise SdssFieldError(
            f"galaxy {source_id}: no catalogue column {', '.join(repr(m) for m in missing)} "
            f"(or null); GALPIPE_FETCH_SOURCE=sdss needs {', '.join(FIELD_COLUMNS)} for each "
            "galaxy, as a CasJobs PhotoObj query gives them"
        )
    run, camcol, field = (_integer(source_id, name, columns[name]) for name in FIELD_COLUMNS)
    if not 1 <= camcol <= 6:
        raise SdssFieldError(
            f"galaxy {source_id}: catalogue column 'camcol' = {camcol}: expected 1 … 6"
        )
    given = columns.get("rerun")
    if given is not None and str(given).strip() != rerun:
        raise SdssFieldError(
            f"galaxy {source_id}: catalogue column 'rerun' = {given!r}, but the frames are "
            f"fetched from rerun {rerun!r} (DR10)"
        )
    return SdssField(run, rerun, camcol, field)


class _FrameCache:
    """The last few frames fetched, by ``(run, camcol, field, band)``; thread-safe."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._frames: OrderedDict[tuple[int, int, int, str], SdssFrame] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int, int, str]) -> SdssFrame | None:
        with self._lock:
            frame = self._frames.get(key)
            if frame is not None:
                self._frames.move_to_end(key)
            return frame

    def put(self, key: tuple[int, int, int, str], frame: SdssFrame) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._frames[key] = frame
            self._frames.move_to_end(key)
            while len(self._frames) > self.capacity:
                self._frames.popitem(last=False)


class SdssFetchPipeline(FetchSource[tuple[float, float, dict[str, Any]]]):
    """Fetches the frames of claimed galaxies and stores one cutout each; see the module
    docstring for the steps.

    Parameters
    ----------
    pool
        Database pool (galaxy positions and catalogue columns).
    client
        SDSS frame client (the SAS, or the synthetic sky's ``/sas``).
    store
        Where the cutout files go.
    bucket, breaker
        The fetch pipeline's shared token bucket and circuit breaker (named ``fetch``): one
        token per frame request.
    owner
        This process's lease owner name (also the breaker's probe owner).
    bands, size, pixscale
        The cutout layout: bands in order (SDSS bands), side in pixels, arcsec per pixel.
    batch_size, threads
        Tasks per claim; galaxies fetched concurrently inside this process.
    max_retries
        The queue's retry limit: on the last attempt a transient failure becomes final.
    stop
        Set when the process should stop; waiting requests then give their task back.
    frame_cache_fields
        Fields whose frames are kept for neighbouring galaxies (0 disables the cache).
    packer
        Stores the batch's cutouts in one pack per HEALPix tile; None: one object per galaxy.
    """

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        client: SdssFrameClient,
        store: ObjectStore,
        bucket: TokenBucket,
        breaker: CircuitBreaker,
        owner: str,
        bands: str = layout.BANDS,
        size: int = layout.CUTOUT_SIZE_PX,
        pixscale: float = layout.PIXSCALE_ARCSEC,
        batch_size: int = 32,
        threads: int = 8,
        max_retries: int = 3,
        stop: threading.Event | None = None,
        sleep: Callable[[float], None] = time.sleep,
        frame_cache_fields: int = FRAME_CACHE_FIELDS,
        packer: CutoutPacker | None = None,
    ) -> None:
        unknown = [b for b in bands if b not in SDSS_BANDS]
        if not bands or unknown or len(set(bands)) != len(bands):
            raise ValueError(
                f"bands={bands!r}: expected distinct SDSS bands from {SDSS_BANDS!r}, e.g. 'griz'"
            )
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
            thread_name="fetch-sdss",
        )
        self.client = client
        self.bands = bands
        self.size = size
        self.pixscale = pixscale
        self._cache = _FrameCache(frame_cache_fields * len(bands))

    def object_key(self, source_id: int) -> str:
        """Deterministic key: a galaxy's SDSS cutout of one layout always lands at the same
        place, beside (not over) its Legacy Survey cutout of that layout."""
        return f"cutouts/{LAYER}/{self.bands}-{self.size}px-{self.pixscale:g}as/{source_id}.fits"

    # -- one galaxy --------------------------------------------------------------------------

    def _rows(
        self, conn: psycopg.Connection, source_ids: list[int]
    ) -> Mapping[int, tuple[float, float, dict[str, Any]]]:
        return positions_and_extras(conn, source_ids)

    def _fetch_one(self, task: Task, row: tuple[float, float, dict[str, Any]] | None) -> Outcome:
        sid = task.source_id
        if row is None:
            return Fail(sid, "galaxy is not in the galaxies table")
        ra, dec, extras = row
        try:
            where = field_from_extras(sid, extras, self.client.rerun)
        except SdssFieldError as exc:
            return Fail(sid, str(exc))
        final_attempt = task.attempts > self.max_retries
        frames: list[SdssFrame] = []
        for band in self.bands:
            got = self._frame(sid, where, band, final_attempt)
            if not isinstance(got, SdssFrame):
                return got
            frames.append(got)
        try:
            stamp = sdss_stamp(frames, ra, dec, self.size, self.pixscale)
        except StampOffFrameError as exc:
            return Fail(sid, str(exc))
        data = sdss_cutout_bytes(
            stamp, run=where.run, rerun=where.rerun, camcol=where.camcol, field=where.field
        )
        record = CutoutRecord(
            source_id=sid,
            layer=LAYER,
            bands=self.bands,
            missing_bands="",
            size=self.size,
            pixscale=self.pixscale,
            survey=SURVEY,
            object_key=self.object_key(sid),
            sha256=sha256_hex(data),
            nbytes=len(data),
        )
        return keep_cutout(self.objects, self.packer, self.name, record, data, (ra, dec))

    def _frame(
        self, sid: int, where: SdssField, band: str, final_attempt: bool
    ) -> SdssFrame | Outcome:
        """One band's frame: from the cache, else one request through the breaker and bucket."""
        key = (where.run, where.camcol, where.field, band)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        refused = admit_request(self.breaker, self.bucket, self.owner, self.stop, self._sleep, sid)
        if refused is not None:
            return refused
        result = self.client.fetch(where.run, where.camcol, where.field, band)
        match result:
            case FrameSuccess(frame=frame):
                self.breaker.record_success(self.owner)
                metrics.CUTOUT_RESULTS.labels("success", "").inc()
                self._cache.put(key, frame)
                return frame
            case NoCoverage(reason=reason):
                # The SAS answered: the frame does not exist. Not an outage, and no retry can
                # bring it; a cutout without one of its bands is not the cutout asked for.
                self.breaker.record_success(self.owner)
                metrics.CUTOUT_RESULTS.labels("permanent", "missing_band").inc()
                return Fail(
                    sid,
                    f"missing band {band!r}: {reason}; the cutout needs every band of "
                    f"{self.bands!r}",
                )
            case Permanent(reason=reason, kind=kind):
                self.breaker.record_success(self.owner)
                metrics.CUTOUT_RESULTS.labels("permanent", kind).inc()
                return Fail(sid, reason)
            case Retryable(reason=reason, kind=kind, retry_after_s=retry_after):
                self.breaker.record_failure(self.owner, reason)
                metrics.CUTOUT_RESULTS.labels("retryable", kind).inc()
                if final_attempt:
                    return Fail(sid, result.when_exhausted().reason)
                return Retry(sid, reason, delay_s=retry_after)
        raise AssertionError(  # pragma: no cover
            f"unclassified frame result {result!r} of {frame_name(*key)}"
        )
