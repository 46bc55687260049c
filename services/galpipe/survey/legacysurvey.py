"""Client of the DESI Legacy Surveys cutout service (``/viewer/fits-cutout``).

One request per galaxy: ``GET {base}/viewer/fits-cutout?ra=…&dec=…&layer=ls-dr10&pixscale=0.262&
bands=griz&size=40`` (by default the layout of :mod:`galpipe.survey.layout`). The answer is
checked, parsed into a :class:`~galpipe.survey.cutout.Cutout` and classified into a small sum
type, :data:`FetchResult`:

- :class:`Success`: a cube of the requested layout with at least one band holding data; bands
  without data are listed in ``missing_bands`` (flagged, not fatal);
- :class:`NoCoverage`: every band blank; skip the galaxy, do not retry;
- :class:`Retryable`: worth another attempt after the retry delay (429, 5xx, timeouts, connection
  errors, truncated bodies, FITS checksums that do not match, a 200 whose body is not FITS);
  :meth:`Retryable.when_exhausted` says what it becomes when the retries are spent;
- :class:`Permanent`: another attempt cannot help (other 4xx, unknown layer, a cube of the wrong
  shape, bands or WCS, invalid coordinates).

Facts about the service, confirmed in its public server code, ``legacysurvey/imagine``:

- ``map/views.py``, ``needs_layer(default_layer='ls-dr8')``: a request without ``layer`` gets
  an older release (DR8), hence ``layer`` is always sent; an unknown layer is answered
  ``HttpResponse('no such layer')``: status 200, a plain-text body.
- ``map/views.py``, ``MapLayer.get_cutout``: ``ra``, ``dec``, ``pixscale`` (default: the
  layer's native scale), ``size`` (default 256, capped at ``maxsize = 3000``; ``width`` and
  ``height`` default to ``size``) and ``bands``; ``parse_bands`` falls back to *all* the layer's
  bands when one requested band is unknown, which :func:`~galpipe.survey.cutout.parse_cutout`
  catches as a ``BANDS`` mismatch.
- ``map/views.py``, ``MapLayer.write_cutout``: ``render_rgb`` returns no images when no brick
  touches the cutout, and the view then raises ``NoOverlapError('No overlap')``, which nothing
  catches (``map/cutouts.py``, ``_cutout``), so Django answers **HTTP 500**; the same status
  comes from any genuine server fault. See :meth:`Retryable.when_exhausted` for the rule.
- ``map/views.py``, ``'ls-dr10'`` in ``get_layer``: a ``LegacySurveySplitLayer`` of
  ``ls-dr9-north`` (g, r, z; above Dec 32.375 in the north galactic cap) and ``ls-dr10-south``
  (g, r, i, z), with bands ``'griz'``: north of the split the i plane comes back all zero.
- ``map/utils.py``, ``send_file``: the body is the FITS file as written (``image/fits``, with
  ``Content-Length``); the application does not compress it. The client asks for
  ``Accept-Encoding: identity`` so that the stored bytes are the bytes on the wire; should a
  proxy compress anyway, requests decodes ``Content-Encoding: gzip`` transparently.
- ``map/views.py``, ``MapLayer.get_cutout`` / ``write_cutout``: ``with_invvar = ('invvar' in
  req.GET)``; for layers whose ``has_invvar()`` is true (the Legacy Surveys layers, ``ls-dr10``'s
  split layer among them) the inverse variance follows the image as a second HDU, the same
  header with ``IMAGETYP = 'INVVAR'``, 0 where no exposure covers a pixel; it is rendered at
  the native pixel scale only, and silently left out otherwise
  (:mod:`galpipe.survey.error_planes`).
- No rate limit is published; the viewer goes down for NERSC maintenance about once a month
  (as other clients of the service, SkyPortal among them, report), which the shared circuit
  breaker absorbs.

A 200 whose body is not FITS is classified :class:`Retryable` (``not_fits``), not permanent at
once: such bodies come from proxies and maintenance pages in front of the service, which pass.
The one non-FITS body the service itself gives for a bad request, ``'no such layer'``, is
recognised and is :class:`Permanent` (``unknown_layer``) at once: retrying a configuration error
only burns the rate limit. The caller turns a ``not_fits`` that survives the last retry into a
permanent failure with :meth:`Retryable.when_exhausted`.

Retries belong to the worker's retry queue: the session retries nothing it could classify
itself. The one exception is a single urllib3 retry of a failed *connect* (refused, unreachable,
connect timeout): that request never reached the service, so retrying it at once costs the
service nothing and spares a task a retry delay for a transient socket failure. Read errors,
5xx and 429 are never retried inside the client.
"""

