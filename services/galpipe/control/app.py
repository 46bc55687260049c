"""The HTTP API of ``galpipe control``: a FastAPI app under ``/api/v1``.

Every request is authenticated first — a bearer token (``Authorization: Bearer …``, checked by
a ``TokenReview``) or the console's session cookie — and every endpoint is authorised by a
``SubjectAccessReview`` of the verb the action needs (``VERB_OF``) *before* the action runs.
Answers: 401 without valid credentials, 403 when the review denies (or a cookie request fails
the CSRF checks), 429 for too many failed logins, 503 when the API server cannot answer (the
service fails closed), 400 for input the action refuses, 502 when Kubernetes refused a change.

A token is never logged, echoed, or kept: only its SHA-256 keys the review cache, and the
session cookie holds the reviewed identity instead. The OpenAPI schema is at
``/api/v1/openapi.json``; ``/healthz``, ``/readyz`` and ``/metrics`` are the common runtime's
(on ``GALPIPE_METRICS_PORT``, see :mod:`galpipe.control.service`).

The web console is static HTML, CSS and JavaScript (``control/console/``) served by the same
app: ``/`` (pipelines), ``/login`` and ``/audit``, assets under ``/static``. It calls this API
like any client, with the session cookie and its CSRF token.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, field_validator

from galpipe.control.auth import Authenticator, Authorizer
from galpipe.control.kube import API_GROUP, PIPELINES_RESOURCE, VERB_OF, Identity, KubeError
from galpipe.control.sessions import (
    CSRF_HEADER,
    SESSION_COOKIE,
    LoginThrottle,
    Session,
    SessionSigner,
    csrf_problem,
)
from galpipe.errors import InputError, ServiceError
from galpipe.runtime import metrics

__all__ = ["API_PREFIX", "Actions", "Principal", "create_app"]

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
#: Methods that change nothing: no CSRF token needed.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: The longest reason accepted (it goes into the audit log and an Event's note).
MAX_REASON_CHARS = 1024
#: The most audit rows one request returns.
MAX_AUDIT_LIMIT = 1000


class Actions(Protocol):
    """What the app asks of :class:`galpipe.control.actions.ControlActions`."""

    def overview(self) -> Any: ...
    def pause(self, identity: Identity, pipeline: str, reason: str) -> Any: ...
    def resume(self, identity: Identity, pipeline: str, reason: str) -> Any: ...
    def hold(self, identity: Identity, pipeline: str, replicas: int, reason: str) -> Any: ...
    def release_hold(self, identity: Identity, pipeline: str, reason: str) -> Any: ...
    def restart(self, identity: Identity, pipeline: str, reason: str) -> Any: ...
    def pin(self, identity: Identity, pipeline: str, image: str, reason: str) -> Any: ...
    def unpin(self, identity: Identity, pipeline: str, reason: str) -> Any: ...

    def retry(
        self,
        identity: Identity,
        pipeline: str,
        reason: str,
        *,
        error_contains: str | None = None,
        dry_run: bool,
    ) -> Any: ...

    def requeue(
        self,
        identity: Identity,
        pipeline: str,
        reason: str,
        *,
        algo_version: str,
        source_ids: Sequence[int] | None = None,
        dry_run: bool,
    ) -> Any: ...

    def audit(
        self,
        *,
        user: str | None = None,
        action: str | None = None,
        pipeline: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> Sequence[Any]: ...


@dataclass(frozen=True)
class Principal:
    """Who a request comes from, and how: a session (cookie) or None for a bearer token."""

    identity: Identity
    session: Session | None = None

    @property
    def via(self) -> str:
        """``session`` or ``bearer``."""
        return "session" if self.session else "bearer"


# -- request bodies --------------------------------------------------------------------------


_NUL = "\x00"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # PostgreSQL text cannot hold NUL: refused here (422), not by the audit insert (500).
        if isinstance(value, str) and _NUL in value:
            raise ValueError("must not contain the NUL character (U+0000)")
        return value


class ReasonBody(_Body):
    """Every change needs a written reason; it goes into the audit log and the Event."""

    reason: str = Field(
        min_length=1, max_length=MAX_REASON_CHARS, description="Why, for the audit log."
    )


class HoldBody(ReasonBody):
    """Hold the pipeline's replicas at a fixed count (KEDA paused-replicas)."""

    replicas: int = Field(ge=0, le=1000, description="Replicas to hold the Deployment at.")


