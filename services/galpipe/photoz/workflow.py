"""Train and score a pixel photo-z model; the steps behind ``galpipe photoz train``/``evaluate``.

:func:`train_photoz`, on cutouts of galaxies with spectroscopic redshifts:

1. split train / test by a hash of each id (:func:`galpipe.learning.dataset.split_by_id`; no
   validation share: the model chooses k on a split of its own training galaxies);
2. build every galaxy's pixel vectors at the stamp centre
   (:func:`galpipe.science.photoz_pixels.pixel_vectors`) and fit
   :class:`~galpipe.learning.pixel_redshift.PixelRedshiftModel` on the training galaxies;
3. fit the conventional comparison on the *same* training galaxies: the kNN on their
   integrated (segment) fluxes (:func:`~galpipe.learning.pixel_redshift.fit_integrated_baseline`);
4. score both on the test galaxies that have pixels (the same galaxies for both): bias,
   σ_NMAD and outlier fraction (:mod:`galpipe.science.photoz_metrics`), also per bin of r
   magnitude (of the segment flux) and of z_spec.

:func:`write_report` writes ``model.bin`` (the model's bytes, whose SHA-256 is its version),
``report.json`` and the plots; :func:`evaluate_photoz` and :func:`write_evaluation` score a
trained model on other galaxies.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from galpipe.errors import CommandError, InputError
from galpipe.learning.dataset import split_by_id
from galpipe.learning.pixel_redshift import (
    IntegratedBaseline,
    PixelRedshiftModel,
    fit_integrated_baseline,
)
from galpipe.pipelines.model_artefacts import ModelSpec, report_entry
from galpipe.science.photoz_metrics import (
    BinnedPhotozMetrics,
    PhotozMetrics,
    binned_redshift_metrics,
    redshift_metrics,
)
from galpipe.science.photoz_pixels import (
    NANOMAGGY_ZEROPOINT,
    PixelVectorConfig,
    PixelVectors,
    pixel_vectors,
)
from galpipe.survey.layout import BANDS, PIXSCALE_ARCSEC

__all__ = [
    "INPUT_MODE",
    "PIPELINE",
    "R_MAG_EDGES",
    "Z_EDGES",
    "PhotozScores",
    "PhotozTraining",
    "architecture_of",
    "evaluate_photoz",
    "stamp_centres",
    "train_photoz",
    "training_data_sha256",
    "write_evaluation",
    "write_report",
]

#: The ``pipeline`` of the models this trains (``models.pipeline``).
PIPELINE = "photoz"
#: The ``input_mode`` recorded with them: the worker builds pixel vectors from the cutouts.
INPUT_MODE = "pixel_vectors"
#: r-magnitude bin edges of the report, AB mag (of the segment flux).
R_MAG_EDGES: tuple[float, ...] = (14.0, 18.0, 19.0, 20.0, 21.0, 22.0, 23.0, 24.0, 26.0)
#: z_spec bin edges of the report.
Z_EDGES: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.5, 3.0)


def architecture_of(learner: str) -> str:
    """The ``architecture`` recorded for a model of ``learner`` (``pixel_knn`` ...)."""
    return f"pixel_{learner}"


def stamp_centres(n: int, size: int) -> npt.NDArray[np.float64]:
    """``(n, 2)`` the catalogue position of every stamp: its centre, 0-based pixels."""
    return np.full((n, 2), (size - 1) / 2.0)


def training_data_sha256(
    ids: npt.ArrayLike, z_spec: npt.ArrayLike, cubes: npt.ArrayLike, sigmas: npt.ArrayLike
) -> str:
    """Hex SHA-256 of the shapes and the little-endian bytes of ids, redshifts, cubes, errors."""
    arrays = (
        np.ascontiguousarray(ids, dtype="<i8"),
        np.ascontiguousarray(z_spec, dtype="<f8"),
        np.ascontiguousarray(cubes, dtype="<f4"),
        np.ascontiguousarray(sigmas, dtype="<f4"),
    )
    digest = hashlib.sha256()
    # The shapes first, so differently shaped data with the same bytes hash differently.
    digest.update(repr(tuple(a.shape for a in arrays)).encode())
    for array in arrays:
        digest.update(array.tobytes())
    return digest.hexdigest()


def _r_magnitudes(vectors: PixelVectors) -> npt.NDArray[np.float64]:
    """``(N,)`` AB magnitude of each galaxy's r-band segment flux; NaN where it is not > 0."""
    band = vectors.bands.index("r") if "r" in vectors.bands else min(1, len(vectors.bands) - 1)
    flux = vectors.segment_flux[:, band]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, NANOMAGGY_ZEROPOINT - 2.5 * np.log10(flux), np.nan)


