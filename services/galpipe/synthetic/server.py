"""The synthetic sky over HTTP: the Legacy Surveys cutout URL, answered on loopback.

``GET /viewer/fits-cutout?ra=&dec=&layer=&pixscale=&bands=&size=`` renders the catalogued galaxy
nearest to ``(ra, dec)`` (within ``match_radius_arcsec``; elsewhere a galaxy seeded by the rounded
coordinates) and answers the FITS file of :mod:`galpipe.synthetic.fitsfile`, after the
server's own rate limit, outages and injected faults (:mod:`galpipe.synthetic.faults`).

``GET /sas/dr10/boss/photoObj/frames/...`` answers SDSS DR10 frames (``.fits.bz2``) drawn from
the same galaxies (:mod:`galpipe.synthetic.sdss_frames`), after the same rate limit, outages and
faults; ``{url}/sas`` is the SAS root a :class:`~galpipe.survey.sdss.SdssFrameClient` is given.

Admin endpoints (never rate-limited, faulted or logged): ``GET /admin/log`` (the request log as
JSON), ``DELETE /admin/log`` (clear it), ``POST /admin/outage?seconds=S`` (an outage from now),
``POST /admin/rate?per_second=R`` (change the limit, 0 lifts it), ``GET /healthz``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing import get_context
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from galpipe.survey import layout
from galpipe.synthetic.catalog import SkyIndex
from galpipe.synthetic.faults import (
    FaultConfig,
    FaultPlan,
    OutageSchedule,
    SlidingWindowLimiter,
    max_in_window,
)
from galpipe.synthetic.fitsfile import cube_fits_bytes, invvar_extension_bytes
from galpipe.synthetic.render import render_cutout
from galpipe.synthetic.request import KNOWN_LAYERS, CutoutRequest, RequestError
from galpipe.synthetic.sdss_frames import FRAMES_PREFIX, SyntheticFrames, parse_frame_path
from galpipe.synthetic.truth import (
    SkyConfig,
    TruthGalaxy,
    source_id_for_position,
    truth_for,
)

__all__ = ["SkyProcess", "SyntheticSky", "max_in_window", "read_ready_file", "write_ready_file"]

log = logging.getLogger("galpipe.synthetic")

CUTOUT_PATHS = ("/viewer/fits-cutout", "/viewer/fits-cutout/")
FITS_CONTENT_TYPE = "image/fits"
# Cache keys round positions to 1e-6 degree (3.6 mas, 0.014 pixel): a client that formats
# coordinates with 6 decimals still finds the pre-rendered cutout.
_KEY_DECIMALS = 6


def _render_default(truth: TruthGalaxy, missing: str) -> bytes:
    """Worker of :meth:`SyntheticSky.prerender` (module level so child processes can import it)."""
    return _fits_for(
        truth,
        truth.ra,
        truth.dec,
        layout.CUTOUT_SIZE_PX,
        layout.PIXSCALE_ARCSEC,
        layout.BANDS,
        missing,
    )


def _fits_for(
    truth: TruthGalaxy, ra: float, dec: float, size: int, pixscale: float, bands: str, missing: str
) -> bytes:
    cube = render_cutout(truth, size, pixscale, bands, centre=(ra, dec))
    for index, band in enumerate(bands):
        if band in missing:
            cube[index] = 0.0
    return cube_fits_bytes(cube, ra, dec, pixscale, bands, source_id=truth.source_id)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes; with Nagle's algorithm the second waits for the
    # client's delayed ACK (about 40 ms), which would cap a connection at ~25 answers/s.
    disable_nagle_algorithm = True
    server: _SkyHTTPServer

    def do_GET(self) -> None:
        self.server.sky._dispatch(self, "GET")

    def do_POST(self) -> None:
        self.server.sky._dispatch(self, "POST")

    def do_DELETE(self) -> None:
        self.server.sky._dispatch(self, "DELETE")

    def __getattr__(self, name: str) -> Any:
        # http.server answers a method without a do_<METHOD> with 501, a server error; the
        # viewer's answer to any other method is the client's mistake: 405.
        if name.startswith("do_"):
            return self._method_not_allowed
        raise AttributeError(name)

    def _method_not_allowed(self) -> None:
        body = b"" if self.command == "HEAD" else f"method {self.command!r} not allowed\n".encode()
        _send(self, 405, body, {"Allow": "GET, POST, DELETE"})

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class _SkyHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], sky: SyntheticSky) -> None:
        self.sky = sky
        super().__init__(address, _Handler)


class SyntheticSky:
    """A synthetic Legacy Surveys cutout service on ``host`` (loopback by default).

    Parameters
    ----------
    truths : sequence of TruthGalaxy, optional
        The catalogue; a request is matched to its nearest galaxy within
        ``match_radius_arcsec``.
    faults : FaultConfig, optional
        Injected faults (none by default).
    rate : float
        The server's own limit, requests per second (0: unlimited); 429 beyond it.
    host, port : str, int
        Where to listen; port 0 picks a free one (see :attr:`url` after :meth:`start`).
    config : SkyConfig, optional
        Truth distributions for uncatalogued positions.
    match_radius_arcsec : float
        How far from a catalogued galaxy a request still draws it.
    cache_size : int
        FITS answers kept (about 29 kB each for a 4x40x40 cutout); 0 disables the cache.
    damaged_frames : collection of str, optional
        SDSS frames (``'run-camcol-field-band'``) served damaged at the source
        (:class:`~galpipe.synthetic.sdss_frames.SyntheticFrames`).
    log_path : path, optional
        Also append the request log here, one JSON object a line.
    ready_file : path, optional
        Once listening, :meth:`start` writes where to this file (:func:`write_ready_file`), for
        the process that started the server; :meth:`stop` removes it.
    clock, wall_clock : callable
        Monotonic seconds (limits, outages) and Unix seconds (log times).

    Attributes
    ----------
    renders, cache_hits : int
        Cutouts rendered on request, and answered from the cache.
    limiter : SlidingWindowLimiter
        The server's own rate limit (``limiter.set_rate(0)`` lifts it at runtime).
    """

    def __init__(
        self,
        truths: Sequence[TruthGalaxy] = (),
        *,
        faults: FaultConfig | None = None,
        rate: float = 5.0,
        host: str = "127.0.0.1",
        port: int = 0,
        config: SkyConfig | None = None,
        match_radius_arcsec: float = 1.0,
        cache_size: int = 10_000,
        damaged_frames: Collection[str] = (),
        log_path: str | Path | None = None,
        ready_file: str | Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.index = SkyIndex(truths)
        self.frames = SyntheticFrames(truths, damaged=damaged_frames)
        self.faults = faults or FaultConfig()
        self.config = config or SkyConfig()
        self.match_radius_arcsec = match_radius_arcsec
        self.host, self.port = host, port
        self._clock, self._wall = clock, wall_clock
        self.limiter = SlidingWindowLimiter(rate, clock)
        self._plan = FaultPlan(self.faults)
        self._outages = OutageSchedule(self.faults.outages, clock(), clock)
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.renders = 0
        self.cache_hits = 0
        self._log: list[dict[str, Any]] = []
        self._log_lock = threading.Lock()
        self._log_path = Path(log_path) if log_path is not None else None
        self._ready_file = Path(ready_file) if ready_file is not None else None
        self._stopping = threading.Event()
        self._server: _SkyHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> SyntheticSky:
        """Bind and serve in a background thread; outage windows count from now."""
        if self._server is not None:
            raise RuntimeError("synthetic sky already started")
        self._stopping.clear()
        self._server = _SkyHTTPServer((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._outages = OutageSchedule(self.faults.outages, self._clock(), self._clock)
        # A short poll keeps stop() quick (shutdown waits for the loop's next poll).
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="synthetic-sky",
            daemon=True,
        )
        self._thread.start()
        log.info("synthetic sky serving on %s (%d galaxies)", self.url, len(self.index))
        if self._ready_file is not None:
            write_ready_file(self._ready_file, self)
        return self

    def stop(self) -> None:
        """Stop serving; requests held by latency or timeouts are released."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None
        if self._ready_file is not None:
            self._ready_file.unlink(missing_ok=True)

    def __enter__(self) -> SyntheticSky:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def serving(self) -> bool:
        """Whether the HTTP server's thread is up (between :meth:`start` and :meth:`stop`)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:43121`` (append ``/viewer/fits-cutout?...``)."""
        return f"http://{self.host}:{self.port}"

    # -- state -----------------------------------------------------------------------------

    def start_outage(self, seconds: float) -> None:
        """Answer every cutout request with 503 for the next ``seconds``."""
        self._outages.start_now(seconds)

    @property
    def log(self) -> list[dict[str, Any]]:
        """A copy of the request log: ``time`` (Unix s, arrival), ``path``, ``status`` (0: no
        answer), ``bytes`` (body bytes sent), ``fault``, ``duration_s``."""
        with self._log_lock:
            return list(self._log)

    def clear_log(self) -> None:
        """Forget the logged requests."""
        with self._log_lock:
            self._log.clear()

    def truth_at(self, ra: float, dec: float) -> TruthGalaxy:
        """The galaxy a request at ``(ra, dec)`` draws (catalogued, else seeded by position)."""
        found = self.index.nearest(ra, dec, self.match_radius_arcsec)
        if found is not None:
            return found
        return truth_for(source_id_for_position(ra, dec), ra, dec, self.config)

    def missing_bands(self, layer: str, dec: float) -> str:
        """Bands the layer lacks at this declination (served as all-zero planes)."""
        if layer.startswith("ls-dr9"):
            return "i"
        north = self.faults.north_without_i_dec
        if layer == "ls-dr10" and north is not None and dec >= north:
            return "i"
        return ""

    def prerender(self, workers: int = 1) -> int:
        """Render every catalogued galaxy at the default request (40 px, 0.262", griz, its own
        position, layer ls-dr10) into the cache; returns how many.

        ``workers > 1`` renders in that many spawned processes.
        """
        truths = self.index.truths
        missing = [self.missing_bands(layout.LAYER, t.dec) for t in truths]
        if workers > 1 and len(truths) > 1:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                bodies = list(pool.map(_render_default, truths, missing, chunksize=64))
        else:
            bodies = [_render_default(t, m) for t, m in zip(truths, missing, strict=True)]
        for truth, miss, body in zip(truths, missing, bodies, strict=True):
            key = self._key(
                truth,
                truth.ra,
                truth.dec,
                layout.CUTOUT_SIZE_PX,
                layout.PIXSCALE_ARCSEC,
                layout.BANDS,
                miss,
            )
            self._cache_put(key, body)
        return len(truths)

    # -- rendering ---------------------------------------------------------------------------

    @staticmethod
    def _key(
        truth: TruthGalaxy, ra: float, dec: float, size: int, pixscale: float, bands: str, miss: str
    ) -> tuple[Any, ...]:
        return (
            truth.source_id,
            round(ra, _KEY_DECIMALS),
            round(dec, _KEY_DECIMALS),
            size,
            round(pixscale, 6),
            bands,
            miss,
        )

    def _cache_put(self, key: tuple[Any, ...], body: bytes) -> None:
        if self._cache_size <= 0:
            return
        with self._cache_lock:
            self._cache[key] = body
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def cutout_bytes(self, request: CutoutRequest, *, zero_all: bool = False) -> bytes:
        """The FITS answer to ``request`` (cached); ``zero_all`` blanks every plane."""
        truth = self.truth_at(request.ra, request.dec)
        missing = request.bands if zero_all else self.missing_bands(request.layer, request.dec)
        key = self._key(
            truth, request.ra, request.dec, request.size, request.pixscale, request.bands, missing
        )
        with self._cache_lock:
            body = self._cache.get(key)
            if body is None:
                self.renders += 1
            else:
                self.cache_hits += 1
        if body is None:
            body = _fits_for(
                truth,
                request.ra,
                request.dec,
                request.size,
                request.pixscale,
                request.bands,
                missing,
            )
            self._cache_put(key, body)
        if request.invvar:
            body += self._invvar_extension(truth, request, missing)
        return body

    @staticmethod
    def _invvar_extension(truth: TruthGalaxy, request: CutoutRequest, missing: str) -> bytes:
        """The ``invvar`` HDU: the sky's noise as a coadd's inverse variance states it (the
        sources' Poisson noise is not in it), 0 in a band without data."""
        sky = [0.0 if band in missing else truth.sky_sigma[band] ** -2 for band in request.bands]
        ivar = np.broadcast_to(
            np.asarray(sky, dtype=np.float32)[:, None, None],
            (len(request.bands), request.size, request.size),
        )
        return invvar_extension_bytes(
            ivar,
            request.ra,
            request.dec,
            request.pixscale,
            request.bands,
            source_id=truth.source_id,
        )

    # -- HTTP --------------------------------------------------------------------------------

    def _dispatch(self, handler: _Handler, method: str) -> None:
        url = urlsplit(handler.path)
        if url.path.startswith("/admin/") or url.path == "/healthz":
            self._admin(handler, method, url.path, url.query)
            return
        arrival, started = self._wall(), self._clock()
        if method == "GET" and url.path in CUTOUT_PATHS:
            reply = self._cutout(url.query)
        elif method == "GET" and url.path.startswith(FRAMES_PREFIX):
            reply = self._frame(url.path)
        else:
            reply = _Reply(404, f"no such path: {url.path}\n".encode())
        # Logged before the answer leaves, so a client that has its answer finds it logged.
        self._record(
            {
                "time": arrival,
                "path": handler.path,
                "status": reply.status,
                "bytes": len(reply.body),
                "fault": reply.fault,
                "duration_s": round(self._clock() - started, 6),
            }
        )
        if reply.status == 0:
            if reply.hold_s > 0:
                self._stopping.wait(reply.hold_s)
            handler.close_connection = True
            return
        _send(handler, reply.status, reply.body, reply.headers, announce=reply.announce)

    def _record(self, entry: dict[str, Any]) -> None:
        with self._log_lock:
            self._log.append(entry)
            if self._log_path is not None:
                with self._log_path.open("a", encoding="utf-8") as stream:
                    stream.write(json.dumps(entry) + "\n")

    def _cutout(self, query: str) -> _Reply:
        refused = self._admit()
        if refused is not None:
            return refused
        try:
            request = CutoutRequest.from_query(query)
        except RequestError as exc:
            return _Reply(400, f"bad request: {exc}\n".encode())
        if request.layer not in KNOWN_LAYERS:
            # The real viewer answers an unknown layer with this plain-text body and status 200
            # (legacysurvey/imagine, map/views.py: HttpResponse('no such layer')).
            return _Reply(200, b"no such layer")

        fault, failed = self._draw_fault()
        if failed is not None:
            return failed
        region = self.faults.blank_region_at(request.ra, request.dec)
        if region is not None and region.mode == "http500":
            return _Reply(500, b"no imaging data at this position\n", fault="blank")
        body = self.cutout_bytes(request, zero_all=region is not None)
        damaged = self._damage(fault, body, _FITS)
        if damaged is not None:
            return damaged
        return _Reply(200, body, _FITS, fault="blank" if region is not None else None)

    def _frame(self, path: str) -> _Reply:
        """An SDSS frame: the cutout service's rate limit, outages and faults, then the body."""
        refused = self._admit()
        if refused is not None:
            return refused
        frame = parse_frame_path(path)
        body = None if frame is None else self.frames.frame_bytes(frame)
        if frame is None or body is None:
            return _Reply(404, f"no such frame: {path}\n".encode())
        fault, failed = self._draw_fault()
        if failed is not None:
            return failed
        damaged = self._damage(fault, body, _BZ2)
        if damaged is not None:
            return damaged
        return _Reply(
            200, body, _BZ2, fault="damaged" if frame.name in self.frames.damaged else None
        )

    def _admit(self) -> _Reply | None:
        """The server's rate limit and outages: the refusal, or None to go on."""
        admitted, wait_s = self.limiter.admit()
        if not admitted:
            headers = {"Retry-After": str(max(1, math.ceil(wait_s)))}
            return _Reply(429, b"rate limit exceeded\n", headers, fault="rate-limit")
        if self._outages.remaining() > 0:
            return _Reply(503, b"service unavailable (outage)\n", fault="outage")
        return None

    def _draw_fault(self) -> tuple[str | None, _Reply | None]:
        """This request's injected fault, after its latency; the answer of a fault that
        replaces the body (error, throttle, timeout), else None."""
        fault, latency = self._plan.draw()
        if latency > 0 and self._stopping.wait(latency):
            return fault, _Reply(0, b"", fault="stopping")
        if fault == "error":
            return fault, _Reply(503, b"service temporarily unavailable\n", fault=fault)
        if fault == "throttle":
            headers = {"Retry-After": str(self.faults.retry_after_s)}
            return fault, _Reply(429, b"too many requests\n", headers, fault=fault)
        if fault == "timeout":
            sleeps = self.faults.timeout_mode == "sleep"
            hold = self.faults.timeout_sleep_s if sleeps else 0
            return fault, _Reply(0, b"", fault=fault, hold_s=hold)
        return fault, None

    def _damage(self, fault: str | None, body: bytes, headers: dict[str, str]) -> _Reply | None:
        """The answer of a fault that damages the body in transit (corrupt, truncated), else
        None."""
        if fault == "corrupt":
            return _Reply(200, self._plan.garbage(len(body)), headers, fault=fault)
        if fault == "truncated":
            half = body[: len(body) // 2]
            announce = None if self.faults.truncate_mode == "short" else len(body)
            return _Reply(200, half, headers, fault=fault, announce=announce)
        return None

    def _admin(self, handler: _Handler, method: str, path: str, query: str) -> None:
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        try:
            if path == "/healthz" and method == "GET":
                _send(handler, 200, b"ok\n")
            elif path == "/admin/log" and method == "GET":
                _send_json(handler, 200, self.log)
            elif path == "/admin/log" and method == "DELETE":
                self.clear_log()
                _send_json(handler, 200, {"cleared": True})
            elif path == "/admin/outage" and method == "POST":
                seconds = float(params.get("seconds", "nan"))
                self.start_outage(seconds)
                _send_json(handler, 200, {"outage_s": seconds})
            elif path == "/admin/rate" and method == "POST":
                per_second = float(params.get("per_second", "nan"))
                self.limiter.set_rate(per_second)
                _send_json(handler, 200, {"per_second": per_second})
            else:
                _send(handler, 404, f"no such admin endpoint: {method} {path}\n".encode())
        except ValueError as exc:
            _send(handler, 400, f"bad request: {exc}\n".encode())


class SkyProcess:
    """``galpipe sky serve``: a :class:`~galpipe.runtime.service.Service` around a sky.

    :meth:`run` pre-renders the catalogue if asked, starts the sky, announces its URL and serves
    until :meth:`request_stop`, then stops the sky. A stop requested during the pre-rendering
    ends the run before the sky starts.

    Parameters
    ----------
    sky : SyntheticSky
        The server to run (not yet started).
    prerender_workers : int, optional
        Pre-render the catalogue with this many processes first (None: do not pre-render).
    announce : callable
        Receives one line when the pre-rendering is done and one when the sky serves:
        ``synthetic sky on URL/viewer/fits-cutout (N galaxies, RATE)``. Printed to stdout by
        default.
    """

    def __init__(
        self,
        sky: SyntheticSky,
        *,
        prerender_workers: int | None = None,
        announce: Callable[[str], None] = lambda line: print(line, flush=True),
    ) -> None:
        self.sky = sky
        self.prerender_workers = prerender_workers
        self._announce = announce
        self._stop = threading.Event()
        self._started = False

    def run(self) -> None:
        """Pre-render (if asked), serve until stopped; ``OSError`` if the port cannot be bound."""
        if self.prerender_workers is not None:
            count = self.sky.prerender(workers=self.prerender_workers)
            self._announce(f"pre-rendered {count:,} cutouts")
            if self._stop.is_set():
                return
        self.sky.start()
        self._started = True
        try:
            per_second = self.sky.limiter.per_second
            rate = f"{per_second:g}/s" if per_second else "unlimited"
            where = f"{self.sky.url}{CUTOUT_PATHS[0]}"
            self._announce(f"synthetic sky on {where} ({len(self.sky.index):,} galaxies, {rate})")
            # A bounded wait keeps the main thread waking up for signal handlers.
            while not self._stop.wait(0.5):
                pass
        finally:
            self.sky.stop()

    def request_stop(self) -> None:
        """Stop serving (after the pre-rendering, if it is under way)."""
        self._stop.set()

    def liveness(self) -> tuple[bool, str]:
        """Alive while pre-rendering or serving; dead if the server thread ended on its own."""
        if self._started and not self.sky.serving and not self._stop.is_set():
            return False, "the sky's server thread is not running"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        """Ready while the sky answers requests and no stop was asked for."""
        if self._stop.is_set():
            return False, "stopping"
        if not self.sky.serving:
            return False, "not serving yet"
        return True, "ok"


_FITS = {"Content-Type": FITS_CONTENT_TYPE}
_BZ2 = {"Content-Type": "application/x-bzip2"}


@dataclass(frozen=True)
class _Reply:
    """What to answer: ``status`` 0 closes the connection unanswered after ``hold_s``."""

    status: int
    body: bytes
    headers: dict[str, str] | None = None
    fault: str | None = None
    announce: int | None = None
    hold_s: float = 0.0


def _send(
    handler: _Handler,
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    announce: int | None = None,
) -> None:
    """Answer; ``announce`` declares a longer ``Content-Length`` and closes after ``body``."""
    try:
        handler.send_response(status)
        merged = {"Content-Type": "text/plain; charset=utf-8", **(headers or {})}
        for name, value in merged.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(announce if announce is not None else len(body)))
        if announce is not None:
            handler.send_header("Connection", "close")
            handler.close_connection = True
        handler.end_headers()
        handler.wfile.write(body)
        handler.wfile.flush()
    except (BrokenPipeError, ConnectionResetError):
        handler.close_connection = True


def _send_json(handler: _Handler, status: int, payload: object) -> None:
    body = json.dumps(payload).encode()
    _send(handler, status, body, {"Content-Type": "application/json"})


def write_ready_file(path: str | Path, sky: SyntheticSky) -> None:
    """Tell the process that started a listening sky where it is (``sky serve --ready-file``).

    Writes ``{"url": ..., "host": ..., "port": ..., "pid": ...}`` as JSON; the file appears
    whole (written beside it, then renamed), so whoever polls for it never reads half of it.
    """
    path = Path(path)
    announcement = {"url": sky.url, "host": sky.host, "port": sky.port, "pid": os.getpid()}
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(announcement) + "\n", encoding="utf-8")
    os.replace(partial, path)


def read_ready_file(path: str | Path) -> str | None:
    """The base URL a sky announced in ``path`` (:func:`write_ready_file`); None until then."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return str(json.loads(text)["url"])
