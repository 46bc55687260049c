"""Judges of galpipe's answer to one bad input, for the fuzz tests and ``bench/bad_inputs.py``.

Each ``try_*`` function feeds one case of :mod:`tests.fuzz.generators` to the real entry point
and returns a :class:`Verdict`: *handled* when galpipe answered with a clear error of its own
family (naming the input and the problem), a rejected-row report or a classified fetch result,
with nothing half-written; *unhandled* otherwise (another exception, a 5xx, a hang, a server
that stops answering, rows or objects written by a refused input), with what happened.
"""

from __future__ import annotations

import contextlib
import csv
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg_pool import ConnectionPool

from galpipe.catalog.ingest import store_catalog
from galpipe.catalog.read import load_catalog
from galpipe.catalog.validate import CatalogError
from galpipe.settings import Settings, SettingsError
from galpipe.survey.legacysurvey import (
    CutoutRequest,
    NoCoverage,
    Permanent,
    Retryable,
    Success,
    classify_response,
)
from tests.fuzz.generators import (
    CONTROL_PIPELINES,
    CUTOUT_BANDS,
    CUTOUT_CENTER,
    CUTOUT_PIXSCALE,
    CUTOUT_SIZE,
    CatalogCase,
    CutoutCase,
    HttpCase,
    SettingCase,
)

__all__ = [
    "HttpServers",
    "Verdict",
    "http_servers",
    "server_answers",
    "try_catalog",
    "try_cutout",
    "try_http",
    "try_setting",
]


@dataclass(frozen=True)
class Verdict:
    """The judgement of one case: ``handled``, and what happened (the error, or what went wrong)."""

    handled: bool
    detail: str


def _ok(detail: str) -> Verdict:
    return Verdict(True, detail)


def _bad(detail: str) -> Verdict:
    return Verdict(False, detail)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:300]}"


# ------------------------------------------------------------------------------------------------
# Catalogues


def _counts(pool: ConnectionPool) -> tuple[int, int]:
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM galaxies), (SELECT count(*) FROM tasks)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _stored(pool: ConnectionPool, ids: frozenset[int]) -> int:
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM galaxies WHERE source_id = ANY(%s) "
            "AND ra >= 0 AND ra < 360 AND dec BETWEEN -90 AND 90",
            (sorted(ids),),
        ).fetchone()
    assert row is not None
    return int(row[0])