from __future__ import annotations

import email.utils
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from galpipe import __version__
from galpipe.survey import layout
from galpipe.survey.cutout import Cutout, CutoutFormatError, describe_body, parse_cutout
from galpipe.survey.error_planes import (
    INVVAR_ERROR_SOURCE,
    INVVAR_IMAGETYP,
    ErrorPlaneError,
    read_error_planes,
)

__all__ = [
    "CONNECT_TIMEOUT_S",
    "CUTOUT_PATH",
    "DEFAULT_BASE_URL",
    "MAX_RETRY_AFTER_S",
    "MAX_SIZE",
    "READ_TIMEOUT_S",
    "CutoutRequest",
    "FetchObserver",
    "FetchResult",
    "HttpTransfer",
    "LegacySurveyClient",
    "NoCoverage",
    "Permanent",
    "PermanentKind",
    "RetryKind",
    "Retryable",
    "Success",
    "check_position",
    "classify_response",
    "classify_status",
    "make_session",
    "parse_retry_after",
    "status_class",
]

log = logging.getLogger(__name__)

#: Public endpoint of the DESI Legacy Surveys viewer.
DEFAULT_BASE_URL = "https://www.legacysurvey.org"
#: Path of the FITS cutout view, appended to the base URL.
CUTOUT_PATH = "/viewer/fits-cutout"
#: Largest ``size`` the service honours (``maxsize = 3000`` in ``MapLayer.get_cutout``).
MAX_SIZE = 3000
#: Seconds to wait for the TCP (and TLS) connection.
CONNECT_TIMEOUT_S = 5.0
#: Seconds to wait for the next bytes of the answer (between reads, not in total). A cutout is
#: rendered on request from the coadd bricks, which takes up to seconds on a busy server.
READ_TIMEOUT_S = 30.0
#: Longest ``Retry-After`` honoured, in seconds; longer values are clamped so that one bad
#: header cannot park a task for days.
MAX_RETRY_AFTER_S = 3600.0
#: Header and padding allowance on top of the data bytes when capping the body size.
_BODY_SLACK_BYTES = 1 << 20
_CHUNK_BYTES = 1 << 16
_UNKNOWN_LAYER_BODY = b"no such layer"

#: Why an attempt may succeed later.
#:
#: - ``throttled``: HTTP 429 (``retry_after_s`` from ``Retry-After`` when given);
#: - ``http_500``: HTTP 500, which the service gives both for "no data here" and for faults;
#: - ``server_error``: another 5xx (502, 503, 504 …) or 408;
#: - ``timeout``: connect or read timeout;
#: - ``connection``: refused, reset, or another transport failure;
#: - ``truncated``: the body ended early (``Content-Length`` mismatch, a FITS file shorter than
#:   its header announces, an empty body);
#: - ``corrupt``: the FITS ``DATASUM``/``CHECKSUM`` cards do not match the bytes received;
#: - ``not_fits``: status 200 but the body is not FITS (an HTML maintenance page, text).
RetryKind = Literal[
    "throttled",
    "http_500",
    "server_error",
    "timeout",
    "connection",
    "truncated",
    "corrupt",
    "not_fits",
]

#: Why no attempt can succeed: ``http_4xx`` (other client errors), ``unknown_layer`` (the
#: ``'no such layer'`` answer: a configuration error), ``unexpected_status`` (1xx/3xx as a final
#: answer, too many redirects), ``too_large`` (a body larger than any cutout of the requested
#: size), ``invalid_position`` (ra/dec out of range, nothing sent), ``not_fits`` (still not FITS
#: after the retries), ``retries_exhausted`` (any other retryable kind after the last retry), and
#: the format problems of :func:`~galpipe.survey.cutout.parse_cutout`: ``wrong_type``,
#: ``wrong_shape``, ``wrong_bands``, ``bad_wcs``, ``wrong_position``; and ``bad_invvar`` (an
#: inverse-variance HDU, asked for, of the wrong shape or bands, or with negative values).
PermanentKind = Literal[
    "http_4xx",
    "unknown_layer",
    "unexpected_status",
    "too_large",
    "invalid_position",
    "not_fits",
    "retries_exhausted",
    "wrong_type",
    "wrong_shape",
    "wrong_bands",
    "bad_wcs",
    "wrong_position",
    "bad_invvar",
]

