"""The Kubernetes API as the control plane uses it: one protocol, one production client.

Everything the control plane asks of the cluster goes through :class:`KubeClient`, so the tests
inject a recording fake (which validates every request body against the Kubernetes OpenAPI
schema and the CRDs' schemas) and production uses :func:`production_kube_client`, which talks
to the API server from inside the pod with its ServiceAccount token.

Request bodies are plain dicts in the API's own JSON shape (``apiVersion``, ``kind``, ``spec``),
built by the functions of this module that name them (``token_review_body`` …), so what is
validated in the tests is exactly what is sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

#: Our own API group: operators are authorised on ``pipelines.galpipe.io`` by verb.
API_GROUP = "galpipe.io"
#: The resource of that group every review names.
PIPELINES_RESOURCE = "pipelines"
#: The verbs of the control plane, each a ``SubjectAccessReview`` verb on ``pipelines``.
VERBS = ("get", "list", "pause", "scale", "restart", "rollback", "retry", "requeue")

#: KEDA's annotation that holds a ScaledObject's target at a fixed replica count.
KEDA_PAUSED_REPLICAS = "autoscaling.keda.sh/paused-replicas"
#: The pod-template annotation ``kubectl rollout restart`` sets.
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"

JSON = dict[str, Any]


@dataclass(frozen=True)
class Identity:
    """Who a token belongs to, as the cluster's ``TokenReview`` says."""

    user: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


class KubeError(Exception):
    """The API server answered an error or could not be reached (status 0 for no answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Kubernetes API: {status or 'no answer'}: {message}")
        self.status = status


class KubeClient(Protocol):
    """What the control plane asks of the Kubernetes API; each method is one request."""

    def create_token_review(self, body: JSON) -> JSON:
        """POST ``authentication.k8s.io/v1`` ``tokenreviews``; the answered object."""
        ...

    def create_subject_access_review(self, body: JSON) -> JSON:
        """POST ``authorization.k8s.io/v1`` ``subjectaccessreviews``; the answered object."""
        ...

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> JSON:
        """GET one namespaced object (Deployment, ScaledObject, HelmRelease, …)."""
        ...

    def list(
        self, api_version: str, kind: str, namespace: str, label_selector: str = ""
    ) -> list[JSON]:
        """LIST namespaced objects of ``kind`` matching ``label_selector``."""
        ...

    def patch(self, api_version: str, kind: str, namespace: str, name: str, patch: JSON) -> JSON:
        """JSON merge patch (``application/merge-patch+json``) of one object; the result."""
        ...

    def create_event(self, namespace: str, body: JSON) -> JSON:
        """POST an ``events.k8s.io/v1`` Event."""
        ...


def token_review_body(token: str, audiences: Sequence[str] = ()) -> JSON:
    """The ``TokenReview`` that asks the cluster who ``token`` belongs to."""
    spec: JSON = {"token": token}
    if audiences:
        spec["audiences"] = list(audiences)
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}


def subject_access_review_body(
    identity: Identity, verb: str, namespace: str, name: str | None = None
) -> JSON:
    """The ``SubjectAccessReview`` that asks whether ``identity`` may ``verb`` our pipelines."""
    attributes: JSON = {
        "group": API_GROUP,
        "resource": PIPELINES_RESOURCE,
        "verb": verb,
        "namespace": namespace,
    }
    if name:
        attributes["name"] = name
    spec: JSON = {
        "user": identity.user,
        "groups": list(identity.groups),
        "resourceAttributes": attributes,
    }
    if identity.uid:
        spec["uid"] = identity.uid
    if identity.extra:
        spec["extra"] = {k: list(v) for k, v in identity.extra.items()}
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
