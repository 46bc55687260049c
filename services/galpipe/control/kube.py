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

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from galpipe.errors import ConfigurationError, ServiceError

#: Our own API group: operators are authorised on ``pipelines.galpipe.io`` by verb.
API_GROUP = "galpipe.io"
#: The resource of that group every review names.
PIPELINES_RESOURCE = "pipelines"
#: The verbs of the control plane, each a ``SubjectAccessReview`` verb on ``pipelines``.
VERBS = ("get", "list", "pause", "scale", "restart", "rollback", "retry", "requeue")

#: The verb of ``pipelines.galpipe.io`` each method of
#: :class:`galpipe.control.actions.ControlActions` needs.
VERB_OF: dict[str, str] = {
    "overview": "get",
    "audit": "list",
    "pause": "pause",
    "resume": "pause",
    "hold": "scale",
    "release_hold": "scale",
    "restart": "restart",
    "pin": "rollback",
    "unpin": "rollback",
    "retry": "retry",
    "requeue": "requeue",
}

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


class KubeError(ServiceError):
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


# -- the production client ------------------------------------------------------------------------

log = logging.getLogger(__name__)

#: Where Kubernetes mounts a pod's ServiceAccount token, CA bundle and namespace.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
#: Statuses that say "try again": throttled (429) or an API server or proxy briefly away. Any
#: other error is an answer (403, 404, 422 …) and retrying would not change it.
TRANSIENT_STATUSES = (429, 502, 503, 504)
#: Retries after the first attempt, for a transient status or a refused connection.
MAX_RETRIES = 3
#: urllib3 backoff: waits of 0.1 s, 0.2 s, 0.4 s … between retries (a Retry-After is honoured).
RETRY_BACKOFF_FACTOR = 0.1
#: No single wait longer than this, whatever Retry-After asks: an operator is waiting.
RETRY_BACKOFF_MAX_S = 2.0
#: Seconds to connect and to wait for an answer; reviews and patches answer in milliseconds.
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 10.0
#: Connections kept to the API server (the HTTP server's worker threads share them).
POOL_CONNECTIONS = 32
#: How much of an error body a KubeError quotes.
ERROR_BODY_CHARS = 300

#: Resource names (plurals) of the kinds whose plural is not their lower-case name + "s".
_PLURALS = {"Ingress": "ingresses", "NetworkPolicy": "networkpolicies"}


def resource_plural(kind: str) -> str:
    """The URL resource name of ``kind``: ``Deployment`` → ``deployments``."""
    return _PLURALS.get(kind, kind.lower() + "s")


def namespaced_path(api_version: str, kind: str, namespace: str, name: str = "") -> str:
    """The API path of a namespaced collection, or of one object when ``name`` is given."""
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{prefix}/namespaces/{namespace}/{resource_plural(kind)}"
    return f"{path}/{name}" if name else path