class PinBody(ReasonBody):
    """Pin an image (Flux reconciliation is suspended until unpinned)."""

    image: str = Field(min_length=1, max_length=512, description="Image reference to run.")


class RetryBody(ReasonBody):
    """Queue failed tasks again; a dry run (the default) only counts them."""

    error_contains: str | None = Field(
        default=None, max_length=MAX_REASON_CHARS, description="Only tasks whose error has this."
    )
    dry_run: bool = Field(default=True, description="Count, change nothing.")


class RequeueBody(ReasonBody):
    """Requeue galaxies for measurement under a new algorithm version; a dry run only counts."""

    algo_version: str = Field(min_length=1, max_length=64, description="The new algo_version.")
    source_ids: list[int] | None = Field(
        default=None, description="Only these galaxies (all measured ones by default)."
    )
    dry_run: bool = Field(default=True, description="Count, change nothing.")


class LoginBody(_Body):
    """A token the cluster accepts (ServiceAccount, OIDC …); it is reviewed, never stored."""

    token: str = Field(min_length=1, max_length=16384)


def _jsonable(value: Any) -> Any:
    """What an action returned, as JSON: its ``to_json()``, a dataclass's fields, or as is."""
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return to_json()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable_encoder(dataclasses.asdict(value))
    return jsonable_encoder(value)


