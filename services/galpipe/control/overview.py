"""The control plane's read side: every pipeline's queue and workload, and the overrides in place.

:class:`OverviewReader` computes an :class:`Overview`;
:class:`~galpipe.control.actions.ControlActions` shares one between callers and forgets it on
every action. The annotations and Kubernetes objects named here are the ones the actions write.

The overview's "image Git wants" is kept simple: the image the HelmRelease's values name
(``values.image.repository``, ``tag``, ``digest``; the repository defaults to the running
image's), else, while a pin is in place, the image the pin replaced, else the running image
(when nothing overrides it, what runs is what Git rendered). ``None`` when none of these is
known.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from galpipe.control.kube import JSON, KEDA_PAUSED_REPLICAS, KubeClient, KubeError
from galpipe.db.audit import AuditRecord, query_audit
from galpipe.db.control import (
    BreakerState,
    QueueOverview,
    TaskCounts,
    queue_overview,
    read_task_counts,
)
from galpipe.db.ratelimit import BucketUsage
from galpipe.db.routes import PIPELINES as ROUTABLE_PIPELINES
from galpipe.db.status import RATE_WINDOW_SECONDS
from galpipe.errors import ServiceError

__all__ = [
    "DEPLOYMENT",
    "HELD_AT",
    "HELD_BY",
    "HELM_RELEASE",
    "PINNED_AT",
    "PINNED_BY",
    "PINNED_FROM",
    "PIN_REASON",
    "PIPELINES",
    "POD",
    "SCALED_OBJECT",
    "Override",
    "Overview",
    "OverviewReader",
    "PipelineOverview",
    "PodHealth",
    "annotations_of",
    "container_of",
    "helm_release_suspended",
    "plain",
]

#: The pipelines shown and acted on: every pipeline galpipe knows (one list, the database
#: layer's, which names each pipeline module's class without importing the science stack). A
#: pipeline the release does not deploy is shown with its queue and no workload.
PIPELINES: tuple[str, ...] = ROUTABLE_PIPELINES

#: Annotations the control plane writes beside the overrides it makes (the chart sets none).
HELD_BY = "galpipe.io/held-by"
HELD_AT = "galpipe.io/held-at"
PINNED_BY = "galpipe.io/pinned-by"
PINNED_AT = "galpipe.io/pinned-at"
PIN_REASON = "galpipe.io/pin-reason"
#: The image a pin replaced: what unpin restores while the release stays suspended.
PINNED_FROM = "galpipe.io/pinned-from"

DEPLOYMENT = ("apps/v1", "Deployment")
SCALED_OBJECT = ("keda.sh/v1alpha1", "ScaledObject")
HELM_RELEASE = ("helm.toolkit.fluxcd.io/v2", "HelmRelease")
POD = ("v1", "Pod")


def plain(value: Any) -> Any:
    """``value`` with datetimes as ISO 8601, dataclasses as dicts and tuples as lists."""
    if isinstance(value, datetime):
        return value.isoformat()
    if is_dataclass(value) and not isinstance(value, type):
        return {k: plain(v) for k, v in asdict(value).items()}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Override:
    """A manual override in place: a pause, a replica hold or a pinned image.

    Attributes
    ----------
    pipeline
        The pipeline it applies to.
    kind
        ``pause``, ``hold`` or ``pin``.
    since
        When it began (``None`` when the object does not say, e.g. set by hand).
    user
        Who made it (``None`` when not made through the control plane).
    reason
        Why, as given.
    value
        The held replica count or the pinned image; ``None`` for a pause.
    """

    pipeline: str
    kind: str
    since: datetime | None
    user: str | None
    reason: str | None
    value: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``since`` in ISO 8601)."""
        return dict(plain(self))


@dataclass(frozen=True)
class PodHealth:
    """One pod of a pipeline: the paper's health view."""

    name: str
    phase: str
    ready: bool
    restarts: int
    image: str | None