#: ``observer(status_class, latency_s, nbytes)`` is called once per request; see
#: :func:`status_class` for the classes.
FetchObserver = Callable[[str, float, int], None]
_Finished = TypeVar("_Finished")


# --------------------------------------------------------------------------------------------
# Request


@dataclass(frozen=True)
class CutoutRequest:
    """What to ask the service for; one instance serves every galaxy of a run.

    Layer, bands, size and pixel scale default to :mod:`galpipe.survey.layout`.

    Parameters
    ----------
    base_url
        Scheme, host and optional path prefix, e.g. ``https://www.legacysurvey.org`` or
        ``http://127.0.0.1:8080`` (the synthetic sky); :data:`CUTOUT_PATH` is appended.
    layer
        Data release layer, always sent (the service's own default is DR8).
    bands
        Band letters in cube order.
    size
        Width and height in pixels, 1 … :data:`MAX_SIZE`.
    pixscale
        Pixel scale in arcsec per pixel.
    invvar
        Also ask for the coadds' inverse variance (``invvar`` in the query): the service appends
        it as a second HDU (:mod:`galpipe.survey.error_planes`), which every answer must then
        carry. The service makes it for Legacy Surveys layers at their native pixel scale only.
    """

    base_url: str = DEFAULT_BASE_URL
    layer: str = layout.LAYER
    bands: str = layout.BANDS
    size: int = layout.CUTOUT_SIZE_PX
    pixscale: float = layout.PIXSCALE_ARCSEC
    invvar: bool = False

    def __post_init__(self) -> None:
        url = urlsplit(self.base_url)
        if url.scheme not in ("http", "https") or not url.hostname or url.query or url.fragment:
            raise ValueError(
                f"base_url={self.base_url!r}: expected http(s)://host[:port][/prefix] "
                "without query or fragment"
            )
        if not self.layer or not self.layer.isprintable() or any(c.isspace() for c in self.layer):
            raise ValueError(f"layer={self.layer!r}: expected a layer name such as 'ls-dr10'")
        if (
            not self.bands.isalpha()
            or not self.bands.isascii()
            or len(set(self.bands)) != len(self.bands)
        ):
            raise ValueError(
                f"bands={self.bands!r}: expected distinct band letters in cube order, e.g. 'griz'"
            )
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise ValueError(f"size={self.size!r}: expected an integer number of pixels")
        if not 1 <= self.size <= MAX_SIZE:
            raise ValueError(f"size={self.size}: expected 1 … {MAX_SIZE} pixels (service maximum)")
        if not (math.isfinite(self.pixscale) and self.pixscale > 0):
            raise ValueError(f"pixscale={self.pixscale!r}: expected a positive arcsec per pixel")

    @property
    def url(self) -> str:
        """The cutout endpoint, without query."""
        return self.base_url.rstrip("/") + CUTOUT_PATH

    def params(self, ra: float, dec: float) -> dict[str, str]:
        """Query parameters for one galaxy; requests URL-encodes them.

        Coordinates are written with :func:`repr`, the shortest text that reads back as the
        same float, so no precision is lost and the server's ``CRVAL`` matches the catalogue.

        Raises
        ------
        ValueError
            If ``ra`` is not in [0, 360] or ``dec`` not in [-90, 90] degrees.
        """
        check_position(ra, dec)
        params = {
            "ra": repr(float(ra)),
            "dec": repr(float(dec)),
            "layer": self.layer,
            "pixscale": repr(float(self.pixscale)),
            "bands": self.bands,
            "size": str(self.size),
        }
        if self.invvar:
            # The service tests the key's presence ('invvar' in req.GET), not its value.
            params["invvar"] = ""
        return params

    def full_url(self, ra: float, dec: float) -> str:
        """The complete, encoded request URL (for logs and tests)."""
        prepared = requests.Request("GET", self.url, params=self.params(ra, dec)).prepare()
        return str(prepared.url)

    @property
    def max_body_bytes(self) -> int:
        """Largest plausible answer: the float32 cube (twice with the inverse variance), plus
        header and padding allowance per HDU."""
        hdus = 2 if self.invvar else 1
        return hdus * (4 * len(self.bands) * self.size * self.size + _BODY_SLACK_BYTES)


