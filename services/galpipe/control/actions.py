"""What an operator can do to a running galpipe, each action audited and announced.

:class:`ControlActions` is the one implementation behind the HTTP API, the console and
``galpipe ctl``; authorisation happens before it is called
(:data:`galpipe.control.kube.VERB_OF` says which verb of ``pipelines.galpipe.io`` each method
needs). Every action:

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
  string), with :data:`~galpipe.control.overview.HELD_BY` and
  :data:`~galpipe.control.overview.HELD_AT`; release removes all three.
- restart: the pod template's ``kubectl.kubernetes.io/restartedAt``, as ``kubectl rollout
  restart`` does.
- pin an image: the Flux HelmRelease is suspended *first* (so the GitOps loop cannot undo the
  pin), then the Deployment's container image is set, annotated with who, when, why and the
  image it replaced (:data:`~galpipe.control.overview.PINNED_FROM`). Unpin hands control back
  to Git: when no other pipeline stays pinned the HelmRelease is resumed and asked for a
  forced reconciliation (Flux's ``reconcile.fluxcd.io/forceAt``), which re-applies the chart
  and with it Git's image; while another pipeline is still pinned the release stays suspended
  and the Deployment gets the image it had before the pin back. The pin annotations go either
  way.
- retry / requeue: failed tasks back to the queue, or galaxies queued again for measurement
  under a new ``algo_version`` (:mod:`galpipe.db.control`); with ``dry_run`` only counted.
  The change and its audit row commit in one transaction.

Kubernetes names follow the chart: a pipeline's Deployment and ScaledObject are both
``<release>-<pipeline>``, its pods carry ``app.kubernetes.io/instance=<release>`` and
``app.kubernetes.io/component=<pipeline>``, and its container is named like the pipeline.

The overview itself is read by :class:`~galpipe.control.overview.OverviewReader`;
:class:`ControlActions` shares one between callers and forgets it on every action.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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
from galpipe.control.overview import (
    DEPLOYMENT,
    HELD_AT,
    HELD_BY,
    HELM_RELEASE,
    PIN_REASON,
    PINNED_AT,
    PINNED_BY,
    PINNED_FROM,
    PIPELINES,
    SCALED_OBJECT,
    Override,
    Overview,
    OverviewReader,
    annotations_of,
    container_of,
    helm_release_suspended,
    plain,
)
from galpipe.control.snapshot import SharedSnapshot
from galpipe.db.audit import AuditRecord, query_audit, record_action
from galpipe.db.control import (
    MEASURED_PIPELINE,
    TaskCounts,
    requeue_for_version,
    retry_failed,
)
from galpipe.db.queue import TaskQueue
from galpipe.db.status import pipeline_controls
from galpipe.errors import InputError, ServiceError

__all__ = [
    "EVENT_NOTE_MAX_BYTES",
    "FLUX_FORCE_AT",
    "FLUX_REQUESTED_AT",
    "OVERVIEW_STALE_SECONDS",
    "OVERVIEW_TTL_SECONDS",
    "REPORTING_CONTROLLER",
    "ActionResult",
    "ControlActionError",
    "ControlActions",
]

log = logging.getLogger(__name__)

#: Flux's reconcile request and its forced variant (a Helm upgrade even with no change).
FLUX_REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"
FLUX_FORCE_AT = "reconcile.fluxcd.io/forceAt"

#: The Events' ``reportingController``.
REPORTING_CONTROLLER = "galpipe.io/control"
#: Longest Event note the API server accepts, bytes.
EVENT_NOTE_MAX_BYTES = 1024
#: Seconds one overview serves every caller as fresh: it makes four Kubernetes reads and several
#: database reads, so concurrent consoles and scrapes share one computation. Every action
#: forgets it, so the operator who acted sees the change at once. The count of tasks by state
#: (the one read that grows with the table) is shared the same way on its own, and forgotten
#: only by the actions that move tasks between states (retry, requeue): a pause need not wait
#: for a recount.
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
        return dict(plain(self))


@dataclass
class _Capture:
    """What an action learnt on its way, kept for the audit row even when it fails."""

    target: dict[str, Any]
    before: Any = None
    after: Any = None
    count: int | None = None
    dry_run: bool = False


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
        self.reader = OverviewReader(
            pool,
            kube,
            namespace=namespace,
            release=release,
            helm_release=helm_release,
            pipelines=self.pipelines,
            clock=clock,
        )
        self._counts: SharedSnapshot[TaskCounts] = SharedSnapshot(
            self.reader.read_counts,
            ttl_s=overview_ttl_s,
            stale_s=max(overview_ttl_s, overview_stale_s),
            clock=monotonic,
        )
        self._overview: SharedSnapshot[Overview] = SharedSnapshot(
            lambda: self.reader.read(self._counts.get()),
            ttl_s=overview_ttl_s,
            stale_s=max(overview_ttl_s, overview_stale_s),
            clock=monotonic,
        )

    # -- names and checks ----------------------------------------------------------------------

    def object_name(self, pipeline: str) -> str:
        """The pipeline's Deployment and ScaledObject name (the overview's naming rule)."""
        return self.reader.object_name(pipeline)

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
        moves_tasks: bool = False,
    ) -> ActionResult:
        """Run ``change`` and audit it; on failure audit that and raise ControlActionError.

        ``moves_tasks``: the change moves tasks between states, so the shared counts are
        forgotten with the overview.
        """

        def forget() -> None:
            if moves_tasks:
                self._counts.invalidate()
            self._overview.invalidate()

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
            forget()  # a failed change may have changed part of the state
            log.warning("control action %s of %s failed: %s", action, pipeline, exc)
            try:
                with self.pool.connection() as conn:
                    record_action(conn, record("failed", f"{type(exc).__name__}: {exc}"))
            except Exception:
                log.exception("could not audit the failed %s of %s", action, pipeline)
            self._emit_event(identity, action, pipeline, reason, failed=str(exc))
            raise ControlActionError(action, pipeline, exc) from exc
        if not capture.dry_run:  # a dry run changed nothing the overview shows
            forget()
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
        annotations = annotations_of(scaled_object)
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
            return annotations_of(template).get(RESTARTED_AT)

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
        annotations = annotations_of(deployment)
        return {
            "image": container_of(deployment, pipeline).get("image"),
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
            was_suspended = helm_release_suspended(helm_release)
            capture.before = self._pin_state(deployment, pipeline, was_suspended)
            current = str(container_of(deployment, pipeline).get("image"))
            if not was_suspended:
                self.kube.patch(
                    *HELM_RELEASE, self.namespace, self.helm_release, {"spec": {"suspend": True}}
                )
            annotations = {
                PINNED_BY: identity.user,
                PINNED_AT: self._stamp(),
                PIN_REASON: reason,
                # A re-pin keeps the image Git had rendered, not the previous pin's.
                PINNED_FROM: annotations_of(deployment).get(PINNED_FROM) or current,
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
            capture.before = self._pin_state(
                deployment, pipeline, helm_release_suspended(helm_release)
            )
            others = [
                p for p in self.pipelines if p != pipeline and self._is_pinned(self.object_name(p))
            ]
            capture.target["still_pinned"] = others
            cleared = {PINNED_BY: None, PINNED_AT: None, PIN_REASON: None, PINNED_FROM: None}
            if others:
                # The release stays suspended for the other pins: restore this image by hand.
                original = annotations_of(deployment).get(PINNED_FROM)
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
        return PINNED_BY in annotations_of(deployment)

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
            identity,
            "retry",
            pipeline,
            reason,
            capture,
            change,
            in_transaction=True,
            moves_tasks=True,
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
            identity,
            "requeue",
            pipeline,
            reason,
            capture,
            change,
            in_transaction=True,
            moves_tasks=True,
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

    def overview(self) -> Overview:
        """Per pipeline the queue (database) and the workload (Kubernetes), and the overrides.

        One computation serves every caller for ``overview_ttl_s`` seconds, then is served
        while one background refresh runs (up to ``overview_stale_s``); an action forgets it.
        The counts by state are shared alike, and forgotten only by retry and requeue: after a
        pause they may be up to ``overview_ttl_s`` older than the rest (``counts_taken_at``).
        """
        return self._overview.get()
