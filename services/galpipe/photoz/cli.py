"""``galpipe photoz``: the worker, and training, evaluating and registering its models.

- ``worker`` runs one photo-z worker until SIGTERM (the model ``GALPIPE_PHOTOZ_MODEL``).
- ``train`` fits the pixel kNN on galaxies with spectroscopic redshifts and writes
  ``model.bin``, ``report.json`` and plots, the integrated-flux kNN scored beside it;
  ``--publish`` also stores it and registers it in ``models``.
- ``evaluate`` scores a trained model (its ``report.json``, or a registered version) on other
  galaxies.
- ``publish`` registers a model that ``train`` wrote, from its directory.
- ``models`` lists the registered photo-z models.

Galaxies come from ``--synthetic N`` (the synthetic photo-z sky) or ``--spec-catalog CSV`` (a
spectroscopic catalogue, the document's CasJobs columns, matched by ``source_id = id`` or by
ra/dec to the cutouts this deployment has fetched).

Only argparse is imported here; the heavy modules load when a command runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from galpipe.errors import InputError

if TYPE_CHECKING:
    from galpipe.photoz.datasets import SpectroscopicCutouts
    from galpipe.photoz.workflow import PhotozScores
    from galpipe.pipelines.model_artefacts import ModelSpec
    from galpipe.settings import Settings

__all__ = ["register"]

# The choices of galpipe.learning.pixel_redshift (LEARNERS, COMBINERS), spelled here so that
# building the command line does not import scikit-learn; tests keep the two in step.
_LEARNERS = ("knn", "gradient_boosting")
_COMBINERS = ("mean", "flux_weighted_median", "density_mode")

#: Seed of ``evaluate --synthetic``: another sample than ``train``'s default seed 0 draws.
_EVALUATE_SEED = 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``photoz`` and its sub-commands to ``subparsers``."""
    group = subparsers.add_parser(
        "photoz", help="pixel-level photometric redshifts: the worker, and training its model"
    )
    commands = group.add_subparsers(dest="photoz_command", required=True, metavar="COMMAND")

    p = commands.add_parser("worker", help="run a photo-z worker until SIGTERM")
    p.set_defaults(handler=_cmd_worker)

    p = commands.add_parser("train", help="train the pixel kNN on spectroscopic redshifts")
    _data_arguments(p, default_seed=0)
    p.add_argument("--learner", choices=_LEARNERS, default="knn")
    p.add_argument("--combiner", choices=_COMBINERS, default="mean")
    p.add_argument(
        "--assoc-radius-px",
        type=float,
        default=5.0,
        help="largest distance of the matched segment from the stamp centre, pixels",
    )
    p.add_argument("--test-fraction", type=float, default=0.2, help="share held out for test")
    p.add_argument("--jobs", type=int, default=2, help="threads of the neighbour queries")
    p.add_argument("--publish", action="store_true", help="store and register the model")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.set_defaults(handler=_cmd_train)

    p = commands.add_parser("evaluate", help="score a trained model on other galaxies")
    _data_arguments(p, default_seed=_EVALUATE_SEED)
    p.add_argument(
        "--model", required=True, help="the report.json that `train` wrote, or a model version"
    )
    p.add_argument("--combiner", choices=_COMBINERS, default=None, help="default: the model's")
    p.add_argument("--jobs", type=int, default=2, help="threads of the neighbour queries")
    p.add_argument("--out", type=Path, default=Path("photoz-evaluation"))
    p.set_defaults(handler=_cmd_evaluate)

    p = commands.add_parser("publish", help="register a model that `train` wrote")
    p.add_argument("directory", type=Path, help="the --out of `train` (model.bin, report.json)")
    p.set_defaults(handler=_cmd_publish)

    p = commands.add_parser("models", help="list the registered photo-z models")
    p.set_defaults(handler=_cmd_models)