def check_position(ra: float, dec: float) -> None:
    """Raise ValueError unless ``ra`` ∈ [0, 360] and ``dec`` ∈ [-90, 90] degrees, finite."""
    if not (math.isfinite(ra) and 0.0 <= ra <= 360.0):
        raise ValueError(f"ra={ra!r}: expected degrees in [0, 360]")
    if not (math.isfinite(dec) and -90.0 <= dec <= 90.0):
        raise ValueError(f"dec={dec!r}: expected degrees in [-90, 90]")


# --------------------------------------------------------------------------------------------
# Outcomes


@dataclass(frozen=True, eq=False)
class Success:
    """A usable cutout.

    Attributes
    ----------
    cutout
        The parsed cube, header and WCS.
    raw_bytes
        The body exactly as received (after any ``Content-Encoding`` decoding); store these.
    missing_bands
        Bands whose plane is blank (e.g. ``('i',)`` north of Dec 32.375 in ``ls-dr10``).
    """

    cutout: Cutout
    raw_bytes: bytes = field(repr=False)
    missing_bands: tuple[str, ...] = ()


@dataclass(frozen=True)
class NoCoverage:
    """The survey has no data at this position: skip the galaxy, do not retry."""

    reason: str


@dataclass(frozen=True)
class Retryable:
    """A transient failure: try again after the retry delay.

    Attributes
    ----------
    reason
        Human-readable; names the status or the problem.
    retry_after_s
        Seconds the service asked us to wait (``Retry-After``), or None.
    kind
        Machine-readable cause, see :data:`RetryKind`.
    """

    reason: str
    retry_after_s: float | None = None
    kind: RetryKind = "server_error"

    def when_exhausted(self) -> NoCoverage | Permanent:
        """What this failure means when it is still there after the last retry.

        The rule:

        - ``http_500`` → :class:`NoCoverage`. The service answers 500 for a position that no
          brick touches (an uncaught ``NoOverlapError``) and for genuine faults, and the two
          cannot be told apart by status or body. One 500 is therefore retried; a 500 on every
          attempt, spread over the retry delays, is taken to be the position (nothing there, or
          data the server cannot render), not the server. Callers should apply this only while
          the shared breaker is closed, so that a server-wide run of 500s is not mistaken for
          missing sky.
        - ``not_fits`` → :class:`Permanent` (``not_fits``): a 200 that is still not FITS.
        - anything else → :class:`Permanent` (``retries_exhausted``).
        """
        if self.kind == "http_500":
            return NoCoverage(
                f"{self.reason}, on every attempt: taken as no survey data at this position "
                "(the service answers HTTP 500 where no brick overlaps the cutout)"
            )
        if self.kind == "not_fits":
            return Permanent(f"{self.reason} (still not FITS after the last retry)", "not_fits")
        return Permanent(f"{self.reason} (after the last retry)", "retries_exhausted")


@dataclass(frozen=True)
class Permanent:
    """A failure no retry can fix: mark the galaxy failed with ``reason``."""

    reason: str
    kind: PermanentKind = "http_4xx"


FetchResult = Success | NoCoverage | Retryable | Permanent


# --------------------------------------------------------------------------------------------
# Classification (pure: no I/O, so every rule is tested without a server)


def status_class(status: int) -> str:
    """Metric label of an HTTP status: ``'429'`` for throttling, else ``'2xx'`` … ``'5xx'``.

    Requests that got no status are labelled by the client: ``'timeout'``, ``'connection'`` or
    ``'truncated'`` (the body broke off).
    """
    if status == 429:
        return "429"
    return f"{status // 100}xx"


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (RFC 9110, section 10.2.3).

    Parameters
    ----------
    value
        The header: delay-seconds (``'120'``) or an HTTP-date
        (``'Wed, 21 Oct 2026 07:28:00 GMT'``).
    now
        Current Unix time in seconds, for an HTTP-date.

    Returns
    -------
    float or None
        Seconds, clamped to [0, :data:`MAX_RETRY_AFTER_S`]; None if absent or unreadable.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT; parsedate leaves "-0000" naive
            return None
        seconds = when.timestamp() - now
    else:
        if not math.isfinite(seconds) or seconds < 0:
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def classify_response(
    request: CutoutRequest,
    ra: float,
    dec: float,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
) -> FetchResult:
    """Classify one complete HTTP answer.

    Parameters
    ----------
    request
        What was asked for (bands, size, pixscale).
    ra, dec
        The requested position in degrees.
    status
        HTTP status code.
    headers
        Response headers (case-insensitive mapping, as requests gives them).
    body
        The full body as received.
    now
        Current Unix time in seconds (for ``Retry-After`` HTTP-dates).

    Returns
    -------
    FetchResult
    """
    outcome = classify_status(status, headers, body, now=now)
    if outcome is not None:
        return outcome
    return _classify_body(request, ra, dec, status, body)