def _binned_dict(binned: BinnedPhotozMetrics) -> dict[str, Any]:
    return {
        "edges": binned.edges.tolist(),
        "bias": binned.bias.tolist(),
        "sigma_nmad": binned.sigma_nmad.tolist(),
        "outlier_fraction": binned.outlier_fraction.tolist(),
        "n": binned.n.tolist(),
    }


@dataclass(frozen=True)
class PhotozScores:
    """Photometric against spectroscopic redshifts of scored galaxies, row for row.

    Attributes
    ----------
    ids : numpy.ndarray
        int64 ``(N,)`` the galaxies' ids.
    z_spec : numpy.ndarray
        float64 ``(N,)`` spectroscopic redshifts.
    z_pixel : numpy.ndarray
        float64 ``(N,)`` the pixel method's redshifts; NaN for a galaxy without pixels.
    z_baseline : numpy.ndarray or None
        float64 ``(N,)`` the integrated-flux kNN's, where it was fitted (training only).
    r_mag : numpy.ndarray
        float64 ``(N,)`` r AB magnitude of the segment flux; NaN without pixels.
    n_pixels : numpy.ndarray
        int64 ``(N,)`` pixels of each galaxy.
    """

    ids: npt.NDArray[np.int64]
    z_spec: npt.NDArray[np.float64]
    z_pixel: npt.NDArray[np.float64]
    z_baseline: npt.NDArray[np.float64] | None
    r_mag: npt.NDArray[np.float64]
    n_pixels: npt.NDArray[np.int64]

    @property
    def pixel(self) -> PhotozMetrics:
        """The pixel method's figures (galaxies without pixels are ``n_excluded``)."""
        return redshift_metrics(self.z_pixel, self.z_spec)

    @property
    def baseline(self) -> PhotozMetrics | None:
        """The baseline's figures on the same galaxies as :attr:`pixel`."""
        if self.z_baseline is None:
            return None
        return redshift_metrics(np.where(self.n_pixels > 0, self.z_baseline, np.nan), self.z_spec)

    def metrics(self) -> dict[str, Any]:
        """The figures recorded with a model: the pixel method's, and ``baseline_*``."""
        out: dict[str, Any] = dict(self.pixel.as_dict())
        base = self.baseline
        if base is not None:
            out.update({f"baseline_{k}": v for k, v in base.as_dict().items()})
        return out

    def binned(self) -> dict[str, Any]:
        """Per-bin figures by r magnitude and by z_spec, for each method scored."""
        methods = {"pixel": self.z_pixel}
        if self.z_baseline is not None:
            methods["baseline"] = np.where(self.n_pixels > 0, self.z_baseline, np.nan)
        out: dict[str, Any] = {}
        for by, values, edges in (
            ("r_mag", self.r_mag, R_MAG_EDGES),
            ("z_spec", self.z_spec, Z_EDGES),
        ):
            out[by] = {
                name: _binned_dict(binned_redshift_metrics(z, self.z_spec, values, edges))
                for name, z in methods.items()
            }
        return out


@dataclass
class PhotozTraining:
    """What :func:`train_photoz` made.

    Attributes
    ----------
    model : PixelRedshiftModel
        The fitted pixel model.
    model_bytes : bytes
        :meth:`PixelRedshiftModel.to_bytes`; its SHA-256 is the model's version.
    baseline : IntegratedBaseline
        The integrated-flux kNN fitted on the same training galaxies.
    training_data_sha256 : str
        SHA-256 of the whole set the split was drawn from (:func:`training_data_sha256`).
    test : PhotozScores
        Both methods on the test galaxies.
    input_channels, input_size : int
        Bands and side (pixels) of the cutouts.
    extra : dict
        Further report entries (split sizes, settings, data source).
    """

    model: PixelRedshiftModel
    model_bytes: bytes
    baseline: IntegratedBaseline
    training_data_sha256: str
    test: PhotozScores
    input_channels: int
    input_size: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> ModelSpec:
        """The model's registration record (without its bytes)."""
        return ModelSpec(
            pipeline=PIPELINE,
            architecture=architecture_of(self.model.learner),
            input_mode=INPUT_MODE,
            input_size=self.input_size,
            input_channels=self.input_channels,
            training_data_sha256=self.training_data_sha256,
            metrics=_finite_or_none(self.test.metrics()),
        )


