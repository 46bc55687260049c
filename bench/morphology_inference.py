"""Benchmark of morphology inference on the CPU: onnxruntime against torch, per architecture.

Run ``python bench/morphology_inference.py`` (``--quick`` for one small-CNN smoke run). For each
network of :data:`galpipe.learning.networks.ARCHITECTURES` (freshly initialised, 4 channels,
40x40 px: griz cutouts) it times the prediction of ``--batches`` batches of ``--batch`` images

1. through onnxruntime (:class:`galpipe.learning.inference.MorphologyModel`, the exported graph,
   ``--threads`` intra-op threads), and
2. through torch in eval mode under ``no_grad`` (``torch.set_num_threads(--threads)``),

after one warm-up batch each; the median of ``--repeats`` runs counts. It prints galaxies per
second of both, their ratio, the parameter count and the ONNX size, then ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from galpipe.learning.inference import MorphologyModel
from galpipe.learning.networks import ARCHITECTURES, build_network, count_parameters
from galpipe.learning.onnx_export import export_onnx

SIZE = 40
CHANNELS = 4


def _galaxies_per_second(
    predict: Callable[[np.ndarray], object], images: np.ndarray, batch: int, repeats: int
) -> float:
    predict(images[:batch])  # warm-up: allocations, the first run's graph optimisation
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        predict(images)
        seconds.append(time.perf_counter() - started)
    return len(images) / statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    architectures = ("small_cnn",) if args.quick else ARCHITECTURES
    batches = 1 if args.quick else args.batches
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(args.batch * batches, CHANNELS, SIZE, SIZE)).astype(np.float32)
    results = {}
    for architecture in architectures:
        torch.manual_seed(0)
        network = build_network(architecture, CHANNELS).eval()
        onnx_bytes = export_onnx(network, CHANNELS, SIZE)
        model = MorphologyModel.from_bytes(
            onnx_bytes, "cpu", intra_op_threads=args.threads, batch_size=args.batch
        )

        @torch.no_grad()
        def torch_predict(x: np.ndarray, network: torch.nn.Module = network) -> None:
            for start in range(0, len(x), args.batch):
                network(torch.from_numpy(x[start : start + args.batch]))

        ort_rate = _galaxies_per_second(model.predict, images, args.batch, args.repeats)
        torch_rate = _galaxies_per_second(torch_predict, images, args.batch, args.repeats)
        results[architecture] = {
            "parameters": count_parameters(network),
            "onnx_mb": len(onnx_bytes) / 1e6,
            "ort_galaxies_per_s": ort_rate,
            "torch_galaxies_per_s": torch_rate,
            "ort_vs_torch": ort_rate / torch_rate,
        }
        print(
            f"{architecture:16s} {count_parameters(network):>11,d} params  "
            f"ORT {ort_rate:9.1f} gal/s  torch {torch_rate:9.1f} gal/s  "
            f"ratio {ort_rate / torch_rate:5.2f}  ({len(onnx_bytes) / 1e6:.1f} MB ONNX)"
        )
    print("RESULT " + json.dumps({"threads": args.threads, "batch": args.batch, **results}))


if __name__ == "__main__":
    main()