@dataclass(frozen=True)
class PipelineOverview:
    """One pipeline: its queue from the database and its workload from Kubernetes.

    Attributes
    ----------
    pipeline, deployment
        The pipeline and its Deployment (and ScaledObject) name.
    counts, oldest_queued_seconds, done_recently, rate_per_second
        Tasks by state, the age of the head of the queue, completions over the last
        :data:`galpipe.db.status.RATE_WINDOW_SECONDS` and their rate.
    paused, pause_reason, paused_since
        The database pause workers honour.
    breaker, rate_limit
        The pipeline's circuit breaker and shared token bucket (``None``: it has none).
    replicas_desired, replicas_ready
        The Deployment's ``spec.replicas`` (KEDA's decision) and ready replicas; ``None`` when
        the Deployment could not be read.
    hold_replicas
        KEDA's paused-replicas hold, ``None`` when not held.
    pods
        The pipeline's pods, readiness and restarts.
    image, image_wanted
        The image the Deployment runs, and the one Git wants (see the module's docstring).
    pinned
        Whether the image is pinned by the control plane.
    """

    pipeline: str
    deployment: str
    counts: dict[str, int]
    oldest_queued_seconds: float | None
    done_recently: int
    rate_per_second: float
    paused: bool
    pause_reason: str | None
    paused_since: datetime | None
    breaker: BreakerState | None
    rate_limit: BucketUsage | None
    replicas_desired: int | None
    replicas_ready: int | None
    hold_replicas: int | None
    pods: tuple[PodHealth, ...]
    image: str | None
    image_wanted: str | None
    pinned: bool

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dict(plain(self))


@dataclass(frozen=True)
class Overview:
    """Every pipeline and every override in place, as of ``taken_at`` (the database's clock).

    Attributes
    ----------
    helm_release, helm_release_suspended
        The Flux HelmRelease and whether its reconciliation is suspended (``None`` when it
        could not be read): while it is, Git does not control the release, which the console
        says on every page.
    kube_error
        Why the Kubernetes part is missing or partial (``None`` when all was read).
    counts_taken_at
        When the tasks were counted by state: the counts may be shared and up to a few
        seconds older than the rest (``None``: counted with the rest, at ``taken_at``).
    """

    taken_at: datetime
    pipelines: tuple[PipelineOverview, ...]
    overrides: tuple[Override, ...]
    helm_release: str
    helm_release_suspended: bool | None
    kube_error: str | None = None
    counts_taken_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: pipelines by name, overrides as a list."""
        return {
            "taken_at": self.taken_at.isoformat(),
            "counts_taken_at": (self.counts_taken_at or self.taken_at).isoformat(),
            "rate_window_seconds": RATE_WINDOW_SECONDS,
            "pipelines": {p.pipeline: p.to_json() for p in self.pipelines},
            "overrides": [o.to_json() for o in self.overrides],
            "helm_release": self.helm_release,
            "helm_release_suspended": self.helm_release_suspended,
            "kube_error": self.kube_error,
        }


def annotations_of(obj: JSON) -> dict[str, str]:
    """The object's ``metadata.annotations``, a copy (empty when it has none)."""
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def container_of(deployment: JSON, name: str) -> JSON:
    """The Deployment's pod-template container ``name``; a ServiceError when it has none."""
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers")
    for container in containers or []:
        if container.get("name") == name:
            return dict(container)
    raise ServiceError(
        f"Deployment {deployment.get('metadata', {}).get('name')!r} has no container {name!r}"
    )


def helm_release_suspended(helm_release: JSON) -> bool:
    """Whether the Flux HelmRelease's reconciliation is suspended."""
    return bool(helm_release.get("spec", {}).get("suspend", False))


def _last_ok(conn: psycopg.Connection, action: str, pipeline: str) -> AuditRecord | None:
    for record in query_audit(conn, action=action, pipeline=pipeline, limit=10):
        if record.result == "ok":
            return record
    return None