def classify_status(
    status: int, headers: Mapping[str, str], body: bytes, *, now: float
) -> Retryable | Permanent | None:
    """Classify an HTTP answer by its status alone; None for a 2xx, whose body decides.

    Shared by every survey client (the SDSS frame client reuses it), so that 429, 5xx and 4xx
    mean the same thing everywhere.

    Parameters
    ----------
    status
        HTTP status code.
    headers
        Response headers (case-insensitive mapping, as requests gives them).
    body
        The full body as received (quoted, shortened, in the reason).
    now
        Current Unix time in seconds (for ``Retry-After`` HTTP-dates).

    Returns
    -------
    Retryable or Permanent or None
    """
    retry_after = parse_retry_after(headers.get("Retry-After"), now)
    if status == 429:
        return Retryable(_status_reason(status, headers, body), retry_after, "throttled")
    if status == 500:
        return Retryable(_status_reason(status, headers, body), retry_after, "http_500")
    if status >= 500 or status == 408:
        return Retryable(_status_reason(status, headers, body), retry_after, "server_error")
    if 400 <= status < 500:
        return Permanent(_status_reason(status, headers, body), "http_4xx")
    if not 200 <= status < 300:
        return Permanent(_status_reason(status, headers, body), "unexpected_status")
    return None


def _classify_body(
    request: CutoutRequest, ra: float, dec: float, status: int, body: bytes
) -> FetchResult:
    if body.strip() == _UNKNOWN_LAYER_BODY:
        return Permanent(
            f"the service does not know layer {request.layer!r} (HTTP {status} with body "
            f"'no such layer'); fix the layer setting",
            "unknown_layer",
        )
    try:
        cutout = parse_cutout(
            body,
            bands=request.bands,
            size=request.size,
            center=(ra, dec),
            pixscale=request.pixscale,
        )
    except CutoutFormatError as exc:
        reason = f"HTTP {status} but {exc}"
        if exc.problem in ("empty", "truncated"):
            return Retryable(reason, None, "truncated")
        if exc.problem in ("corrupt", "not_fits"):
            return Retryable(reason, None, exc.problem)
        return Permanent(reason, _PERMANENT_FORMAT_PROBLEMS[exc.problem])
    if not cutout.coverage.any():
        return NoCoverage(
            f"every band of {request.bands!r} is blank (all pixels zero or non-finite) at "
            f"(ra, dec) = ({ra}, {dec}) in layer {request.layer!r}"
        )
    if request.invvar:
        problem = _invvar_problem(request, status, body)
        if problem is not None:
            return problem
    return Success(cutout, body, cutout.missing_bands)


def _invvar_problem(
    request: CutoutRequest, status: int, body: bytes
) -> Retryable | Permanent | None:
    """Why an answer asked with ``invvar`` lacks a usable inverse-variance HDU; None if it has one.

    A missing HDU is retried (a body that broke off at the end of the image HDU looks the same)
    and ends permanent after the last retry, with the reason saying what to change.
    """
    try:
        planes = read_error_planes(body, request.bands, request.size)
    except ErrorPlaneError as exc:
        if exc.truncated:
            return Retryable(f"HTTP {status} but {exc}", None, "truncated")
        return Permanent(f"HTTP {status} but the inverse variance is unusable: {exc}", "bad_invvar")
    if planes is None or planes.source != INVVAR_ERROR_SOURCE:
        return Retryable(
            f"HTTP {status} but no IMAGETYP = {INVVAR_IMAGETYP!r} HDU after the image although "
            f"invvar was asked for (the service sends it for Legacy Surveys layers at their "
            f"native pixel scale only: layer {request.layer!r}, pixscale {request.pixscale}; "
            "or turn GALPIPE_CUTOUT_INVVAR off)",
            None,
            "truncated",
        )
    return None


