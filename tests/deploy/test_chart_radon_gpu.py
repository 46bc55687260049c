"""The radon pipeline on GPU nodes: off by default; with ``pipelines.radon.gpu.enabled`` its
workers run the GPU image with a GPU, on the GPU node group, with the science core on CUDA.

- By default radon's pods ask for no GPU and run the core on the CPU
  (``GALPIPE_RADON_DEVICE=cpu``, set by the chart, not by ``config``).
- With ``gpu.enabled``: the ``<tag>-gpu`` image, ``limits["nvidia.com/gpu"]``, the GPU nodes'
  selector and taint toleration beside radon's own spot toleration, ``GALPIPE_RADON_DEVICE=cuda``,
  and the decode-process and batch settings from ``config``; every object valid against the
  Kubernetes schema. A digest-pinned CPU image refuses the suffix, naming radon.
- ``GALPIPE_RADON_DEVICE`` in ``config`` is refused (the chart owns it), and the precision is
  one of the three the worker accepts.
"""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from tests.deploy.chart_render import of_kind, render, render_set, user_values, validate_object

NAME = "galpipe-radon"


def _container(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = of_kind(objects, "Deployment")[NAME]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {v["name"]: v["value"] for v in container["env"] if "value" in v}


def test_default_radon_runs_on_cpus() -> None:
    pod, container = _container(render_set("default"))
    assert _env(container)["GALPIPE_RADON_DEVICE"] == "cpu"
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert "galpipe.io/node-group" not in pod.get("nodeSelector", {})
    assert not container["image"].endswith("-gpu")


def test_gpu_radon_gets_the_gpu_its_nodes_its_image_and_cuda() -> None:
    objects = render_set("radon-gpu")
    for obj in objects:
        validate_object(obj)
    pod, container = _container(objects)
    env = _env(container)
    assert env["GALPIPE_RADON_DEVICE"] == "cuda"
    assert env["GALPIPE_RADON_DECODE_PROCESSES"] == "15"
    assert env["GALPIPE_RADON_BATCH_SIZE"] == "4096"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith("-gpu")
    assert pod["nodeSelector"]["galpipe.io/node-group"] == "gpu"
    keys = {t["key"] for t in pod["tolerations"]}
    assert {"nvidia.com/gpu", "galpipe.io/node-group"} <= keys
    # Only radon: fetch stays on the CPU image without a GPU.
    fetch = of_kind(objects, "Deployment")["galpipe-fetch"]["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in fetch["containers"][0]["resources"]["limits"]
    assert not fetch["containers"][0]["image"].endswith("-gpu")


def test_gpu_radon_refuses_a_digest_pinned_cpu_image_naming_radon() -> None:
    values = user_values("radon-gpu")
    values["image"] = {"tag": "142-3f9c2ab", "digest": "sha256:" + "ab" * 32}
    with pytest.raises(helm.HelmError, match=r"pipelines\.radon\.gpu\.enabled with image\.digest"):
        render(values)


@pytest.mark.parametrize(
    "config",
    [{"GALPIPE_RADON_DEVICE": "cuda"}, {"GALPIPE_RADON_PRECISION": "bfloat16"}],
    ids=["device-is-the-charts", "unknown-precision"],
)
def test_schema_refuses_what_the_worker_would(config: dict[str, str]) -> None:
    with pytest.raises(helm.HelmError):
        render({"pipelines": {"radon": {"config": config}}})
