"""``galpipe morphology``: the worker, and training, evaluating and registering its models.

- ``worker`` runs one morphology worker until SIGTERM (the model ``GALPIPE_MORPHOLOGY_MODEL``).
- ``train`` trains a network on labelled images and writes ``model.onnx``, ``report.json``
  and plots; ``--publish`` also stores it and registers it in ``models``.
- ``evaluate`` scores a registered model (or an ONNX file) on labelled images.
- ``publish`` registers an ONNX file trained elsewhere, with its report.
- ``models`` lists the registered models.

Labelled images come from ``--synthetic N`` (the synthetic Galaxy Zoo), ``--kaggle DIR`` (the
Kaggle "Galaxy Zoo - The Galaxy Challenge" layout) or ``--labels FILE`` (vote fractions keyed
by source_id or matched by ra/dec to the cutouts this deployment has fetched).

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
    from galpipe.learning.dataset import LabelledImages
    from galpipe.settings import Settings

__all__ = ["register"]

# The choices of galpipe.learning (ARCHITECTURES, INPUT_MODES), spelled here so that building
# the command line imports neither torch nor onnxruntime; tests keep the two in step.
_ARCHITECTURES = ("efficientnet_b0", "efficientnet_b2", "efficientnet_b3", "resnet18", "small_cnn")
_INPUT_MODES = ("asinh_bands", "lupton_rgb")
#: Epochs that train only the tail before all layers, when starting from ImageNet weights.
PRETRAINED_FROZEN_EPOCHS = 3
#: Adam's initial rate when fine-tuning ImageNet weights: the GZ2 EfficientNet report's.
PRETRAINED_LEARNING_RATE = 1.5e-4
#: From scratch the report's rate barely moves a network in its first epochs (EfficientNet-B0 on
#: the synthetic Galaxy Zoo: validation RMSE 0.196 after 2 epochs, no better than the mean
#: fractions); at 1e-3 it reaches 0.146 (docs/morphology.md, benchmark).
SCRATCH_LEARNING_RATE = 1e-3


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``morphology`` and its sub-commands to ``subparsers``."""
    group = subparsers.add_parser(
        "morphology", help="Galaxy Zoo morphology: the worker, and training its network"
    )
    commands = group.add_subparsers(dest="morphology_command", required=True, metavar="COMMAND")

    p = commands.add_parser("worker", help="run a morphology worker until SIGTERM")
    p.set_defaults(handler=_cmd_worker)

    p = commands.add_parser("train", help="train a network on labelled images")
    _data_arguments(p)
    p.add_argument("--architecture", choices=_ARCHITECTURES, default="efficientnet_b0")
    p.add_argument("--epochs", type=int, default=100, help="at most this many epochs")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help=f"Adam's initial rate (default {PRETRAINED_LEARNING_RATE:g} with --pretrained, the "
        f"GZ2 report's fine-tuning rate; {SCRATCH_LEARNING_RATE:g} from scratch)",
    )
    p.add_argument(
        "--frozen-epochs",
        type=int,
        default=None,
        help=f"epochs training only the tail first (default {PRETRAINED_FROZEN_EPOCHS} with "
        "--pretrained, else 0)",
    )
    p.add_argument("--pretrained", type=Path, default=None, help="ImageNet state dict to start")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or a torch device")
    p.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="wall-clock budget: start no epoch that would end past it (--resume continues)",
    )
    p.add_argument("--no-augment", action="store_true", help="no random rotations and flips")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    p.add_argument("--publish", action="store_true", help="store and register the model")
    p.add_argument("--out", type=Path, default=Path("morphology-model"), help="output directory")
    p.set_defaults(handler=_cmd_train)

    p = commands.add_parser("evaluate", help="score a model on labelled images")
    _data_arguments(p)
    p.add_argument("--model", required=True, help="a registered model version, or an ONNX file")
    p.add_argument("--out", type=Path, default=Path("morphology-evaluation"))
    p.set_defaults(handler=_cmd_evaluate)

    p = commands.add_parser("publish", help="register an ONNX model trained elsewhere")
    p.add_argument("onnx", type=Path, help="the model.onnx that `train` wrote")
    p.add_argument("--report", type=Path, required=True, help="its report.json")
    p.set_defaults(handler=_cmd_publish)

    p = commands.add_parser("models", help="list the registered models")
    p.set_defaults(handler=_cmd_models)


