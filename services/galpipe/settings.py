"""The one settings object of galpipe, read from the environment and validated at start-up.

Every variable is documented in the README's configuration table and mirrored by the Helm
chart's values. A wrong value raises :class:`SettingsError` naming the variable, the value and
what was expected, so an operator can fix a manifest without reading the code.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import unquote, urlparse

from galpipe.errors import ConfigurationError
from galpipe.survey import layout

PREFIX = "GALPIPE_"


class SettingsError(ConfigurationError, ValueError):
    """A configuration variable is missing or malformed; the message names it."""


def _parse_positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a positive integer") from None
    if value <= 0:
        raise SettingsError(f"{name}={raw!r}: expected a positive integer")
    return value


def _parse_port(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise SettingsError(f"{name}={raw!r}: expected a TCP port in 0..65535 (0 disables)")
    return value


def _parse_non_negative_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise SettingsError(f"{name}={raw!r}: expected an integer >= 0")
    return value


def _parse_healpix_order(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= 29:
        raise SettingsError(f"{name}={raw!r}: expected a HEALPix order, an integer in 0..29")
    return value


def _parse_positive_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a positive number") from None
    if not value > 0 or value == float("inf"):
        raise SettingsError(f"{name}={raw!r}: expected a positive, finite number")
    return value


#: Longest duration any setting may give, seconds (a year). No lease, timeout, poll or window
#: of galpipe is meaningful beyond it, and far larger values overflow what they feed: a
#: socket's deadline (time_t), a thread's wait, a PostgreSQL interval.
MAX_SECONDS = 365 * 24 * 3600.0


def _parse_seconds(name: str, raw: str) -> float:
    value = _parse_positive_float(name, raw)
    if value > MAX_SECONDS:
        raise SettingsError(f"{name}={raw!r}: expected seconds up to {MAX_SECONDS:g} (a year)")
    return value


def _parse_ratio(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise SettingsError(f"{name}={raw!r}: expected a ratio in (0, 1]")
    return value


def _parse_delays(name: str, raw: str) -> tuple[float, ...]:
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not parts:
        raise SettingsError(f"{name}={raw!r}: expected comma-separated seconds, e.g. 30,120,600")
    delays = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            value = -1.0
        if not 0.0 <= value <= MAX_SECONDS:
            raise SettingsError(
                f"{name}={raw!r}: {part!r} is not a number of seconds in 0..{MAX_SECONDS:g}"
            )
        delays.append(value)
    return tuple(delays)


def _parse_choice(*choices: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise SettingsError(f"{name}={raw!r}: expected one of {', '.join(choices)}")
        return value

    return parse


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name}={raw!r}: expected true or false (also 1/0, yes/no, on/off)")


#: What a secret is replaced with in a message.
REDACTED = "***"
# ``password=…`` of a conninfo string: single-quoted (backslash escapes) or up to a space.
_CONNINFO_PASSWORD = re.compile(r"\bpassword\s*=\s*(?:'((?:[^'\\]|\\.)*)'|(\S+))")
# What libpq cuts a URL at: a token it quotes holds whole pieces of the password between these.
_URL_DELIMITERS = re.compile(r"[/?#@&=:]")
_QUOTED_TOKEN = re.compile(r'"[^"]*"')


def redact_database_url(text: str, url: str) -> str:
    """``text`` with the password of database ``url`` replaced by ``***``.

    For messages that quote ``url`` or a part of it: libpq's parse errors quote the token they
    reject, which may hold a piece of a malformed URL's password. The password is looked for in
    ``url`` as a URL's user information or ``password`` query parameter, and as a conninfo
    string's ``password=``; it is replaced as written and decoded (percent-encoding, quoting),
    and a double-quoted token of ``text`` that holds a piece of it is replaced whole.

    Parameters
    ----------
    text
        The message.
    url
        PostgreSQL URL or conninfo string, well formed or not.
    """
    found: set[str] = set()
    if url.startswith(("postgresql://", "postgres://")):
        before_query, _, query = url.partition("?")
        # The last "@" ends the user information, as libpq reads it: a password may hold "@".
        userinfo = before_query.partition("://")[2].rpartition("@")[0]
        found.add(userinfo.partition(":")[2])
        found.update(re.findall(r"(?:^|&)password=([^&#]*)", query))
    for quoted, bare in _CONNINFO_PASSWORD.findall(url):
        found.update((quoted, re.sub(r"\\(.)", r"\1", quoted), bare))
    found |= {unquote(secret) for secret in found}
    found.discard("")
    for secret in sorted(found, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    pieces = {piece for secret in found for piece in _URL_DELIMITERS.split(secret) if piece}
    return _QUOTED_TOKEN.sub(
        lambda token: f'"{REDACTED}"' if any(p in token[0] for p in pieces) else token[0], text
    )


def _parse_database_url(name: str, raw: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    if not raw.strip():
        # libpq reads a blank conninfo as "all defaults": a local socket nobody asked for.
        raise SettingsError(f"{name} is set but blank")
    try:
        params = conninfo_to_dict(raw)
    except Exception as exc:
        # libpq quotes the token it rejects, which may be (part of) the password.
        raise SettingsError(
            f"{name}: not a PostgreSQL connection string or URL "
            f"(postgresql://user:password@host:5432/db): "
            f"{redact_database_url(str(exc).strip(), raw)}"
        ) from None
    port = str(params.get("port", "5432"))
    if not all(p.isdigit() and 0 < int(p) < 65536 for p in port.split(",")):
        raise SettingsError(f"{name}: port {port!r} is not a TCP port number")
    return raw


def _parse_object_store(name: str, raw: str) -> str:
    url = urlparse(raw)
    if url.scheme == "s3":
        if not url.netloc:
            raise SettingsError(f"{name}={raw!r}: an s3:// URL needs a bucket: s3://bucket/prefix")
    elif url.scheme == "file":
        if url.netloc not in ("", "localhost") or not url.path.startswith("/"):
            raise SettingsError(f"{name}={raw!r}: a file URL needs an absolute path: file:///dir")
    else:
        raise SettingsError(f"{name}={raw!r}: expected s3://bucket/prefix or file:///absolute/dir")
    return raw


def _parse_http_url(name: str, raw: str) -> str:
    url = urlparse(raw)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise SettingsError(f"{name}={raw!r}: expected an http:// or https:// URL")
    return raw


def _parse_str(name: str, raw: str) -> str:
    if not raw.strip():
        raise SettingsError(f"{name} is set but empty")
    return raw.strip()


def _cutout_request_rule(attr: str, parse: Callable[[str, str], Any]) -> Callable[[str, str], Any]:
    """``parse``, then the cutout client's own rule for its ``attr`` parameter.

    :class:`~galpipe.survey.legacysurvey.CutoutRequest` holds the one definition of a valid
    layer, band list, size, pixel scale and base URL; checking it here refuses a value at
    start-up, naming the variable, instead of when the fetch pipeline is built.
    """

    def parse_for_cutouts(name: str, raw: str) -> Any:
        value = parse(name, raw)
        # Imported on use: the client pulls in requests, which most commands never need.
        from galpipe.survey.legacysurvey import CutoutRequest

        try:
            CutoutRequest(**{attr: value})
        except ValueError as exc:
            raise SettingsError(f"{name}={raw!r}: {exc}") from None
        return value

    return parse_for_cutouts


#: Where Kubernetes mounts the namespace of the pod's ServiceAccount.
POD_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
#: Shortest session-signing key accepted: 32 characters (an HMAC-SHA256 key of 256 bits when
#: they are random bytes, e.g. ``openssl rand -base64 32``).
SESSION_KEY_MIN_CHARS = 32


def _parse_session_key(name: str, raw: str) -> str:
    if len(raw.strip()) < SESSION_KEY_MIN_CHARS:
        # The value itself is a secret: never echo it.
        raise SettingsError(
            f"{name}: too short ({len(raw.strip())} characters); expected at least "
            f"{SESSION_KEY_MIN_CHARS} random characters, e.g. `openssl rand -base64 32`"
        )
    return raw.strip()


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _parse_sha256(name: str, raw: str) -> str:
    value = raw.strip().lower()
    if not _SHA256_HEX.fullmatch(value):
        raise SettingsError(f"{name}={raw!r}: expected a SHA-256 as 64 hexadecimal digits")
    return value


def _setting(
    env: str, parse: Callable[[str, str], Any], default: Any, doc: str, *, secret: bool = False
) -> Any:
    return field(
        default=default,
        repr=not secret,
        metadata={"env": PREFIX + env, "parse": parse, "doc": doc},
    )


@dataclass(frozen=True)
class Settings:
    """Validated configuration of one galpipe process.

    Build it with :meth:`from_env`; the field metadata holds each variable's name, parser and
    the sentence the README table shows.
    """

    database_url: str | None = _setting(
        "DATABASE_URL",
        _parse_database_url,
        None,
        "PostgreSQL connection URL or conninfo string (required by every command that "
        "touches the database).",
        secret=True,
    )
    database_password_file: str | None = _setting(
        "DATABASE_PASSWORD_FILE",
        _parse_str,
        None,
        "File holding the database password, read again for every new connection (a mounted "
        "Secret that External Secrets rewrites on rotation); overrides a password in the URL.",
    )
    object_store: str | None = _setting(
        "OBJECT_STORE",
        _parse_object_store,
        None,
        "Where cutouts are kept: `s3://bucket/prefix` or `file:///absolute/dir`.",
    )
    s3_endpoint_url: str | None = _setting(
        "S3_ENDPOINT_URL",
        _parse_http_url,
        None,
        "Endpoint of an S3-compatible server (MinIO, moto); unset for AWS S3.",
    )
    db_pool_size: int = _setting(
        "DB_POOL_SIZE", _parse_positive_int, 4, "Maximum connections per process."
    )
    fetch_batch_size: int = _setting(
        "FETCH_BATCH_SIZE", _parse_positive_int, 32, "Tasks one fetch worker claims at a time."
    )
    radon_batch_size: int = _setting(
        "RADON_BATCH_SIZE", _parse_positive_int, 256, "Tasks one radon worker claims at a time."
    )
    radon_device: str = _setting(
        "RADON_DEVICE",
        _parse_choice("cpu", "cuda"),
        "cpu",
        "Where a radon worker runs the transform, pooling and fits: `cpu` (numpy) or `cuda` "
        "(PyTorch on the node's GPU, the GPU image; fails at start without one).",
    )
    radon_decode_processes: int = _setting(
        "RADON_DECODE_PROCESSES",
        _parse_non_negative_int,
        0,
        "Processes a radon worker reads, decodes and prepares its batches in (0: threads of the "
        "worker itself). A GPU worker needs about one per core: the GPU's part is tiny, the "
        "CPU's (decoding, neighbour masking) is what limits it.",
    )
    radon_precision: str = _setting(
        "RADON_PRECISION",
        _parse_choice("float64", "float32", "tf32"),
        "tf32",
        "Matrix-product precision of the transform with `GALPIPE_RADON_DEVICE=cuda`: `float64`, "
        "`float32` or `tf32` (TensorFloat-32; angles within 0.05 deg median of float64, "
        "docs/capacity.md). The CPU path is float64.",
    )
    morphology_batch_size: int = _setting(
        "MORPHOLOGY_BATCH_SIZE",
        _parse_positive_int,
        256,
        "Tasks one morphology worker claims at a time (one network batch).",
    )
    morphology_model: str | None = _setting(
        "MORPHOLOGY_MODEL",
        _parse_sha256,
        None,
        "Version (the SHA-256 of its ONNX bytes, as `galpipe morphology models` lists it) of the "
        "registered network a morphology worker runs; required by `galpipe morphology worker`.",
    )
    morphology_device: str = _setting(
        "MORPHOLOGY_DEVICE",
        _parse_choice("auto", "cpu", "cuda"),
        "auto",
        "Where the morphology network runs: `cuda` (a GPU node; fails without one), `cpu`, or "
        "`auto` (the GPU when ONNX Runtime sees one).",
    )
    photoz_batch_size: int = _setting(
        "PHOTOZ_BATCH_SIZE",
        _parse_positive_int,
        256,
        "Tasks one photo-z worker claims at a time.",
    )
    photoz_model: str | None = _setting(
        "PHOTOZ_MODEL",
        _parse_sha256,
        None,
        "Version (the SHA-256 of its bytes, as `galpipe photoz models` lists it) of the "
        "registered pixel-redshift model a photo-z worker runs; required by "
        "`galpipe photoz worker`.",
    )
    lease_seconds: float = _setting(
        "LEASE_SECONDS",
        _parse_seconds,
        300.0,
        "How long a claimed batch stays with its worker before it returns to the queue.",
    )
    max_retries: int = _setting(
        "MAX_RETRIES",
        _parse_non_negative_int,
        3,
        "Retries after the first attempt before a task is marked `failed` (paper: 3).",
    )
    retry_delays: tuple[float, ...] = _setting(
        "RETRY_DELAYS",
        _parse_delays,
        (30.0, 120.0, 600.0),
        "Seconds before retry 1, 2, 3 … (comma-separated; the last repeats).",
    )
    fetch_rate_limit: float = _setting(
        "FETCH_RATE_LIMIT",
        _parse_positive_float,
        5.0,
        "Cutout requests per second, shared by every fetch process (global token bucket).",
    )
    fetch_rate_burst: float = _setting(
        "FETCH_RATE_BURST",
        _parse_positive_float,
        5.0,
        "Token bucket capacity: requests that may go out at once after an idle spell.",
    )
    fetch_threads: int = _setting(
        "FETCH_THREADS",
        _parse_positive_int,
        8,
        "Concurrent requests inside one fetch process, so latency does not cap the rate.",
    )
    cutout_base_url: str = _setting(
        "CUTOUT_BASE_URL",
        _cutout_request_rule("base_url", _parse_http_url),
        "https://www.legacysurvey.org",
        "Cutout service (`/viewer/fits-cutout` is appended); the synthetic sky's URL locally.",
    )
    cutout_layer: str = _setting(
        "CUTOUT_LAYER",
        _cutout_request_rule("layer", _parse_str),
        layout.LAYER,
        "Survey layer; always sent (the service's default is older).",
    )
    cutout_bands: str = _setting(
        "CUTOUT_BANDS",
        _cutout_request_rule("bands", _parse_str),
        layout.BANDS,
        "Bands of each cutout, in order.",
    )
    cutout_size: int = _setting(
        "CUTOUT_SIZE",
        _cutout_request_rule("size", _parse_positive_int),
        layout.CUTOUT_SIZE_PX,
        "Cutout width and height in pixels (paper: 40).",
    )
    cutout_pixscale: float = _setting(
        "CUTOUT_PIXSCALE",
        _cutout_request_rule("pixscale", _parse_positive_float),
        layout.PIXSCALE_ARCSEC,
        "Arcseconds per pixel (DR10 native: 0.262).",
    )
    cutout_invvar: bool = _setting(
        "CUTOUT_INVVAR",
        _parse_bool,
        False,
        "Also fetch each cutout's inverse variance (the service's `invvar` HDU, Legacy Surveys "
        "layers at their native pixel scale only): photo-z then takes every pixel's error from "
        "it (`error_source` `invvar`) instead of the stamp's sky noise; cutouts twice the size.",
    )
    cutout_connect_timeout_seconds: float = _setting(
        "CUTOUT_CONNECT_TIMEOUT_SECONDS",
        _parse_seconds,
        5.0,
        "Connect timeout of a cutout request.",
    )
    cutout_read_timeout_seconds: float = _setting(
        "CUTOUT_READ_TIMEOUT_SECONDS",
        _parse_seconds,
        30.0,
        "Read timeout of a cutout request (time between bytes).",
    )
    cutout_packing: str = _setting(
        "CUTOUT_PACKING",
        _parse_choice("none", "healpix"),
        "none",
        "How fetch stores cutouts: `none` (one object per galaxy) or `healpix` (one object per "
        "fetch batch and HEALPix tile, the cutouts concatenated: far fewer PUTs and GETs at "
        "survey scale; ingest the catalogue in tile order, docs/architecture.md).",
    )
    cutout_pack_order: int = _setting(
        "CUTOUT_PACK_ORDER",
        _parse_healpix_order,
        7,
        "HEALPix order of the packs' tiles (`GALPIPE_CUTOUT_PACKING=healpix`); 7: 196,608 "
        "tiles of 0.21 square degrees, inside the export's order-3 tiles.",
    )
    fetch_source: str = _setting(
        "FETCH_SOURCE",
        _parse_choice("legacysurvey", "sdss"),
        "legacysurvey",
        "Where fetch gets each galaxy's cutout: `legacysurvey` (one cutout request) or `sdss` "
        "(the galaxy's SDSS DR10 frames, one request per band, registered into a cutout with "
        "error planes; needs `run`, `camcol`, `field` catalogue columns).",
    )
    sdss_base_url: str = _setting(
        "SDSS_BASE_URL",
        _parse_http_url,
        "https://data.sdss.org/sas",
        "SDSS Science Archive Server root of the frames (`GALPIPE_FETCH_SOURCE=sdss`); the "
        "synthetic sky's URL followed by `/sas` locally.",
    )
    radon_cache_dir: str | None = _setting(
        "RADON_CACHE_DIR",
        _parse_str,
        None,
        "Where the Radon operator is cached (default `$XDG_CACHE_HOME/galpipe`); bake it into "
        "the image so pods do not rebuild it.",
    )
    breaker_failures: int = _setting(
        "BREAKER_FAILURES",
        _parse_positive_int,
        5,
        "Consecutive failures that open the shared circuit breaker.",
    )
    breaker_failure_ratio: float = _setting(
        "BREAKER_FAILURE_RATIO",
        _parse_ratio,
        0.5,
        "Failure ratio over the window that opens the breaker.",
    )
    breaker_min_requests: int = _setting(
        "BREAKER_MIN_REQUESTS",
        _parse_positive_int,
        20,
        "Requests in the window before the failure ratio is judged.",
    )
    breaker_window_seconds: float = _setting(
        "BREAKER_WINDOW_SECONDS",
        _parse_seconds,
        60.0,
        "Length of the breaker's failure-ratio window.",
    )
    breaker_cooldown_seconds: float = _setting(
        "BREAKER_COOLDOWN_SECONDS",
        _parse_seconds,
        30.0,
        "How long the breaker stays open before one probe request is let through.",
    )
    breaker_probe_timeout_seconds: float = _setting(
        "BREAKER_PROBE_TIMEOUT_SECONDS",
        _parse_seconds,
        30.0,
        "How long the one half-open probe may take before another process may probe instead.",
    )
    poll_min_seconds: float = _setting(
        "POLL_MIN_SECONDS",
        _parse_seconds,
        0.2,
        "First idle-poll delay when the queue is empty (doubles, jittered).",
    )
    poll_max_seconds: float = _setting(
        "POLL_MAX_SECONDS", _parse_seconds, 10.0, "Longest idle-poll delay."
    )
    metrics_port: int = _setting(
        "METRICS_PORT",
        _parse_port,
        9100,
        "Port of the /healthz, /readyz and /metrics server (0 disables it).",
    )
    monitor_interval_seconds: float = _setting(
        "MONITOR_INTERVAL_SECONDS",
        _parse_seconds,
        15.0,
        "How often `galpipe monitor` reads the queue, breaker and rate-limit state from the "
        "database (match the Prometheus scrape interval).",
    )
    queue_age_slo_seconds: float = _setting(
        "QUEUE_AGE_SLO_SECONDS",
        _parse_seconds,
        3600.0,
        "Objective for the age of a pipeline's oldest ready task; `galpipe monitor` exports it "
        "and an alert fires above it.",
    )
    log_format: str = _setting(
        "LOG_FORMAT", _parse_choice("text", "json"), "text", "`text` or `json` (one object a line)."
    )
    log_level: str = _setting(
        "LOG_LEVEL",
        _parse_choice("debug", "info", "warning", "error"),
        "info",
        "`debug`, `info`, `warning` or `error`.",
    )
    worker_id: str | None = _setting(
        "WORKER_ID",
        _parse_str,
        None,
        "Lease owner name of this process; defaults to `hostname:pid` (the pod name in k8s).",
    )
    control_port: int = _setting(
        "CONTROL_PORT",
        _parse_port,
        8080,
        "Port of `galpipe control`'s JSON API and web console.",
    )
    control_namespace: str | None = _setting(
        "CONTROL_NAMESPACE",
        _parse_str,
        None,
        "Namespace of the release `galpipe control` manages and authorises in; defaults to the "
        "pod's own namespace, else `default`.",
    )
    control_release: str = _setting(
        "CONTROL_RELEASE",
        _parse_str,
        "galpipe",
        "Helm release name: a pipeline's Deployment and ScaledObject are `<release>-<pipeline>`.",
    )
    control_helmrelease: str | None = _setting(
        "CONTROL_HELMRELEASE",
        _parse_str,
        None,
        "Name of the Flux HelmRelease that deploys the chart (suspended while an image is "
        "pinned); defaults to the release name.",
    )
    control_session_key: str | None = _setting(
        "CONTROL_SESSION_KEY",
        _parse_session_key,
        None,
        "Secret that signs the console's session cookies, at least 32 characters (required by "
        "`galpipe control`).",
        secret=True,
    )
    control_review_ttl_seconds: float = _setting(
        "CONTROL_REVIEW_TTL_SECONDS",
        _parse_seconds,
        10.0,
        "How long `galpipe control` caches a TokenReview or SubjectAccessReview answer.",
    )

    def __post_init__(self) -> None:
        if self.poll_max_seconds < self.poll_min_seconds:
            raise SettingsError(
                f"{PREFIX}POLL_MAX_SECONDS={self.poll_max_seconds} is smaller than "
                f"{PREFIX}POLL_MIN_SECONDS={self.poll_min_seconds}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every ``GALPIPE_*`` variable, parse and validate it.

        Raises
        ------
        SettingsError
            If a variable is malformed; the message names the variable.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is not None and raw != "":
                values[f.name] = f.metadata["parse"](f.metadata["env"], raw)
        return cls(**values)

    def require(self, name: str) -> Any:
        """Return setting ``name``; a :class:`SettingsError` naming its variable if unset."""
        value = getattr(self, name)
        if value is None:
            env = next(f.metadata["env"] for f in fields(self) if f.name == name)
            raise SettingsError(f"{env} is not set: {_doc(name)}")
        return value

    def batch_size(self, pipeline: str) -> int:
        """Claim size of ``pipeline`` (``GALPIPE_<PIPELINE>_BATCH_SIZE``)."""
        value = getattr(self, f"{pipeline}_batch_size", None)
        if value is None:
            raise SettingsError(f"no batch size setting for pipeline {pipeline!r}")
        return int(value)

    def control_namespace_or_pod(self, namespace_file: str = POD_NAMESPACE_FILE) -> str:
        """The namespace ``galpipe control`` works in: the setting, else the pod's, else
        ``default``."""
        if self.control_namespace:
            return self.control_namespace
        try:
            with open(namespace_file, encoding="utf-8") as file:
                return file.read().strip() or "default"
        except OSError:
            return "default"

    @property
    def control_helm_release_name(self) -> str:
        """The Flux HelmRelease's name: the setting, else the release."""
        return self.control_helmrelease or self.control_release

    @property
    def owner(self) -> str:
        """Lease owner name of this process."""
        import socket

        return self.worker_id or f"{socket.gethostname()}:{os.getpid()}"


def _doc(name: str) -> str:
    return next(f.metadata["doc"] for f in fields(Settings) if f.name == name)


def settings_table() -> str:
    """The README's configuration table in Markdown, generated from the field metadata."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for f in fields(Settings):
        default = f.default
        if isinstance(default, tuple):
            default = ",".join(f"{d:g}" for d in default)
        elif isinstance(default, bool):
            default = str(default).lower()  # as the variable is written
        shown = "—" if default is None else f"`{default}`"
        rows.append(f"| `{f.metadata['env']}` | {shown} | {f.metadata['doc']} |")
    return "\n".join(rows)
