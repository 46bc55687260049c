"""The demo's report: the results catalogue joined with the truth, the accuracy against it, the
one-page Markdown report and the console summary (figures: :mod:`galpipe.demo.figures`).

Conventions: position angles are degrees east of north in ``[0, 180)``; an *axial* error is
``|((measured - true + 90) mod 180) - 90|`` in ``[0, 90]`` degrees (a major axis has no head
or tail). The catalogue's S/N (``snr_half_light``) is galpipe's one S/N, the validation's too:
:func:`galpipe.synthetic.truth.half_light_snr` of the r band. Nothing here touches the database
or the object store: callers hand in rows, tables and arrays.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import astropy.units as u
import numpy as np
from astropy.table import Column, Table, join
from rich.console import Console
from rich.table import Table as RichTable

from galpipe.db.queue import STATES
from galpipe.demo.processes import PIPELINES
from galpipe.demo.progress import terminal_count
from galpipe.science import features, gz2
from galpipe.survey.layout import PIXSCALE_ARCSEC
from galpipe.synthetic.truth import half_light_snr

if TYPE_CHECKING:
    from galpipe.db.models import ModelRecord
    from galpipe.demo.run import DemoOptions, DemoResult

#: Axis-ratio bins ``[low, high)`` of the accuracy table; the last one includes 1.0.
AXIS_RATIO_BINS: tuple[tuple[float, float], ...] = ((0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.0))
#: The headline selection of the accuracy: elongated and bright galaxies.
HEADLINE_MAX_AXIS_RATIO = 0.6
HEADLINE_MIN_SNR = 30.0
HEADLINE_LABEL = (
    f"axis ratio < {HEADLINE_MAX_AXIS_RATIO:g} and S/N > {HEADLINE_MIN_SNR:g} "
    "(r band, half-light aperture)"
)

# Columns copied from the truth catalogue into the results catalogue, renamed true_*.
_TRUTH_COLUMNS = {
    "position_angle": "true_position_angle",
    "axis_ratio": "true_axis_ratio",
    "sersic_n": "true_sersic_n",
    "half_light_radius": "true_half_light_radius",
    "flux_r": "true_flux_r",
    "psf_fwhm": "true_psf_fwhm",
    "n_neighbours": "true_n_neighbours",
}

# Units and descriptions of the measured columns (the truth columns keep their own).
_RESULT_META: dict[str, tuple[u.UnitBase | None, str]] = {
    "source_id": (None, "galaxy id (catalogue source_id)"),
    "ra": (u.deg, "right ascension (ICRS)"),
    "dec": (u.deg, "declination (ICRS)"),
    "fetch_state": (None, "fetch task state: done, failed or skipped"),
    "fetch_attempts": (None, "times the fetch task was claimed"),
    "fetch_error": (None, "why the fetch task failed or was skipped (empty when done)"),
    "radon_state": (None, "radon task state; empty when the galaxy was never fetched"),
    "radon_attempts": (None, "times the radon task was claimed"),
    "radon_error": (None, "why the radon task failed (empty when done)"),
    "object_key": (None, "object-store key of the stored griz FITS cutout"),
    "missing_bands": (None, "bands the cutout service returned blank"),
    "algo_version": (None, "measurement configuration (galpipe.science.core.RadonConfig)"),
    "position_angle_deg": (u.deg, "measured major-axis position angle, east of north, [0, 180)"),
    "angle_image_deg": (u.deg, "measured angle in image coordinates, CCW from +x, [0, 180)"),
    "angle_err_deg": (u.deg, "calibrated uncertainty of the combined angle (docs/science.md)"),
    "anisotropy": (None, "sinusoid amplitude over offset, b/a of the band stack's Radon curve"),
    "band_spread_deg": (u.deg, "spread of the per-band angles about the combined one"),
    "n_bands": (None, "bands combined into the angle"),
    "masked_fraction": (None, "fraction of the stamp masked as neighbours"),
    "contaminated": (None, "a neighbour could not be masked cleanly"),
    "flags": (None, "galpipe.science.core.Flag bits of the combined measurement"),
    "snr_half_light": (
        None,
        "r-band S/N of the truth: half the r flux over the sky noise in the intrinsic "
        "half-light aperture, without the source's Poisson noise (half_light_snr; as in "
        "validation)",
    ),
    "pa_error_deg": (u.deg, "axial error |measured - true| of the position angle, [0, 90]"),
    "pa_signed_error_deg": (u.deg, "measured minus true position angle, wrapped to [-90, 90)"),
    "morphology_state": (None, "morphology task state; empty when the galaxy was never fetched"),
    "morphology_attempts": (None, "times the morphology task was claimed"),
    "morphology_error": (None, "why the morphology task failed (empty when done)"),
    "morph_model_version": (None, "morphology model (SHA-256 of its ONNX bytes); empty if none"),
    "morph_class": (None, "predicted six-class label (Elliptical, Spiral, ...); empty if none"),
    "morph_class_probability": (
        None,
        "predicted vote fraction of the answer that decided morph_class, dimensionless",
    ),
    **{
        f"gz2_{answer.lower().replace('.', '_')}": (
            None,
            f"predicted GZ2 vote fraction {answer} ({question.name} {question.text} "
            f"{label}), dimensionless",
        )
        for question in gz2.QUESTIONS
        for answer, label in zip(question.answers, question.labels, strict=True)
    },
}
# Catalogue columns of text (empty where none) and of counts (-1 where none); the others but
# source_id and contaminated are floats (NaN where none).
_TEXT_COLUMNS = (
    "fetch_state",
    "fetch_error",
    "radon_state",
    "radon_error",
    "object_key",
    "missing_bands",
    "algo_version",
    "morphology_state",
    "morphology_error",
    "morph_model_version",
    "morph_class",
)
_COUNT_COLUMNS = ("fetch_attempts", "radon_attempts", "morphology_attempts", "n_bands", "flags")


@dataclass(frozen=True)
class AccuracyRow:
    """Axial position-angle errors of one axis-ratio bin, degrees."""

    label: str
    n: int
    median: float
    mean: float
    p68: float
    p95: float


# -- numbers ---------------------------------------------------------------------------------


def signed_axial_difference(measured: np.ndarray, true: np.ndarray) -> np.ndarray:
    """``measured - true`` of axial angles, wrapped to ``[-90, 90)`` degrees."""
    return np.mod(np.asarray(measured) - np.asarray(true) + 90.0, 180.0) - 90.0


def _row(label: str, errors: np.ndarray) -> AccuracyRow:
    if errors.size == 0:
        return AccuracyRow(label, 0, math.nan, math.nan, math.nan, math.nan)
    p68, p95 = np.percentile(errors, [68.0, 95.0])
    return AccuracyRow(
        label, int(errors.size), float(np.median(errors)), float(errors.mean()), p68, p95
    )


def in_axis_ratio_bin(values: np.ndarray, low: float, high: float, last: bool) -> np.ndarray:
    """``low <= values < high``; ``<= high`` for the ``last`` bin."""
    return (values >= low) & ((values <= high) if last else (values < high))


def accuracy_by_axis_ratio(
    error_deg: np.ndarray,
    axis_ratio: np.ndarray,
    bins: Sequence[tuple[float, float]] = AXIS_RATIO_BINS,
) -> list[AccuracyRow]:
    """Median, mean, 68th and 95th percentile of axial errors per axis-ratio bin, then "all".

    NaN errors (no measurement) are left out; a bin without galaxies has ``n = 0`` and NaNs.
    """
    errors = np.asarray(error_deg, dtype=np.float64)
    q = np.asarray(axis_ratio, dtype=np.float64)
    finite = np.isfinite(errors)
    rows = []
    for i, (low, high) in enumerate(bins):
        last = i == len(bins) - 1
        label = f"[{low:.1f}, {high:.1f}{']' if last else ')'}"
        rows.append(_row(label, errors[finite & in_axis_ratio_bin(q, low, high, last)]))
    rows.append(_row("all", errors[finite]))
    return rows


def headline_accuracy(table: Table) -> AccuracyRow:
    """Axial errors of the headline selection (:data:`HEADLINE_LABEL`) of a catalogue with truth."""
    errors = np.asarray(table["pa_error_deg"], dtype=np.float64)
    q = np.asarray(table["true_axis_ratio"], dtype=np.float64)
    snr = np.asarray(table["snr_half_light"], dtype=np.float64)
    selected = (q < HEADLINE_MAX_AXIS_RATIO) & (snr > HEADLINE_MIN_SNR)
    return _row(HEADLINE_LABEL, errors[selected & np.isfinite(errors)])


def morphology_class_counts(table: Table) -> dict[str, int]:
    """Galaxies per predicted six-class label (:data:`galpipe.science.gz2.SIX_CLASSES` order,
    zeros included) of a results catalogue with morphology columns."""
    labels = [str(v) for v in table["morph_class"]]
    return {label: labels.count(label) for label in gz2.SIX_CLASSES}


def failures_by_reason(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Failed and skipped tasks counted by ``"{pipeline} {state}: {reason}"``.

    The reason is the error's first line with every number replaced by ``N``, so that equal
    causes about different galaxies count together.
    """
    counted: dict[str, int] = {}
    for row in rows:
        for pipeline in PIPELINES:
            state, error = row.get(f"{pipeline}_state"), row.get(f"{pipeline}_error")
            if state in ("failed", "skipped") and error:
                reason = re.sub(r"\d+", "N", error.splitlines()[0])[:120]
                key = f"{pipeline} {state}: {reason}"
                counted[key] = counted.get(key, 0) + 1
    return counted


