"""Benchmark of the Radon science core on a GPU against the numpy core on the CPU.

Run ``python bench/radon_gpu.py`` on a machine with a CUDA device (without one it runs the same
code on torch's CPU device, ``--device cpu``: a smoke run whose speeds say nothing of a GPU).
In one process:

1. **Truth population**: ``--truth-n`` galaxies of the validation's truth population (GalSim,
   the cutout service's FITS decoded by the pipelines' decoder, neighbours included), step 2
   (sanitising, sky, neighbour masking, circular mask) on the CPU.
2. **Accuracy**: the whole measurement (``measure_batch``) with steps 3-5 on the device in each
   precision against float64 on the device, and float64 on the device against numpy: median
   and 99th percentile of the combined angle's change, degrees. A precision is fit for the
   worker when its median change is at most 0.05 degrees (``PRECISION_TOLERANCE_DEG``).
3. **Core alone** (steps 3-5: transform, pooling, projection variance, sinusoid fits,
   window-drop errors, results back on the host): the truth stamps tiled to ``--n`` galaxies,
   in chunks of ``--chunk``; timed with the stamps already on the device and with the copy
   from pinned host memory. Galaxies/s per precision.
4. **Anchor**: the numpy core's steps 3-5 (:func:`galpipe.science.core.fit_sinograms`, float64
   products, the CPU worker's path) on ``--cpu-n`` of the same stamps on this host's CPUs.
   Every device figure is printed as a ratio to it.
5. **Whole measurement per process**: ``measure_batch`` with the GPU fitter, step 2 included
   (one CPU process), galaxies/s: what one decode process can feed.
6. **The worker from stored cutouts** (``--worker-n``, 0 to skip): the truth population's
   FITS files, as the fetch pipeline stores them, in a local object store; the radon worker's
   path without its database round trips: ``--decode-processes`` decode processes
   (:class:`galpipe.pipelines.decode_processes.DecodeProcesses`) read, check the SHA-256,
   decode and prepare batches of ``--worker-batch``, and the worker process measures each
   batch at once with steps 3-5 on the device. Galaxies/s, against the numpy worker path
   (the same decode processes, steps 3-5 on the CPU) in the same process.

With ``--profile`` it also prints ``torch.profiler``'s top operations of one core chunk in the
worker's precision (device time on a GPU): where the core's time goes.

The last line is ``RESULT {json}``; its keys ``core_per_s`` (the fastest precision within the
tolerance, with the copy from host memory), ``worker_per_s`` (the worker with steps 3-5 on the
device; null with ``--worker-n 0``), ``median_vs_fp64_deg`` (that precision's median change of
the combined angle against float64) and ``device`` sum it up.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from galpipe.db.cutouts import CutoutRecord
from galpipe.gpu.sinograms import PRECISIONS, TorchSinogramFitter
from galpipe.pipelines.decode_processes import DecodeProcesses
from galpipe.science.core import (
    FitSinograms,
    RadonConfig,
    concatenate_stamps,
    fit_sinograms,
    measure_batch,
    measure_prepared,
    prepare_stamps,
)
from galpipe.science.features import axial_difference
from galpipe.science.radon import RadonOperator
from galpipe.storage import LocalObjectStore
from galpipe.survey.layout import BANDS, CUTOUT_SIZE_PX, PIXSCALE_ARCSEC
from galpipe.synthetic.fitsfile import cutout_fits_bytes
from galpipe.validation.population import PopulationConfig, make_population

#: Largest median change of the combined angle (degrees) that lets a reduced precision run.
PRECISION_TOLERANCE_DEG = 0.05
TARGET_CORE_GALAXIES_PER_S = 1_000_000


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``repeats`` calls, seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def synchronised(device: torch.device, fn: Callable[[], Any]) -> Callable[[], None]:
    def run() -> None:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return run


def profile_chunk(
    fitter: TorchSinogramFitter, stamps: torch.Tensor, weights: torch.Tensor, config: RadonConfig
) -> None:
    """Print the operations that take the time of steps 3-5 on one chunk (three calls)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    sort_by = "cpu_time_total"
    if fitter.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
        sort_by = "cuda_time_total"
    run = synchronised(fitter.device, lambda: fitter.fit_chunk(stamps, weights, config))
    with torch.inference_mode():
        run()  # warm-up
        with torch.profiler.profile(activities=activities) as profiler:
            for _ in range(3):
                run()
    print(f"profile of 3 chunks of {stamps.shape[0]} galaxies, {fitter.precision}:")
    print(profiler.key_averages().table(sort_by=sort_by, row_limit=25, max_name_column_width=48))


