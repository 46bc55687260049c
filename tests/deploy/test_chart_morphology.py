"""The morphology pipeline in the chart: off by default; on, a worker like radon's that loads a
named model, scales on its own queue and, with ``gpu.enabled``, runs on the GPU node group.

- Disabled (the default), the chart renders nothing of it, and the migrate Job only migrates.
- Enabled, it gets every per-pipeline object (Deployment, ScaledObject, ServiceAccount, metrics
  Service, PodDisruptionBudget, NetworkPolicy), each valid against the Kubernetes or KEDA
  schema, with radon's probes, security context and settings; its trigger counts the
  morphology queue; the migrate Job adds the fetch → morphology route after migrating.
- ``gpu.enabled`` runs the GPU variant of the image (``<tag>-gpu``) and adds the GPU limit, the
  GPU nodes' selector and toleration (those of terraform/modules/eks's GPU group) and the CUDA
  device, keeping the pipeline's own scheduling.
- A missing or malformed model version fails the render, naming the value.
"""

from __future__ import annotations

import re
from typing import Any

import helm_python as helm
import pytest

from galpipe.db.queue import ready_depth_cap, ready_depth_query
from galpipe.settings import Settings
from tests.deploy.chart_render import (
    REPO_ROOT,
    effective_values,
    of_kind,
    render,
    render_set,
    user_values,
    validate_object,
)

NAME = "galpipe-morphology"
VERSION = "0123456789abcdef" * 4
#: The kinds every enabled pipeline gets (templates iterate over `pipelines`).
PIPELINE_KINDS = (
    "Deployment",
    "ScaledObject",
    "ServiceAccount",
    "Service",
    "PodDisruptionBudget",
    "NetworkPolicy",
)
GPU_TOLERATION = {
    "key": "nvidia.com/gpu",
    "operator": "Equal",
    "value": "true",
    "effect": "NoSchedule",
}
EKS_MAIN = REPO_ROOT / "terraform" / "modules" / "eks" / "main.tf"


def _pod(objects: list[dict[str, Any]], name: str = NAME) -> dict[str, Any]:
    spec: dict[str, Any] = of_kind(objects, "Deployment")[name]["spec"]["template"]["spec"]
    return spec


def _env(container: dict[str, Any]) -> dict[str, str]:
    """The container's literal variables (those from a Secret or the downward API left out)."""
    return {v["name"]: v["value"] for v in container["env"] if "value" in v}


def _morphology(**values: Any) -> dict[str, Any]:
    return {"pipelines": {"morphology": {"enabled": True, "modelVersion": VERSION, **values}}}


def test_disabled_by_default_renders_nothing_of_it() -> None:
    assert effective_values({})["pipelines"]["morphology"]["enabled"] is False
    objects = render_set("default")
    named = [f"{o['kind']}/{o['metadata']['name']}" for o in objects if "morphology" in str(o)]
    assert named == []
    job = of_kind(objects, "Job")["galpipe-migrate"]["spec"]["template"]["spec"]
    assert "initContainers" not in job
    assert [c["command"] for c in job["containers"]] == [["galpipe", "migrate"]]


@pytest.mark.parametrize("value_set", ["morphology", "morphology-gpu"])
def test_enabled_renders_every_pipeline_object_valid(value_set: str) -> None:
    objects = render_set(value_set)
    for kind in PIPELINE_KINDS:
        obj = of_kind(objects, kind).get(NAME)
        assert obj is not None, f"no {kind}/{NAME}"
        validate_object(obj)
    # Only its own objects are added: the other pipelines are rendered as before.
    base = {(o["kind"], o["metadata"]["name"]) for o in render_set("default")}
    added = {(o["kind"], o["metadata"]["name"]) for o in objects} - base
    assert added == {(kind, NAME) for kind in PIPELINE_KINDS}


def test_scaled_object_counts_the_morphology_queue() -> None:
    objects = render_set("morphology")
    scaled = of_kind(objects, "ScaledObject")[NAME]["spec"]
    values = effective_values(user_values("morphology"))["pipelines"]["morphology"]
    assert scaled["scaleTargetRef"]["name"] == NAME
    assert scaled["minReplicaCount"] == values["autoscaling"]["minReplicaCount"] == 0
    assert scaled["maxReplicaCount"] == values["autoscaling"]["maxReplicaCount"]
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "postgresql"
    assert trigger["authenticationRef"]["name"] == "galpipe-autoscaler"
    # The same query as every pipeline's, on its own name and cap (READY_DEPTH_CAPPED_SQL).
    cap = ready_depth_cap(
        values["autoscaling"]["maxReplicaCount"], values["autoscaling"]["targetQueryValue"]
    )
    assert trigger["metadata"]["query"] == ready_depth_query("morphology", cap)
    assert "pipeline = 'morphology'" in trigger["metadata"]["query"]
    assert "'radon'" not in trigger["metadata"]["query"]