def results_catalogue(
    rows: Sequence[Mapping[str, Any]],
    truth: Table | None,
    morphology: Sequence[Mapping[str, Any]] | None = None,
) -> Table:
    """The results catalogue: one row per galaxy, joined with the truth when there is one.

    Parameters
    ----------
    rows
        :func:`galpipe.db.demo_results.demo_results` rows.
    truth
        The synthetic catalogue (:func:`galpipe.synthetic.catalog.truth_table`); None for
        a catalogue without truth.
    morphology
        :func:`galpipe.db.demo_results.demo_morphology_results` rows when the morphology
        pipeline ran, joined by ``source_id``; None leaves the morphology columns out.

    Returns
    -------
    astropy.table.Table
        Every column with its unit and description; with a truth, ``true_*`` columns,
        ``snr_half_light``, ``pa_error_deg`` and ``pa_signed_error_deg`` (NaN where not measured);
        with morphology, ``morphology_*`` task columns, ``morph_class``,
        ``morph_class_probability``, ``morph_model_version`` and the 37 ``gz2_classN_M``
        fractions (empty or NaN where not predicted).
    """
    from galpipe.db.demo_results import MORPHOLOGY_COLUMNS, RESULT_COLUMNS

    table = _table(RESULT_COLUMNS, rows)
    if morphology is not None and len(table):
        table = join(
            table, _table(MORPHOLOGY_COLUMNS, morphology), keys="source_id", join_type="left"
        )
        missing = set(table["source_id"].tolist()) - {int(r["source_id"]) for r in morphology}
        if missing:  # both come from the galaxies table: a gap is a caller's mistake
            raise ValueError(f"no morphology row for galaxies {sorted(missing)[:10]}")
    if truth is not None and len(table):
        keep = ["source_id", *_TRUTH_COLUMNS, "sky_sigma_r"]
        table = join(table, truth[keep], keys="source_id", join_type="left")
        table.rename_columns(list(_TRUTH_COLUMNS), list(_TRUTH_COLUMNS.values()))
        table["snr_half_light"] = [
            half_light_snr(flux, sigma, radius, PIXSCALE_ARCSEC)
            for flux, sigma, radius in zip(
                table["true_flux_r"].tolist(),
                table["sky_sigma_r"].tolist(),
                table["true_half_light_radius"].tolist(),
                strict=True,
            )
        ]
        table.remove_column("sky_sigma_r")
        measured = np.asarray(table["position_angle_deg"], dtype=np.float64)
        true = np.asarray(table["true_position_angle"], dtype=np.float64)
        table["pa_error_deg"] = features.axial_difference(measured, true)
        table["pa_signed_error_deg"] = signed_axial_difference(measured, true)
        table.sort("source_id")
    for name, (unit, description) in _RESULT_META.items():
        if name in table.colnames:
            table[name].unit = unit
            table[name].description = description
    table.meta["comments"] = [
        "galpipe demo: position angles of synthetic galaxies, joined with their truth.",
        "Angles in degrees; position angles east of north; NaN or empty where not measured.",
    ]
    return table