def _data_arguments(p: argparse.ArgumentParser, *, default_seed: int) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--synthetic", type=int, metavar="N", help="N synthetic galaxies")
    source.add_argument(
        "--spec-catalog",
        type=Path,
        metavar="CSV",
        help="spectroscopic redshifts (id, ra, dec, redshift, redshiftError, class) for the "
        "fetched cutouts",
    )
    p.add_argument("--match", choices=("source_id", "radec"), default="source_id")
    p.add_argument(
        "--match-radius-arcsec", type=float, default=1.0, help="--match radec: largest separation"
    )
    p.add_argument("--seed", type=int, default=default_seed, help="synthetic sample and split seed")
    p.add_argument("--processes", type=int, default=1, help="--synthetic: render processes")


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse values argparse's types let through, naming the option."""
    if args.synthetic is not None and args.synthetic < 2:
        raise InputError(f"--synthetic {args.synthetic}: give at least 2 galaxies")
    if args.processes < 1:
        raise InputError(f"--processes {args.processes}: give at least 1")
    if not (math.isfinite(args.match_radius_arcsec) and args.match_radius_arcsec > 0):
        raise InputError(f"--match-radius-arcsec {args.match_radius_arcsec}: expected > 0")
    if getattr(args, "jobs", 1) < 1 and args.jobs != -1:
        raise InputError(f"--jobs {args.jobs}: give at least 1 (or -1 for every core)")
    test_fraction = getattr(args, "test_fraction", 0.5)
    if not 0 < test_fraction < 1:
        raise InputError(f"--test-fraction {test_fraction}: expected within (0, 1)")
    radius = getattr(args, "assoc_radius_px", 1.0)
    if not (math.isfinite(radius) and radius > 0):
        raise InputError(f"--assoc-radius-px {radius}: expected > 0 pixels")


def _load_data(args: argparse.Namespace, settings: Settings) -> SpectroscopicCutouts:
    """The galaxies the arguments name, with their redshifts."""
    if args.synthetic is not None:
        from galpipe.photoz.datasets import synthetic_set

        return synthetic_set(args.synthetic, seed=args.seed, processes=args.processes)
    from galpipe.photoz.datasets import fetched_cutouts_with_redshifts, read_spectroscopic_catalog
    from galpipe.runtime.database import database_errors, pool_from_settings
    from galpipe.storage import object_store_from_settings

    # The catalogue first: its problems are reported before anything connects.
    catalog = read_spectroscopic_catalog(args.spec_catalog)
    with database_errors(), pool_from_settings(settings) as pool:
        data = fetched_cutouts_with_redshifts(
            pool,
            object_store_from_settings(settings),
            args.spec_catalog,
            match=args.match,
            radius_arcsec=args.match_radius_arcsec,
            catalog=catalog,
        )
    if len(data.unmatched):
        print(f"{len(data.unmatched)} fetched galaxies have no spectroscopic redshift")
    if data.unreadable:
        galaxy, reason = next(iter(data.unreadable.items()))
        print(
            f"{len(data.unreadable)} matched cutouts could not be read and are left out "
            f"(source_id {galaxy}: {reason})"
        )
    return data


def _summary(scores: PhotozScores) -> str:
    pixel = scores.pixel
    line = (
        f"pixel: σ_NMAD {pixel.sigma_nmad:.4f}, outliers {100 * pixel.outlier_fraction:.1f} %, "
        f"bias {pixel.bias:+.4f} on {pixel.n} galaxies ({pixel.n_excluded} without pixels)"
    )
    base = scores.baseline
    if base is not None:
        line += (
            f"; integrated-flux kNN: σ_NMAD {base.sigma_nmad:.4f}, outliers "
            f"{100 * base.outlier_fraction:.1f} %, bias {base.bias:+.4f}"
        )
        if base.sigma_nmad > 0:
            line += f"; σ_NMAD ratio pixel/baseline {pixel.sigma_nmad / base.sigma_nmad:.2f}"
    return line


def _cmd_worker(args: argparse.Namespace, settings: Settings) -> None:
    # Imported here: the pipeline module loads the model's runtime only for a worker.
    from galpipe.pipelines.photoz import build_photoz_pipeline
    from galpipe.pipelines.worker import run_from_settings

    run_from_settings(settings, build_photoz_pipeline)


def _cmd_train(args: argparse.Namespace, settings: Settings) -> None:
    _check_arguments(args)
    from galpipe.photoz.workflow import train_photoz, write_report
    from galpipe.science.photoz_pixels import PixelVectorConfig, PixelVectorError

    try:
        config = PixelVectorConfig(assoc_radius_px=args.assoc_radius_px)
    except PixelVectorError as exc:
        raise InputError(f"--assoc-radius-px: {exc}") from None
    data = _load_data(args, settings)
    training = train_photoz(
        data.cubes,
        data.sigmas,
        data.ids,
        data.z_spec,
        vector_config=config,
        learner=args.learner,
        combiner=args.combiner,
        test_fraction=args.test_fraction,
        seed=args.seed,
        n_jobs=args.jobs,
        source=data.source,
    )
    write_report(training, args.out)
    k = f"k {training.model.k}, " if training.model.k is not None else ""
    print(f"{_summary(training.test)}; {k}written to {args.out}")
    if args.publish:
        _publish(settings, training.model_bytes, training.spec)


