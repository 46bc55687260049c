"""A recording, schema-validating fake of the Kubernetes API for the control plane's tests.

:class:`FakeKube` implements :class:`galpipe.control.kube.KubeClient` over an in-memory set of
objects. It records every request, answers ``TokenReview`` from a token → identity table and
``SubjectAccessReview`` from a (user or group) → verbs table, applies JSON merge patches, and
validates every request body the way the API server would reject it:

- ``TokenReview``, ``SubjectAccessReview`` and ``Event`` bodies against the Kubernetes OpenAPI
  schema (kubernetes-validate, strict: an unknown field fails);
- a patched object, after the merge, against its kind's schema: built-in kinds (Deployment …)
  against the Kubernetes schema, custom resources (KEDA's ScaledObject, Flux's HelmRelease)
  against their CRD's, strict as the API server's field validation (an unknown field fails; see
  ``tests/deploy/chart_render.py``).

An invalid body raises :class:`InvalidRequestBodyError` (an ``AssertionError``, so it is not
mistaken for an API error the code under test may handle) and is also kept in
:attr:`FakeKube.invalid_bodies`, so a test can assert none was sent even when the code under
test swallowed the exception.
"""

from __future__ import annotations

import copy
import itertools
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from galpipe.control.kube import JSON, Identity, KubeError
from tests.deploy.chart_render import KUBE_VERSION, validate_object

__all__ = [
    "KUBE_VERSION",
    "FakeKube",
    "InvalidRequestBodyError",
    "Request",
    "apply_merge_patch",
    "helm_release_object",
]

#: Grants every verb in :class:`FakeKube`'s table.
ALL_VERBS = "*"


class InvalidRequestBodyError(AssertionError):
    """A request body that the API server would reject (unknown field, wrong type …)."""


@dataclass(frozen=True)
class Request:
    """One request the fake received.

    Attributes
    ----------
    verb
        ``create``, ``get``, ``list`` or ``patch``.
    api_version, kind
        What the request addressed (``authentication.k8s.io/v1``, ``TokenReview`` …).
    namespace, name
        The object's namespace and name ("" where the request has none).
    body
        The body sent (a deep copy), or the patch; None for reads.
    label_selector
        The selector of a list.
    """

    verb: str
    api_version: str
    kind: str
    namespace: str = ""
    name: str = ""
    body: JSON | None = None
    label_selector: str = ""


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: ``patch`` applied to a copy of ``target``.

    Objects merge key by key, ``None`` deletes a key, anything else (lists included) replaces.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def helm_release_object(name: str, namespace: str, *, suspend: bool | None = None) -> JSON:
    """A minimal valid Flux ``HelmRelease`` of the galpipe chart, to seed the fake with."""
    spec: JSON = {
        "interval": "5m",
        "releaseName": name,
        # As k8s/envs/*/galpipe.yaml takes the chart: from chart-source.yaml's OCIRepository.
        "chartRef": {"kind": "OCIRepository", "name": "galpipe-chart", "namespace": "flux-system"},
    }
    if suspend is not None:
        spec["suspend"] = suspend
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def _validate(obj: JSON, what: str) -> None:
    try:
        validate_object(obj)
    except AssertionError as exc:
        raise InvalidRequestBodyError(f"{what}: {exc}") from None


