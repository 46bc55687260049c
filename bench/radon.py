"""Benchmark of the Radon science core: the full measurement of (N, 4, 40, 40) float32 batches.

Run ``python bench/radon.py`` (``--quick`` for a smoke run of about a minute). In one process,
on the same synthetic inputs (elongated Gaussian galaxies at random angles and axis ratios,
with noise), it measures:

1. **Core**: :func:`galpipe.science.core.measure_batch` (preprocess -> operator -> pooling,
   fits, errors -> band combination), neighbour masking off (the paper's method), on a batch of
   ``--n`` galaxies (4,096 by default), ``--repeats`` times; the median counts. The same with
   float32 products, and with neighbour masking on (ours; sep runs per galaxy), are printed
   beside it.
2. **Anchor "literal"**: the same pipeline with the transform done by the paper's literal method
   (``scipy.ndimage.rotate(order=3)`` per angle, column sums) -- on ``--anchor-n`` galaxies only
   (it is ~100x slower), timed per galaxy and compared per galaxy.
3. **Anchor "skimage"**: the same with ``skimage.transform.radon`` (circle=True) per band, on the
   same subset, per galaxy.
4. Optionally (``--sparse``) the operator as a thresholded CSR matrix against the dense product.

``peak_rss_mb`` is the process's peak resident set (``ru_maxrss``) read straight after the core
runs, before the anchors: it includes the interpreter, numpy/scipy, the input batch and the
operator. The last line is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from galpipe.science import features
from galpipe.science.core import RadonConfig, measure_batch
from galpipe.science.preprocess import preprocess
from galpipe.science.radon import RadonOperator, literal_radon

TARGET_GALAXIES_PER_S = 1000.0
TARGET_VS_LITERAL = 100.0
TARGET_VS_SKIMAGE = 30.0
TARGET_OPERATOR_MB = 64.0
TARGET_PEAK_RSS_MB = 1024.0
SIZE = 40
BANDS = 4


def make_batch(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy elongated Gaussian galaxies ``(n, 4, 40, 40)`` float32 and their angles."""
    rng = np.random.default_rng(seed)
    beta = rng.uniform(0.0, 180.0, n)
    q = rng.uniform(0.3, 0.9, n)
    sigma = rng.uniform(2.5, 6.0, n)
    offset = np.arange(SIZE, dtype=np.float32) - (SIZE - 1) / 2.0
    y, x = np.meshgrid(offset, offset, indexing="ij")
    phi = np.deg2rad(beta).astype(np.float32)[:, None, None]
    u = x * np.cos(phi) + y * np.sin(phi)
    v = -x * np.sin(phi) + y * np.cos(phi)
    s = sigma.astype(np.float32)[:, None, None]
    galaxy = np.exp(-0.5 * ((u / s) ** 2 + (v / (q.astype(np.float32)[:, None, None] * s)) ** 2))
    band_flux = np.array([0.6, 1.0, 1.3, 1.5], dtype=np.float32)[None, :, None, None]
    images = galaxy[:, None] * band_flux
    images += rng.normal(0.0, 0.02, size=images.shape).astype(np.float32)
    return images.astype(np.float32), beta


def anchor_features(sinograms: np.ndarray) -> np.ndarray:
    """Steps 4-5 and the combination on full sinograms (what the anchors share with the core)."""
    angles = np.arange(181.0)
    pooled = features.max_pool(sinograms)
    fit = features.fit_sinusoid(pooled, angles)
    features.window_drop_error(pooled, angles)
    features.fit_sinusoid(features.projection_variance(sinograms), angles)
    phi = features.peak_angle_to_image_angle(fit.theta0_deg)
    combined = features.combine_axial(phi, fit.theta0_err_deg, np.ones(phi.shape, dtype=bool))
    return np.asarray(combined.angle_deg)


def literal_pipeline(images: np.ndarray) -> np.ndarray:
    """The paper's literal method end to end, one galaxy at a time (as it was written)."""
    out = []
    for galaxy in images:
        stamps = preprocess(galaxy[None]).images[0]
        out.append(anchor_features(literal_radon(stamps)[None])[0])
    return np.asarray(out)


