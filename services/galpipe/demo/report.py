"""Plots and summaries of a run against a known truth (``galpipe demo``): accuracy, catalogue,
figures and a one-page Markdown report.

Conventions: position angles are degrees east of north in ``[0, 180)``; an *axial* error is
``|((measured - true + 90) mod 180) - 90|`` in ``[0, 90]`` degrees (a major axis has no head
or tail). Nothing here touches the database or the object store: callers hand in tables and
arrays. Figures use matplotlib's Agg backend, so no display is needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import astropy.units as u
import matplotlib
import numpy as np
from astropy.table import Column, Table, join

# Agg before pyplot loads: figures are files here, never windows (servers, CI, containers).
matplotlib.use("Agg")
import matplotlib.pyplot as plt

from galpipe.science import features
from galpipe.science.core import RadonConfig
from galpipe.science.preprocess import apply_circular_mask, sanitise_and_shift
from galpipe.science.radon import RadonOperator

#: Axis-ratio bins ``[low, high)`` of the accuracy table; the last one includes 1.0.
AXIS_RATIO_BINS: tuple[tuple[float, float], ...] = ((0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.0))
#: Arcseconds per pixel of the demo's cutouts (DR10 native).
PIXSCALE_ARCSEC = 0.262

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
    "angle_err_deg": (u.deg, "uncertainty of the combined angle (band-stack fit, Birge-scaled)"),
    "anisotropy": (None, "sinusoid amplitude over offset, b/a of the band stack's Radon curve"),
    "band_spread_deg": (u.deg, "spread of the per-band angles about the combined one"),
    "n_bands": (None, "bands combined into the angle"),
    "masked_fraction": (None, "fraction of the stamp masked as neighbours"),
    "contaminated": (None, "a neighbour could not be masked cleanly"),
    "flags": (None, "galpipe.science.core.Flag bits of the combined measurement"),
    "snr_r": (None, "r-band S/N in the PSF-convolved half-light aperture (from the truth)"),
    "pa_error_deg": (u.deg, "axial error |measured - true| of the position angle, [0, 90]"),
    "pa_signed_error_deg": (u.deg, "measured minus true position angle, wrapped to [-90, 90)"),
}


@dataclass(frozen=True)
class AccuracyRow:
    """Axial position-angle errors of one axis-ratio bin, degrees."""

    label: str
    n: int
    median: float
    mean: float
    p68: float
    p95: float


@dataclass(frozen=True)
class GalleryItem:
    """What the gallery shows of one galaxy (see :func:`gallery_items`).

    Attributes
    ----------
    source_id : int
        The galaxy.
    image : numpy.ndarray
        ``(S, S)`` r-band stamp as measured (sanitised, neighbour-masked, circular mask).
    sinogram : numpy.ndarray
        ``(S, A)`` its Radon transform (position × angle).
    angles_deg : numpy.ndarray
        ``(A,)`` projection angles, degrees.
    pooled : numpy.ndarray
        ``(A,)`` the pooled curve (step 4, the pipeline's pooling).
    fit_offset, fit_amplitude, fit_theta0_deg : float
        The fitted ``a + b cos(2(theta - theta0))`` (step 5).
    true_pa_deg, measured_pa_deg, axis_ratio : float
        Truth and the pipeline's combined measurement (east of north).
    """

    source_id: int
    image: np.ndarray
    sinogram: np.ndarray
    angles_deg: np.ndarray
    pooled: np.ndarray
    fit_offset: float
    fit_amplitude: float
    fit_theta0_deg: float
    true_pa_deg: float
    measured_pa_deg: float
    axis_ratio: float


# -- numbers ---------------------------------------------------------------------------------


def signed_axial_difference(measured: np.ndarray, true: np.ndarray) -> np.ndarray:
    """``measured - true`` of axial angles, wrapped to ``[-90, 90)`` degrees."""
    return np.mod(np.asarray(measured) - np.asarray(true) + 90.0, 180.0) - 90.0


def aperture_snr(
    flux: np.ndarray,
    sky_sigma: np.ndarray,
    half_light_radius_arcsec: np.ndarray,
    psf_fwhm_arcsec: np.ndarray,
    gain_e_per_flux: np.ndarray | float,
    pixscale_arcsec: float = PIXSCALE_ARCSEC,
) -> np.ndarray:
    """S/N of half the flux in a circle of the PSF-convolved half-light radius.

    ``R = sqrt(r_h^2 + (FWHM/2)^2)``; noise ``sqrt(pi R^2 sigma^2 + (F/2) / gain)`` with
    ``R`` in pixels, ``sigma`` the sky noise per pixel and ``F`` the flux (same units as
    ``sigma``; nanomaggies in the synthetic sky). A definition for cuts, not a photometric
    measurement: it grows with flux and falls with size and sky noise as the real one does.
    """
    radius_px = np.hypot(half_light_radius_arcsec, np.asarray(psf_fwhm_arcsec) / 2.0)
    radius_px = radius_px / pixscale_arcsec
    half = 0.5 * np.asarray(flux, dtype=np.float64)
    noise = np.sqrt(np.pi * radius_px**2 * np.asarray(sky_sigma) ** 2 + half / gain_e_per_flux)
    return np.asarray(half / noise)


def _row(label: str, errors: np.ndarray) -> AccuracyRow:
    if errors.size == 0:
        return AccuracyRow(label, 0, math.nan, math.nan, math.nan, math.nan)
    p68, p95 = np.percentile(errors, [68.0, 95.0])
    return AccuracyRow(
        label, int(errors.size), float(np.median(errors)), float(errors.mean()), p68, p95
    )


def _in_bin(values: np.ndarray, low: float, high: float, last: bool) -> np.ndarray:
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
        rows.append(_row(label, errors[finite & _in_bin(q, low, high, last)]))
    rows.append(_row("all", errors[finite]))
    return rows


def results_catalogue(rows: Sequence[Mapping[str, Any]], truth: Table | None) -> Table:
    """The results catalogue: one row per galaxy, joined with the truth when there is one.

    Parameters
    ----------
    rows
        :func:`galpipe.db.demo_results.demo_results` rows.
    truth
        The synthetic catalogue (:func:`galpipe.synthetic.catalog.truth_table`); None for
        a catalogue without truth.

    Returns
    -------
    astropy.table.Table
        Every column with its unit and description; with a truth, ``true_*`` columns,
        ``snr_r``, ``pa_error_deg`` and ``pa_signed_error_deg`` (NaN where not measured).
    """
    from galpipe.db.demo_results import RESULT_COLUMNS

    table = Table()
    for name in RESULT_COLUMNS:
        values = [r[name] for r in rows]
        table[name] = _column(name, values)
    if truth is not None and len(table):
        keep = ["source_id", *_TRUTH_COLUMNS, "sky_sigma_r", "gain"]
        table = join(table, truth[keep], keys="source_id", join_type="left")
        table.rename_columns(list(_TRUTH_COLUMNS), list(_TRUTH_COLUMNS.values()))
        table["snr_r"] = aperture_snr(
            np.asarray(table["true_flux_r"]),
            np.asarray(table["sky_sigma_r"]),
            np.asarray(table["true_half_light_radius"]),
            np.asarray(table["true_psf_fwhm"]),
            np.asarray(table["gain"]),
        )
        table.remove_columns(["sky_sigma_r", "gain"])
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


def _column(name: str, values: list[Any]) -> Column:
    if name in ("source_id",):
        return Column(np.asarray(values, dtype=np.int64))
    if name in ("fetch_attempts", "radon_attempts", "n_bands", "flags"):
        return Column(np.asarray([-1 if v is None else v for v in values], dtype=np.int32))
    if name == "contaminated":
        return Column(np.asarray([bool(v) for v in values], dtype=bool))
    if name in (
        "fetch_state",
        "fetch_error",
        "radon_state",
        "radon_error",
        "object_key",
        "missing_bands",
        "algo_version",
    ):
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


# -- the gallery -----------------------------------------------------------------------------


def pick_gallery(table: Table, count: int = 8) -> list[int]:
    """Source ids of up to ``count`` measured galaxies spread over the axis-ratio range."""
    measured = table[np.isfinite(np.asarray(table["position_angle_deg"], dtype=np.float64))]
    if "true_axis_ratio" not in measured.colnames or not len(measured):
        return [int(s) for s in measured["source_id"][:count]]
    order = np.argsort(np.asarray(measured["true_axis_ratio"]))
    picks = np.unique(np.linspace(0, len(order) - 1, min(count, len(order))).round().astype(int))
    return [int(measured["source_id"][order[i]]) for i in picks]


def gallery_items(
    cubes: np.ndarray,
    operator: RadonOperator,
    meta: Sequence[Mapping[str, float]],
    *,
    mask_neighbours: bool = True,
    band: int = 1,
) -> list[GalleryItem]:
    """Recompute the r-band Radon steps of a few galaxies for display (science core only).

    Parameters
    ----------
    cubes
        ``(N, 4, S, S)`` decoded cutouts, bands g, r, i, z.
    operator
        The pipeline's Radon operator.
    meta
        Per galaxy: ``source_id``, ``true_pa_deg``, ``measured_pa_deg``, ``axis_ratio``.
    mask_neighbours
        Mask neighbours as the pipeline does (:mod:`galpipe.science.neighbours`).
    band
        Band index shown (1: r).
    """
    pre = sanitise_and_shift(np.asarray(cubes, dtype=np.float32))
    stamps = pre.images
    if mask_neighbours and len(stamps):
        from galpipe.science.neighbours import mask_neighbours as mask

        stamps = np.asarray(mask(stamps, pre.no_data)[0], dtype=np.float32)
    stamps = apply_circular_mask(stamps)
    sinograms = operator.apply(stamps[:, band : band + 1], circular=True)[:, 0]
    config = RadonConfig()
    pooled = features.pool(sinograms, config.pooling, config.top_fraction)
    fit = features.fit_sinusoid(pooled, operator.angles)
    return [
        GalleryItem(
            source_id=int(m["source_id"]),
            image=stamps[i, band],
            sinogram=np.asarray(sinograms[i]),
            angles_deg=np.asarray(operator.angles),
            pooled=pooled[i],
            fit_offset=float(fit.offset[i]),
            fit_amplitude=float(fit.amplitude[i]),
            fit_theta0_deg=float(fit.theta0_deg[i]),
            true_pa_deg=float(m["true_pa_deg"]),
            measured_pa_deg=float(m["measured_pa_deg"]),
            axis_ratio=float(m["axis_ratio"]),
        )
        for i, m in enumerate(meta)
    ]


# -- figures ---------------------------------------------------------------------------------


def plot_pa_recovery(table: Table, path: Path) -> Path:
    """Recovered vs true position angle, and the signed error against axis ratio."""
    ok = np.isfinite(np.asarray(table["position_angle_deg"], dtype=np.float64))
    t = table[ok]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8), constrained_layout=True)
    points = left.scatter(
        t["true_position_angle"],
        t["position_angle_deg"],
        c=t["true_axis_ratio"],
        s=6,
        cmap="viridis",
        vmin=0.2,
        vmax=1.0,
    )
    left.plot([0, 180], [0, 180], color="0.4", lw=0.8)
    left.set(
        xlim=(0, 180),
        ylim=(0, 180),
        xlabel="true position angle (deg E of N)",
        ylabel="measured position angle (deg E of N)",
        title=f"{len(t):,} measured galaxies",
    )
    fig.colorbar(points, ax=left, label="true axis ratio b/a")
    right.scatter(t["true_axis_ratio"], t["pa_signed_error_deg"], s=6, color="tab:blue")
    right.axhline(0, color="0.4", lw=0.8)
    right.set(
        xlabel="true axis ratio b/a",
        ylabel="measured − true (deg, axial)",
        ylim=(-90, 90),
        title="error against axis ratio",
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_error_histograms(
    table: Table, path: Path, bins: Sequence[tuple[float, float]] = AXIS_RATIO_BINS
) -> Path:
    """Histograms of the axial error, one panel per axis-ratio bin (log-spaced error bins)."""
    errors = np.asarray(table["pa_error_deg"], dtype=np.float64)
    q = np.asarray(table["true_axis_ratio"], dtype=np.float64)
    edges = np.logspace(-2, np.log10(90.0), 36)
    fig, axes = plt.subplots(1, len(bins), figsize=(3.2 * len(bins), 3.4), sharey=True)
    for i, (ax, (low, high)) in enumerate(zip(np.atleast_1d(axes), bins, strict=True)):
        last = i == len(bins) - 1
        sel = errors[np.isfinite(errors) & _in_bin(q, low, high, last)]
        ax.hist(np.clip(sel, edges[0], edges[-1]), bins=edges, color="tab:blue")
        if sel.size:
            ax.axvline(np.median(sel), color="tab:red", lw=1, label=f"median {np.median(sel):.2f}°")
            ax.legend(fontsize=8, loc="upper left")
        ax.set_xscale("log")
        ax.set(
            title=f"b/a in [{low:.1f}, {high:.1f}{']' if last else ')'} (n={sel.size})",
            xlabel="axial error (deg)",
        )
    np.atleast_1d(axes)[0].set_ylabel("galaxies")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_gallery(items: Sequence[GalleryItem], path: Path) -> Path:
    """One row per galaxy: r-band stamp with true and measured axes, sinogram, pooled curve."""
    rows = max(len(items), 1)
    fig, axes = plt.subplots(rows, 3, figsize=(11, 2.6 * rows), squeeze=False)
    for row, item in zip(axes, items, strict=False):
        image_ax, sino_ax, curve_ax = row
        size = item.image.shape[0]
        image_ax.imshow(item.image, origin="lower", cmap="gray_r")
        centre = (size - 1) / 2.0
        for pa, colour, style, label in (
            (item.true_pa_deg, "tab:green", "-", "true"),
            (item.measured_pa_deg, "tab:red", "--", "measured"),
        ):
            # East is left (-x) and north up (+y) in these cutouts: PA 0 points up, 90 left.
            dx, dy = -math.sin(math.radians(pa)), math.cos(math.radians(pa))
            reach = 0.42 * size
            image_ax.plot(
                [centre - reach * dx, centre + reach * dx],
                [centre - reach * dy, centre + reach * dy],
                color=colour,
                ls=style,
                lw=1.5,
                label=label,
            )
        image_ax.set_title(
            f"{item.source_id}  b/a={item.axis_ratio:.2f}\n"
            f"true {item.true_pa_deg:.1f}°, measured {item.measured_pa_deg:.1f}°",
            fontsize=8,
        )
        image_ax.legend(fontsize=6, loc="lower right")
        image_ax.set_xticks([])
        image_ax.set_yticks([])
        sino_ax.imshow(
            item.sinogram,
            origin="lower",
            aspect="auto",
            extent=(item.angles_deg[0], item.angles_deg[-1], 0, item.sinogram.shape[0]),
            cmap="magma",
        )
        sino_ax.set(xlabel="projection angle θ (deg)", ylabel="position (px)")
        sino_ax.set_title("r-band sinogram", fontsize=8)
        theta = np.linspace(item.angles_deg[0], item.angles_deg[-1], 361)
        model = item.fit_offset + item.fit_amplitude * np.cos(
            2 * np.radians(theta - item.fit_theta0_deg)
        )
        curve_ax.plot(item.angles_deg, item.pooled, ".", ms=2, color="tab:blue", label="max pool")
        curve_ax.plot(theta, model, color="tab:red", lw=1, label="a + b cos 2(θ−θ₀)")
        curve_ax.axvline(item.fit_theta0_deg, color="tab:red", lw=0.6, ls=":")
        curve_ax.set(xlabel="θ (deg)", ylabel="pooled projection")
        curve_ax.set_title(f"θ₀ = {item.fit_theta0_deg:.1f}° (image frame)", fontsize=8)
        curve_ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


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