_PERMANENT_FORMAT_PROBLEMS: dict[str, PermanentKind] = {
    "wrong_type": "wrong_type",
    "wrong_shape": "wrong_shape",
    "wrong_bands": "wrong_bands",
    "bad_wcs": "bad_wcs",
    "wrong_position": "wrong_position",
}


def _status_reason(status: int, headers: Mapping[str, str], body: bytes) -> str:
    phrase = _REASON_PHRASES.get(status, "")
    text = f"HTTP {status}{' ' + phrase if phrase else ''}"
    if "Retry-After" in headers:
        text += f" (Retry-After: {headers['Retry-After']!r})"
    if body:
        text += f"; body: {describe_body(body)}"
    return text


_REASON_PHRASES = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


# --------------------------------------------------------------------------------------------
# Sessions and the client


def make_session(*, connect_retries: int = 1, trust_env: bool = True) -> requests.Session:
    """A requests session for one thread, with no hidden retries but one retry of a failed connect.

    Parameters
    ----------
    connect_retries
        Immediate urllib3 retries of a connection that could not be opened (see the module
        docstring for why this one is safe); reads, redirects-as-errors and statuses are never
        retried here.
    trust_env
        Honour ``HTTP(S)_PROXY``/``NO_PROXY`` and netrc from the environment.
    """
    retry = Retry(
        total=connect_retries,
        connect=connect_retries,
        read=0,
        status=0,
        other=0,
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,
        respect_retry_after_header=False,
    )
    adapter = HTTPAdapter(max_retries=retry, pool_connections=1, pool_maxsize=1)
    session = requests.Session()
    session.trust_env = trust_env
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update(
        {
            "User-Agent": f"galpipe/{__version__} (cutout fetcher; python-requests)",
            "Accept": "image/fits, application/fits;q=0.9, */*;q=0.1",
            "Accept-Encoding": "identity",
        }
    )
    return session