def skimage_pipeline(images: np.ndarray) -> np.ndarray:
    """The same with ``skimage.transform.radon`` (angle sign matched: -theta)."""
    from skimage.transform import radon

    theta = -np.arange(181.0)
    out = []
    with warnings.catch_warnings():
        # Our circle (radius S/2 about (S-1)/2) is a hair larger than skimage's (S//2 about S//2).
        warnings.simplefilter("ignore", UserWarning)
        for galaxy in images:
            stamps = preprocess(galaxy[None]).images[0].astype(np.float64)
            sino = np.stack([radon(band, theta=theta, circle=True) for band in stamps])
            out.append(anchor_features(sino[None])[0])
    return np.asarray(out)


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall time of ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def blas_description() -> str:
    try:
        from threadpoolctl import threadpool_info  # type: ignore[import-not-found]

        return "; ".join(
            f"{i.get('internal_api')} {i.get('version')} threads={i.get('num_threads')}"
            for i in threadpool_info()
        )
    except ImportError:
        pass
    try:
        config = np.show_config(mode="dicts")  # type: ignore[func-returns-value]
        blas = config["Build Dependencies"]["blas"]
        described = f"{blas.get('name')} {blas.get('version')} (threadpoolctl not installed)"
    except Exception:
        described = "unknown"
    env = {
        k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE") if k in os.environ
    }
    return f"{described}; env {env or '{}'}; cpus {os.cpu_count()}"