def stored_cutouts(population_truths: tuple, n: int, root: str) -> list[CutoutRecord]:
    """``n`` cutout records over the truths' FITS files, stored as the fetch pipeline does
    (the truths repeat under new ids when ``n`` is larger)."""
    store = LocalObjectStore(root)
    blobs = [cutout_fits_bytes(t) for t in population_truths]
    records = []
    for i in range(n):
        raw = blobs[i % len(blobs)]
        key = f"cutouts/bench/{i}.fits"
        store.put(key, raw)
        records.append(
            CutoutRecord(
                source_id=i,
                layer="ls-dr10",
                bands=BANDS,
                missing_bands="",
                size=CUTOUT_SIZE_PX,
                pixscale=PIXSCALE_ARCSEC,
                survey=None,
                object_key=key,
                sha256=hashlib.sha256(raw).hexdigest(),
                nbytes=len(raw),
            )
        )
    return records


def worker_rate(
    decoders: DecodeProcesses,
    records: list[CutoutRecord],
    batch: int,
    config: RadonConfig,
    operator: RadonOperator,
    fitter: FitSinograms | None,
) -> float:
    """Galaxies/s of the worker path over ``records``, two batches in flight (the worker
    claims the next batch while it measures one)."""
    start = time.perf_counter()
    batches = [records[i : i + batch] for i in range(0, len(records), batch)]
    pending = decoders.submit([(r.source_id, r) for r in batches[0]])
    measured = 0
    for k in range(len(batches)):
        chunks = [f.result() for f in pending]
        if k + 1 < len(batches):
            pending = decoders.submit([(r.source_id, r) for r in batches[k + 1]])
        stamps = concatenate_stamps([c.stamps for c in chunks if c.stamps is not None])
        m = measure_prepared(stamps, config, operator, chunk_size=batch, sinogram_fitter=fitter)
        measured += m.angle_image_deg.shape[0]
    if measured != len(records):
        raise RuntimeError(f"worker path measured {measured} of {len(records)} cutouts")
    return measured / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="torch device (default: cuda when there is one; cpu runs the code, no GPU figure)",
    )
    parser.add_argument("--truth-n", type=int, default=4000)
    parser.add_argument("--n", type=int, default=262_144, help="galaxies of the core timing")
    parser.add_argument("--chunk", type=int, default=16_384)
    parser.add_argument("--cpu-n", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--worker-n", type=int, default=40_000)
    parser.add_argument("--worker-batch", type=int, default=2048)
    parser.add_argument("--decode-processes", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print torch.profiler's top operations of one core chunk in the worker's precision",
    )
    args = parser.parse_args()
    precisions = [p for p in args.precisions.split(",") if p]

    config = RadonConfig()
    operator = RadonOperator.load_or_build(config.size, config.angles, config.order)
    t0 = time.perf_counter()
    population = make_population(
        PopulationConfig(n=args.truth_n, seed=args.seed), workers=args.processes
    )
    render_s = time.perf_counter() - t0
    images = population.images
    print(f"truth population: {len(population)} galaxies rendered in {render_s:.1f} s")

    # -- accuracy on the truth population ---------------------------------------------------
    fitters = {p: TorchSinogramFitter(operator, args.device, p) for p in precisions}  # type: ignore[arg-type]
    reference = measure_batch(images, config, operator)
    exact = measure_batch(images, config, operator, sinogram_fitter=fitters["float64"])
    accuracy: dict[str, dict[str, float]] = {}

    def change(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
        diff = axial_difference(a, b)
        diff = diff[np.isfinite(diff)]
        return {
            "median_deg": float(np.median(diff)),
            "p99_deg": float(np.percentile(diff, 99)),
            "max_deg": float(diff.max()),
        }

    accuracy["float64_vs_numpy"] = change(exact.angle_image_deg, reference.angle_image_deg)
    for precision in precisions:
        if precision == "float64":
            continue
        m = measure_batch(images, config, operator, sinogram_fitter=fitters[precision])
        accuracy[f"{precision}_vs_float64"] = change(m.angle_image_deg, exact.angle_image_deg)
        same_flags = float(np.mean(m.flags == exact.flags))
        accuracy[f"{precision}_vs_float64"]["same_flags_fraction"] = same_flags
    for key, value in accuracy.items():
        print(f"accuracy {key}: " + ", ".join(f"{k} {v:.3g}" for k, v in value.items()))

    # -- core alone -----------------------------------------------------------------------------
    stamps = prepare_stamps(images, config, None)
    reps = -(-args.n // len(population))
    tiled = np.ascontiguousarray(np.tile(stamps.images, (reps, 1, 1, 1))[: args.n])
    weights = np.ascontiguousarray(np.tile(stamps.weights, (reps, 1))[: args.n])
    device = fitters[precisions[0]].device
    on_device = torch.as_tensor(tiled).to(device)
    weights_device = torch.as_tensor(weights).to(device)
    host = torch.as_tensor(tiled)
    if device.type == "cuda":
        host = host.pin_memory()
    chunk = args.chunk
    core: dict[str, dict[str, float]] = {}
    for precision in precisions:
        fitter = fitters[precision]

        def resident(fitter: TorchSinogramFitter = fitter) -> None:
            with torch.inference_mode():
                for start in range(0, args.n, chunk):
                    stop = min(args.n, start + chunk)
                    fitter.fit_chunk(on_device[start:stop], weights_device[start:stop], config)

        def copied(fitter: TorchSinogramFitter = fitter) -> None:
            with torch.inference_mode():
                for start in range(0, args.n, chunk):
                    stop = min(args.n, start + chunk)
                    batch = host[start:stop].to(device, non_blocking=True)
                    fitter.fit_chunk(batch, weights_device[start:stop], config)

        synchronised(device, resident)()  # warm-up: kernels, allocator
        t_resident = timed(synchronised(device, resident), args.repeats)
        t_copied = timed(synchronised(device, copied), args.repeats)
        core[precision] = {
            "resident_galaxies_per_s": args.n / t_resident,
            "with_copy_galaxies_per_s": args.n / t_copied,
        }
        print(
            f"core {precision}: {args.n / t_resident:,.0f} galaxies/s on the device, "
            f"{args.n / t_copied:,.0f} with the copy from host memory"
        )

    # -- anchor: the numpy core on this host ------------------------------------------------
    cpu_n = min(args.cpu_n, args.n)
    t_cpu = timed(
        lambda: fit_sinograms(tiled[:cpu_n], weights[:cpu_n], operator, config, 256),
        max(1, min(3, args.repeats)),
    )
    cpu_rate = cpu_n / t_cpu
    print(f"anchor: numpy steps 3-5 {cpu_rate:,.0f} galaxies/s ({torch.get_num_threads()} threads)")

    # -- the fastest precision within the tolerance: the worker's ------------------------------
    def median_vs_float64(precision: str) -> float:
        """The precision's median change of the combined angle (float64's own: 0)."""
        return accuracy.get(f"{precision}_vs_float64", {"median_deg": 0.0})["median_deg"]

    best = min(
        (p for p in precisions if median_vs_float64(p) <= PRECISION_TOLERANCE_DEG),
        key=lambda p: -core[p]["with_copy_galaxies_per_s"],
    )
    if args.profile:
        profile_chunk(fitters[best], on_device[:chunk], weights_device[:chunk], config)

    # -- the whole measurement in one process (step 2 on the CPU) ---------------------------
    t_whole = timed(
        lambda: measure_batch(images, config, operator, sinogram_fitter=fitters[best]),
        max(1, min(3, args.repeats)),
    )
    whole_rate = len(population) / t_whole
    print(f"whole measure_batch, one process, {best}: {whole_rate:,.0f} galaxies/s")

    # -- the worker from stored cutouts -------------------------------------------------------
    worker: dict[str, float] = {}
    if args.worker_n > 0:
        with tempfile.TemporaryDirectory() as root:
            records = stored_cutouts(population.truths, args.worker_n, root)
            decoders = DecodeProcesses(args.decode_processes, f"file://{root}", None, config)
            try:
                worker_rate(
                    decoders,
                    records[: args.worker_batch],
                    args.worker_batch,
                    config,
                    operator,
                    fitters[best],
                )  # warm-up: spawn, imports, operator
                worker["device_galaxies_per_s"] = worker_rate(
                    decoders, records, args.worker_batch, config, operator, fitters[best]
                )
                numpy_n = min(len(records), 4 * args.worker_batch * args.decode_processes)
                worker["numpy_galaxies_per_s"] = worker_rate(
                    decoders, records[:numpy_n], args.worker_batch, config, operator, None
                )
            finally:
                decoders.close()
        worker["decode_processes"] = args.decode_processes
        worker["device_vs_numpy"] = worker["device_galaxies_per_s"] / worker["numpy_galaxies_per_s"]
        worker["per_decode_process_galaxies_per_s"] = (
            worker["device_galaxies_per_s"] / args.decode_processes
        )
        print(
            f"worker from stored cutouts, {args.decode_processes} decode processes: "
            f"{worker['device_galaxies_per_s']:,.0f} galaxies/s with steps 3-5 on the device, "
            f"{worker['numpy_galaxies_per_s']:,.0f} with numpy"
        )

    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        # The summary: the worker's precision, with the copy from host memory.
        "core_per_s": core[best]["with_copy_galaxies_per_s"],
        "worker_per_s": worker.get("device_galaxies_per_s"),
        "median_vs_fp64_deg": median_vs_float64(best),
        "truth_n": len(population),
        "core_n": args.n,
        "chunk": chunk,
        "accuracy": accuracy,
        "core": core,
        "anchor_numpy_galaxies_per_s": cpu_rate,
        "core_vs_anchor": {p: core[p]["with_copy_galaxies_per_s"] / cpu_rate for p in precisions},
        "fastest_fit_precision": best,
        "whole_measure_batch_one_process_galaxies_per_s": whole_rate,
        "worker": worker,
        "goal_worker_galaxies_per_s": 20_000,
        "goal_core_galaxies_per_s": TARGET_CORE_GALAXIES_PER_S,
        "precision_tolerance_deg": PRECISION_TOLERANCE_DEG,
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
