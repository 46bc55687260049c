"""Console sessions: a signed cookie that holds who logged in, never their token.

The console logs in like the Kubernetes Dashboard: the operator pastes a token, the server
checks it with a ``TokenReview`` and answers with a session cookie. The cookie is the identity
the review returned (user, groups, uid, extra), an expiry and a CSRF token, signed with
HMAC-SHA256 under ``GALPIPE_CONTROL_SESSION_KEY``; the token itself is dropped once reviewed.
Each action is still authorised by a ``SubjectAccessReview`` of that identity, so a revoked
RoleBinding takes effect within the review cache's TTL even for a live session.

State-changing requests of a cookie session must prove they come from the console's own page
(:func:`csrf_problem`): the ``X-CSRF-Token`` header equals the session's token (a cross-site
page cannot read it) and the ``Origin`` (or ``Referer``) names this host. Failed logins are
throttled per client address by :class:`LoginThrottle`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from galpipe.control.kube import Identity

__all__ = [
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "SESSION_LIFETIME_S",
    "LoginThrottle",
    "Session",
    "SessionSigner",
    "csrf_problem",
]

#: The cookie's name.
SESSION_COOKIE = "galpipe_session"
#: The header a cookie session's state-changing request carries its CSRF token in.
CSRF_HEADER = "X-CSRF-Token"
#: How long a console session lasts; then the operator pastes a token again. Short, because the
#: token it came from may be revoked meanwhile and the session does not see it.
SESSION_LIFETIME_S = 3600
#: Browsers drop cookies above 4096 bytes; an identity with very many groups cannot log in.
MAX_COOKIE_BYTES = 4000
#: Format version inside the signed payload, so a future format can refuse old cookies.
_FORMAT = 1

#: Failed logins a client address may make at once, and how fast that allowance refills: five
#: mistakes are free, then one attempt every 12 s, so guessing tokens is hopeless while an
#: operator who mistyped waits seconds.
LOGIN_BURST = 5.0
LOGIN_REFILL_PER_S = 1.0 / 12.0
#: Client addresses tracked; beyond it, those whose last failure is oldest are dropped first.
LOGIN_MAX_ADDRESSES = 10_000


@dataclass(frozen=True)
class Session:
    """A console session: the reviewed identity, when it ends (Unix time) and its CSRF token."""

    identity: Identity
    expires: float
    csrf_token: str


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Issues and reads signed session cookies.

    Parameters
    ----------
    key
        The signing secret (``GALPIPE_CONTROL_SESSION_KEY``).
    lifetime_s
        Seconds a session lasts.
    clock
        Unix seconds; injected for tests.
    """

    def __init__(
        self,
        key: str | bytes,
        *,
        lifetime_s: float = SESSION_LIFETIME_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        raw = key.encode("utf-8") if isinstance(key, str) else key
        if not raw:
            raise ValueError("the session signing key is empty")
        # A key of its own for cookies, derived so the setting could sign other things later.
        self._key = hmac.new(raw, b"galpipe control session cookie", hashlib.sha256).digest()
        self.lifetime_s = lifetime_s
        self._clock = clock

    def issue(self, identity: Identity) -> tuple[str, Session]:
        """A new session for ``identity``: the cookie value and what it holds.

        Raises
        ------
        ValueError
            The identity is too large for a cookie.
        """
        session = Session(
            identity=identity,
            expires=self._clock() + self.lifetime_s,
            csrf_token=secrets.token_urlsafe(32),
        )
        payload = {
            "v": _FORMAT,
            "u": identity.user,
            "g": list(identity.groups),
            "i": identity.uid,
            "x": {k: list(v) for k, v in identity.extra.items()},
            "e": session.expires,
            "c": session.csrf_token,
        }
        body = _b64encode(json.dumps(payload, separators=(",", ":")).encode("utf-8"))
        value = f"{body}.{self._sign(body)}"
        if len(value) > MAX_COOKIE_BYTES:
            raise ValueError(
                f"the identity of {identity.user!r} ({len(identity.groups)} groups) does not fit "
                "in a session cookie; use a bearer token instead"
            )
        return value, session

    def read(self, value: str | None) -> Session | None:
        """The session a cookie holds; None if it is missing, forged, malformed or expired."""
        if not value or value.count(".") != 1:
            return None
        body, signature = value.split(".")
        if not hmac.compare_digest(signature, self._sign(body)):
            return None
        try:
            payload = json.loads(_b64decode(body))
            if payload["v"] != _FORMAT:
                return None
            session = Session(
                identity=Identity(
                    user=str(payload["u"]),
                    groups=tuple(str(g) for g in payload["g"]),
                    uid=str(payload["i"]),
                    extra={str(k): tuple(str(x) for x in v) for k, v in payload["x"].items()},
                ),
                expires=float(payload["e"]),
                csrf_token=str(payload["c"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        if session.expires <= self._clock():
            return None
        return session

    def _sign(self, body: str) -> str:
        return _b64encode(hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest())


def _origin_of(url: str) -> str:
    """``host[:port]`` of an Origin or Referer URL ("" if it has none, e.g. ``null``)."""
    return urlsplit(url).netloc.lower() if url and url != "null" else ""


def csrf_problem(
    headers: Mapping[str, str], session: Session | None, *, check_token: bool = True
) -> str:
    """Why a state-changing browser request must be refused, or "" when it may go on.

    Parameters
    ----------
    headers
        The request's headers (case-insensitive mapping: ``Host``, ``Origin``, ``Referer``,
        ``X-CSRF-Token``).
    session
        The cookie session the request carries.
    check_token
        False for the login itself, which has no session yet: only the origin is checked.
    """
    host = (headers.get("host") or "").lower()
    origin = headers.get("origin")
    referer = headers.get("referer")
    # TLS may end at an Ingress, so the scheme seen here is not the browser's: compare the
    # host and port, which the browser puts in both Origin and Host.
    if origin is not None:
        if _origin_of(origin) != host:
            return "cross-site request refused (Origin is not this host)"
    elif referer is not None:
        if _origin_of(referer) != host:
            return "cross-site request refused (Referer is not this host)"
    elif check_token:
        # Every browser sends Origin on a POST, PUT or DELETE; a cookie request without
        # either header is not from the console.
        return "cross-site request refused (no Origin or Referer)"
    if check_token:
        sent = headers.get(CSRF_HEADER.lower()) or ""
        if session is None or not hmac.compare_digest(sent, session.csrf_token):
            return f"missing or wrong {CSRF_HEADER} header"
    return ""


@dataclass
class _Bucket:
    tokens: float
    updated: float


class LoginThrottle:
    """Per-address token buckets of failed logins (in memory: one process serves the console).

    Each failure takes one token; an address with less than one token left is refused until
    the bucket refills.

    Parameters
    ----------
    burst
        Failures allowed at once.
    refill_per_s
        Tokens returned per second.
    clock
        Monotonic seconds; injected for tests.
    """

    def __init__(
        self,
        *,
        burst: float = LOGIN_BURST,
        refill_per_s: float = LOGIN_REFILL_PER_S,
        max_addresses: int = LOGIN_MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.refill_per_s = refill_per_s
        self.max_addresses = max_addresses
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def _refilled(self, address: str) -> _Bucket | None:
        bucket = self._buckets.get(address)
        if bucket is None:
            return None
        now = self._clock()
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.refill_per_s)
        bucket.updated = now
        if bucket.tokens >= self.burst:
            del self._buckets[address]  # forgiven: forget the address
            return None
        return bucket

    def allow(self, address: str) -> bool:
        """Whether ``address`` may try to log in now."""
        with self._lock:
            bucket = self._refilled(address)
            return bucket is None or bucket.tokens >= 1.0

    def retry_after_s(self, address: str) -> float:
        """Seconds until ``address`` may try again (0 if it may now)."""
        with self._lock:
            bucket = self._refilled(address)
            if bucket is None or bucket.tokens >= 1.0:
                return 0.0
            return (1.0 - bucket.tokens) / self.refill_per_s

    def record_failure(self, address: str) -> None:
        """Take one token from ``address``'s bucket."""
        with self._lock:
            bucket = self._refilled(address)
            if bucket is None:
                bucket = _Bucket(self.burst, self._clock())
                self._buckets[address] = bucket
            bucket.tokens = max(0.0, bucket.tokens - 1.0)
            self._buckets.move_to_end(address)
            while len(self._buckets) > self.max_addresses:
                self._buckets.popitem(last=False)