def _table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> Table:
    table = Table()
    for name in columns:
        table[name] = _column(name, [r[name] for r in rows])
    return table


def _column(name: str, values: list[Any]) -> Column:
    if name in ("source_id",):
        return Column(np.asarray(values, dtype=np.int64))
    if name in _COUNT_COLUMNS:
        return Column(np.asarray([-1 if v is None else v for v in values], dtype=np.int32))
    if name == "contaminated":
        return Column(np.asarray([bool(v) for v in values], dtype=bool))
    if name in _TEXT_COLUMNS:
        return Column(np.asarray(["" if v is None else str(v) for v in values], dtype=str))
    return Column(np.asarray([math.nan if v is None else v for v in values], dtype=np.float64))


def write_catalogue(table: Table, directory: Path, stem: str = "results") -> tuple[Path, Path]:
    """Write ``table`` as FITS and ECSV under ``directory``; returns both paths."""
    fits_path, ecsv_path = directory / f"{stem}.fits", directory / f"{stem}.ecsv"
    _fits_units(table).write(fits_path, format="fits", overwrite=True)
    table.write(ecsv_path, format="ascii.ecsv", overwrite=True)
    return fits_path, ecsv_path


def _fits_units(table: Table) -> Table:
    """A copy whose units FITS cannot name (e.g. nanomaggy) move into the description."""
    copy = table.copy(copy_data=False)
    for column in copy.itercols():
        if column.unit is None:
            continue
        try:
            column.unit.to_string(format="fits")
        except ValueError:
            column.description = f"{column.description} [{column.unit}]"
            column.unit = None
    return copy


