"""What an operator can do to a running galpipe, each action audited and announced.

:class:`ControlActions` is the one implementation behind the HTTP API, the console and
``galpipe ctl``; authorisation happens before it is called (:data:`VERB_OF` says which verb of
``pipelines.galpipe.io`` each method needs). Every action:

1. refuses an empty reason or an unknown pipeline (:class:`galpipe.errors.InputError`, naming
   the input) before touching anything;
2. captures the state it changes before and after;
3. writes one row to the audit log (``ok``, ``dry_run``, or ``failed`` with the error, after
   which the error is raised again as a :class:`ControlActionError`, a ``ServiceError``);
4. writes one Kubernetes Event (``events.k8s.io/v1``) regarding the pipeline's Deployment;
   an Event that cannot be written is logged, never fatal: the audit row is the record.

What each action changes:

- pause / resume: ``pipeline_control.paused``, which every worker honours; the ready-depth
  query then reads 0 and KEDA scales the pipeline to zero by itself.
- hold N / release: KEDA's ``autoscaling.keda.sh/paused-replicas`` on the ScaledObject (a
  string), with :data:`HELD_BY` and :data:`HELD_AT`; release removes all three.
- restart: the pod template's ``kubectl.kubernetes.io/restartedAt``, as ``kubectl rollout
  restart`` does.
- pin an image: the Flux HelmRelease is suspended *first* (so the GitOps loop cannot undo the
  pin), then the Deployment's container image is set, annotated with who, when, why and the
  image it replaced (:data:`PINNED_FROM`). Unpin hands control back to Git: when no other
  pipeline stays pinned the HelmRelease is resumed and asked for a forced reconciliation (Flux's
  ``reconcile.fluxcd.io/forceAt``), which re-applies the chart and with it Git's image; while
  another pipeline is still pinned the release stays suspended and the Deployment gets the
  image it had before the pin back. The pin annotations go either way.
- retry / requeue: failed tasks back to the queue, or galaxies queued again for measurement
  under a new ``algo_version`` (:mod:`galpipe.db.control`); with ``dry_run`` only counted.
  The change and its audit row commit in one transaction.

Kubernetes names follow the chart: a pipeline's Deployment and ScaledObject are both
``<release>-<pipeline>``, its pods carry ``app.kubernetes.io/instance=<release>`` and
``app.kubernetes.io/component=<pipeline>``, and its container is named like the pipeline.

The overview's "image Git wants" is kept simple: the image the HelmRelease's values name
(``values.image.repository``, ``tag``, ``digest``; the repository defaults to the running
image's), else, while a pin is in place, the image the pin replaced, else the running image
(when nothing overrides it, what runs is what Git rendered). ``None`` when none of these is
known.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from galpipe.control.kube import (
    JSON,
    KEDA_PAUSED_REPLICAS,
    RESTARTED_AT,
    Identity,
    KubeClient,
    KubeError,
)
from galpipe.control.snapshot import SharedSnapshot
from galpipe.db.audit import AuditRecord, query_audit, record_action
from galpipe.db.control import (
    MEASURED_PIPELINE,
    BreakerState,
    QueueOverview,
    queue_overview,
    requeue_for_version,
    retry_failed,
)
from galpipe.db.queue import TaskQueue
from galpipe.db.ratelimit import BucketUsage
from galpipe.db.status import pipeline_controls
from galpipe.errors import InputError, ServiceError

__all__ = [
    "HELD_AT",
    "HELD_BY",
    "PINNED_AT",
    "PINNED_BY",
    "PINNED_FROM",
    "PIN_REASON",
    "PIPELINES",
    "VERB_OF",
    "ActionResult",
    "AuditRecord",
    "ControlActionError",
    "ControlActions",
    "Override",
    "Overview",
    "PipelineOverview",
    "PodHealth",
]

log = logging.getLogger(__name__)

#: The verb of ``pipelines.galpipe.io`` each method of :class:`ControlActions` needs.
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

#: The pipelines the chart deploys (the ``name`` of ``FetchPipeline`` and ``RadonPipeline``;
#: not imported from them, which would load the science stack into the control plane).
PIPELINES = ("fetch", "radon")

#: Annotations the control plane writes beside the overrides it makes (the chart sets none).
HELD_BY = "galpipe.io/held-by"
HELD_AT = "galpipe.io/held-at"
PINNED_BY = "galpipe.io/pinned-by"
PINNED_AT = "galpipe.io/pinned-at"
PIN_REASON = "galpipe.io/pin-reason"
#: The image a pin replaced: what unpin restores while the release stays suspended.
PINNED_FROM = "galpipe.io/pinned-from"
#: Flux's reconcile request and its forced variant (a Helm upgrade even with no change).
FLUX_REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"
FLUX_FORCE_AT = "reconcile.fluxcd.io/forceAt"

DEPLOYMENT = ("apps/v1", "Deployment")
SCALED_OBJECT = ("keda.sh/v1alpha1", "ScaledObject")
HELM_RELEASE = ("helm.toolkit.fluxcd.io/v2", "HelmRelease")
POD = ("v1", "Pod")

#: The Events' ``reportingController``.
REPORTING_CONTROLLER = "galpipe.io/control"
#: Longest Event note the API server accepts, bytes.
EVENT_NOTE_MAX_BYTES = 1024
#: Completions over this many seconds make the overview's rate.
RATE_WINDOW_SECONDS = 60.0
#: Seconds one overview serves every caller as fresh: it counts the whole task table and makes
#: four Kubernetes reads, so concurrent consoles and scrapes share one computation. Every action
#: forgets it, so the operator who acted sees the change at once.
OVERVIEW_TTL_SECONDS = 2.0
#: Seconds an older overview is still served while one background refresh computes the next.
OVERVIEW_STALE_SECONDS = 30.0

# The Event reason of each action that went through.
_EVENT_REASONS = {
    "pause": "GalpipePaused",
    "resume": "GalpipeResumed",
    "hold": "GalpipeHeld",
    "release_hold": "GalpipeHoldReleased",
    "restart": "GalpipeRestarted",
    "pin": "GalpipePinned",
    "unpin": "GalpipeUnpinned",
    "retry": "GalpipeRetried",
    "requeue": "GalpipeRequeued",
}


class ControlActionError(ServiceError):
    """An operator action failed after it was audited as ``failed``.

    Attributes
    ----------
    action, pipeline
        What failed, on which pipeline.
    status
        The Kubernetes API's HTTP status when it answered the failing request, else ``None``.
    """

    def __init__(self, action: str, pipeline: str, cause: BaseException) -> None:
        super().__init__(f"{action} of pipeline {pipeline!r} failed: {cause}")
        self.action = action
        self.pipeline = pipeline
        self.status = cause.status if isinstance(cause, KubeError) else None


def _plain(value: Any) -> Any:
    """``value`` with datetimes as ISO 8601, dataclasses as dicts and tuples as lists."""
    if isinstance(value, datetime):
        return value.isoformat()
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in asdict(value).items()}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
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
        return dict(_plain(self))


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
        :data:`RATE_WINDOW_SECONDS` and their rate.
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
        return dict(_plain(self))


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
    """

    taken_at: datetime
    pipelines: tuple[PipelineOverview, ...]
    overrides: tuple[Override, ...]
    helm_release: str
    helm_release_suspended: bool | None
    kube_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: pipelines by name, overrides as a list."""
        return {
            "taken_at": self.taken_at.isoformat(),
            "rate_window_seconds": RATE_WINDOW_SECONDS,
            "pipelines": {p.pipeline: p.to_json() for p in self.pipelines},
            "overrides": [o.to_json() for o in self.overrides],
            "helm_release": self.helm_release,
            "helm_release_suspended": self.helm_release_suspended,
            "kube_error": self.kube_error,
        }


@dataclass(frozen=True)
class ActionResult:
    """What an action did, as audited (``audit_id`` is its audit row).

    Attributes
    ----------
    result
        ``ok``, or ``dry_run`` for a counted retry or requeue.
    count
        Tasks queued (or that would be) by a retry or requeue; ``None`` for other actions.
    """

    action: str
    pipeline: str
    result: str
    user: str
    reason: str
    target: Mapping[str, Any]
    before: Any
    after: Any
    audit_id: int
    at: datetime
    count: int | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``at`` in ISO 8601)."""
        return dict(_plain(self))