def _data_arguments(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--synthetic", type=int, metavar="N", help="N synthetic galaxies")
    source.add_argument("--kaggle", type=Path, metavar="DIR", help="the Kaggle GZ2 layout")
    source.add_argument(
        "--labels", type=Path, metavar="FILE", help="vote fractions for the fetched cutouts"
    )
    p.add_argument("--match", choices=("source_id", "radec"), default="source_id")
    p.add_argument("--radius-arcsec", type=float, default=1.0, help="ra/dec match radius")
    p.add_argument("--input-mode", choices=_INPUT_MODES, default="asinh_bands")
    p.add_argument("--limit", type=int, default=None, help="--kaggle: first N galaxies only")
    p.add_argument("--seed", type=int, default=0, help="synthetic sample and split seed")
    p.add_argument("--processes", type=int, default=1, help="--synthetic: render processes")


def _input_mode(args: argparse.Namespace) -> str:
    """The input mode of the images the arguments name, known before any is read."""
    # The Kaggle set is SDSS gri JPEGs: a rendering of their own, which the worker cannot
    # reproduce from survey cutouts; recorded as such so the worker refuses such a model.
    return "kaggle_jpeg" if args.kaggle is not None else str(args.input_mode)


def _load_data(args: argparse.Namespace, settings: Settings) -> LabelledImages:
    """The labelled set the arguments name (its images in :func:`_input_mode`)."""
    if args.synthetic is not None:
        from galpipe.morphology.datasets import synthetic_set

        return synthetic_set(
            args.synthetic, seed=args.seed, mode=args.input_mode, processes=args.processes
        ).data
    if args.kaggle is not None:
        from galpipe.catalog.morphology_data import read_kaggle_layout

        return read_kaggle_layout(args.kaggle, limit=args.limit)
    from galpipe.morphology.datasets import fetched_cutouts_with_labels
    from galpipe.runtime.database import database_errors, pool_from_settings
    from galpipe.storage import object_store_from_settings

    with database_errors(), pool_from_settings(settings) as pool:
        data = fetched_cutouts_with_labels(
            pool,
            object_store_from_settings(settings),
            args.labels,
            match=args.match,
            radius_arcsec=args.radius_arcsec,
            mode=args.input_mode,
        )
    if len(data.unmatched):
        print(f"{len(data.unmatched)} fetched galaxies have no label and are left out")
    return data


def _cmd_worker(args: argparse.Namespace, settings: Settings) -> None:
    from galpipe.pipelines.morphology import build_morphology_pipeline
    from galpipe.pipelines.worker import run_from_settings

    run_from_settings(settings, build_morphology_pipeline)


def _cmd_train(args: argparse.Namespace, settings: Settings) -> None:
    from galpipe.morphology.workflow import require_torch, train_model, write_report

    require_torch("galpipe morphology train")
    from galpipe.learning.training import TrainingConfig

    if args.max_minutes is not None and not (0.0 < args.max_minutes < math.inf):
        raise InputError(f"--max-minutes must be a positive number, got {args.max_minutes:g}")
    data = _load_data(args, settings)
    frozen = args.frozen_epochs
    if frozen is None:
        frozen = PRETRAINED_FROZEN_EPOCHS if args.pretrained else 0
    config = TrainingConfig(
        learning_rate=args.learning_rate
        or (PRETRAINED_LEARNING_RATE if args.pretrained else SCRATCH_LEARNING_RATE),
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        frozen_epochs=frozen,
        seed=args.seed,
        augment=not args.no_augment,
        device=args.device,
        max_seconds=None if args.max_minutes is None else 60.0 * args.max_minutes,
    )

    def progress(record: Any) -> None:
        print(
            f"epoch {record.epoch:3d}  train {record.train_rmse:.4f}  val {record.val_rmse:.4f}  "
            f"lr {record.learning_rate:.2e}  {record.images_per_second:,.0f} images/s",
            flush=True,
        )

    trained = train_model(
        data,
        architecture=args.architecture,
        input_mode=_input_mode(args),
        config=config,
        split_seed=args.seed,
        checkpoint_dir=args.out / "checkpoints",
        resume=args.resume,
        pretrained=args.pretrained,
        on_epoch=progress,
    )
    from galpipe.pipelines.model_artefacts import ModelSpec, report_entry

    spec = ModelSpec(
        pipeline="morphology",
        architecture=trained.architecture,
        input_mode=trained.input_mode,
        input_size=trained.input_size,
        input_channels=trained.input_channels,
        training_data_sha256=trained.training_data_sha256,
        metrics=trained.metrics,
    )
    extra = {"model": report_entry(spec, trained.onnx_bytes), **trained.extra}
    write_report(
        args.out, trained.test, history=trained.history, onnx_bytes=trained.onnx_bytes, extra=extra
    )
    if trained.extra["stopped_for_time"]:
        print(
            f"stopped after epoch {trained.history[-1]['epoch']} at the --max-minutes budget; "
            "the model is its best epoch so far, and --resume continues the training"
        )
    print(
        f"test RMSE {trained.test.rmse:.4f}, six-class accuracy "
        f"{trained.test.six_class_accuracy:.3f} on {trained.test.n_galaxies} galaxies; "
        f"ONNX within {trained.onnx_max_abs_diff:.1e} of PyTorch; written to {args.out}"
    )
    if args.publish:
        _publish(settings, trained.onnx_bytes, spec)


def _publish(settings: Settings, onnx_bytes: bytes, spec: Any) -> None:
    from galpipe.pipelines.model_artefacts import publish_with_settings

    record = publish_with_settings(settings, onnx_bytes, spec)
    print(f"registered model {record.model_version} ({record.architecture}, {record.nbytes} B)")


def _cmd_publish(args: argparse.Namespace, settings: Settings) -> None:
    from galpipe.pipelines.model_artefacts import check_report_version, model_spec_from_report

    try:
        onnx_bytes = args.onnx.read_bytes()
        report = json.loads(args.report.read_text())
    except OSError as exc:
        raise InputError(f"cannot read the model or its report: {exc}") from None
    except ValueError as exc:
        raise InputError(f"{args.report}: not JSON: {exc}") from None
    spec = model_spec_from_report(report, source=str(args.report))
    check_report_version(report, onnx_bytes, onnx_name=str(args.onnx), report_name=str(args.report))
    from galpipe.learning.inference import MorphologyModel

    MorphologyModel.from_bytes(onnx_bytes, device="cpu")  # refuses bytes that are not a model
    _publish(settings, onnx_bytes, spec)


def _cmd_evaluate(args: argparse.Namespace, settings: Settings) -> None:
    from galpipe.learning.inference import MorphologyModel
    from galpipe.morphology.workflow import evaluate_model, write_report

    # The model first: a mismatch is refused before a possibly long read of the images.
    mode = _input_mode(args)
    candidate = Path(args.model)
    if candidate.is_file():
        onnx_bytes, recorded_mode = candidate.read_bytes(), None
    else:
        from galpipe.pipelines.model_artefacts import load_registered_model

        record, onnx_bytes = load_registered_model(settings, args.model.lower(), "morphology")
        recorded_mode = record.input_mode
    if recorded_mode is not None and recorded_mode != mode:
        raise InputError(
            f"model {args.model} takes {recorded_mode} images; these are {mode} "
            f"(pass --input-mode {recorded_mode})"
        )
    data = _load_data(args, settings)
    evaluation = evaluate_model(MorphologyModel.from_bytes(onnx_bytes), data)
    write_report(args.out, evaluation, extra={"model": args.model, "data_source": data.source})
    print(
        f"RMSE {evaluation.rmse:.4f}, six-class accuracy {evaluation.six_class_accuracy:.3f} "
        f"on {evaluation.n_galaxies} galaxies; report in {args.out}"
    )


def _cmd_models(args: argparse.Namespace, settings: Settings) -> None:
    from galpipe.db.models import list_models
    from galpipe.runtime.database import database_errors, pool_from_settings

    with database_errors(), pool_from_settings(settings) as pool, pool.connection() as conn:
        models = list_models(conn, "morphology")
    if not models:
        print("no models registered (`galpipe morphology train --publish` registers one)")
        return
    for m in models:
        rmse = m.metrics.get("rmse")
        created = m.created_at.isoformat(timespec="seconds") if m.created_at else "-"
        score = f"rmse {rmse:.4f}" if isinstance(rmse, int | float) else "rmse -"
        sys.stdout.write(
            f"{m.model_version}  {m.pipeline:<10} {m.architecture:<16} {m.input_mode:<12} "
            f"{m.input_channels}x{m.input_size}x{m.input_size}  {score}  {created}\n"
        )