# -- the page --------------------------------------------------------------------------------


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; floats with two decimals, NaN as an em dash."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return "—" if math.isnan(value) else f"{value:.2f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def accuracy_markdown(rows: Sequence[AccuracyRow]) -> str:
    """:func:`accuracy_by_axis_ratio` as a Markdown table (degrees)."""
    return markdown_table(
        ("axis ratio b/a", "n", "median (°)", "mean (°)", "68th pct (°)", "95th pct (°)"),
        [(r.label, r.n, r.median, r.mean, r.p68, r.p95) for r in rows],
    )


def write_markdown_report(path: Path, sections: Sequence[tuple[str, str]], title: str) -> Path:
    """Write a one-page Markdown report of ``(heading, body)`` sections."""
    parts = [f"# {title}", ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body.rstrip(), ""]
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def write_report(result: DemoResult, options: DemoOptions) -> Path:
    """Write ``report.md`` of a finished run into ``result.out`` and return its path."""
    sections = [("Run", _run_markdown(result, options)), ("Tasks", _tasks_markdown(result))]
    if result.accuracy:
        sections.append(("Accuracy against the truth", _accuracy_section(result)))
    if result.morphology_model is not None:
        model = result.morphology_model
        sections.append(("Morphology", _morphology_section(result, model, options)))
    figures = [
        f"![{label}]({path.name})" for label, path in result.files.items() if path.suffix == ".png"
    ]
    if result.gallery_skipped:
        figures.append(
            f"The gallery leaves out {len(result.gallery_skipped)} galaxy(ies) whose cutout "
            "could not be read: "
            + "; ".join(f"{sid} ({why})" for sid, why in sorted(result.gallery_skipped.items()))
        )
    if figures:
        sections.append(("Figures", "\n\n".join(figures)))
    files = [f"- [{label}]({path.name})" for label, path in result.files.items()]
    files.append("- [logs](logs/) of every process")
    sections.append(("Files", "\n".join(files)))
    return write_markdown_report(result.out / "report.md", sections, "galpipe demo report")


def _run_markdown(result: DemoResult, options: DemoOptions) -> str:
    sky = (
        f"the demo's synthetic sky at {result.cutout_url} (its own rate limit LIFTED for the demo)"
        if options.cutout_url is None
        else result.cutout_url
    )
    workers = ", ".join(f"{n} {p}" for p, n in options.worker_counts.items())
    lines = [
        f"- galaxies: {result.n_galaxies:,}; workers: {workers} (separate processes)",
        f"- database: {'embedded PostgreSQL' if options.database_url is None else 'external'}; "
        f"object store: `{result.object_store}`",
        f"- cutouts: {sky}; shared fetch rate {result.fetch_rate:g} requests/s",
        f"- wall time: {result.wall_s:.1f} s ("
        + ", ".join(f"{k} {v:.1f} s" for k, v in result.phases.items())
        + ")",
        "- status: "
        + ("every task terminal" if result.all_terminal else "NOT every task is terminal")
        + ("" if not result.problems else "; problems: " + "; ".join(result.problems)),
    ]
    return "\n".join(lines)


def _tasks_markdown(result: DemoResult) -> str:
    rows = []
    for pipeline in result.pipelines:
        row = result.counts.get(pipeline, {})
        rows.append(
            (
                pipeline,
                *(row.get(s, 0) for s in STATES),
                result.stage_seconds.get(pipeline, float("nan")),
                result.throughput(pipeline),
            )
        )
    body = markdown_table(("pipeline", *STATES, "stage (s)", "galaxies/s"), rows)
    if result.failures:
        body += "\n\nFailures and skips by reason:\n\n" + "\n".join(
            f"- {n} × {reason}" for reason, n in sorted(result.failures.items())
        )
    return body


def _morphology_section(result: DemoResult, model: ModelRecord, options: DemoOptions) -> str:
    metrics = model.metrics

    def metric(name: str, fmt: str) -> str:
        value = metrics.get(name)
        return format(value, fmt) if isinstance(value, int | float) else "not recorded"

    predicted = sum(result.morphology_classes.values())
    counts = markdown_table(
        ("predicted class", "galaxies", "share"),
        [
            (label, n, f"{n / predicted:.0%}" if predicted else "—")
            for label, n in result.morphology_classes.items()
        ],
    )
    stage = result.stage_seconds.get("morphology", math.nan)
    return "\n".join(
        [
            f"- model `{model.model_version}`: {model.architecture}, input {model.input_mode} "
            f"{model.input_channels}×{model.input_size}×{model.input_size} px, the small "
            "network shipped with the demo (`galpipe/demo/models/`), run on the CPU",
            f"- its recorded test metrics: RMSE {metric('rmse', '.4f')} of the 37 vote "
            f"fractions, six-class accuracy {metric('six_class_accuracy', '.3f')} on "
            f"{metrics.get('n_galaxies', 'an unrecorded number of')} held-out galaxies",
            f"- stage: {terminal_count(result.counts.get('morphology', {})):,} tasks terminal "
            f"{stage:.1f} s after the workers started, with {options.morphology_workers} "
            f"worker(s): {result.throughput('morphology'):.1f} galaxies/s (a bound from below: "
            "the stage also waits for fetch)",
            "",
            f"{predicted:,} galaxies predicted, by six-class label (the class whose deciding "
            "vote fraction is largest; columns `morph_class`, `morph_class_probability` and "
            "the 37 fractions `gz2_classN_M` of the catalogue):",
            "",
            counts,
        ]
    )


def _accuracy_section(result: DemoResult) -> str:
    body = accuracy_markdown(result.accuracy)
    cut = result.accuracy_cut
    if cut is not None:
        body += (
            f"\n\n{cut.label[0].upper()}{cut.label[1:]}: n = {cut.n}, median axial error "
            f"{cut.median:.2f}°, 95th percentile {cut.p95:.2f}°."
        )
    return body + (
        "\n\nAxial error: |measured − true| of the position angle east of north, wrapped to "
        "[0°, 90°]; combined griz measurement; only measured galaxies. S/N: half the r flux "
        "over the sky noise in the intrinsic half-light aperture (column `snr_half_light`, the "
        "definition the validation uses)."
    )


def print_summary(result: DemoResult, console: Console) -> None:
    """The end-of-run summary: counts, throughput per stage, accuracy, files."""
    table = RichTable(title="tasks")
    table.add_column("pipeline")
    for state in STATES:
        table.add_column(state, justify="right")
    table.add_column("stage s", justify="right")
    table.add_column("galaxies/s", justify="right")
    for pipeline in result.pipelines:
        row = result.counts.get(pipeline, {})
        table.add_row(
            pipeline,
            *(f"{row.get(s, 0):,}" for s in STATES),
            f"{result.stage_seconds.get(pipeline, float('nan')):.1f}",
            f"{result.throughput(pipeline):.1f}",
        )
    console.print(table)
    for reason, n in sorted(result.failures.items()):
        console.print(f"  {n} × {reason}", highlight=False)
    if result.accuracy:
        _print_accuracy(result, console)
    if result.morphology_model is not None:
        console.print(
            f"morphology (model {result.morphology_model.model_version[:12]}): "
            + ", ".join(f"{n} {label}" for label, n in result.morphology_classes.items() if n),
            highlight=False,
        )
    if result.gallery_skipped:
        console.print(
            f"gallery: left out {len(result.gallery_skipped)} galaxy(ies) whose cutout could "
            "not be read (see report)",
            highlight=False,
        )
    console.print(
        f"wall time {result.wall_s:.1f} s: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in result.phases.items()),
        highlight=False,
    )
    for problem in result.problems:
        console.print(f"[red]problem:[/red] {problem}")
    console.print(f"report: {result.files.get('report', result.out / 'report.md')}")


def _print_accuracy(result: DemoResult, console: Console) -> None:
    acc = RichTable(title="axial error of the position angle vs truth (degrees)")
    for name in ("axis ratio", "n", "median", "mean", "68th pct", "95th pct"):
        acc.add_column(name, justify="right")
    for r in result.accuracy:
        acc.add_row(r.label, str(r.n), *(f"{v:.2f}" for v in (r.median, r.mean, r.p68, r.p95)))
    console.print(acc)
    cut = result.accuracy_cut
    if cut is not None:
        console.print(f"{cut.label}: n={cut.n}, median {cut.median:.2f}°", highlight=False)