def try_catalog(case: CatalogCase, pool: ConnectionPool, workdir: Path) -> Verdict:
    """Ingest ``case`` as ``galpipe ingest`` does (:func:`load_catalog`, :func:`store_catalog`).

    Handled: the file refused with a ``CatalogError`` that names it, nothing stored; or read,
    its good rows stored (every id of ``case.accepted_ids`` where known), each rejected row in
    the report with a reason, and the counts of the database and the summary agreeing.
    """
    folder = Path(tempfile.mkdtemp(dir=workdir))
    try:
        path = folder / case.filename
        path.write_bytes(case.content)
        report = folder / "rejected.csv"
        before = _counts(pool)
        try:
            catalog = load_catalog(path)
            summary = store_catalog(pool, catalog, report_path=report, catalog_name="fuzz")
        except CatalogError as exc:
            if _counts(pool) != before:
                return _bad(f"refused ({exc}) but rows were written")
            if path.name not in str(exc):
                return _bad(f"refusal does not name the file: {exc}")
            if not case.may_refuse:
                return _bad(f"refused a file whose good rows must be ingested: {exc}")
            return _ok(f"refused: {str(exc)[:200]}")
        except Exception as exc:
            written = "; rows were written" if _counts(pool) != before else ""
            return _bad(f"{_error_text(exc)}{written}")
        if case.must_refuse:
            return _bad(f"ingested a file that must be refused: {summary}")
        galaxies, tasks = _counts(pool)
        if (galaxies - before[0], tasks - before[1]) != (summary.ingested, summary.fetch_queued):
            return _bad(
                f"database grew by {galaxies - before[0]} galaxies and {tasks - before[1]} tasks, "
                f"the summary says {summary.ingested} and {summary.fetch_queued}"
            )
        if summary.rejected:
            with report.open(encoding="utf-8", newline="") as fh:
                lines = list(csv.reader(fh))[1:]
            if len(lines) != summary.rejected or not all(line[2] for line in lines):
                return _bad(f"report has {len(lines)} lines for {summary.rejected} rejected rows")
        if case.accepted_ids is not None:
            rows = catalog.rows
            accepted = frozenset(rows.source_id[rows.accepted].tolist())
            if accepted != case.accepted_ids:
                return _bad(
                    f"accepted {len(accepted)} rows, expected {len(case.accepted_ids)}: "
                    f"missing {sorted(case.accepted_ids - accepted)[:5]}, "
                    f"extra {sorted(accepted - case.accepted_ids)[:5]}"
                )
            if _stored(pool, case.accepted_ids) != len(case.accepted_ids):
                return _bad("an accepted row is not stored")
        return _ok(f"read {summary.read}, ingested {summary.ingested}, rejected {summary.rejected}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# Cutout bodies

_CUTOUT_REQUEST = CutoutRequest(
    base_url="http://127.0.0.1:9",
    bands=CUTOUT_BANDS,
    size=CUTOUT_SIZE,
    pixscale=CUTOUT_PIXSCALE,
)


def judge_fetch_result(case: CutoutCase, result: object) -> Verdict:
    """Whether ``result`` is a right classification of ``case``'s body."""
    if not isinstance(result, Success | NoCoverage | Retryable | Permanent):
        return _bad(f"not a fetch result: {result!r}")
    kind = type(result).__name__
    reason = getattr(result, "reason", "")
    if not isinstance(result, Success) and not reason:
        return _bad(f"{kind} without a reason")
    if case.usable is False and isinstance(result, Success | NoCoverage):
        return _bad(f"a body that is not a cutout ({case.name}) was taken as {kind}")
    if case.usable is True and not isinstance(result, Success | NoCoverage):
        return _bad(f"a usable cutout ({case.name}) was refused: {reason}")
    if isinstance(result, Success):
        data = result.cutout.data
        if data.shape != (len(CUTOUT_BANDS), CUTOUT_SIZE, CUTOUT_SIZE):
            return _bad(f"Success with a cube of shape {data.shape}")
    return _ok(f"{kind}: {reason[:200]}")


def try_cutout(case: CutoutCase) -> Verdict:
    """Classify ``case``'s body as the fetch pipeline does before it stores anything.

    Only a :class:`Success` is stored (``FetchPipeline._keep``), so a body that is not a cutout
    must come back :class:`Retryable` or :class:`Permanent`, with a reason.
    """
    try:
        result = classify_response(
            _CUTOUT_REQUEST,
            *CUTOUT_CENTER,
            case.status,
            {"Content-Type": "image/fits"},
            case.body,
            now=time.time(),
        )
    except Exception as exc:
        return _bad(_error_text(exc))
    return judge_fetch_result(case, result)


# ------------------------------------------------------------------------------------------------
# Settings


def _wire(settings: Settings) -> None:
    """Build, offline, what the processes build from their settings (as their factories do)."""
    from galpipe.db.queue import RetryPolicy
    from galpipe.pipelines.fetch import breaker_policy, rate_limit_policy
    from galpipe.survey.legacysurvey import LegacySurveyClient

    RetryPolicy(settings.max_retries, settings.retry_delays)
    breaker_policy(settings)
    rate_limit_policy(settings)
    request = CutoutRequest(
        base_url=settings.cutout_base_url,
        layer=settings.cutout_layer,
        bands=settings.cutout_bands,
        size=settings.cutout_size,
        pixscale=settings.cutout_pixscale,
    )
    LegacySurveyClient(request).close()
    # One request with the settings' timeouts, to a closed loopback port: refused at once, and
    # it must come back classified (the client never raises) whatever the timeouts are.
    with LegacySurveyClient(
        _CUTOUT_REQUEST,
        connect_timeout=settings.cutout_connect_timeout_seconds,
        read_timeout=settings.cutout_read_timeout_seconds,
    ) as client:
        client.fetch(*CUTOUT_CENTER)


def try_setting(case: SettingCase) -> Verdict:
    """Read ``case`` as the one variable set, then build what the processes build from it.

    Handled: a ``SettingsError`` (a ``ConfigurationError``) whose message names the variable,
    or a value that is accepted and builds without error.
    """
    try:
        settings = Settings.from_env({case.env: case.value})
    except SettingsError as exc:
        if case.env not in str(exc):
            return _bad(f"error does not name {case.env}: {exc}")
        return _ok(f"refused: {str(exc)[:200]}")
    except Exception as exc:
        return _bad(_error_text(exc))
    if case.must_refuse:
        return _bad(f"{case.env}={case.value!r} accepted as {getattr(settings, case.field)!r}")
    try:
        _wire(settings)
    except Exception as exc:
        return _bad(f"{case.env}={case.value[:40]!r} accepted, then {_error_text(exc)}")
    return _ok(f"accepted as {str(getattr(settings, case.field))[:60]!r}")


# ------------------------------------------------------------------------------------------------
# HTTP

#: Seconds a server has to answer a whole request (a hang past it is unhandled).
ANSWER_TIMEOUT_S = 5.0
#: Seconds to wait on a request the client could not finish (the server may wait for the rest).
INCOMPLETE_WAIT_S = 0.5
_MAX_ANSWER_BYTES = 1 << 20
#: 5xx statuses that the HTTP standard itself gives to a client's mistake: 505 HTTP Version Not
#: Supported (RFC 9110, section 15.6.6) answers a request line of an unknown major version.
PROTOCOL_REFUSALS = frozenset({505})
#: The bearer token the control API's fake cluster accepts, as an operator.
FUZZ_TOKEN = "fuzz-operator-token"


@dataclass(frozen=True)
class HttpServers:
    """Where each server listens: target → ``(host, port)``, and a good request for each."""

    addresses: dict[str, tuple[str, int]]
    good: dict[str, bytes]


def _exchange(
    address: tuple[str, int], raw: bytes, *, half_close: bool, wait_s: float
) -> tuple[bytes, bool]:
    """Send ``raw``; the answer's bytes and whether the server closed (False: still silent)."""
    with socket.create_connection(address, timeout=wait_s) as sock:
        with contextlib.suppress(OSError):  # the server may close before it read everything
            sock.sendall(raw)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        received = bytearray()
        deadline = time.monotonic() + wait_s
        while len(received) < _MAX_ANSWER_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return bytes(received), False
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return bytes(received), False
            except OSError:  # reset after the answer, or instead of it
                return bytes(received), True
            if not chunk:
                return bytes(received), True
            received += chunk
        return bytes(received), True


# http.server answers a request line of two words as HTTP/0.9: the error page without a
# status line, which the page itself states.
_HTTP09_ERROR = re.compile(rb"<p>Error code: (\d{3})</p>")


def _status(answer: bytes) -> int | None:
    head = answer.split(b"\r\n", 1)[0].split()
    if len(head) >= 2 and head[0].startswith(b"HTTP/") and head[1].isdigit():
        return int(head[1])
    page = _HTTP09_ERROR.search(answer[:4096])
    return int(page[1]) if page else None


def _is_http09(raw: bytes) -> bool:
    """Whether ``raw`` starts with an HTTP/0.9 request line (``GET /path``, no version)."""
    words = raw.split(b"\r\n", 1)[0].split()
    return len(words) == 2 and words[0] == b"GET"


def server_answers(servers: HttpServers, target: str) -> bool:
    """Whether ``target`` still answers its good request with 2xx."""
    try:
        answer, _ = _exchange(
            servers.addresses[target],
            servers.good[target],
            half_close=False,
            wait_s=ANSWER_TIMEOUT_S,
        )
    except OSError:
        return False
    status = _status(answer)
    return status is not None and 200 <= status < 300


def try_http(case: HttpCase, servers: HttpServers, *, check_alive: bool = True) -> Verdict:
    """Send ``case``'s bytes to its server.

    Handled: a 4xx (or a 2xx/3xx where the request happens to be valid); for a request the
    client could not finish, also a closed connection or silence. Unhandled: a 5xx, no answer to
    a whole request within :data:`ANSWER_TIMEOUT_S`, a connection closed without an answer to a
    whole request, or a server that no longer answers its good request afterwards.
    """
    address = servers.addresses[case.target]
    wait_s = ANSWER_TIMEOUT_S if case.complete else INCOMPLETE_WAIT_S
    try:
        answer, closed = _exchange(address, case.raw, half_close=not case.complete, wait_s=wait_s)
    except OSError as exc:
        return _bad(f"{case.target}: could not connect: {exc}")
    status = _status(answer)
    verdict: Verdict
    if status is not None and status >= 500 and status not in PROTOCOL_REFUSALS:
        line = answer.split(b"\r\n", 1)[0].decode(errors="replace")
        body = answer.split(b"\r\n\r\n", 1)[-1][:200].decode(errors="replace")
        verdict = _bad(f"{case.target}: {line} ({body!r})")
    elif status is not None:
        verdict = _ok(f"{case.target}: HTTP {status}")
    elif closed and answer and _is_http09(case.raw):
        verdict = _ok(
            f"{case.target}: an HTTP/0.9 answer (a body, no status line) to an HTTP/0.9 request"
        )
    elif not case.complete:
        verdict = _ok(
            f"{case.target}: incomplete request, {'closed' if closed else 'waiting for the rest'}"
        )
    elif not closed:
        verdict = _bad(f"{case.target}: no answer within {wait_s:g} s (a hang)")
    else:
        verdict = _bad(f"{case.target}: closed the connection without an answer ({answer[:80]!r})")
    if check_alive and not server_answers(servers, case.target):
        return _bad(f"{case.target}: no longer answers a good request after {case.name}")
    return verdict


NAMESPACE = "galpipe"


def _workloads() -> list[dict[str, Any]]:
    """Each pipeline's Deployment (with a pod) and ScaledObject, and the Flux HelmRelease: the
    least the control API's actions need, written here so that the servers do not depend on
    rendering the chart."""
    from tests.kube_fake import helm_release_object

    objects: list[dict[str, Any]] = [helm_release_object("galpipe", NAMESPACE)]
    for pipeline in CONTROL_PIPELINES:
        name = f"galpipe-{pipeline}"
        labels = {"app.kubernetes.io/instance": "galpipe", "app.kubernetes.io/component": pipeline}
        container = {"name": pipeline, "image": "ghcr.io/galpipe/galpipe:0.1.0"}
        objects += [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "labels": labels},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [container]},
                    },
                },
                "status": {"replicas": 1, "readyReplicas": 1},
            },
            {
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "ScaledObject",
                "metadata": {"name": name, "labels": labels},
                "spec": {
                    "scaleTargetRef": {"name": name},
                    "triggers": [{"type": "postgresql", "metadata": {"query": "SELECT 0"}}],
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"{name}-0", "labels": labels},
                "spec": {"containers": [container]},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
            },
        ]
    return objects