@dataclass
class _Capture:
    """What an action learnt on its way, kept for the audit row even when it fails."""

    target: dict[str, Any]
    before: Any = None
    after: Any = None
    count: int | None = None
    dry_run: bool = False


def _annotations(obj: JSON) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _container(deployment: JSON, name: str) -> JSON:
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers")
    for container in containers or []:
        if container.get("name") == name:
            return dict(container)
    raise ServiceError(
        f"Deployment {deployment.get('metadata', {}).get('name')!r} has no container {name!r}"
    )


class ControlActions:
    """The operator actions and reads of the control plane.

    Parameters
    ----------
    pool
        Connection pool on the galpipe database.
    kube
        The Kubernetes API (the production client, or the tests' fake).
    namespace
        The release's namespace: its objects, Events and reviews.
    release
        The Helm release name: objects are ``<release>-<pipeline>``.
    helm_release
        The Flux HelmRelease that deploys the chart (suspended while an image is pinned).
    clock
        Seconds since the epoch: the times written into annotations and Events.
    pipelines
        The pipelines an action may name.
    overview_ttl_s, overview_stale_s
        Seconds an overview is shared as fresh, and served while a refresh runs
        (:class:`~galpipe.control.snapshot.SharedSnapshot`).
    monotonic
        The clock of that sharing.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        kube: KubeClient,
        *,
        namespace: str,
        release: str,
        helm_release: str,
        clock: Callable[[], float] = time.time,
        pipelines: Sequence[str] = PIPELINES,
        overview_ttl_s: float = OVERVIEW_TTL_SECONDS,
        overview_stale_s: float = OVERVIEW_STALE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.kube = kube
        self.namespace = namespace
        self.release = release
        self.helm_release = helm_release
        self.clock = clock
        self.pipelines = tuple(pipelines)
        self.queue = TaskQueue(pool)
        self._overview: SharedSnapshot[Overview] = SharedSnapshot(
            self._read_overview,
            ttl_s=overview_ttl_s,
            stale_s=max(overview_ttl_s, overview_stale_s),
            clock=monotonic,
        )

    # -- names and checks ----------------------------------------------------------------------

    def object_name(self, pipeline: str) -> str:
        """The pipeline's Deployment and ScaledObject name (``<release>-<pipeline>``)."""
        return f"{self.release}-{pipeline}"

    def _check(self, pipeline: str, reason: str) -> str:
        if pipeline not in self.pipelines:
            raise InputError(f"pipeline {pipeline!r} is not one of {', '.join(self.pipelines)}")
        if not isinstance(reason, str) or not reason.strip():
            raise InputError("reason: a written reason is required for every action")
        return reason.strip()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def _stamp(self) -> str:
        """Now as the RFC 3339 UTC second ``kubectl`` writes into annotations."""
        return self._now().strftime("%Y-%m-%dT%H:%M:%SZ")

    # -- the audited frame of every action -------------------------------------------------------

    def _perform(
        self,
        identity: Identity,
        action: str,
        pipeline: str,
        reason: str,
        capture: _Capture,
        change: Callable[[psycopg.Connection | None], None],
        *,
        in_transaction: bool = False,
    ) -> ActionResult:
        """Run ``change`` and audit it; on failure audit that and raise ControlActionError."""

        def record(result: str, error: str | None = None) -> AuditRecord:
            return AuditRecord(
                user=identity.user,
                groups=tuple(identity.groups),
                action=action,
                pipeline=pipeline,
                target=capture.target,
                reason=reason,
                before=capture.before,
                after=capture.after if error is None else None,
                result=result,
                error=error,
            )

        try:
            if in_transaction:
                with self.pool.connection() as conn, conn.transaction():
                    change(conn)
                    audited = record_action(conn, record("dry_run" if capture.dry_run else "ok"))
            else:
                change(None)
                with self.pool.connection() as conn:
                    audited = record_action(conn, record("ok"))
        except Exception as exc:
            self._overview.invalidate()  # a failed change may have changed part of the state
            log.warning("control action %s of %s failed: %s", action, pipeline, exc)
            try:
                with self.pool.connection() as conn:
                    record_action(conn, record("failed", f"{type(exc).__name__}: {exc}"))
            except Exception:
                log.exception("could not audit the failed %s of %s", action, pipeline)
            self._emit_event(identity, action, pipeline, reason, failed=str(exc))
            raise ControlActionError(action, pipeline, exc) from exc
        if not capture.dry_run:  # a dry run changed nothing the overview shows
            self._overview.invalidate()
        self._emit_event(identity, action, pipeline, reason, dry_run=capture.dry_run)
        assert audited.id is not None
        assert audited.at is not None
        return ActionResult(
            action=action,
            pipeline=pipeline,
            result=audited.result,
            user=identity.user,
            reason=reason,
            target=capture.target,
            before=capture.before,
            after=capture.after,
            audit_id=audited.id,
            at=audited.at,
            count=capture.count,
        )

    def _emit_event(
        self,
        identity: Identity,
        action: str,
        pipeline: str,
        reason: str,
        *,
        dry_run: bool = False,
        failed: str | None = None,
    ) -> None:
        """Write the action's Event regarding the pipeline's Deployment; log a failure."""
        if failed is not None:
            event_reason = "Galpipe" + action.title().replace("_", "") + "Failed"
            note = f"{action} of {pipeline} by {identity.user} failed ({failed}); reason: {reason}"
        elif dry_run:
            event_reason = "Galpipe" + action.title().replace("_", "") + "DryRun"
            note = f"{action} of {pipeline} counted (dry run) by {identity.user}; reason: {reason}"
        else:
            event_reason = _EVENT_REASONS[action]
            note = f"{action} of {pipeline} by {identity.user}; reason: {reason}"
        deployment = self.object_name(pipeline)
        body: JSON = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"generateName": f"{deployment}.", "namespace": self.namespace},
            "eventTime": self._now().strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "reportingController": REPORTING_CONTROLLER,
            "reportingInstance": f"{self.release}-control",
            "action": action,
            "reason": event_reason,
            "type": "Warning" if failed is not None else "Normal",
            "regarding": {
                "apiVersion": DEPLOYMENT[0],
                "kind": DEPLOYMENT[1],
                "name": deployment,
                "namespace": self.namespace,
            },
            "note": note.encode()[:EVENT_NOTE_MAX_BYTES].decode(errors="ignore"),
        }
        try:
            self.kube.create_event(self.namespace, body)
        except Exception as exc:
            log.warning("could not write the Event of %s of %s: %s", action, pipeline, exc)

    # -- pause / resume ------------------------------------------------------------------------

    def _pause_state(self, pipeline: str) -> dict[str, Any]:
        with self.pool.connection() as conn:
            control = pipeline_controls(conn).get(pipeline)
        if control is None:
            return {"paused": False, "reason": None}
        return {"paused": control.paused, "reason": control.reason}

    def pause(self, identity: Identity, pipeline: str, reason: str) -> ActionResult:
        """Stop every worker of ``pipeline`` from claiming (the database flag)."""
        return self._set_paused(identity, "pause", pipeline, reason)

    def resume(self, identity: Identity, pipeline: str, reason: str) -> ActionResult:
        """Let the workers of ``pipeline`` claim again."""
        return self._set_paused(identity, "resume", pipeline, reason)

    def _set_paused(
        self, identity: Identity, action: str, pipeline: str, reason: str
    ) -> ActionResult:
        reason = self._check(pipeline, reason)
        capture = _Capture(target={"pipeline_control": pipeline})

        def change(_: psycopg.Connection | None) -> None:
            capture.before = self._pause_state(pipeline)
            if action == "pause":
                self.queue.pause(pipeline, reason)
            else:
                self.queue.resume(pipeline)
            capture.after = self._pause_state(pipeline)

        return self._perform(identity, action, pipeline, reason, capture, change)

    # -- hold / release ------------------------------------------------------------------------

    def _hold_state(self, scaled_object: JSON) -> dict[str, Any]:
        annotations = _annotations(scaled_object)
        return {
            "paused_replicas": annotations.get(KEDA_PAUSED_REPLICAS),
            "held_by": annotations.get(HELD_BY),
            "held_at": annotations.get(HELD_AT),
        }

    def hold(self, identity: Identity, pipeline: str, replicas: int, reason: str) -> ActionResult:
        """Hold ``pipeline`` at ``replicas`` (KEDA's paused-replicas annotation)."""
        reason = self._check(pipeline, reason)
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise InputError(f"replicas must be a whole number >= 0, got {replicas!r}")
        return self._patch_hold(
            identity,
            "hold",
            pipeline,
            reason,
            {KEDA_PAUSED_REPLICAS: str(replicas), HELD_BY: identity.user, HELD_AT: self._stamp()},
            replicas=replicas,
        )

    def release_hold(self, identity: Identity, pipeline: str, reason: str) -> ActionResult:
        """Give ``pipeline``'s replica count back to KEDA."""
        reason = self._check(pipeline, reason)
        return self._patch_hold(
            identity,
            "release_hold",
            pipeline,
            reason,
            {KEDA_PAUSED_REPLICAS: None, HELD_BY: None, HELD_AT: None},
        )

    def _patch_hold(
        self,
        identity: Identity,
        action: str,
        pipeline: str,
        reason: str,
        annotations: dict[str, str | None],
        replicas: int | None = None,
    ) -> ActionResult:
        name = self.object_name(pipeline)
        target: dict[str, Any] = {"scaled_object": name}
        if replicas is not None:
            target["replicas"] = replicas
        capture = _Capture(target=target)

        def change(_: psycopg.Connection | None) -> None:
            capture.before = self._hold_state(self.kube.get(*SCALED_OBJECT, self.namespace, name))
            patched = self.kube.patch(
                *SCALED_OBJECT, self.namespace, name, {"metadata": {"annotations": annotations}}
            )
            capture.after = self._hold_state(patched)

        return self._perform(identity, action, pipeline, reason, capture, change)

    # -- restart -------------------------------------------------------------------------------

    def restart(self, identity: Identity, pipeline: str, reason: str) -> ActionResult:
        """Roll every pod of ``pipeline`` (the annotation ``kubectl rollout restart`` sets)."""
        reason = self._check(pipeline, reason)
        name = self.object_name(pipeline)
        capture = _Capture(target={"deployment": name})

        def restarted_at(deployment: JSON) -> str | None:
            template = deployment.get("spec", {}).get("template", {})
            return _annotations(template).get(RESTARTED_AT)

        def change(_: psycopg.Connection | None) -> None:
            capture.before = {
                "restarted_at": restarted_at(self.kube.get(*DEPLOYMENT, self.namespace, name))
            }
            patch = {
                "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: self._stamp()}}}}
            }
            patched = self.kube.patch(*DEPLOYMENT, self.namespace, name, patch)
            capture.after = {"restarted_at": restarted_at(patched)}

        return self._perform(identity, "restart", pipeline, reason, capture, change)

    # -- pin / unpin ---------------------------------------------------------------------------

    def _pin_state(self, deployment: JSON, pipeline: str, suspended: bool | None) -> JSON:
        annotations = _annotations(deployment)
        return {
            "image": _container(deployment, pipeline).get("image"),
            "pinned_by": annotations.get(PINNED_BY),
            "pinned_from": annotations.get(PINNED_FROM),
            "helm_release_suspended": suspended,
        }

    def _image_patch(
        self, deployment: JSON, pipeline: str, image: str, annotations: Mapping[str, str | None]
    ) -> JSON:
        """A merge patch setting the pipeline container's image, guarded by resourceVersion.

        A merge patch replaces a list whole, so the patch carries every container as read,
        only the pipeline's image changed; the resourceVersion makes the API server refuse it
        (409) if the Deployment changed since it was read, instead of undoing that change.
        """
        template_spec = deployment["spec"]["template"]["spec"]
        containers = copy.deepcopy(template_spec["containers"])
        for container in containers:
            if container.get("name") == pipeline:
                container["image"] = image
        metadata: JSON = {"annotations": dict(annotations)}
        version = deployment.get("metadata", {}).get("resourceVersion")
        if version:
            metadata["resourceVersion"] = version
        return {"metadata": metadata, "spec": {"template": {"spec": {"containers": containers}}}}

    def _suspended(self, helm_release: JSON) -> bool:
        return bool(helm_release.get("spec", {}).get("suspend", False))

    def pin(self, identity: Identity, pipeline: str, image: str, reason: str) -> ActionResult:
        """Run ``image`` in ``pipeline`` whatever Git says, until :meth:`unpin`.

        The HelmRelease is suspended before the Deployment is touched, so Flux cannot roll the
        pin back in between. If the image cannot be set, a suspension this call made is undone.
        """
        reason = self._check(pipeline, reason)
        if not isinstance(image, str) or not image.strip() or any(c.isspace() for c in image):
            raise InputError(f"image must be an image reference without spaces, got {image!r}")
        name = self.object_name(pipeline)
        capture = _Capture(
            target={"deployment": name, "helm_release": self.helm_release, "image": image}
        )

        def change(_: psycopg.Connection | None) -> None:
            helm_release = self.kube.get(*HELM_RELEASE, self.namespace, self.helm_release)
            deployment = self.kube.get(*DEPLOYMENT, self.namespace, name)
            was_suspended = self._suspended(helm_release)
            capture.before = self._pin_state(deployment, pipeline, was_suspended)
            current = str(_container(deployment, pipeline).get("image"))
            if not was_suspended:
                self.kube.patch(
                    *HELM_RELEASE, self.namespace, self.helm_release, {"spec": {"suspend": True}}
                )
            annotations = {
                PINNED_BY: identity.user,
                PINNED_AT: self._stamp(),
                PIN_REASON: reason,
                # A re-pin keeps the image Git had rendered, not the previous pin's.
                PINNED_FROM: _annotations(deployment).get(PINNED_FROM) or current,
            }
            try:
                patched = self.kube.patch(
                    *DEPLOYMENT,
                    self.namespace,
                    name,
                    self._image_patch(deployment, pipeline, image, annotations),
                )
            except Exception:
                if not was_suspended:
                    self._resume_helm_release(force=False)
                raise
            capture.after = self._pin_state(patched, pipeline, True)

        return self._perform(identity, "pin", pipeline, reason, capture, change)

    def _resume_helm_release(self, *, force: bool) -> JSON:
        patch: JSON = {"spec": {"suspend": False}}
        if force:
            stamp = self._stamp()
            patch["metadata"] = {"annotations": {FLUX_REQUESTED_AT: stamp, FLUX_FORCE_AT: stamp}}
        return self.kube.patch(*HELM_RELEASE, self.namespace, self.helm_release, patch)

    def unpin(self, identity: Identity, pipeline: str, reason: str) -> ActionResult:
        """Hand ``pipeline``'s image back to Git (see the module's docstring)."""
        reason = self._check(pipeline, reason)
        name = self.object_name(pipeline)
        capture = _Capture(target={"deployment": name, "helm_release": self.helm_release})

        def change(_: psycopg.Connection | None) -> None:
            helm_release = self.kube.get(*HELM_RELEASE, self.namespace, self.helm_release)
            deployment = self.kube.get(*DEPLOYMENT, self.namespace, name)
            capture.before = self._pin_state(deployment, pipeline, self._suspended(helm_release))
            others = [
                p for p in self.pipelines if p != pipeline and self._is_pinned(self.object_name(p))
            ]
            capture.target["still_pinned"] = others
            cleared = {PINNED_BY: None, PINNED_AT: None, PIN_REASON: None, PINNED_FROM: None}
            if others:
                # The release stays suspended for the other pins: restore this image by hand.
                original = _annotations(deployment).get(PINNED_FROM)
                if original:
                    patch = self._image_patch(deployment, pipeline, original, cleared)
                else:
                    patch = {"metadata": {"annotations": cleared}}
                patched = self.kube.patch(*DEPLOYMENT, self.namespace, name, patch)
                suspended = True
            else:
                self._resume_helm_release(force=True)
                patched = self.kube.patch(
                    *DEPLOYMENT, self.namespace, name, {"metadata": {"annotations": cleared}}
                )
                suspended = False
            capture.after = self._pin_state(patched, pipeline, suspended)

        return self._perform(identity, "unpin", pipeline, reason, capture, change)

    def _is_pinned(self, deployment_name: str) -> bool:
        try:
            deployment = self.kube.get(*DEPLOYMENT, self.namespace, deployment_name)
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return PINNED_BY in _annotations(deployment)

    # -- retry / requeue -----------------------------------------------------------------------

    def retry(
        self,
        identity: Identity,
        pipeline: str,
        reason: str,
        *,
        error_contains: str | None = None,
        dry_run: bool,
    ) -> ActionResult:
        """Queue ``pipeline``'s failed tasks again (those whose error contains the filter)."""
        reason = self._check(pipeline, reason)
        capture = _Capture(
            target={"tasks": "failed", "error_contains": error_contains or None}, dry_run=dry_run
        )

        def change(conn: psycopg.Connection | None) -> None:
            assert conn is not None
            matching = retry_failed(conn, pipeline, error_contains=error_contains, dry_run=True)
            capture.before = {"failed_matching": matching}
            if dry_run:
                capture.count = matching
            else:
                capture.count = retry_failed(
                    conn, pipeline, error_contains=error_contains, dry_run=False
                )
                capture.after = {"requeued": capture.count}
            capture.target["count"] = capture.count

        return self._perform(
            identity, "retry", pipeline, reason, capture, change, in_transaction=True
        )

    def requeue(
        self,
        identity: Identity,
        pipeline: str,
        reason: str,
        *,
        algo_version: str,
        source_ids: Sequence[int] | None = None,
        dry_run: bool,
    ) -> ActionResult:
        """Queue again for measurement the galaxies without results of ``algo_version``."""
        reason = self._check(pipeline, reason)
        if pipeline != MEASURED_PIPELINE:
            raise InputError(
                f"pipeline {pipeline!r}: requeue for a new algo_version applies to "
                f"{MEASURED_PIPELINE!r}, whose results carry a version"
            )
        if not isinstance(algo_version, str) or not algo_version.strip():
            raise InputError("algo_version: the version to measure under is required")
        ids = None if source_ids is None else [int(i) for i in source_ids]
        capture = _Capture(
            target={"tasks": "done", "algo_version": algo_version, "source_ids": ids},
            dry_run=dry_run,
        )

        def change(conn: psycopg.Connection | None) -> None:
            assert conn is not None
            lacking = requeue_for_version(
                conn, pipeline, algo_version=algo_version, source_ids=ids, dry_run=True
            )
            capture.before = {"lacking_version": lacking}
            if dry_run:
                capture.count = lacking
            else:
                capture.count = requeue_for_version(
                    conn, pipeline, algo_version=algo_version, source_ids=ids, dry_run=False
                )
                capture.after = {"requeued": capture.count}
            capture.target["count"] = capture.count

        return self._perform(
            identity, "requeue", pipeline, reason, capture, change, in_transaction=True
        )

    # -- reads ---------------------------------------------------------------------------------

    def audit(
        self,
        *,
        user: str | None = None,
        action: str | None = None,
        pipeline: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """The audit log, newest first, filtered (see :func:`galpipe.db.audit.query_audit`)."""
        with self.pool.connection() as conn:
            return query_audit(
                conn, user=user, action=action, pipeline=pipeline, since=since, limit=limit
            )

    def overrides(self) -> list[Override]:
        """Every pause, hold and pin in place (what the console shows on every page)."""
        return list(self.overview().overrides)

    def _last_ok(self, conn: psycopg.Connection, action: str, pipeline: str) -> AuditRecord | None:
        for record in query_audit(conn, action=action, pipeline=pipeline, limit=10):
            if record.result == "ok":
                return record
        return None

    def overview(self) -> Overview:
        """Per pipeline the queue (database) and the workload (Kubernetes), and the overrides.

        One computation serves every caller for ``overview_ttl_s`` seconds, then is served
        while one background refresh runs (up to ``overview_stale_s``); an action forgets it.
        """
        return self._overview.get()

    def _read_overview(self) -> Overview:
        """The overview, read now.

        The Kubernetes reads are one list each of Deployments, ScaledObjects and Pods of the
        release and one get of the HelmRelease, whatever the number of pipelines. If the API
        cannot be read the database part is still returned, with ``kube_error`` saying why.
        """
        with self.pool.connection() as conn:
            queues = queue_overview(conn, self.pipelines, window_seconds=RATE_WINDOW_SECONDS)
            last_pause = {p: self._last_ok(conn, "pause", p) for p, q in queues.items() if q.paused}
            last_hold = {p: self._last_ok(conn, "hold", p) for p in self.pipelines}
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
        suspended = None if helm_release is None else self._suspended(helm_release)
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
            held = _annotations(scaled_object or {})
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
            pinned = _annotations(deployment or {})
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
        annotations = _annotations(deployment or {})
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
        hold = _annotations(scaled_object or {}).get(KEDA_PAUSED_REPLICAS)
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
        image = _container(deployment, pipeline).get("image")
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
