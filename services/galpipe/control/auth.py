"""Who is calling and what they may do, asked of the cluster and cached for a few seconds.

:class:`Authenticator` turns a bearer token into an :class:`~galpipe.control.kube.Identity`
with a ``TokenReview``; :class:`Authorizer` asks a ``SubjectAccessReview`` whether an identity
may use a verb on ``pipelines.galpipe.io`` in the release's namespace. Both cache answers for a
short TTL, as kube-rbac-proxy does: a console page or a script makes many requests a second,
and each would otherwise cost one or two round trips to the API server. A revoked token or
RoleBinding is therefore honoured within one TTL.

Tokens never stay in memory as keys: the token cache is keyed by the SHA-256 of the token.
Errors of the API server are not cached and propagate as :class:`KubeError` (the HTTP layer
answers 503): failing closed, and retrying on the next request.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from galpipe.control.kube import (
    Identity,
    KubeClient,
    KubeError,
    subject_access_review_body,
    token_review_body,
)
from galpipe.runtime import metrics

__all__ = ["DEFAULT_TTL_SECONDS", "MAX_CACHE_ENTRIES", "Authenticator", "Authorizer", "TTLCache"]

#: Seconds an answer is reused (``GALPIPE_CONTROL_REVIEW_TTL_SECONDS`` overrides it).
DEFAULT_TTL_SECONDS = 10.0
#: Answers kept per cache; the oldest go first, so a flood of distinct tokens cannot grow it.
MAX_CACHE_ENTRIES = 4096

Value = TypeVar("Value")


@dataclass(frozen=True)
class _Entry(Generic[Value]):
    value: Value
    expires: float


class TTLCache(Generic[Value]):
    """A bounded, thread-safe map whose entries expire ``ttl_s`` after they were stored.

    :meth:`get_or_compute` computes a missing key once even when many threads ask at the same
    time (the others wait for that answer), so a burst of identical requests after expiry makes
    one review, not one each.
    """

    def __init__(
        self,
        ttl_s: float,
        *,
        max_entries: int = MAX_CACHE_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[Hashable, _Entry[Value]] = OrderedDict()
        self._lock = threading.Lock()
        self._computing: dict[Hashable, threading.Lock] = {}

    def get(self, key: Hashable) -> tuple[bool, Value | None]:
        """``(True, value)`` for a live entry, else ``(False, None)``."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return False, None
            if entry.expires <= self._clock():
                del self._entries[key]
                return False, None
            return True, entry.value

    def put(self, key: Hashable, value: Value) -> None:
        """Store ``value`` for one TTL, evicting the oldest entries beyond the bound."""
        with self._lock:
            self._entries[key] = _Entry(value, self._clock() + self.ttl_s)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def get_or_compute(self, key: Hashable, compute: Callable[[], Value]) -> tuple[Value, bool]:
        """The cached value, or ``compute()`` stored; and whether it came from the cache.

        An exception of ``compute`` propagates and nothing is stored.
        """
        found, value = self.get(key)
        if found:
            return value, True  # type: ignore[return-value]
        with self._lock:
            key_lock = self._computing.setdefault(key, threading.Lock())
        with key_lock:
            found, value = self.get(key)  # another thread may have computed it meanwhile
            if found:
                return value, True  # type: ignore[return-value]
            try:
                computed = compute()
                self.put(key, computed)
            finally:
                with self._lock:
                    self._computing.pop(key, None)
            return computed, False

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def _token_key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _cached_label(cached: bool) -> str:
    return "true" if cached else "false"


class Authenticator:
    """Bearer token → identity, by ``TokenReview``.

    Parameters
    ----------
    kube
        The Kubernetes client.
    ttl_s
        Seconds an answer (authenticated or not) is reused for the same token.
    audiences
        Audiences the token must be meant for (none: the API server's own).
    clock
        Monotonic seconds; injected for tests.
    """

    def __init__(
        self,
        kube: KubeClient,
        *,
        ttl_s: float = DEFAULT_TTL_SECONDS,
        audiences: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.audiences = tuple(audiences)
        # An unauthenticated answer is cached too, so that a script retrying with a bad token
        # costs the API server one review per TTL.
        self._cache: TTLCache[Identity | None] = TTLCache(ttl_s, clock=clock)

    def authenticate(self, token: str) -> Identity | None:
        """Who ``token`` belongs to; None if the cluster does not accept it.

        Raises
        ------
        KubeError
            The API server could not answer.
        """
        if not token:
            return None
        try:
            identity, cached = self._cache.get_or_compute(
                _token_key(token), lambda: self._review(token)
            )
        except KubeError:
            metrics.CONTROL_REVIEWS.labels("token", "error", "false").inc()
            raise
        outcome = "allowed" if identity is not None else "denied"
        metrics.CONTROL_REVIEWS.labels("token", outcome, _cached_label(cached)).inc()
        return identity

    def _review(self, token: str) -> Identity | None:
        answer = self.kube.create_token_review(token_review_body(token, self.audiences))
        status = answer.get("status") or {}
        if not status.get("authenticated"):
            return None
        user = status.get("user") or {}
        username = user.get("username")
        if not username:
            return None
        extra = user.get("extra") or {}
        return Identity(
            user=str(username),
            groups=tuple(str(g) for g in user.get("groups") or ()),
            uid=str(user.get("uid") or ""),
            extra={str(k): tuple(str(v) for v in values) for k, values in extra.items()},
        )


class Authorizer:
    """May this identity use this verb on our pipelines? By ``SubjectAccessReview``.

    Parameters
    ----------
    kube
        The Kubernetes client.
    namespace
        The release's namespace, where the verbs are granted (by the chart's Roles).
    ttl_s
        Seconds an answer (allowed or denied) is reused for the same identity, verb and
        namespace.
    clock
        Monotonic seconds; injected for tests.
    """

    def __init__(
        self,
        kube: KubeClient,
        namespace: str,
        *,
        ttl_s: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self._cache: TTLCache[bool] = TTLCache(ttl_s, clock=clock)

    def allowed(self, identity: Identity, verb: str, namespace: str | None = None) -> bool:
        """Whether ``identity`` may ``verb`` ``pipelines.galpipe.io`` in the namespace.

        Raises
        ------
        KubeError
            The API server could not answer.
        """
        where = namespace or self.namespace
        key = (
            identity.user,
            identity.groups,
            identity.uid,
            tuple(sorted(identity.extra.items())),
            verb,
            where,
        )
        try:
            allowed, cached = self._cache.get_or_compute(
                key, lambda: self._review(identity, verb, where)
            )
        except KubeError:
            metrics.CONTROL_REVIEWS.labels("access", "error", "false").inc()
            raise
        outcome = "allowed" if allowed else "denied"
        metrics.CONTROL_REVIEWS.labels("access", outcome, _cached_label(cached)).inc()
        return allowed

    def _review(self, identity: Identity, verb: str, namespace: str) -> bool:
        answer = self.kube.create_subject_access_review(
            subject_access_review_body(identity, verb, namespace)
        )
        status = answer.get("status") or {}
        # "denied" is an explicit no; without "allowed" the answer is no as well (fail closed).
        return bool(status.get("allowed")) and not status.get("denied")
