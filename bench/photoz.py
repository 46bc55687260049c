"""Benchmark of the pixel photo-z against the integrated-flux kNN on the synthetic photo-z sky.

``python bench/photoz.py`` (default ``--n 5000``):

1. draws ``--n`` galaxies of the synthetic photo-z sky (``sample_photoz_sky``: GalSim chromatic
   bulge + disk at known z), rendered in ``--processes`` processes; per-pixel errors are the
   band's sky noise (``sky_noise_errors``), what a Legacy Survey cutout gets;
2. for every combiner, trains the pixel kNN (``galpipe.photoz.workflow.train_photoz``: test
   split by id, k chosen by validation inside the training galaxies) and scores the held-out
   test galaxies beside the same kNN on their integrated (segment) fluxes, fitted on the same
   training galaxies; σ_NMAD, outlier fraction and bias of each, and their ratios;
3. times the pipeline's work per galaxy on 2 threads in one process: the pixel vectors of the
   test cutouts plus the model's prediction (``n_jobs=2``), galaxies per second;
4. with ``--likelihood`` (an experiment, not the pipeline's method), also scores a combiner
   that multiplies the pixels' likelihoods, each weighted by its colour S/N: each pixel's
   neighbours' training redshifts make a kernel density in ln(1 + z), the galaxy's redshift
   maximises the sum over its pixels of their log densities times the pixel's inverse colour
   variance (normalised per galaxy; a floor keeps one pixel from vetoing a redshift).

Prints the ratios pixel/baseline, then ``RESULT {json}`` with the keys ``sigma_nmad``,
``outlier_frac``, ``bias`` (the default combiner, ``mean``), ``baseline_sigma_nmad``,
``baseline_outlier_frac``, ``baseline_bias``, ``per_s``, ``k``, ``n_test``, and every
combiner's figures under ``combiners``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.ndimage import gaussian_filter1d

from galpipe.learning.pixel_redshift import COMBINERS, PixelRedshiftModel
from galpipe.photoz.datasets import synthetic_set
from galpipe.photoz.workflow import PhotozTraining, stamp_centres, train_photoz
from galpipe.science.photoz_metrics import PhotozMetrics, redshift_metrics
from galpipe.science.photoz_pixels import PixelVectors, pixel_vectors
from galpipe.survey.layout import PIXSCALE_ARCSEC

#: Threads of the timed prediction: a worker's two cores.
TIMING_THREADS = 2
#: The likelihood combiner's neighbours per pixel, kernel σ in ln(1 + z), grid step, and the
#: density floor (a share of a flat density over the grid) that bounds one pixel's veto. k and
#: σ were chosen on a 2,500-galaxy sample of seed 0 (k 8 or 32, σ 0.02 or 0.05): measure on
#: another seed.
LIKELIHOOD_K = 8
LIKELIHOOD_BANDWIDTH = 0.05
LIKELIHOOD_STEP = 0.005
LIKELIHOOD_FLOOR = 0.05


def _figures(pixel: PhotozMetrics, base: PhotozMetrics | None, k: int | None) -> dict[str, Any]:
    """The pixel method's figures beside the integrated-flux baseline's, and their ratios."""
    assert base is not None
    return {
        "sigma_nmad": pixel.sigma_nmad,
        "outlier_frac": pixel.outlier_fraction,
        "bias": pixel.bias,
        "baseline_sigma_nmad": base.sigma_nmad,
        "baseline_outlier_frac": base.outlier_fraction,
        "baseline_bias": base.bias,
        "sigma_nmad_ratio": pixel.sigma_nmad / base.sigma_nmad,
        "outlier_frac_ratio": pixel.outlier_fraction / max(base.outlier_fraction, 1e-9),
        "k": k,
        "n_test": pixel.n,
    }


def _vectors(cubes: npt.NDArray[np.float32], sigmas: npt.NDArray[np.float32], model: Any) -> Any:
    return pixel_vectors(
        cubes,
        sigmas,
        stamp_centres(len(cubes), cubes.shape[-1]),
        model.vector_config,
        pixel_scale_arcsec=PIXSCALE_ARCSEC,
    )


def _per_s(model: PixelRedshiftModel, cubes: Any, sigmas: Any, min_seconds: float = 3.0) -> float:
    """Galaxies per second of pixel vectors + prediction, one process, 2 threads."""
    model.n_jobs = TIMING_THREADS
    regressor = model._fitted()[1]  # the timed model queries on the worker's 2 threads
    if hasattr(regressor, "n_jobs"):
        regressor.n_jobs = TIMING_THREADS
    model.predict_galaxies(_vectors(cubes[:64], sigmas[:64], model))  # warm-up
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < min_seconds or done == 0:
        model.predict_galaxies(_vectors(cubes, sigmas, model))
        done += len(cubes)
    return done / elapsed


def likelihood_redshifts(
    model: PixelRedshiftModel,
    vectors: PixelVectors,
    train_z: npt.NDArray[np.float64],
    k: int = LIKELIHOOD_K,
) -> npt.NDArray[np.float64]:
    """Each galaxy's z maximising the S/N-weighted sum of its pixels' log densities.

    Every pixel's ``k`` nearest training pixels (distance-weighted, as the kNN weighs them)
    make a Gaussian kernel density of ln(1 + z); a pixel's log density counts with the weight
    of its colour's inverse variance (the luptitude errors of adjacent bands added in
    quadrature), normalised to a mean of 1 within the galaxy, so a noisy outskirt pixel counts
    less than a pixel of the bright core. ``train_z`` is the redshift of every training pixel
    in the order the model was fitted (the kNN's targets, its ``_y``).
    """
    from galpipe.learning.pixel_redshift import _pixel_design

    scaler, regressor = model._fitted()
    x = scaler.transform(_pixel_design(vectors, model.columns))
    distances, neighbours = regressor.kneighbors(x.astype(np.float32), n_neighbors=k)
    u = np.log1p(train_z[neighbours])  # (P, k)
    weights = 1.0 / np.maximum(distances, 1e-6)
    weights /= weights.sum(axis=1, keepdims=True)
    errors = vectors.features[
        :, [vectors.feature_names.index(f"lup_err_{band}") for band in vectors.bands]
    ].astype(np.float64)
    inverse = 1.0 / (np.square(errors[:, :-1]) + np.square(errors[:, 1:])).sum(axis=1)
    galaxy = vectors.galaxy_index
    n_galaxies = vectors.n_galaxies
    mean_inverse = np.bincount(galaxy, inverse, n_galaxies) / np.maximum(
        np.bincount(galaxy, minlength=n_galaxies), 1
    )
    pixel_weight = inverse / mean_inverse[galaxy]
    top = np.log1p(float(train_z.max())) + 4 * LIKELIHOOD_BANDWIDTH
    grid = np.arange(0.0, top, LIKELIHOOD_STEP)
    cell = np.clip(np.rint(u / LIKELIHOOD_STEP).astype(np.int64), 0, grid.size - 1)
    log_like = np.zeros((n_galaxies, grid.size))
    floor = LIKELIHOOD_FLOOR / grid.size
    for start in range(0, len(u), 16384):
        stop = min(start + 16384, len(u))
        hist = np.zeros((stop - start, grid.size))
        rows = np.repeat(np.arange(stop - start), k)
        np.add.at(hist, (rows, cell[start:stop].ravel()), weights[start:stop].ravel())
        density = gaussian_filter1d(
            hist, LIKELIHOOD_BANDWIDTH / LIKELIHOOD_STEP, axis=1, mode="constant"
        )
        np.add.at(
            log_like, galaxy[start:stop], pixel_weight[start:stop, None] * np.log(density + floor)
        )
    out = np.full(n_galaxies, np.nan)
    has = vectors.n_pixels > 0
    out[has] = np.expm1(grid[np.argmax(log_like[has], axis=1)])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="galaxies (split by id)")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--jobs", type=int, default=TIMING_THREADS, help="threads of training")
    parser.add_argument(
        "--combiners", default=",".join(COMBINERS), help="comma-separated combiners to score"
    )
    parser.add_argument(
        "--likelihood", action="store_true", help="also score the likelihood-product combiner"
    )
    parser.add_argument("--out-json", default=None, help="also write the RESULT line here")
    args = parser.parse_args()

    started = time.perf_counter()
    data = synthetic_set(args.n, seed=args.seed, processes=args.processes)
    print(f"{args.n} galaxies rendered in {time.perf_counter() - started:.0f} s", flush=True)

    combiners: dict[str, Any] = {}
    trainings: dict[str, PhotozTraining] = {}
    for combiner in args.combiners.split(","):
        started = time.perf_counter()
        training = train_photoz(
            data.cubes,
            data.sigmas,
            data.ids,
            data.z_spec,
            combiner=combiner,
            test_fraction=args.test_fraction,
            seed=args.seed,
            n_jobs=args.jobs,
            source=f"bench: synthetic photo-z sky, {args.n} galaxies",
        )
        trainings[combiner] = training
        combiners[combiner] = {
            **_figures(training.test.pixel, training.test.baseline, training.model.k),
            "train_s": time.perf_counter() - started,
        }
        f = combiners[combiner]
        print(
            f"{combiner:>22}: pixel σ_NMAD {f['sigma_nmad']:.4f} outliers "
            f"{100 * f['outlier_frac']:.1f} % bias {f['bias']:+.4f} | baseline σ_NMAD "
            f"{f['baseline_sigma_nmad']:.4f} outliers {100 * f['baseline_outlier_frac']:.1f} % | "
            f"ratios σ_NMAD {f['sigma_nmad_ratio']:.2f}, outliers {f['outlier_frac_ratio']:.2f} "
            f"(k {f['k']}, {f['train_s']:.0f} s)",
            flush=True,
        )

    default = "mean" if "mean" in trainings else next(iter(trainings))
    training = trainings[default]
    test = np.isin(data.ids, training.test.ids)
    per_s = _per_s(training.model, data.cubes[test], data.sigmas[test])
    print(f"pipeline ({default}): {per_s:,.0f} galaxies/s on {TIMING_THREADS} threads")

    if args.likelihood:
        model = training.model
        regressor = model._fitted()[1]
        train_z = np.asarray(regressor._y, dtype=np.float64)
        vectors = _vectors(data.cubes[test], data.sigmas[test], model)
        z = likelihood_redshifts(model, vectors, train_z)
        z_spec = data.z_spec[test]
        figures = redshift_metrics(z, z_spec)
        likelihood = _figures(figures, training.test.baseline, LIKELIHOOD_K)
        combiners["likelihood_product"] = {
            **likelihood,
            "note": f"colour-S/N-weighted; k {LIKELIHOOD_K}, bandwidth {LIKELIHOOD_BANDWIDTH} "
            f"in ln(1+z), on the {default} model's training pixels",
        }
        print(
            f"    likelihood_product: pixel σ_NMAD {figures.sigma_nmad:.4f} outliers "
            f"{100 * figures.outlier_fraction:.1f} % bias {figures.bias:+.4f} | ratio σ_NMAD "
            f"{likelihood['sigma_nmad_ratio']:.2f}",
            flush=True,
        )

    first = combiners[default]
    result = {
        "sigma_nmad": first["sigma_nmad"],
        "outlier_frac": first["outlier_frac"],
        "bias": first["bias"],
        "baseline_sigma_nmad": first["baseline_sigma_nmad"],
        "baseline_outlier_frac": first["baseline_outlier_frac"],
        "baseline_bias": first["baseline_bias"],
        "per_s": per_s,
        "k": first["k"],
        "n_test": first["n_test"],
        "n": args.n,
        "combiner": default,
        "combiners": combiners,
    }
    print(
        "ratios pixel/baseline: "
        + ", ".join(
            f"{name} σ_NMAD {f['sigma_nmad_ratio']:.2f} outliers {f['outlier_frac_ratio']:.2f}"
            for name, f in combiners.items()
        )
    )
    line = "RESULT " + json.dumps(result)
    if args.out_json:
        with open(args.out_json, "w") as fh:
            fh.write(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