@contextlib.contextmanager
def http_servers(pool: ConnectionPool) -> Iterator[HttpServers]:
    """The project's HTTP servers on loopback, each on a free port.

    - ``health``: the runtime's :class:`~galpipe.runtime.health.HealthServer` (``/healthz``,
      ``/readyz``, ``/metrics``) with passing checks;
    - ``sky``: the synthetic sky (:class:`~galpipe.synthetic.server.SyntheticSky`), unlimited;
    - ``control``: the control API (:func:`~galpipe.control.app.create_app`) over the real
      :class:`~galpipe.control.actions.ControlActions` on ``pool``, the fake Kubernetes API of
      the tests (seeded with the chart's render) and uvicorn, with :data:`FUZZ_TOKEN` an
      operator's token.
    """
    from galpipe.control.actions import ControlActions
    from galpipe.control.app import create_app
    from galpipe.control.auth import Authenticator, Authorizer
    from galpipe.control.kube import Identity
    from galpipe.control.sessions import SessionSigner
    from galpipe.runtime.health import HealthServer
    from galpipe.synthetic.server import SyntheticSky
    from tests.asgi_server import serve_app
    from tests.kube_fake import FakeKube

    kube = FakeKube(
        _workloads(),
        tokens={FUZZ_TOKEN: Identity("fuzzer", ("galpipe-operators",))},
        grants={"galpipe-operators": ["*"]},
        namespace=NAMESPACE,
    )
    actions = ControlActions(
        pool, kube, namespace=NAMESPACE, release="galpipe", helm_release="galpipe"
    )
    app = create_app(
        actions,
        Authenticator(kube, ttl_s=60),
        Authorizer(kube, NAMESPACE, ttl_s=60),
        SessionSigner("fuzz-session-key-" + "k" * 32),
        secure_cookies=False,
    )
    health = HealthServer(
        lambda: (True, "ok"), lambda: (True, "ok"), host="127.0.0.1", port=0
    ).start()
    sky = SyntheticSky(rate=0, cache_size=64).start()
    try:
        with serve_app(app) as control_url:
            host, port = control_url.removeprefix("http://").split(":")
            good_control = (
                f"GET /api/v1/overview HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {FUZZ_TOKEN}\r\nConnection: close\r\n\r\n"
            ).encode()
            yield HttpServers(
                addresses={
                    "health": ("127.0.0.1", health.port),
                    "sky": ("127.0.0.1", sky.port),
                    "control": (host, int(port)),
                },
                good={
                    "health": b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    "sky": b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    "control": good_control,
                },
            )
    finally:
        sky.stop()
        health.stop()