class HttpTransfer:
    """Whole-body GETs for the survey clients; safe to share between threads, never raises.

    Each thread gets its own :class:`requests.Session` (a session's connection pool is not
    meant to be shared across threads), created on first use by ``session_factory``. A GET
    reads the body to its end, at most ``max_body_bytes``, and hands the response and body to
    the caller's ``finish``; a transfer that breaks -- no connection, a timeout, a body cut
    off, longer than allowed or disagreeing with its ``Content-Length`` -- is a
    :class:`Retryable` or :class:`Permanent` instead, whatever the client asked for.

    Parameters
    ----------
    max_body_bytes
        Largest body read; a longer one is :class:`Permanent` (``too_large``).
    what, largest
        Names for messages: what is fetched (``"cutout"``) and what no body may be larger than
        (``"cutout of the requested size"``).
    session_factory
        Builds one session per thread.
    connect_timeout
        Seconds to wait for the connection.
    read_timeout
        Seconds to wait for each read of the answer.
    observer
        Called as ``observer(status_class, latency_s, nbytes)`` once per request sent (see
        :func:`status_class`); exceptions it raises are logged and swallowed.
    clock
        Monotonic seconds, for latency.
    """

    def __init__(
        self,
        *,
        max_body_bytes: int,
        what: str,
        largest: str,
        session_factory: Callable[[], requests.Session],
        connect_timeout: float,
        read_timeout: float,
        observer: FetchObserver | None,
        clock: Callable[[], float],
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self.what = what
        self.largest = largest
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._session_factory = session_factory
        self._observer = observer
        self._clock = clock
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    def session(self) -> requests.Session:
        """This thread's session, created on first use."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._session_factory()
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        """Close every thread's session (their pooled connections)."""
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()

    def get(
        self,
        url: str,
        finish: Callable[[requests.Response, bytes], _Finished],
        params: Mapping[str, str] | None = None,
    ) -> _Finished | Retryable | Permanent:
        """GET ``url`` and read the whole body; ``finish(response, body)`` classifies it.

        The observer hears of the request once, whatever the outcome.
        """
        started = self._clock()
        received = 0
        label = "connection"
        try:
            with self.session().get(
                url,
                params=params,
                timeout=(self.connect_timeout, self.read_timeout),
                stream=True,
            ) as response:
                label = status_class(response.status_code)
                body, received, broken = self._read_body(response)
                if broken is not None:
                    label, result = broken
                    return result
                return finish(response, body)
        except requests.RequestException as exc:
            label, failure = self._classify_exception(url, exc)
            return failure
        finally:
            self._observe(label, self._clock() - started, received)

    def _read_body(
        self, response: requests.Response
    ) -> tuple[bytes, int, tuple[str, Retryable | Permanent] | None]:
        """Read the whole body.

        Returns the body, the bytes received, and — if the body broke off, ran past
        :attr:`max_body_bytes` or disagrees with ``Content-Length`` — the observer label and
        the result to return instead.
        """
        chunks: list[bytes] = []
        try:
            too_large = self._read_chunks(response, chunks)
        except requests.ConnectionError as exc:
            # Chunks arrive whole or not at all, so the count may undercount what was read.
            return b"", _byte_count(chunks), self._broken_connection(response, exc)
        except (
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
        ) as exc:
            return b"", _byte_count(chunks), _truncated_stream(response, exc)
        received = _byte_count(chunks)
        if too_large is not None:
            return b"", received, too_large
        body = b"".join(chunks)
        length_mismatch = _length_mismatch(response, body)
        if length_mismatch is not None:
            return b"", received, length_mismatch
        return body, received, None

    def _read_chunks(
        self, response: requests.Response, chunks: list[bytes]
    ) -> tuple[str, Permanent] | None:
        """Append the body's chunks to ``chunks`` until its end.

        Returns None, or the observer label and a :class:`Permanent` (``too_large``) as soon as
        more than :attr:`max_body_bytes` arrived. Raises what ``iter_content`` raises;
        ``chunks`` then holds what arrived before.
        """
        limit = self.max_body_bytes
        received = 0
        for chunk in response.iter_content(_CHUNK_BYTES):
            chunks.append(chunk)
            received += len(chunk)
            if received > limit:
                # Nothing that large can be what was asked for; read no further.
                status = response.status_code
                return status_class(status), Permanent(
                    f"HTTP {status} with a body larger than {limit} bytes, more than "
                    f"any {self.largest}; not read further",
                    "too_large",
                )
        return None

    def _broken_connection(
        self, response: requests.Response, exc: requests.ConnectionError
    ) -> tuple[str, Retryable]:
        """Observer label and :class:`Retryable` of a body cut off by a read timeout or a
        broken connection."""
        status = response.status_code
        declared = response.headers.get("Content-Length", "absent")
        if _is_read_timeout(exc):
            return "timeout", Retryable(
                f"read timeout: the body stopped arriving for {self.read_timeout:g} s "
                f"(HTTP {status}, Content-Length {declared})",
                None,
                "timeout",
            )
        return "connection", Retryable(
            f"connection broke during the body (HTTP {status}, Content-Length "
            f"{declared}): {_root_cause(exc)}",
            None,
            "connection",
        )

    def _classify_exception(
        self, url: str, exc: requests.RequestException
    ) -> tuple[str, Retryable | Permanent]:
        """Observer label and result for a request that got no complete status line."""
        if isinstance(exc, requests.ConnectTimeout):
            return "timeout", Retryable(
                f"connect timeout: no connection to {url} within {self.connect_timeout:g} s",
                None,
                "timeout",
            )
        if isinstance(exc, requests.ReadTimeout) or _is_read_timeout(exc):
            return "timeout", Retryable(
                f"read timeout: no answer from {url} within {self.read_timeout:g} s",
                None,
                "timeout",
            )
        if isinstance(exc, requests.TooManyRedirects):
            return "3xx", Permanent(f"too many redirects from {url}: {exc}", "unexpected_status")
        if isinstance(exc, requests.exceptions.ChunkedEncodingError):
            return "truncated", Retryable(
                f"truncated answer from {url}: {_root_cause(exc)}", None, "truncated"
            )
        return "connection", Retryable(
            f"connection error to {url}: {_root_cause(exc)}", None, "connection"
        )

    def _observe(self, label: str, latency_s: float, nbytes: int) -> None:
        if self._observer is None:
            return
        try:
            self._observer(label, latency_s, nbytes)
        except Exception:
            log.exception("%s fetch observer failed (label=%s); ignored", self.what, label)


class LegacySurveyClient:
    """Fetches and classifies cutouts; safe to share between the threads of a fetch replica.

    The transfer (per-thread sessions, bounded bodies, broken transfers classified) is an
    :class:`HttpTransfer`.

    Parameters
    ----------
    request
        What to ask for (base URL, layer, bands, size, pixel scale).
    session_factory
        Builds one session per thread; :func:`make_session` by default.
    connect_timeout
        Seconds to wait for the connection (:data:`CONNECT_TIMEOUT_S`).
    read_timeout
        Seconds to wait for each read of the answer (:data:`READ_TIMEOUT_S`).
    observer
        Called as ``observer(status_class, latency_s, nbytes)`` once per request sent (see
        :func:`status_class`); exceptions it raises are logged and swallowed.
    clock
        Monotonic seconds, for latency.
    wall_clock
        Unix time in seconds, for ``Retry-After`` HTTP-dates.
    """

    def __init__(
        self,
        request: CutoutRequest | None = None,
        *,
        session_factory: Callable[[], requests.Session] = make_session,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        read_timeout: float = READ_TIMEOUT_S,
        observer: FetchObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not (connect_timeout > 0 and read_timeout > 0):
            raise ValueError(
                f"connect_timeout={connect_timeout!r}, read_timeout={read_timeout!r}: "
                "expected positive seconds"
            )
        self.request = request if request is not None else CutoutRequest()
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._wall_clock = wall_clock
        self.transfer = HttpTransfer(
            max_body_bytes=self.request.max_body_bytes,
            what="cutout",
            largest="cutout of the requested size",
            session_factory=session_factory,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            observer=observer,
            clock=clock,
        )

    def session(self) -> requests.Session:
        """This thread's session, created on first use."""
        return self.transfer.session()

    def close(self) -> None:
        """Close every thread's session (their pooled connections)."""
        self.transfer.close()

    def __enter__(self) -> LegacySurveyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fetch(self, ra: float, dec: float) -> FetchResult:
        """Fetch, check and classify the cutout at (``ra``, ``dec``) degrees; never raises.

        Returns
        -------
        FetchResult
            :class:`Success`, :class:`NoCoverage`, :class:`Retryable` or :class:`Permanent`.
        """
        try:
            params = self.request.params(ra, dec)
        except ValueError as exc:
            return Permanent(f"invalid position, nothing sent: {exc}", "invalid_position")

        def finish(response: requests.Response, body: bytes) -> FetchResult:
            return classify_response(
                self.request,
                ra,
                dec,
                response.status_code,
                response.headers,
                body,
                now=self._wall_clock(),
            )

        return self.transfer.get(self.request.url, finish, params)


def _byte_count(chunks: list[bytes]) -> int:
    """Bytes in ``chunks``."""
    return sum(len(chunk) for chunk in chunks)


def _truncated_stream(
    response: requests.Response, exc: requests.RequestException
) -> tuple[str, Retryable]:
    """Observer label and :class:`Retryable` of a body whose chunked or compressed stream
    ended early."""
    declared = response.headers.get("Content-Length", "absent")
    return "truncated", Retryable(
        f"truncated body: the connection closed before the end (HTTP {response.status_code}, "
        f"Content-Length {declared}): {_root_cause(exc)}",
        None,
        "truncated",
    )


def _length_mismatch(response: requests.Response, body: bytes) -> tuple[str, Retryable] | None:
    """Observer label and :class:`Retryable` if ``body`` is shorter or longer than the
    ``Content-Length`` declared for it; else None."""
    declared = response.headers.get("Content-Length", "").strip()
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    # Content-Length counts encoded bytes; compare only when nothing was decoded.
    if declared.isdigit() and encoding == "identity" and len(body) != int(declared):
        return "truncated", Retryable(
            f"truncated body: {len(body)} bytes received but Content-Length is "
            f"{declared} (HTTP {response.status_code})",
            None,
            "truncated",
        )
    return None


def _is_read_timeout(exc: BaseException) -> bool:
    """requests wraps a read timeout during body streaming in a ConnectionError."""
    return any(isinstance(e, urllib3.exceptions.ReadTimeoutError) for e in _causes(exc))


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and the errors it wraps, outermost first (requests → urllib3 → socket)."""
    chain = [exc]
    for _ in range(16):
        current = chain[-1]
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            wrapped: BaseException | None = reason
        elif current.args and isinstance(current.args[0], BaseException):
            wrapped = current.args[0]
        else:
            wrapped = current.__cause__
        if wrapped is None or any(wrapped is e for e in chain):
            break
        chain.append(wrapped)
    return chain


def _root_cause(exc: BaseException) -> str:
    """The innermost error message (the socket's, not requests' wrapping of it)."""
    innermost = _causes(exc)[-1]
    return str(innermost) or type(innermost).__name__