class HTTPKubeClient:
    """:class:`KubeClient` over HTTP(S) with a bearer token read from a file on every request.

    Parameters
    ----------
    base_url
        The API server, e.g. ``https://10.0.0.1:443``.
    token_file
        The bearer token's file. It is read again for every request: the kubelet rotates a
        projected ServiceAccount token in place, and a token held in memory would expire.
    verify
        ``requests``' ``verify``: the CA bundle that signed the API server's certificate, or
        False (only for a plain-HTTP test server).
    session
        The ``requests`` session to use; by default one with the retry policy of this module.
    """

    def __init__(
        self,
        base_url: str,
        token_file: Path,
        *,
        verify: str | bool,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token_file = token_file
        self.verify = verify
        # Every method is retried on a transient status: a 429 or 503 was not processed, and
        # the control plane's writes are merge patches that give the same result twice.
        self.session = session or retrying_session(
            backoff_factor=RETRY_BACKOFF_FACTOR, backoff_max_s=RETRY_BACKOFF_MAX_S
        )

    def create_token_review(self, body: JSON) -> JSON:
        """POST ``authentication.k8s.io/v1`` ``tokenreviews``; the answered object."""
        return self._request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", json=body)

    def create_subject_access_review(self, body: JSON) -> JSON:
        """POST ``authorization.k8s.io/v1`` ``subjectaccessreviews``; the answered object."""
        return self._request(
            "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", json=body
        )

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> JSON:
        """GET one namespaced object."""
        return self._request("GET", namespaced_path(api_version, kind, namespace, name))

    def list(
        self, api_version: str, kind: str, namespace: str, label_selector: str = ""
    ) -> list[JSON]:
        """LIST namespaced objects; each item gets the ``apiVersion`` and ``kind`` a list omits."""
        params = {"labelSelector": label_selector} if label_selector else None
        answer = self._request("GET", namespaced_path(api_version, kind, namespace), params=params)
        items: list[JSON] = answer.get("items") or []
        for item in items:
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    def patch(self, api_version: str, kind: str, namespace: str, name: str, patch: JSON) -> JSON:
        """JSON merge patch of one object; the object as patched."""
        return self._request(
            "PATCH",
            namespaced_path(api_version, kind, namespace, name),
            json=patch,
            content_type="application/merge-patch+json",
        )

    def create_event(self, namespace: str, body: JSON) -> JSON:
        """POST an ``events.k8s.io/v1`` Event."""
        path = namespaced_path("events.k8s.io/v1", "Event", namespace)
        return self._request("POST", path, json=body)

    def _token(self) -> str:
        try:
            return self.token_file.read_text().strip()
        except OSError as exc:
            raise KubeError(0, f"cannot read the token file {self.token_file}: {exc}") from None

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: JSON | None = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> JSON:
        headers = {"Authorization": f"Bearer {self._token()}", "Accept": "application/json"}
        if json is not None:
            headers["Content-Type"] = content_type
        url = self.base_url + path
        try:
            response = self.session.request(
                method,
                url,
                json=json,
                params=params,
                headers=headers,
                verify=self.verify,
                timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
            )
        except requests.RequestException as exc:
            # The exception names the URL, never the headers: no token in the message.
            raise KubeError(0, f"{method} {path}: {type(exc).__name__}: {exc}") from None
        if not response.ok:
            raise KubeError(response.status_code, f"{method} {path}: {_error_message(response)}")
        try:
            answer: JSON = response.json()
        except ValueError:
            raise KubeError(response.status_code, f"{method} {path}: not JSON") from None
        return answer


def _error_message(response: requests.Response) -> str:
    """The ``message`` of the API server's ``Status`` object, else the start of the body."""
    try:
        status = response.json()
    except ValueError:
        return response.text[:ERROR_BODY_CHARS] or response.reason or "no body"
    if isinstance(status, dict) and status.get("message"):
        return str(status["message"])[:ERROR_BODY_CHARS]
    return response.text[:ERROR_BODY_CHARS]


def retrying_session(
    *,
    backoff_factor: float,
    backoff_max_s: float,
    pool_connections: int = POOL_CONNECTIONS,
    retry_class: type[Retry] = Retry,
) -> requests.Session:
    """A session that retries only :data:`TRANSIENT_STATUSES` and refused connections.

    A request whose answer was lost in flight (a read error) is not retried, since it may have
    been applied. Used by this module's client and by ``galpipe ctl``'s.

    Parameters
    ----------
    backoff_factor, backoff_max_s
        urllib3's backoff: seconds of the first wait (doubling), and the longest one.
    pool_connections
        Connections kept to the server.
    retry_class
        ``Retry`` or a subclass narrowing which requests are retried.
    """
    retry = retry_class(
        total=MAX_RETRIES,
        connect=MAX_RETRIES,
        read=0,
        status=MAX_RETRIES,
        other=0,
        status_forcelist=TRANSIENT_STATUSES,
        allowed_methods=None,
        backoff_factor=backoff_factor,
        backoff_max=backoff_max_s,
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    adapter = HTTPAdapter(
        max_retries=retry, pool_connections=pool_connections, pool_maxsize=pool_connections
    )
    session = requests.Session()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def production_kube_client(
    *,
    environ: Mapping[str, str] | None = None,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
    scheme: str = "https",
    verify: str | bool | None = None,
) -> HTTPKubeClient:
    """The client of the API server this pod runs under (in-cluster configuration).

    Parameters
    ----------
    environ
        Where ``KUBERNETES_SERVICE_HOST`` and ``KUBERNETES_SERVICE_PORT`` are read (the
        process environment by default; the kubelet sets both in every pod).
    service_account_dir
        The directory of the mounted ServiceAccount token (``token``) and CA (``ca.crt``).
    scheme
        ``https`` in a cluster; tests pass ``http`` with a local server.
    verify
        Overrides the CA bundle (``service_account_dir/ca.crt`` by default).

    Raises
    ------
    ConfigurationError
        Not running in a pod: the variables or the token file are missing.
    """
    env = os.environ if environ is None else environ
    host = env.get("KUBERNETES_SERVICE_HOST", "")
    port = env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise ConfigurationError(
            "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set: "
            "the control plane runs in a Kubernetes pod"
        )
    token_file = service_account_dir / "token"
    if not token_file.is_file():
        raise ConfigurationError(
            f"{token_file} is missing: mount the ServiceAccount token "
            "(automountServiceAccountToken: true)"
        )
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address in a URL
    ca = service_account_dir / "ca.crt"
    client = HTTPKubeClient(
        f"{scheme}://{host}:{port}",
        token_file,
        verify=verify if verify is not None else str(ca),
    )
    log.info("Kubernetes API client", extra={"api_server": client.base_url})
    return client