def _matches(labels: Mapping[str, str], selector: str) -> bool:
    """Equality-based label selectors (``a=b,c==d,e!=f``), what the control plane sends."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.strip() not in labels:
            return False
    return True


class FakeKube:
    """An in-memory Kubernetes API: records, validates and answers like the real one.

    Parameters
    ----------
    objects
        Namespaced objects to start with (e.g. the chart's render, pods, a HelmRelease); one
        without ``metadata.namespace`` is put in ``namespace``. Each is validated.
    tokens
        Token → the identity its ``TokenReview`` answers; any other token is unauthenticated.
    grants
        User name or group name → the verbs on ``pipelines.galpipe.io`` it is allowed
        (``"*"`` for all), in every namespace.
    namespace
        Default namespace of seeded objects without one.
    latency_s
        Seconds each request sleeps before answering (a realistic API server for benchmarks).
    validate_seeds
        Whether the seeded objects are validated too (a test of invalid objects turns it off).
    """

    def __init__(
        self,
        objects: Iterable[JSON] = (),
        *,
        tokens: Mapping[str, Identity] | None = None,
        grants: Mapping[str, Iterable[str]] | None = None,
        namespace: str = "galpipe",
        latency_s: float = 0.0,
        validate_seeds: bool = True,
    ) -> None:
        self.namespace = namespace
        self.tokens: dict[str, Identity] = dict(tokens or {})
        self.grants: dict[str, set[str]] = {k: set(v) for k, v in (grants or {}).items()}
        self.latency_s = latency_s
        self.requests: list[Request] = []
        self.events: list[JSON] = []
        self.invalid_bodies: list[tuple[Request, str]] = []
        #: Method name (``create_token_review``, ``patch`` …) → the error it raises while set.
        self.errors: dict[str, KubeError] = {}
        self._objects: dict[tuple[str, str, str, str], JSON] = {}
        self._lock = threading.Lock()
        self._event_ids = itertools.count(1)
        for obj in objects:
            self.add(obj, validate=validate_seeds)

    # -- seeding and inspection ------------------------------------------------------------

    def add(self, obj: JSON, *, validate: bool = True) -> None:
        """Store (or replace) one object; its namespace defaults to the fake's."""
        stored = copy.deepcopy(obj)
        metadata = stored.setdefault("metadata", {})
        metadata.setdefault("namespace", self.namespace)
        if validate:
            _validate(stored, "seeded object")
        key = (stored["apiVersion"], stored["kind"], metadata["namespace"], metadata["name"])
        with self._lock:
            self._objects[key] = stored

    def object(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> JSON:
        """The stored object (a copy), without recording a request; KeyError if absent."""
        key = (api_version, kind, namespace or self.namespace, name)
        with self._lock:
            return copy.deepcopy(self._objects[key])

    def calls(self, verb: str | None = None, kind: str | None = None) -> list[Request]:
        """The recorded requests, optionally only those of one verb and/or kind."""
        with self._lock:
            return [
                r
                for r in self.requests
                if (verb is None or r.verb == verb) and (kind is None or r.kind == kind)
            ]

    @property
    def token_reviews(self) -> list[Request]:
        """The TokenReviews received, in order."""
        return self.calls("create", "TokenReview")

    @property
    def access_reviews(self) -> list[Request]:
        """The SubjectAccessReviews received, in order."""
        return self.calls("create", "SubjectAccessReview")

    @property
    def patches(self) -> list[Request]:
        """The patches received, in order."""
        return self.calls("patch")

    def allows(self, identity: Identity, verb: str) -> bool:
        """What the SubjectAccessReview answers for ``identity`` and ``verb``."""
        for subject in (identity.user, *identity.groups):
            verbs = self.grants.get(subject, set())
            if verb in verbs or ALL_VERBS in verbs:
                return True
        return False

    # -- KubeClient ------------------------------------------------------------------------

    def create_token_review(self, body: JSON) -> JSON:
        """Answer from the token table (the body, token included, is recorded and validated)."""
        recorded = copy.deepcopy(body)
        spec = recorded.get("spec", {})
        token = spec.get("token") if isinstance(spec, dict) else None
        request = Request("create", body.get("apiVersion", ""), "TokenReview", body=recorded)
        self._begin(request)
        self._check(request, body, "TokenReview", "authentication.k8s.io/v1")
        identity = self.tokens.get(token) if isinstance(token, str) else None
        answer = copy.deepcopy(body)
        if identity is None:
            answer["status"] = {"authenticated": False, "error": "token not recognised"}
            return answer
        user: JSON = {"username": identity.user, "groups": list(identity.groups)}
        if identity.uid:
            user["uid"] = identity.uid
        if identity.extra:
            user["extra"] = {k: list(v) for k, v in identity.extra.items()}
        answer["status"] = {"authenticated": True, "user": user}
        return answer

    def create_subject_access_review(self, body: JSON) -> JSON:
        """Answer from the grants table for the ``galpipe.io`` ``pipelines`` resource."""
        attributes = body.get("spec", {}).get("resourceAttributes", {})
        request = Request(
            "create",
            body.get("apiVersion", ""),
            "SubjectAccessReview",
            namespace=str(attributes.get("namespace", "")),
            body=copy.deepcopy(body),
        )
        self._begin(request)
        self._check(request, body, "SubjectAccessReview", "authorization.k8s.io/v1")
        spec = body["spec"]
        attributes = spec.get("resourceAttributes", {})
        identity = Identity(user=spec.get("user", ""), groups=tuple(spec.get("groups", ())))
        allowed = (
            attributes.get("group") == "galpipe.io"
            and attributes.get("resource") == "pipelines"
            and self.allows(identity, attributes.get("verb", ""))
        )
        answer = copy.deepcopy(body)
        answer["status"] = {"allowed": allowed, "reason": "fake grants table"}
        return answer

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> JSON:
        """The stored object; KubeError 404 if there is none."""
        self._begin(Request("get", api_version, kind, namespace, name))
        self._raise_if_failing("get")
        with self._lock:
            found = self._objects.get((api_version, kind, namespace, name))
            if found is None:
                raise KubeError(404, f'{kind.lower()}s "{name}" not found')
            return copy.deepcopy(found)

    def list(
        self, api_version: str, kind: str, namespace: str, label_selector: str = ""
    ) -> list[JSON]:
        """The stored objects of ``kind`` in ``namespace`` matching ``label_selector``."""
        self._begin(Request("list", api_version, kind, namespace, label_selector=label_selector))
        self._raise_if_failing("list")
        with self._lock:
            return [
                copy.deepcopy(obj)
                for (v, k, ns, _), obj in sorted(self._objects.items())
                if v == api_version
                and k == kind
                and ns == namespace
                and _matches(obj["metadata"].get("labels") or {}, label_selector)
            ]

    def patch(self, api_version: str, kind: str, namespace: str, name: str, patch: JSON) -> JSON:
        """Merge-patch the stored object and validate the result against its kind's schema."""
        request = Request("patch", api_version, kind, namespace, name, copy.deepcopy(patch))
        self._begin(request)
        self._raise_if_failing("patch")
        with self._lock:
            key = (api_version, kind, namespace, name)
            found = self._objects.get(key)
            if found is None:
                raise KubeError(404, f'{kind.lower()}s "{name}" not found')
            if not isinstance(patch, dict):
                self._invalid(request, "a merge patch must be a JSON object")
            merged = apply_merge_patch(found, patch)
            for field in ("apiVersion", "kind"):
                if merged.get(field) != found.get(field):
                    self._invalid(request, f"a patch may not change {field}")
            for field in ("name", "namespace"):
                if merged.get("metadata", {}).get(field) != found["metadata"].get(field):
                    self._invalid(request, f"a patch may not change metadata.{field}")
            try:
                _validate(merged, f"patch of {kind}/{name}")
            except InvalidRequestBodyError as exc:
                self._invalid(request, str(exc))
            self._objects[key] = merged
            return copy.deepcopy(merged)

    def create_event(self, namespace: str, body: JSON) -> JSON:
        """Validate and keep an ``events.k8s.io/v1`` Event."""
        recorded = copy.deepcopy(body)
        request = Request("create", body.get("apiVersion", ""), "Event", namespace, body=recorded)
        self._begin(request)
        self._check(request, body, "Event", "events.k8s.io/v1")
        event = copy.deepcopy(body)
        metadata = event.setdefault("metadata", {})
        if metadata.get("namespace", namespace) != namespace:
            self._invalid(request, "the Event's namespace differs from the request's")
        metadata["namespace"] = namespace
        if "name" not in metadata:
            metadata["name"] = f"{metadata.get('generateName', 'event-')}{next(self._event_ids)}"
        with self._lock:
            self.events.append(event)
        return copy.deepcopy(event)

    # -- internals -------------------------------------------------------------------------

    def _begin(self, request: Request) -> None:
        if self.latency_s:
            time.sleep(self.latency_s)
        with self._lock:
            self.requests.append(request)

    def _raise_if_failing(self, method: str) -> None:
        error = self.errors.get(method)
        if error is not None:
            raise error

    def _check(self, request: Request, body: JSON, kind: str, api_version: str) -> None:
        method = {
            "TokenReview": "create_token_review",
            "SubjectAccessReview": "create_subject_access_review",
            "Event": "create_event",
        }[kind]
        self._raise_if_failing(method)
        if body.get("kind") != kind or body.get("apiVersion") != api_version:
            self._invalid(request, f"expected {api_version} {kind}")
        try:
            _validate(body, kind)
        except InvalidRequestBodyError as exc:
            self._invalid(request, str(exc))

    def _invalid(self, request: Request, problem: str) -> None:
        self.invalid_bodies.append((request, problem))
        raise InvalidRequestBodyError(problem)