def test_worker_is_built_like_radons_and_loads_the_named_model() -> None:
    objects = render_set("morphology")
    pod, radon = _pod(objects), _pod(objects, "galpipe-radon")
    (container,) = pod["containers"]
    (radon_container,) = radon["containers"]
    assert container["command"] == ["galpipe", "morphology", "worker"]
    for key in ("ports", "livenessProbe", "readinessProbe", "startupProbe", "securityContext"):
        assert container[key] == radon_container[key], key
    assert pod["securityContext"] == radon["securityContext"]
    assert pod["serviceAccountName"] == NAME
    assert pod["automountServiceAccountToken"] is False
    # The same database role, object store and shared settings; radon's own are not given.
    env, radon_env = _env(container), _env(radon_container)
    shared = {k: v for k, v in radon_env.items() if not k.startswith("GALPIPE_RADON_")}
    assert {k: env[k] for k in shared} == shared
    settings = Settings.from_env(env)  # every value parses
    assert settings.morphology_model == VERSION
    assert settings.morphology_device == "cpu"
    assert settings.batch_size("morphology") >= 1
    assert not any(k.startswith("GALPIPE_RADON_") for k in env)
    # Without a GPU: no GPU limit, nothing that selects or tolerates the GPU nodes.
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert GPU_TOLERATION not in pod.get("tolerations", [])
    assert "galpipe.io/node-group" not in pod.get("nodeSelector", {})
    policy = of_kind(objects, "NetworkPolicy")[NAME]["spec"]
    assert len(policy["egress"]) == 3  # DNS, the database and the object store


def test_gpu_adds_the_limit_the_gpu_nodes_and_cuda() -> None:
    objects = render_set("morphology-gpu")
    pod = _pod(objects)
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert container["resources"]["limits"]["cpu"] == "2"  # the rest is unchanged
    assert pod["nodeSelector"] == {"galpipe.io/node-group": "gpu"}
    assert GPU_TOLERATION in pod["tolerations"]
    assert Settings.from_env(_env(container)).morphology_device == "cuda"
    # The other pipelines stay off the GPU nodes.
    for name in ("galpipe-fetch", "galpipe-radon"):
        other = _pod(objects, name)
        assert GPU_TOLERATION not in other.get("tolerations", [])
        assert "nvidia.com/gpu" not in other["containers"][0]["resources"]["limits"]


def test_gpu_workers_run_the_gpu_variant_of_the_image() -> None:
    """`<tag><imageTagSuffix>` (release.yml's `<tag>-gpu`) for GPU workers, only for them."""
    image = {"repository": "registry.example/galpipe", "tag": "142-3f9c2ab"}
    gpu = render({"image": image, **_morphology(gpu={"enabled": True})})
    (container,) = _pod(gpu)["containers"]
    assert container["image"] == "registry.example/galpipe:142-3f9c2ab-gpu"
    for name in ("galpipe-fetch", "galpipe-radon"):
        assert _pod(gpu, name)["containers"][0]["image"] == "registry.example/galpipe:142-3f9c2ab"
    # On CPUs, or with the suffix emptied, the one image of every pipeline.
    for values in (_morphology(), _morphology(gpu={"enabled": True, "imageTagSuffix": ""})):
        (container,) = _pod(render({"image": image, **values}))["containers"]
        assert container["image"] == "registry.example/galpipe:142-3f9c2ab"
    assert effective_values({})["pipelines"]["morphology"]["gpu"]["imageTagSuffix"] == "-gpu"


def test_gpu_image_suffix_refuses_a_digest_pinned_cpu_image() -> None:
    """A digest names the CPU image: a suffixed tag beside it would be a label, not the pull."""
    image = {"tag": "142-3f9c2ab", "digest": "sha256:" + "ab" * 32}
    with pytest.raises(helm.HelmError) as caught:
        render({"image": image, **_morphology(gpu={"enabled": True})})
    assert "image.digest" in str(caught.value)
    assert "imageTagSuffix" in str(caught.value)
    objects = render({"image": image, **_morphology(gpu={"enabled": True, "imageTagSuffix": ""})})
    assert _pod(objects)["containers"][0]["image"].endswith("@" + image["digest"])