class _EncodedOnce:
    """The JSON body of the last value encoded, reused while the same object is asked for.

    The overview is one shared object between refreshes
    (:class:`~galpipe.control.snapshot.SharedSnapshot`): encoding it once instead of per
    request keeps the encoder off the path of twenty polling consoles.
    """

    def __init__(self) -> None:
        self._last: tuple[Any, bytes] | None = None

    def of(self, value: Any) -> bytes:
        last = self._last
        if last is not None and last[0] is value:
            return last[1]
        body = json.dumps(_jsonable(value), separators=(",", ":")).encode()
        self._last = (value, body)
        return body


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _unauthenticated(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def _unavailable(exc: KubeError) -> HTTPException:
    log.error("Kubernetes API unavailable: %s", exc)
    return HTTPException(503, "the Kubernetes API could not answer; try again")


@dataclass(frozen=True)
class _Context:
    """What the request handlers share, kept in ``app.state.control``."""

    authenticator: Authenticator
    sessions: SessionSigner


def _principal(request: Request) -> Principal:
    """Authenticate a request: bearer token first, else the session cookie (CSRF-checked)."""
    context: _Context = request.app.state.control
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthenticated("expected 'Authorization: Bearer <token>'")
        if request.method not in SAFE_METHODS:
            # A script sends no Origin and needs no CSRF token. But behind an OIDC proxy the
            # browser's own cookie makes the proxy add the bearer to whatever it forwards, a
            # cross-site form post included: a change from another site is refused here too.
            problem = csrf_problem(request.headers, None, check_token=False)
            if problem:
                log.warning("refused a bearer request: %s", problem)
                raise HTTPException(403, problem)
        try:
            identity = context.authenticator.authenticate(token.strip())
        except KubeError as exc:
            raise _unavailable(exc) from None
        if identity is None:
            raise _unauthenticated("the cluster does not accept this token")
        return Principal(identity)
    session = context.sessions.read(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise _unauthenticated("log in: a bearer token or a session cookie is required")
    if request.method not in SAFE_METHODS:
        problem = csrf_problem(request.headers, session)
        if problem:
            log.warning(
                "refused a session request: %s",
                problem,
                extra={"user": session.identity.user, "path": request.url.path},
            )
            raise HTTPException(403, problem)
    return Principal(session.identity, session)


#: The authenticated caller of an endpoint.
Caller = Annotated[Principal, Depends(_principal)]


def create_app(
    actions: Actions,
    authenticator: Authenticator,
    authorizer: Authorizer,
    sessions: SessionSigner,
    *,
    login_throttle: LoginThrottle | None = None,
    secure_cookies: bool = True,
) -> FastAPI:
    """The control plane's ASGI app.

    Parameters
    ----------
    actions
        What operators can do (:class:`galpipe.control.actions.ControlActions`).
    authenticator, authorizer
        The TokenReview and SubjectAccessReview clients (with their caches).
    sessions
        Signs and reads console session cookies.
    login_throttle
        Per-address limit of failed logins (a fresh one by default).
    secure_cookies
        Mark the session cookie ``Secure`` (browsers then send it over HTTPS only). Only a
        local plain-HTTP setup turns it off.
    """
    throttle = login_throttle or LoginThrottle()
    app = FastAPI(
        title="galpipe control",
        version="1",
        description="Operator overrides of the galpipe pipelines, authorised by Kubernetes RBAC.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        # The interactive docs load scripts from a CDN; the schema itself is enough.
        docs_url=None,
        redoc_url=None,
    )
    app.state.control = _Context(authenticator, sessions)

    @app.exception_handler(RequestValidationError)
    async def validation_failed(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default answer echoes the input, which for a login is the token.
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    def authorize(caller: Principal, action: str, pipeline: str = "") -> None:
        verb = VERB_OF[action]
        try:
            allowed = authorizer.allowed(caller.identity, verb)
        except KubeError as exc:
            raise _unavailable(exc) from None
        if allowed:
            return
        if pipeline:
            metrics.CONTROL_ACTIONS.labels(action, pipeline, "denied").inc()
        log.warning(
            "denied",
            extra={"user": caller.identity.user, "verb": verb, "action": action},
        )
        raise HTTPException(
            403,
            f"{caller.identity.user} may not {verb} {PIPELINES_RESOURCE}.{API_GROUP} "
            f"in namespace {authorizer.namespace}",
        )

    def run_action(
        caller: Principal,
        action: str,
        pipeline: str,
        call: Callable[[], Any],
        *,
        dry_run: bool = False,
    ) -> Any:
        authorize(caller, action, pipeline)
        user = caller.identity.user
        try:
            result = call()
        except InputError as exc:
            metrics.CONTROL_ACTIONS.labels(action, pipeline, "failed").inc()
            raise HTTPException(400, str(exc)) from None
        except KubeError as exc:
            metrics.CONTROL_ACTIONS.labels(action, pipeline, "failed").inc()
            log.error("%s of %s by %s failed: %s", action, pipeline, user, exc)
            raise HTTPException(502, str(exc)) from None
        except ServiceError as exc:
            metrics.CONTROL_ACTIONS.labels(action, pipeline, "failed").inc()
            log.error("%s of %s by %s failed: %s", action, pipeline, user, exc)
            raise HTTPException(503, str(exc)) from None
        outcome = "dry_run" if dry_run else "ok"
        metrics.CONTROL_ACTIONS.labels(action, pipeline, outcome).inc()
        log.info(
            "control action",
            extra={"user": user, "action": action, "pipeline": pipeline, "result": outcome},
        )
        return _jsonable(result)

    # -- reading -----------------------------------------------------------------------------

    @app.get(f"{API_PREFIX}/whoami", tags=["session"])
    def whoami(caller: Caller) -> dict[str, Any]:
        """Who the credentials belong to; a session also gets its CSRF token back."""
        answer: dict[str, Any] = {
            "user": caller.identity.user,
            "groups": list(caller.identity.groups),
            "via": caller.via,
        }
        if caller.session:
            answer["csrf_token"] = caller.session.csrf_token
            answer["expires"] = caller.session.expires
        return answer

    overview_body = _EncodedOnce()

    @app.get(f"{API_PREFIX}/overview", tags=["read"])
    def overview(caller: Caller) -> Response:
        """Per pipeline: queue, breaker, rate limit, pause, replicas, pods, images, overrides."""
        authorize(caller, "overview")
        return Response(overview_body.of(actions.overview()), media_type="application/json")

    @app.get(f"{API_PREFIX}/audit", tags=["read"])
    def audit(
        caller: Caller,
        user: str | None = None,
        action: str | None = None,
        pipeline: str | None = None,
        since: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_AUDIT_LIMIT)] = 100,
    ) -> Any:
        """The audit log, newest first, filtered by user, action, pipeline and time."""
        authorize(caller, "audit")
        for param, text in (("user", user), ("action", action), ("pipeline", pipeline)):
            if text is not None and _NUL in text:
                raise HTTPException(400, f"query parameter {param!r} contains NUL (U+0000)")
        try:
            records = actions.audit(
                user=user, action=action, pipeline=pipeline, since=since, limit=limit
            )
        except InputError as exc:
            raise HTTPException(400, str(exc)) from None
        return _jsonable(list(records))

    # -- changing ----------------------------------------------------------------------------

    @app.post(f"{API_PREFIX}/pipelines/{{name}}/pause", tags=["actions"])
    def pause(name: str, body: ReasonBody, caller: Caller) -> Any:
        """Stop the pipeline's workers claiming (KEDA then scales it to zero)."""
        return run_action(
            caller, "pause", name, lambda: actions.pause(caller.identity, name, body.reason)
        )

    @app.post(f"{API_PREFIX}/pipelines/{{name}}/resume", tags=["actions"])
    def resume(name: str, body: ReasonBody, caller: Caller) -> Any:
        """Undo a pause."""
        return run_action(
            caller, "resume", name, lambda: actions.resume(caller.identity, name, body.reason)
        )

    @app.post(f"{API_PREFIX}/pipelines/{{name}}/hold", tags=["actions"])
    def hold(name: str, body: HoldBody, caller: Caller) -> Any:
        """Hold the replicas at N, whatever the queue (KEDA paused-replicas)."""
        return run_action(
            caller,
            "hold",
            name,
            lambda: actions.hold(caller.identity, name, body.replicas, body.reason),
        )

    @app.post(f"{API_PREFIX}/pipelines/{{name}}/release-hold", tags=["actions"])
    def release_hold(name: str, body: ReasonBody, caller: Caller) -> Any:
        """Hand the replica count back to the autoscaler."""
        return run_action(
            caller,
            "release_hold",
            name,
            lambda: actions.release_hold(caller.identity, name, body.reason),
        )

    @app.post(f"{API_PREFIX}/pipelines/{{name}}/restart", tags=["actions"])
    def restart(name: str, body: ReasonBody, caller: Caller) -> Any:
        """Roll the pipeline's pods, as ``kubectl rollout restart`` does."""
        return run_action(
            caller, "restart", name, lambda: actions.restart(caller.identity, name, body.reason)
        )

    @app.post(f"{API_PREFIX}/pipelines/{{name}}/pin", tags=["actions"])
    def pin(name: str, body: PinBody, caller: Caller) -> Any:
        """Run this image (roll back or forward); GitOps is suspended until unpinned."""
        return run_action(
            caller,
            "pin",
            name,
            lambda: actions.pin(caller.identity, name, body.image, body.reason),
        )

    @app.post(f"{API_PREFIX}/pipelines/{{name}}/unpin", tags=["actions"])
    def unpin(name: str, body: ReasonBody, caller: Caller) -> Any:
        """Hand the image back to Git (resume the Flux reconciliation)."""
        return run_action(
            caller, "unpin", name, lambda: actions.unpin(caller.identity, name, body.reason)
        )

    @app.post(f"{API_PREFIX}/pipelines/{{name}}/retry", tags=["actions"])
    def retry(name: str, body: RetryBody, caller: Caller) -> Any:
        """Queue failed tasks again (optionally those whose error contains a text)."""
        return run_action(
            caller,
            "retry",
            name,
            lambda: actions.retry(
                caller.identity,
                name,
                body.reason,
                error_contains=body.error_contains,
                dry_run=body.dry_run,
            ),
            dry_run=body.dry_run,
        )

    @app.post(f"{API_PREFIX}/pipelines/{{name}}/requeue", tags=["actions"])
    def requeue(name: str, body: RequeueBody, caller: Caller) -> Any:
        """Queue galaxies again for measurement under a new algorithm version."""
        return run_action(
            caller,
            "requeue",
            name,
            lambda: actions.requeue(
                caller.identity,
                name,
                body.reason,
                algo_version=body.algo_version,
                source_ids=body.source_ids,
                dry_run=body.dry_run,
            ),
            dry_run=body.dry_run,
        )

    # -- the console session -----------------------------------------------------------------

    @app.post(f"{API_PREFIX}/session", tags=["session"])
    def login(body: LoginBody, request: Request, response: Response) -> dict[str, Any]:
        """Log in with a token: it is reviewed, and a signed session cookie (no token) is set."""
        problem = csrf_problem(request.headers, None, check_token=False)
        if problem:
            raise HTTPException(403, problem)
        address = _client_address(request)
        if not throttle.allow(address):
            metrics.CONTROL_LOGIN_FAILURES.inc()
            wait = max(1, round(throttle.retry_after_s(address)))
            log.warning("login refused: too many failures", extra={"client": address})
            raise HTTPException(
                429, "too many failed logins; try again later", headers={"Retry-After": str(wait)}
            )
        try:
            identity = authenticator.authenticate(body.token)
        except KubeError as exc:
            raise _unavailable(exc) from None
        if identity is None:
            throttle.record_failure(address)
            metrics.CONTROL_LOGIN_FAILURES.inc()
            log.warning("login failed: token not accepted", extra={"client": address})
            raise _unauthenticated("the cluster does not accept this token")
        try:
            value, session = sessions.issue(identity)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        response.set_cookie(
            SESSION_COOKIE,
            value,
            max_age=int(sessions.lifetime_s),
            path="/",
            secure=secure_cookies,
            httponly=True,
            samesite="strict",
        )
        log.info("login", extra={"user": identity.user, "client": address})
        return {
            "user": identity.user,
            "groups": list(identity.groups),
            "csrf_token": session.csrf_token,
            "csrf_header": CSRF_HEADER,
            "expires": session.expires,
        }

    @app.delete(f"{API_PREFIX}/session", status_code=204, tags=["session"])
    def logout(caller: Caller) -> Response:
        """Log out: the session cookie is cleared."""
        response = Response(status_code=204)
        response.delete_cookie(
            SESSION_COOKIE, path="/", secure=secure_cookies, httponly=True, samesite="strict"
        )
        log.info("logout", extra={"user": caller.identity.user})
        return response

    _add_console(app)
    return app


# -- the web console ----------------------------------------------------------------------------

#: The console's static pages and assets (package data; no build step, nothing from elsewhere).
CONSOLE_DIR = Path(__file__).with_name("console")
#: Console path → its page. The pages are public (they hold no data): each asks the API, and
#: one without a session is sent to the login page.
CONSOLE_PAGES = {"/": "index.html", "/login": "login.html", "/audit": "audit.html"}
#: Where the console's scripts and styles are served.
CONSOLE_STATIC = "/static"
#: Everything the console loads comes from this process: no inline script or style, no other
#: origin, no framing, and forms post only here.
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def _add_console(app: FastAPI) -> None:
    """Serve the console's pages (with :data:`CONSOLE_CSP`) and its static assets."""

    def page_endpoint(page: str) -> Callable[[], FileResponse]:
        # A closure, not a default argument: FastAPI would read an argument from the query.
        def serve_page() -> FileResponse:
            return FileResponse(
                CONSOLE_DIR / page,
                media_type="text/html; charset=utf-8",
                headers={"Content-Security-Policy": CONSOLE_CSP},
            )

        return serve_page

    for path, page in CONSOLE_PAGES.items():
        app.add_api_route(
            path,
            page_endpoint(page),
            methods=["GET"],
            include_in_schema=False,
            response_class=FileResponse,
            name=f"console {page}",
        )
    app.mount(CONSOLE_STATIC, StaticFiles(directory=CONSOLE_DIR / "static"), name="console static")
