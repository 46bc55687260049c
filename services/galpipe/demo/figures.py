"""The demo's figures: recovered against true position angles, error histograms, a gallery,
and the morphology gallery (galaxies titled with their predicted class).

Figures use matplotlib's Agg backend, so no display is needed; nothing here touches the
database or the object store: callers hand in tables and decoded cutouts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from astropy.table import Table

# Agg before pyplot loads: figures are files here, never windows (servers, CI, containers).
matplotlib.use("Agg")
import matplotlib.pyplot as plt

from galpipe.demo.report import AXIS_RATIO_BINS, in_axis_ratio_bin
from galpipe.science import features, gz2
from galpipe.science.core import RadonConfig
from galpipe.science.preprocess import apply_circular_mask, sanitise_and_shift
from galpipe.science.radon import RadonOperator


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
        sel = errors[np.isfinite(errors) & in_axis_ratio_bin(q, low, high, last)]
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


# -- the morphology gallery --------------------------------------------------------------------


@dataclass(frozen=True)
class MorphologyItem:
    """One galaxy of the morphology gallery.

    Attributes
    ----------
    source_id : int
        The galaxy.
    cube : numpy.ndarray
        ``(4, S, S)`` its stored cutout, bands g, r, i, z (nanomaggies).
    label : str
        Its predicted six-class label.
    probability : float
        The vote fraction that decided the label, dimensionless.
    """

    source_id: int
    cube: np.ndarray
    label: str
    probability: float


def pick_morphology_gallery(table: Table, count: int = 12) -> list[int]:
    """Source ids of up to ``count`` predicted galaxies, a few of each predicted class.

    Classes take turns in :data:`galpipe.science.gz2.SIX_CLASSES` order, each giving its most
    confident galaxy not yet shown, so that a rare class is shown as well as a common one.
    """
    labels = np.asarray([str(v) for v in table["morph_class"]])
    probability = np.asarray(table["morph_class_probability"], dtype=np.float64)
    queues = []
    for label in gz2.SIX_CLASSES:
        rows = np.flatnonzero(labels == label)
        rows = rows[np.argsort(-probability[rows], kind="stable")]
        queues.append([int(table["source_id"][i]) for i in rows])
    picks: list[int] = []
    while len(picks) < count and any(queues):
        for queue in queues:
            if queue and len(picks) < count:
                picks.append(queue.pop(0))
    return picks


def asinh_stretch(image: np.ndarray, softening: float = 3.0) -> np.ndarray:
    """``asinh((image - sky) / (softening σ))`` of one band: sky and σ from the median and the
    median absolute deviation, so faint outskirts and a bright core both show (0 = sky)."""
    values = np.asarray(image, dtype=np.float64)
    sky = float(np.median(values))
    sigma = 1.4826 * float(np.median(np.abs(values - sky)))
    if not sigma > 0:  # a blank or constant band: nothing to stretch
        sigma = float(np.std(values)) or 1.0
    return np.arcsinh((values - sky) / (softening * sigma))


def plot_morphology_gallery(
    items: Sequence[MorphologyItem], path: Path, columns: int = 4, band: int = 1
) -> Path:
    """A grid of asinh-stretched stamps (``band``, 1: r), each titled with its predicted class
    and the vote fraction that decided it."""
    rows = max(math.ceil(len(items) / columns), 1)
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.8 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, item in zip(axes.ravel(), items, strict=False):
        stretched = asinh_stretch(item.cube[band])
        top = float(np.percentile(stretched, 99.5))
        ax.imshow(stretched, origin="lower", cmap="gray_r", vmin=0.0, vmax=max(top, 1e-6))
        ax.set_title(f"{item.source_id}\n{item.label} (p = {item.probability:.2f})", fontsize=8)
    fig.suptitle("predicted morphology (r band, asinh stretch)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
