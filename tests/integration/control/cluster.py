"""The cluster the control tests act on: the chart's default render as an API server holds it.

The chart's Deployments and ScaledObjects (with what the API server and KEDA add to fetch's
Deployment: a resource version, a replica count and a status), the Flux HelmRelease, and three
pods, one of them not ready.
"""

from __future__ import annotations

from typing import Any

from tests.deploy.chart_render import render_set
from tests.kube_fake import helm_release_object

NAMESPACE = "galpipe"
#: The image the chart's default values render.
CHART_IMAGE = "ghcr.io/galpipe/galpipe:0.1.0"


def pod_object(name: str, component: str, *, ready: bool, restarts: int) -> dict[str, Any]:
    """A running pod of the release's ``component``, ready or not, restarted ``restarts`` times."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {
                "app.kubernetes.io/instance": "galpipe",
                "app.kubernetes.io/component": component,
            },
        },
        "spec": {"containers": [{"name": component, "image": CHART_IMAGE}]},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [
                {
                    "name": component,
                    "image": CHART_IMAGE,
                    "imageID": "",
                    "ready": ready,
                    "restartCount": restarts,
                }
            ],
        },
    }


def chart_workloads() -> list[dict[str, Any]]:
    """The chart's default Deployments and ScaledObjects, as the API server returns them."""
    objects = [o for o in render_set("default") if o["kind"] in ("Deployment", "ScaledObject")]
    for obj in objects:
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "galpipe-fetch":
            obj["metadata"]["resourceVersion"] = "41"
            obj["spec"]["replicas"] = 2
            obj["status"] = {"replicas": 2, "readyReplicas": 1}
    return objects


def seeded_objects() -> list[dict[str, Any]]:
    """The workloads, the HelmRelease and the pods: fetch has one pod ready of two."""
    return [
        *chart_workloads(),
        helm_release_object("galpipe", NAMESPACE),
        pod_object("galpipe-fetch-a", "fetch", ready=True, restarts=0),
        pod_object("galpipe-fetch-b", "fetch", ready=False, restarts=3),
        pod_object("galpipe-radon-a", "radon", ready=True, restarts=1),
    ]