def test_gpu_keeps_the_pipelines_own_and_the_global_scheduling() -> None:
    spot = {"key": "galpipe.io/node-group", "operator": "Exists", "effect": "NoSchedule"}
    objects = render(
        {
            "pod": {"nodeSelector": {"topology.kubernetes.io/zone": "eu-west-1a"}},
            **_morphology(
                gpu={"enabled": True},
                scheduling={"tolerations": [spot], "priorityClassName": "batch"},
            ),
        }
    )
    pod = _pod(objects)
    assert pod["nodeSelector"] == {
        "topology.kubernetes.io/zone": "eu-west-1a",
        "galpipe.io/node-group": "gpu",
    }
    assert pod["tolerations"] == [spot, GPU_TOLERATION]
    assert pod["priorityClassName"] == "batch"
    validate_object(of_kind(objects, "Deployment")[NAME])


def test_gpu_defaults_match_the_terraform_gpu_node_group() -> None:
    """The chart selects the label and tolerates the taint that modules/eks gives GPU nodes."""
    gpu = effective_values({})["pipelines"]["morphology"]["gpu"]
    text = EKS_MAIN.read_text()
    labels = re.search(r"gpu_labels\s*=\s*\{\s*\"([^\"]+)\"\s*=\s*\"([^\"]+)\"\s*\}", text)
    taint = re.search(
        r"gpu_taint\s*=\s*\{\s*key\s*=\s*\"([^\"]+)\",\s*value\s*=\s*\"([^\"]+)\","
        r"\s*effect\s*=\s*\"([A-Z_]+)\"\s*\}",
        text,
    )
    assert labels, f"{EKS_MAIN}: no gpu_labels local"
    assert taint, f"{EKS_MAIN}: no gpu_taint local"
    assert gpu["nodeSelector"] == {labels[1]: labels[2]}
    effect = "".join(part.title() for part in taint[3].split("_"))  # NO_SCHEDULE → NoSchedule
    assert gpu["tolerations"] == [
        {"key": taint[1], "operator": "Equal", "value": taint[2], "effect": effect}
    ]


def test_migrate_job_adds_the_fetch_to_morphology_route_after_migrating() -> None:
    objects = render_set("morphology")
    job = of_kind(objects, "Job")["galpipe-migrate"]
    validate_object(job)
    pod = job["spec"]["template"]["spec"]
    # Init containers run first and must succeed: the route's table exists by then.
    (migrate,) = pod["initContainers"]
    (routes,) = pod["containers"]
    assert migrate["command"] == ["galpipe", "migrate"]
    assert routes["command"] == ["galpipe", "routes", "add", "fetch", "morphology"]
    # Same role, image, limits and lock-down as the migration itself.
    for key in ("env", "image", "resources", "securityContext", "volumeMounts"):
        assert routes[key] == migrate[key], key
    default = of_kind(render_set("default"), "Job")["galpipe-migrate"]["spec"]["template"]
    assert migrate == default["spec"]["containers"][0]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"pipelines": {"morphology": {"enabled": True}}},
            "pipelines.morphology.modelVersion is empty: with pipelines.morphology.enabled=true",
        ),
        (
            _morphology(modelVersion="sha256:" + VERSION),
            "at '/pipelines/morphology/modelVersion': 'sha256:",
        ),
        (_morphology(modelVersion=VERSION[:-1]), "at '/pipelines/morphology/modelVersion'"),
        (_morphology(command=[]), "at '/pipelines/morphology/command'"),
        (_morphology(gpu={"count": 0}), "at '/pipelines/morphology/gpu/count'"),
        (
            _morphology(gpu={"imageTagSuffix": ":gpu"}),
            "at '/pipelines/morphology/gpu/imageTagSuffix'",
        ),
        (
            {"pipelines": {"radon": {"modelVersion": VERSION}}},
            "at '/pipelines/radon/modelVersion': false schema",
        ),
    ],
)
def test_wrong_morphology_values_fail_the_render(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError) as caught:
        render(values)
    assert message in str(caught.value)


def test_a_disabled_morphology_needs_no_model_version() -> None:
    objects = render({"pipelines": {"morphology": {"enabled": False, "modelVersion": ""}}})
    assert NAME not in of_kind(objects, "Deployment")