class OverviewReader:
    """Reads the :class:`Overview` of a release: the database's queues and Kubernetes' objects.

    Parameters
    ----------
    pool
        Connection pool on the galpipe database.
    kube
        The Kubernetes API (the production client, or the tests' fake).
    namespace
        The release's namespace.
    release
        The Helm release name: objects are ``<release>-<pipeline>``.
    helm_release
        The Flux HelmRelease that deploys the chart.
    pipelines
        The pipelines shown.
    clock
        Seconds since the epoch: ``taken_at`` when no pipeline's queue was read.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        kube: KubeClient,
        *,
        namespace: str,
        release: str,
        helm_release: str,
        pipelines: Sequence[str] = PIPELINES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pool = pool
        self.kube = kube
        self.namespace = namespace
        self.release = release
        self.helm_release = helm_release
        self.pipelines = tuple(pipelines)
        self.clock = clock

    def object_name(self, pipeline: str) -> str:
        """The pipeline's Deployment and ScaledObject name (``<release>-<pipeline>``)."""
        return f"{self.release}-{pipeline}"

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def read_counts(self) -> TaskCounts:
        """Count the tasks by pipeline and state: the overview's one read that grows with them."""
        with self.pool.connection() as conn:
            return read_task_counts(conn)

    def read(self, counts: TaskCounts | None = None) -> Overview:
        """The overview, read now, with ``counts`` if given (:meth:`read_counts`).

        The Kubernetes reads are one list each of Deployments, ScaledObjects and Pods of the
        release and one get of the HelmRelease, whatever the number of pipelines. If the API
        cannot be read the database part is still returned, with ``kube_error`` saying why.
        """
        with self.pool.connection() as conn:
            queues = queue_overview(
                conn, self.pipelines, window_seconds=RATE_WINDOW_SECONDS, counts=counts
            )
            last_pause = {p: _last_ok(conn, "pause", p) for p, q in queues.items() if q.paused}
            last_hold = {p: _last_ok(conn, "hold", p) for p in self.pipelines}
        errors: list[str] = []
        selector = f"app.kubernetes.io/instance={self.release}"

        def read(what: str, call: Callable[[], Any], default: Any) -> Any:
            try:
                return call()
            except KubeError as exc:
                errors.append(f"{what}: {exc}")
                return default

        deployments = {
            d["metadata"]["name"]: d
            for d in read(
                "deployments", lambda: self.kube.list(*DEPLOYMENT, self.namespace, selector), []
            )
        }
        scaled_objects = {
            s["metadata"]["name"]: s
            for s in read(
                "scaledobjects",
                lambda: self.kube.list(*SCALED_OBJECT, self.namespace, selector),
                [],
            )
        }
        pods = read("pods", lambda: self.kube.list(*POD, self.namespace, selector), [])
        helm_release = read(
            "helmrelease",
            lambda: self.kube.get(*HELM_RELEASE, self.namespace, self.helm_release),
            None,
        )
        suspended = None if helm_release is None else helm_release_suspended(helm_release)
        wanted_by_values = None if helm_release is None else _image_of_values(helm_release)

        pipelines: list[PipelineOverview] = []
        overrides: list[Override] = []
        for name in self.pipelines:
            queue = queues[name]
            object_name = self.object_name(name)
            deployment = deployments.get(object_name)
            scaled_object = scaled_objects.get(object_name)
            pipelines.append(
                self._pipeline_overview(
                    name, queue, deployment, scaled_object, pods, wanted_by_values
                )
            )
            if queue.paused:
                audited = last_pause.get(name)
                overrides.append(
                    Override(
                        name,
                        "pause",
                        queue.paused_since,
                        audited.user if audited else None,
                        queue.pause_reason,
                    )
                )
            held = annotations_of(scaled_object or {})
            if KEDA_PAUSED_REPLICAS in held:
                audited = last_hold.get(name)
                overrides.append(
                    Override(
                        name,
                        "hold",
                        _parse_time(held.get(HELD_AT)),
                        held.get(HELD_BY),
                        audited.reason if audited and audited.user == held.get(HELD_BY) else None,
                        held[KEDA_PAUSED_REPLICAS],
                    )
                )
            pinned = annotations_of(deployment or {})
            if PINNED_BY in pinned and deployment is not None:
                overrides.append(
                    Override(
                        name,
                        "pin",
                        _parse_time(pinned.get(PINNED_AT)),
                        pinned.get(PINNED_BY),
                        pinned.get(PIN_REASON),
                        _container_image(deployment, name),
                    )
                )
        return Overview(
            taken_at=next(iter(queues.values())).taken_at if queues else self._now(),
            pipelines=tuple(pipelines),
            overrides=tuple(overrides),
            helm_release=self.helm_release,
            helm_release_suspended=suspended,
            kube_error="; ".join(errors) or None,
            counts_taken_at=None if counts is None else counts.taken_at,
        )

    def _pipeline_overview(
        self,
        name: str,
        queue: QueueOverview,
        deployment: JSON | None,
        scaled_object: JSON | None,
        pods: list[JSON],
        wanted_by_values: tuple[str | None, str] | None,
    ) -> PipelineOverview:
        annotations = annotations_of(deployment or {})
        image = _container_image(deployment, name) if deployment is not None else None
        pinned = PINNED_BY in annotations
        if wanted_by_values is not None:
            repository, reference = wanted_by_values
            repository = repository or (image.split("@")[0].rsplit(":", 1)[0] if image else None)
            image_wanted = f"{repository}{reference}" if repository else None
        elif pinned:
            image_wanted = annotations.get(PINNED_FROM)
        else:
            image_wanted = image
        hold = annotations_of(scaled_object or {}).get(KEDA_PAUSED_REPLICAS)
        status = (deployment or {}).get("status") or {}
        return PipelineOverview(
            pipeline=name,
            deployment=self.object_name(name),
            counts=queue.counts,
            oldest_queued_seconds=queue.oldest_queued_seconds,
            done_recently=queue.done_recently,
            rate_per_second=queue.rate_per_second,
            paused=queue.paused,
            pause_reason=queue.pause_reason,
            paused_since=queue.paused_since,
            breaker=queue.breaker,
            rate_limit=queue.rate_limit,
            replicas_desired=(
                int((deployment.get("spec") or {}).get("replicas", 1))
                if deployment is not None
                else None
            ),
            replicas_ready=int(status.get("readyReplicas", 0)) if deployment is not None else None,
            hold_replicas=int(hold) if hold is not None and hold.isdigit() else None,
            pods=tuple(
                _pod_health(p, name)
                for p in pods
                if (p.get("metadata", {}).get("labels") or {}).get("app.kubernetes.io/component")
                == name
            ),
            image=image,
            image_wanted=image_wanted,
            pinned=pinned,
        )


def _container_image(deployment: JSON, pipeline: str) -> str | None:
    try:
        image = container_of(deployment, pipeline).get("image")
    except ServiceError:
        return None
    return str(image) if image else None


def _image_of_values(helm_release: JSON) -> tuple[str | None, str] | None:
    """(repository or None, ``:tag`` and/or ``@digest``) from the HelmRelease's values."""
    values = (helm_release.get("spec") or {}).get("values") or {}
    image = values.get("image") or {}
    tag, digest = image.get("tag") or "", image.get("digest") or ""
    if not tag and not digest:
        return None
    reference = (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    return image.get("repository") or None, reference


def _pod_health(pod: JSON, container: str) -> PodHealth:
    status = pod.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    statuses = status.get("containerStatuses") or []
    spec_image = None
    for c in (pod.get("spec") or {}).get("containers") or []:
        if c.get("name") == container:
            spec_image = c.get("image")
    return PodHealth(
        name=pod["metadata"]["name"],
        phase=str(status.get("phase", "Unknown")),
        ready=conditions.get("Ready") == "True",
        restarts=sum(int(s.get("restartCount", 0)) for s in statuses),
        image=spec_image,
    )