def _check_inputs(
    cubes: npt.ArrayLike, sigmas: npt.ArrayLike, source_ids: npt.ArrayLike, z_spec: npt.ArrayLike
) -> tuple[
    npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.float64]
]:
    data = np.asarray(cubes, dtype=np.float32)
    errors = np.asarray(sigmas, dtype=np.float32)
    ids = np.asarray(source_ids)
    z = np.asarray(z_spec, dtype=np.float64)
    if data.ndim != 4 or data.shape[2] != data.shape[3]:
        raise InputError(f"cubes: expected (N, B, S, S) stamps, got shape {data.shape}")
    n = data.shape[0]
    if errors.shape != data.shape:
        raise InputError(f"sigmas: expected the cubes' shape {data.shape}, got {errors.shape}")
    if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"source_ids: expected ({n},) integers, got {ids.dtype} {ids.shape}")
    if z.shape != (n,):
        raise InputError(f"z_spec: expected ({n},) redshifts, got shape {z.shape}")
    return data, errors, ids.astype(np.int64), z


def _vectors(
    cubes: npt.NDArray[np.float32], sigmas: npt.NDArray[np.float32], config: PixelVectorConfig
) -> PixelVectors:
    return pixel_vectors(
        cubes,
        sigmas,
        stamp_centres(cubes.shape[0], cubes.shape[-1]),
        config,
        pixel_scale_arcsec=PIXSCALE_ARCSEC,
        bands=BANDS[: cubes.shape[1]],
    )


def train_photoz(
    cubes: npt.ArrayLike,
    sigmas: npt.ArrayLike,
    source_ids: npt.ArrayLike,
    z_spec: npt.ArrayLike,
    *,
    vector_config: PixelVectorConfig | None = None,
    learner: str = "knn",
    combiner: str = "mean",
    columns: Sequence[str] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    n_jobs: int | None = None,
    source: str = "",
) -> PhotozTraining:
    """Train the pixel photo-z and score it beside the integrated-flux kNN (module docstring).

    Parameters
    ----------
    cubes : array_like
        ``(N, B, S, S)`` sky-subtracted griz stamps, nanomaggies, the galaxy at the centre.
    sigmas : array_like
        ``(N, B, S, S)`` their 1σ errors, nanomaggies
        (e.g. :func:`~galpipe.science.photoz_pixels.sky_noise_errors`).
    source_ids : array_like
        ``(N,)`` integer ids (the split is a hash of them).
    z_spec : array_like
        ``(N,)`` spectroscopic redshifts, finite.
    vector_config : PixelVectorConfig, optional
        Segmentation and luptitude settings (saved with the model).
    learner, combiner, columns
        Of :class:`PixelRedshiftModel` (``columns`` None: its default).
    test_fraction : float
        Expected share of galaxies held out for the test, in (0, 1).
    seed : int
        Seed of the split and of the model's validation split.
    n_jobs : int, optional
        Threads of the neighbour queries.
    source : str
        What the data are, for the report.

    Raises
    ------
    InputError
        If the arrays do not pair up, or a training input is unusable (the model's message).
    CommandError
        If the train or the test split has fewer than two galaxies with pixels.
    """
    data, errors, ids, z = _check_inputs(cubes, sigmas, source_ids, z_spec)
    if not 0 < test_fraction < 1:
        raise InputError(f"test_fraction: expected within (0, 1), got {test_fraction}")
    config = vector_config or PixelVectorConfig()
    train_idx, _, test_idx = split_by_id(ids, (1.0 - test_fraction, 0.0, test_fraction), seed)
    train_vectors = _vectors(data[train_idx], errors[train_idx], config)
    test_vectors = _vectors(data[test_idx], errors[test_idx], config)
    for name, vectors in (("train", train_vectors), ("test", test_vectors)):
        usable = int((vectors.n_pixels > 0).sum())
        if usable < 2:
            raise CommandError(
                f"the {name} split of {len(ids)} galaxies has {usable} galaxies with pixels; "
                "at least two are needed: give more galaxies"
            )
    model = PixelRedshiftModel(
        learner=learner,
        combiner=combiner,
        columns=columns,
        seed=seed,
        n_jobs=n_jobs,
        vector_config=config,
    ).fit(train_vectors, z[train_idx], ids[train_idx])
    # The baseline learns from the same galaxies: those whose segment was matched.
    has = train_vectors.n_pixels > 0
    baseline = fit_integrated_baseline(
        train_vectors.segment_flux[has],
        z[train_idx][has],
        ids[train_idx][has],
        bands=train_vectors.bands,
        seed=seed,
        n_jobs=n_jobs,
    )
    predicted = model.predict_galaxies(test_vectors)
    test = PhotozScores(
        ids=ids[test_idx],
        z_spec=z[test_idx],
        z_pixel=predicted.z,
        z_baseline=baseline.predict(test_vectors.segment_flux),
        r_mag=_r_magnitudes(test_vectors),
        n_pixels=test_vectors.n_pixels,
    )
    extra: dict[str, Any] = {
        "split": {"train": len(train_idx), "test": len(test_idx)},
        "galaxies_without_pixels": {
            "train": int((~has).sum()),
            "test": int((test_vectors.n_pixels == 0).sum()),
        },
        "learner": learner,
        "combiner": combiner,
        "k": model.k,
        "columns": list(model.columns),
        "vector_config": asdict(config),
        "validation_curve": [asdict(p) for p in model.validation_curve],
        "baseline": {
            "k": baseline.k,
            "columns": list(baseline.columns),
            "validation_curve": [asdict(p) for p in baseline.validation_curve],
        },
        "train_pixels": model.n_train_pixels,
        "seed": seed,
        "test_fraction": test_fraction,
        "data_source": source,
    }
    return PhotozTraining(
        model=model,
        model_bytes=model.to_bytes(),
        baseline=baseline,
        training_data_sha256=training_data_sha256(ids, z, data, errors),
        test=test,
        input_channels=int(data.shape[1]),
        input_size=int(data.shape[-1]),
        extra=extra,
    )