def sparse_comparison(
    operator: RadonOperator, images: np.ndarray, repeats: int
) -> dict[str, float]:
    """Dense product vs a CSR operator thresholded to keep ~1e-6 accuracy, same inputs."""
    from scipy import sparse

    rows = slice(0, operator._layout.n_inside)
    sym = operator.sym[rows]
    threshold = 1e-7 * float(np.abs(sym).max())
    csr_t = sparse.csr_matrix(np.where(np.abs(sym) >= threshold, sym, 0.0).T)
    flat = images.reshape(-1, SIZE * SIZE).astype(operator.compute_dtype)
    u = np.ascontiguousarray(flat[:, operator._layout.half_pixels[rows]].T)
    dense_s, _ = timed(lambda: u.T @ sym, repeats)
    sparse_s, _ = timed(lambda: (csr_t @ u).T, repeats)
    return {
        "csr_fill": csr_t.nnz / (sym.shape[0] * sym.shape[1]),
        "dense_ms": dense_s * 1e3,
        "csr_ms": sparse_s * 1e3,
        "csr_over_dense": sparse_s / dense_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--n", type=int, default=4096, help="galaxies in the core batch")
    parser.add_argument("--repeats", type=int, default=3, help="core runs (median counts)")
    parser.add_argument("--anchor-n", type=int, default=8, help="galaxies for the anchors")
    parser.add_argument("--chunk-size", type=int, default=256, help="measure_batch chunk")
    parser.add_argument("--cache-dir", type=Path, default=None, help="operator cache directory")
    parser.add_argument("--sparse", action="store_true", help="also time a CSR operator")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.repeats, args.anchor_n = min(args.n, 1024), 2, 2

    print(f"BLAS: {blas_description()}")
    images, truth = make_batch(args.n)
    cache_dir = args.cache_dir or Path(tempfile.gettempdir()) / "galpipe-bench-cache"
    start = time.perf_counter()
    operator = RadonOperator.load_or_build(SIZE, cache_dir=cache_dir)
    print(
        f"operator: {operator.nbytes / 2**20:.1f} MB ({operator.compute_dtype}), "
        f"load/build {time.perf_counter() - start:.1f} s from {cache_dir}"
    )
    config = RadonConfig(mask_neighbours=False)

    def core() -> Any:
        return measure_batch(images, config, operator, chunk_size=args.chunk_size)

    measure_batch(images[:64], config, operator)  # warm-up: threads, allocator
    core_s, result = timed(core, args.repeats)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    per_galaxy_core = core_s / args.n
    galaxies_per_s = args.n / core_s
    err = features.axial_difference(result.angle_image_deg, truth)
    print(
        f"core: {args.n} galaxies in {core_s:.3f} s (median of {args.repeats}) = "
        f"{galaxies_per_s:,.0f} galaxies/s; |angle - truth| median {np.median(err):.2f} deg"
    )

    op32 = RadonOperator(
        operator.size, operator.angles, operator.order, operator.sym, operator.anti, np.float32
    )
    core32_s, _ = timed(
        lambda: measure_batch(images, config, op32, chunk_size=args.chunk_size), args.repeats
    )
    print(f"core, float32 products: {args.n / core32_s:,.0f} galaxies/s")

    masked_per_s = None
    try:
        import galpipe.science.neighbours  # noqa: F401 -- only whether it is there
    except ImportError:
        print("core with neighbour masking: skipped (galpipe.science.neighbours absent)")
    else:
        n_masked = min(args.n, 1024)
        masked_s, _ = timed(
            lambda: measure_batch(images[:n_masked], RadonConfig(), operator), args.repeats
        )
        masked_per_s = n_masked / masked_s
        print(f"core with neighbour masking (ours, on {n_masked}): {masked_per_s:,.0f} galaxies/s")

    subset = images[: args.anchor_n]
    literal_pipeline(images[:1])  # warm-up, as the core had
    skimage_pipeline(images[:1])
    literal_s, literal_angles = timed(lambda: literal_pipeline(subset), 1)
    skimage_s, skimage_angles = timed(lambda: skimage_pipeline(subset), 1)
    per_galaxy_literal = literal_s / args.anchor_n
    per_galaxy_skimage = skimage_s / args.anchor_n
    vs_literal = per_galaxy_literal / per_galaxy_core
    vs_skimage = per_galaxy_skimage / per_galaxy_core
    print(
        f"literal anchor: {per_galaxy_literal * 1e3:.1f} ms/galaxy on {args.anchor_n} galaxies "
        f"(scaled per galaxy) -> core is {vs_literal:,.0f}x"
    )
    print(
        f"skimage anchor: {per_galaxy_skimage * 1e3:.1f} ms/galaxy on {args.anchor_n} galaxies "
        f"(scaled per galaxy) -> core is {vs_skimage:,.0f}x"
    )
    agree_literal = features.axial_difference(
        literal_angles, result.angle_image_deg[: args.anchor_n]
    )
    agree_skimage = features.axial_difference(
        skimage_angles, result.angle_image_deg[: args.anchor_n]
    )
    print(
        f"same answers: core vs literal max {agree_literal.max():.2e} deg, "
        f"vs skimage max {agree_skimage.max():.2f} deg"
    )

    extra: dict[str, Any] = {}
    if args.sparse:
        extra = sparse_comparison(operator, images[: min(args.n, 256)], args.repeats)
        print(
            f"sparse: CSR fill {extra['csr_fill']:.2f}, dense {extra['dense_ms']:.1f} ms, "
            f"CSR {extra['csr_ms']:.1f} ms ({extra['csr_over_dense']:.1f}x slower)"
        )

    operator_mb = operator.nbytes / 2**20
    checks = {
        "galaxies_per_s": galaxies_per_s >= TARGET_GALAXIES_PER_S,
        "vs_literal": vs_literal >= TARGET_VS_LITERAL,
        "vs_skimage": vs_skimage >= TARGET_VS_SKIMAGE,
        "operator_mb": operator_mb <= TARGET_OPERATOR_MB,
        "peak_rss_mb": peak_rss_mb <= TARGET_PEAK_RSS_MB,
    }
    for key, ok in checks.items():
        print(f"target {key}: {'met' if ok else 'MISSED'}")
    result_json = {
        "galaxies_per_s": round(galaxies_per_s, 1),
        "vs_literal": round(vs_literal, 1),
        "vs_skimage": round(vs_skimage, 1),
        "operator_mb": round(operator_mb, 1),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "galaxies_per_s_float32": round(args.n / core32_s, 1),
        "galaxies_per_s_with_masking": None if masked_per_s is None else round(masked_per_s, 1),
        "n": args.n,
        "anchor_n": args.anchor_n,
        "median_abs_err_deg": round(float(np.median(err)), 3),
        "targets_met": all(checks.values()),
        **{k: round(v, 3) for k, v in extra.items()},
    }
    print("RESULT " + json.dumps(result_json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
