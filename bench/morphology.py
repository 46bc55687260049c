"""Benchmark of the morphology network on a synthetic Galaxy Zoo, against its vote-noise floor.

``python bench/morphology.py`` (a GPU machine: ``--n 60000``; here ``--quick``):

1. draws ``--n`` galaxies of the synthetic Galaxy Zoo (``sample_galaxy_zoo``: brightness, size
   and S/N of the radon validation population, S/N log-uniform on 5-200, 40 volunteers each),
   rendered in ``--processes`` processes;
2. for each ``--modes`` rendering of the cutouts into the network's input, trains
   ``--architecture`` with the paper's schedule (``galpipe.morphology.workflow.train_model``:
   split 80/10/10 by id, Adam 1.5e-4, x0.8 on a 4-epoch plateau, early stop after 10,
   rotations and flips, mixed precision on CUDA) up to ``--epochs`` epochs;
3. scores the test split through ONNX Runtime against the volunteers' votes, overall and by
   S/N bin, beside the anchor of this run: the vote-noise floor, the RMSE that the true
   fractions themselves score against the votes (no model can do better on average);
4. computes the information reference of up to ``--reference-n`` test galaxies at S/N > 30
   (``galpipe.synthetic.galaxy_zoo_fisher``): what a model that knew the generative model
   would score, from the Fisher information of each stamp and the population's prior, to first
   order; and the Bayes predictor of up to ``--posterior-n`` of them
   (``galpipe.synthetic.galaxy_zoo_posterior``): the posterior mean of the true fractions given
   each test stamp, by MCMC (each galaxy's kind and a disk's bar and arms inferred too, unless
   ``--posterior-known``), scored against the votes beside the network on the same galaxies;
5. scores the network averaged over the 8 rotations by 90 degrees and mirrorings of each test
   image (``rmse_dihedral_mean``): what test-time augmentation would gain;
6. times inference on 2 CPU threads (ONNX Runtime, the worker's runtime) and on the GPU
   (PyTorch, fp32 and bf16 autocast), and training images per second.

Prints the ratios to the floor, then ``RESULT {json}`` with the keys ``rmse``, ``rmse_floor``,
``rmse_snr30``, ``rmse_floor_snr30``, ``ratio_reference_snr30``, ``ratio_posterior_snr30``,
``six_class_accuracy``,
``cpu_per_s``, ``gpu_per_s``, ``train_images_per_s`` (of the first mode), and every mode's
figures under ``modes``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from dataclasses import fields
from typing import Any

import numpy as np
import numpy.typing as npt

from galpipe.learning.dataset import LabelledImages
from galpipe.learning.inference import MorphologyModel
from galpipe.science import gz2
from galpipe.science.morphology_input import network_input
from galpipe.synthetic.galaxy_zoo import sample_galaxy_zoo, vote_noise_floor
from galpipe.synthetic.galaxy_zoo_fisher import fisher_reference
from galpipe.synthetic.galaxy_zoo_posterior import posterior_reference

#: S/N bin edges of the report (r-band half-light S/N of the population, 5-200).
SNR_EDGES = (5.0, 10.0, 20.0, 30.0, 50.0, 100.0, 200.0)
#: The goal: RMSE within this factor of the vote-noise floor for S/N > 30 (docs/morphology.md).
GOAL_RATIO_SNR30 = 1.15


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _rmse(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def _per_s(predict: Any, images: npt.NDArray[np.float32], min_seconds: float = 2.0) -> float:
    predict(images[:256])  # warm-up
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < min_seconds or done == 0:
        predict(images)
        done += len(images)
    return done / elapsed


def _gpu_per_s(network: Any, images: npt.NDArray[np.float32]) -> dict[str, float]:
    import torch

    if not torch.cuda.is_available():
        return {}
    model = network.to("cuda").eval()
    batch = torch.from_numpy(images[:4096]).to("cuda")
    out: dict[str, float] = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):

        def run(_: object, dtype: Any = dtype) -> None:
            with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                for start in range(0, len(batch), 1024):
                    model(batch[start : start + 1024])
            torch.cuda.synchronize()

        out[name] = _per_s(run, images[:4096], min_seconds=2.0)
    # The copy from host memory, as a worker would do it, with the inference in fp32.
    pinned = torch.from_numpy(images[:4096]).pin_memory()

    def with_copy(_: object) -> None:
        with torch.no_grad():
            for start in range(0, len(pinned), 1024):
                model(pinned[start : start + 1024].to("cuda", non_blocking=True))
        torch.cuda.synchronize()

    out["fp32_with_copy"] = _per_s(with_copy, images[:4096], min_seconds=2.0)
    network.cpu()
    return out


def _dihedral_mean(network: Any, images: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """The network's fractions averaged over the 8 rotations by 90 degrees and mirrorings of
    each image: what test-time augmentation would gain on a rotation-invariant problem."""
    import torch

    from galpipe.learning.networks import predict_fractions

    network.to("cuda" if torch.cuda.is_available() else "cpu")
    total = np.zeros((len(images), gz2.N_ANSWERS))
    for mirrored in (images, images[..., ::-1]):
        for turns in range(4):
            total += predict_fractions(network, np.rot90(mirrored, turns, axes=(2, 3)).copy())
    network.cpu()
    return total / 8.0


def _bins(
    snr: npt.NDArray[np.float64],
    predicted: npt.NDArray[np.float64],
    votes: npt.NDArray[np.float64],
    true: npt.NDArray[np.float64],
    n_volunteers: int,
) -> list[dict[str, float]]:
    rows = []
    for low, high in itertools.pairwise(SNR_EDGES):
        m = (snr >= low) & (snr < high)
        if m.sum() < 20:
            continue
        floor = vote_noise_floor(true[m], n_volunteers)
        rmse = _rmse(predicted[m], votes[m])
        rows.append(
            {
                "snr_low": low,
                "snr_high": high,
                "n": int(m.sum()),
                "rmse": rmse,
                "rmse_floor": floor,
                "ratio": rmse / floor,
                "rmse_vs_truth": _rmse(predicted[m], true[m]),
            }
        )
    return rows


def _reference(
    sample: Any, test: npt.NDArray[np.intp], args: argparse.Namespace
) -> dict[str, float]:
    """The information reference of the test galaxies at S/N > 30 (at most --reference-n):
    what a model that knew the generative model would score, to first order. Every mode has
    the same test split: computed once."""
    key = tuple(test.tolist())
    if key not in _REFERENCES:
        _REFERENCES[key] = _compute_reference(sample, test, args)
    return _REFERENCES[key]


#: The reference of each test split (:func:`_reference`).
_REFERENCES: dict[tuple[int, ...], dict[str, float]] = {}


def _compute_reference(
    sample: Any, test: npt.NDArray[np.intp], args: argparse.Namespace
) -> dict[str, float]:
    index = test[sample.morphologies.snr[test] > 30.0]
    result = _posterior(sample, index[: args.posterior_n], args)
    morphologies, true = sample.morphologies.take(index), sample.true_fractions[index]
    n = min(args.reference_n, len(true))
    if n == 0:
        return result
    started = time.perf_counter()
    reference = fisher_reference(morphologies.take(np.arange(n)), processes=args.processes)
    floor = vote_noise_floor(true[:n])
    rmse = reference.rmse(floor, true[:n])
    return {
        **result,
        "rmse_reference_snr30": rmse,
        "ratio_reference_snr30": rmse / floor,
        # Its error against the true fractions, with the same cap as its RMSE.
        "reference_vs_truth_snr30": float(np.sqrt(rmse**2 - floor**2)),
        "reference_n": n,
        "reference_seconds": time.perf_counter() - started,
    }


def _posterior(
    sample: Any, index: npt.NDArray[np.intp], args: argparse.Namespace
) -> dict[str, Any]:
    """The Bayes predictor's RMSE against the votes on the test galaxies ``index``."""
    if len(index) == 0:
        return {}
    started = time.perf_counter()
    reference = posterior_reference(
        sample.morphologies.take(index),
        sample.stamps[index],
        known_kind=args.posterior_known != "none",
        known_structure=args.posterior_known == "structure",
        seed=args.seed,
        processes=args.processes,
    )
    votes, true = sample.vote_fractions[index], sample.true_fractions[index]
    floor = vote_noise_floor(true)
    rmse = _rmse(reference.fractions, votes)
    return {
        "rmse_posterior_snr30": rmse,
        "ratio_posterior_snr30": rmse / floor,
        "posterior_vs_truth_snr30": _rmse(reference.fractions, true),
        "posterior_n": len(index),
        "posterior_ids": sample.ids[index].tolist(),
        "posterior_acceptance_median": float(np.median(reference.acceptance)),
        "posterior_known": args.posterior_known,
        "posterior_seconds": time.perf_counter() - started,
    }