def _publish(settings: Settings, model_bytes: bytes, spec: ModelSpec) -> None:
    from galpipe.pipelines.model_artefacts import publish_with_settings

    record = publish_with_settings(settings, model_bytes, spec)
    print(f"registered model {record.model_version} ({record.architecture}, {record.nbytes} B)")


def _read_trained(report_path: Path) -> tuple[bytes, dict[str, Any], ModelSpec]:
    """The bytes, report and spec of a model that ``train`` wrote, checked to belong together.

    Raises
    ------
    InputError
        If a file cannot be read, the report is not JSON or not a photo-z training report, or
        the bytes do not hash to its version.
    """
    from galpipe.photoz.workflow import PIPELINE
    from galpipe.pipelines.model_artefacts import check_report_version, model_spec_from_report

    model_path = report_path.with_name("model.bin")
    try:
        report = json.loads(report_path.read_text())
        model_bytes = model_path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the model or its report: {exc}") from None
    except ValueError as exc:
        raise InputError(f"{report_path}: not JSON: {exc}") from None
    spec = model_spec_from_report(report, source=str(report_path))
    if spec.pipeline != PIPELINE:
        raise InputError(f"{report_path}: a {spec.pipeline} model, not a {PIPELINE} one")
    check_report_version(
        report, model_bytes, onnx_name=str(model_path), report_name=str(report_path)
    )
    return model_bytes, report, spec


def _cmd_publish(args: argparse.Namespace, settings: Settings) -> None:
    from galpipe.learning.pixel_redshift import PixelRedshiftModel

    model_bytes, _, spec = _read_trained(args.directory / "report.json")
    # Bytes verified against the report above; loading them refuses anything not a model.
    PixelRedshiftModel.from_bytes(model_bytes)
    _publish(settings, model_bytes, spec)


def _cmd_evaluate(args: argparse.Namespace, settings: Settings) -> None:
    _check_arguments(args)
    from galpipe.learning.pixel_redshift import PixelRedshiftModel
    from galpipe.photoz.workflow import PIPELINE, evaluate_photoz, write_evaluation

    # The model first: a wrong one is refused before a possibly long read of the cutouts.
    candidate = Path(args.model)
    if candidate.is_file():
        model_bytes, _, _ = _read_trained(candidate)
    elif candidate.suffix == ".json" or "/" in args.model:
        raise InputError(f"--model {args.model}: no such file")
    else:
        from galpipe.pipelines.model_artefacts import load_registered_model

        _, model_bytes = load_registered_model(settings, args.model.lower(), PIPELINE)
    model = PixelRedshiftModel.from_bytes(model_bytes, n_jobs=args.jobs)
    data = _load_data(args, settings)
    scores = evaluate_photoz(model, data.cubes, data.sigmas, data.ids, data.z_spec, args.combiner)
    write_evaluation(
        scores,
        args.out,
        extra={
            "model": args.model,
            "combiner": args.combiner or model.combiner,
            "data_source": data.source,
        },
    )
    print(f"{_summary(scores)}; report in {args.out}")


def _cmd_models(args: argparse.Namespace, settings: Settings) -> None:
    from galpipe.db.models import list_models
    from galpipe.photoz.workflow import PIPELINE
    from galpipe.runtime.database import database_errors, pool_from_settings

    with database_errors(), pool_from_settings(settings) as pool, pool.connection() as conn:
        models = list_models(conn, PIPELINE)
    if not models:
        print("no photo-z models registered (`galpipe photoz train --publish` registers one)")
        return
    for m in models:
        created = m.created_at.isoformat(timespec="seconds") if m.created_at else "-"
        figures = []
        for key in ("sigma_nmad", "outlier_fraction", "baseline_sigma_nmad"):
            value = m.metrics.get(key)
            figures.append(f"{key} {value:.4f}" if isinstance(value, int | float) else f"{key} -")
        sys.stdout.write(
            f"{m.model_version}  {m.architecture:<26} {m.input_mode:<14} "
            f"{m.input_channels}x{m.input_size}x{m.input_size}  {'  '.join(figures)}  {created}\n"
        )