def evaluate_photoz(
    model: PixelRedshiftModel,
    cubes: npt.ArrayLike,
    sigmas: npt.ArrayLike,
    source_ids: npt.ArrayLike,
    z_spec: npt.ArrayLike,
    combiner: str | None = None,
) -> PhotozScores:
    """Score ``model`` on every galaxy given (``galpipe photoz evaluate``), its vector settings.

    Raises
    ------
    InputError
        If the arrays do not pair up, or the vectors do not fit the model.
    """
    data, errors, ids, z = _check_inputs(cubes, sigmas, source_ids, z_spec)
    vectors = _vectors(data, errors, model.vector_config)
    predicted = model.predict_galaxies(vectors, combiner)
    return PhotozScores(
        ids=ids,
        z_spec=z,
        z_pixel=predicted.z,
        z_baseline=None,
        r_mag=_r_magnitudes(vectors),
        n_pixels=vectors.n_pixels,
    )


def _finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (strict JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write(
    out: Path,
    scores: PhotozScores,
    report: dict[str, Any],
    model_bytes: bytes | None,
) -> list[Path]:
    from galpipe.photoz.plots import plot_redshifts, plot_residuals_by_magnitude

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"{out}: cannot create the output directory: {exc}") from None
    written: list[Path] = []
    report = {**report, "binned": scores.binned()}
    if model_bytes is not None:
        path = out / "model.bin"
        path.write_bytes(model_bytes)
        written.append(path)
    try:
        written.append(plot_redshifts(scores, out / "z_phot_vs_z_spec.png"))
        written.append(plot_residuals_by_magnitude(scores, out / "residual_vs_r_mag.png"))
    except ImportError as exc:
        report["plots"] = f"not drawn: {exc}"
    path = out / "report.json"
    # Written last, through a temporary name: a report on disk always has its model beside it.
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(_finite_or_none(report), indent=2) + "\n")
    partial.replace(path)
    written.append(path)
    return written


def write_report(training: PhotozTraining, out: Path) -> list[Path]:
    """Write ``model.bin``, ``report.json`` and the plots of a training into ``out``.

    ``report.json`` holds ``"model"`` (:func:`~galpipe.pipelines.model_artefacts.report_entry`:
    what ``galpipe photoz publish`` registers), ``"test"`` (pixel and baseline figures),
    ``"binned"`` and the settings. Plots need matplotlib (the ``local`` extra); without it the
    report says so. Returns the paths written.
    """
    baseline = training.test.baseline
    report: dict[str, Any] = {
        "model": report_entry(training.spec, training.model_bytes),
        "test": {
            "pixel": training.test.pixel.as_dict(),
            "baseline": baseline.as_dict() if baseline is not None else None,
        },
        **training.extra,
    }
    return _write(out, training.test, report, training.model_bytes)


def write_evaluation(
    scores: PhotozScores, out: Path, extra: Mapping[str, Any] | None = None
) -> list[Path]:
    """Write ``report.json`` and the plots of an evaluation into ``out``; the paths written."""
    report = {"test": {"pixel": scores.pixel.as_dict()}, **(extra or {})}
    return _write(out, scores, report, None)