def _run_mode(mode: str, sample: Any, args: argparse.Namespace) -> dict[str, Any]:
    from galpipe.learning.training import TrainingConfig
    from galpipe.morphology.workflow import train_model

    data = LabelledImages(
        ids=sample.ids,
        images=network_input(sample.stamps, mode),
        fractions=sample.vote_fractions,
        source=f"synthetic Galaxy Zoo n={len(sample)}",
    )
    config = TrainingConfig(
        learning_rate=args.learning_rate,
        plateau_factor=args.plateau_factor,
        plateau_patience=args.plateau_patience,
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        device=args.device,
        seed=args.seed,
        max_seconds=None if args.max_train_minutes is None else 60.0 * args.max_train_minutes,
    )
    started = time.perf_counter()

    def progress(r: Any) -> None:
        print(
            f"  [{mode}] epoch {r.epoch:3d} train {r.train_rmse:.4f} val {r.val_rmse:.4f} "
            f"lr {r.learning_rate:.1e} {r.images_per_second:,.0f} img/s",
            flush=True,
        )

    trained = train_model(
        data, architecture=args.architecture, input_mode=mode, config=config, on_epoch=progress
    )
    train_s = time.perf_counter() - started
    test = trained.test_index
    images = data.images[test]
    cpu_model = MorphologyModel.from_bytes(trained.onnx_bytes, device="cpu", intra_op_threads=2)
    predicted = cpu_model.predict(images)
    votes, true = sample.vote_fractions[test], sample.true_fractions[test]
    snr = sample.morphologies.snr[test]
    hi = snr > 30.0
    dihedral = _dihedral_mean(trained.network, images)
    floor, floor30 = vote_noise_floor(true), vote_noise_floor(true[hi])
    mean_prediction = np.broadcast_to(
        data.fractions[np.setdiff1d(sample.ids - 1, test)].mean(0), votes.shape
    )
    if args.save_test:
        # Per-galaxy test results, to study where the model departs from the floor.
        np.savez_compressed(
            f"{args.save_test}-{mode}.npz",
            predicted=predicted.astype(np.float32),
            votes=votes.astype(np.float32),
            true=true.astype(np.float32),
            **{
                f.name: np.asarray(getattr(record, f.name))[test]
                for record in (sample.morphologies, sample.features)
                for f in fields(record)
            },
        )
    reference = dict(_reference(sample, test, args))
    if "posterior_ids" in reference:
        # The network on the galaxies the Bayes predictor was computed for.
        same = np.isin(sample.ids[test], reference.pop("posterior_ids"))
        reference["ratio_network_on_posterior_galaxies"] = _rmse(
            predicted[same], votes[same]
        ) / vote_noise_floor(true[same])
    true_codes, _ = gz2.six_class(true)
    vote_codes, _ = gz2.six_class(votes)
    pred_codes, _ = gz2.six_class(predicted)
    return {
        "mode": mode,
        "architecture": args.architecture,
        "n_test": len(test),
        "epochs_run": len(trained.history),
        "stopped_for_time": trained.extra["stopped_for_time"],
        "best_epoch": trained.extra["best_epoch"],
        "train_seconds": train_s,
        "rmse": _rmse(predicted, votes),
        "rmse_floor": floor,
        "rmse_snr30": _rmse(predicted[hi], votes[hi]),
        "rmse_floor_snr30": floor30,
        "rmse_vs_truth": _rmse(predicted, true),
        "rmse_snr30_dihedral_mean": _rmse(dihedral[hi], votes[hi]),
        "rmse_dihedral_mean": _rmse(dihedral, votes),
        "rmse_mean_prediction": _rmse(mean_prediction, votes),
        **reference,
        "six_class_accuracy": float(np.mean(pred_codes == vote_codes)),
        "six_class_accuracy_vs_true": float(np.mean(pred_codes == true_codes)),
        "six_class_ceiling": float(np.mean(true_codes == vote_codes)),
        "by_snr": _bins(snr, predicted, votes, true, sample.n_volunteers),
        "cpu_per_s": _per_s(cpu_model.predict, images[:2048]),
        "gpu_per_s": _gpu_per_s(trained.network, images),
        "train_images_per_s": trained.extra["train_images_per_s"],
        "onnx_max_abs_diff": trained.onnx_max_abs_diff,
        "onnx_bytes": len(trained.onnx_bytes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60000, help="galaxies (80/10/10 split)")
    parser.add_argument("--architecture", default="efficientnet_b0")
    parser.add_argument("--modes", default="asinh_bands", help="comma-separated input modes")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=1e-3,
        help="Adam's initial rate; the GZ2 report's 1.5e-4 is for fine-tuning ImageNet weights",
    )
    parser.add_argument(
        "--plateau-factor", type=float, default=0.8, help="learning rate x this on a plateau"
    )
    parser.add_argument(
        "--plateau-patience", type=int, default=4, help="epochs without improvement that make one"
    )
    parser.add_argument(
        "--reference-n",
        type=int,
        default=2000,
        help="test galaxies at S/N > 30 the information reference is computed for (0: none)",
    )
    parser.add_argument(
        "--posterior-n",
        type=int,
        default=32,
        help="test galaxies at S/N > 30 the Bayes predictor is computed for (0: none; "
        "about two minutes of one core each)",
    )
    parser.add_argument(
        "--posterior-known",
        choices=("none", "kind", "structure"),
        default="none",
        help="what the Bayes predictor is told besides the centre: none (it infers each "
        "galaxy's kind and a disk's bar and arms), the kind, or the kind and the structure "
        "(about a third of the time per galaxy)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--max-train-minutes",
        type=float,
        default=None,
        help="each mode's training budget (a device's time limit): no epoch past it",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--quick", action="store_true", help="a CPU smoke run: small CNN, 3000")
    parser.add_argument("--out-json", default=None, help="also write the RESULT line here")
    parser.add_argument(
        "--save-test", default=None, help="PREFIX: per-galaxy test results to PREFIX-MODE.npz"
    )
    args = parser.parse_args()
    if not args.quick and args.n == parser.get_default("n") and not _cuda_available():
        # `make bench` runs every benchmark on the development machine: the full run is a
        # GPU's work (hours on 2 cores), so without one the smoke run stands in, and says so.
        print("no CUDA device: running the --quick smoke run (pass --n to force a full one)")
        args.quick = True
    if args.quick:
        args.n, args.architecture, args.epochs = min(args.n, 3000), "small_cnn", min(args.epochs, 3)
        args.posterior_n = min(args.posterior_n, 2)
    started = time.perf_counter()
    sample = sample_galaxy_zoo(args.n, seed=args.seed, processes=args.processes)
    print(f"rendered {args.n} galaxies in {time.perf_counter() - started:.1f} s", flush=True)
    modes = [_run_mode(mode, sample, args) for mode in args.modes.split(",")]
    for m in modes:
        print(
            f"{m['mode']:<12} {m['architecture']}: RMSE {m['rmse']:.4f} = "
            f"{m['rmse'] / m['rmse_floor']:.3f} x floor {m['rmse_floor']:.4f}; S/N>30 "
            f"{m['rmse_snr30']:.4f} = {m['rmse_snr30'] / m['rmse_floor_snr30']:.3f} x floor "
            f"(goal <= {GOAL_RATIO_SNR30}); mean prediction {m['rmse_mean_prediction']:.4f}; "
            f"six-class {m['six_class_accuracy']:.3f} (ceiling {m['six_class_ceiling']:.3f})"
        )
        print(
            f"    averaged over the 8 rotations and mirrorings: RMSE {m['rmse_dihedral_mean']:.4f}"
            f", S/N>30 {m['rmse_snr30_dihedral_mean'] / m['rmse_floor_snr30']:.3f} x floor"
        )
        if "ratio_reference_snr30" in m:
            print(
                f"    information reference at S/N>30 ({m['reference_n']} galaxies): RMSE "
                f"{m['rmse_reference_snr30']:.4f} = {m['ratio_reference_snr30']:.3f} x floor"
            )
        if "ratio_posterior_snr30" in m:
            print(
                f"    Bayes predictor at S/N>30 ({m['posterior_n']} galaxies, MCMC): "
                f"{m['ratio_posterior_snr30']:.3f} x floor; the network on them "
                f"{m['ratio_network_on_posterior_galaxies']:.3f} x"
            )
        for b in m["by_snr"]:
            print(
                f"    S/N {b['snr_low']:>5.0f}-{b['snr_high']:<5.0f} n {b['n']:5d} "
                f"RMSE {b['rmse']:.4f} floor {b['rmse_floor']:.4f} ratio {b['ratio']:.3f}"
            )
    first = modes[0]
    gpu = first["gpu_per_s"].get("fp32_with_copy")
    result = {
        **{k: first[k] for k in ("rmse", "rmse_floor", "rmse_snr30", "rmse_floor_snr30")},
        "six_class_accuracy": first["six_class_accuracy"],
        "cpu_per_s": first["cpu_per_s"],
        "gpu_per_s": gpu,
        "train_images_per_s": first["train_images_per_s"],
        "ratio_snr30_vs_floor": first["rmse_snr30"] / first["rmse_floor_snr30"],
        "ratio_vs_floor": first["rmse"] / first["rmse_floor"],
        "ratio_reference_snr30": first.get("ratio_reference_snr30"),
        "ratio_posterior_snr30": first.get("ratio_posterior_snr30"),
        "n": args.n,
        "modes": modes,
    }
    line = "RESULT " + json.dumps(result)
    if args.out_json:
        with open(args.out_json, "w") as f:
            f.write(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
