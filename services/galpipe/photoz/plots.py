"""Figures of a photo-z report: z_phot against z_spec, and the residual against r magnitude,
for the pixel method and (where scored) the integrated-flux baseline. matplotlib (the ``local``
extra) draws them off-screen (Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from galpipe.science.photoz_metrics import OUTLIER_THRESHOLD, redshift_metrics

if TYPE_CHECKING:
    from galpipe.photoz.workflow import PhotozScores

__all__ = ["plot_redshifts", "plot_residuals_by_magnitude"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _methods(scores: PhotozScores) -> list[tuple[str, npt.NDArray[np.float64]]]:
    """(label, z_phot) of every method scored, baseline on the galaxies with pixels only."""
    methods = [("pixel kNN", scores.z_pixel)]
    if scores.z_baseline is not None:
        methods.append(
            ("integrated-flux kNN", np.where(scores.n_pixels > 0, scores.z_baseline, np.nan))
        )
    return methods


def plot_redshifts(scores: PhotozScores, path: Path) -> Path:
    """z_phot against z_spec, one panel per method, with the outlier bounds."""
    plt = _pyplot()
    methods = _methods(scores)
    fig, axes = plt.subplots(1, len(methods), figsize=(4.6 * len(methods), 4.4), squeeze=False)
    finite = scores.z_spec[np.isfinite(scores.z_spec)]
    top = float(max(finite.max(initial=0.0), 0.1)) * 1.08
    line = np.linspace(0.0, top, 50)
    for ax, (label, z) in zip(axes[0], methods, strict=True):
        figures = redshift_metrics(z, scores.z_spec)
        ax.scatter(scores.z_spec, z, s=8, alpha=0.5, color="tab:blue", linewidths=0)
        ax.plot(line, line, "k-", lw=0.8)
        for sign in (-1, 1):
            ax.plot(line, line + sign * OUTLIER_THRESHOLD * (1 + line), "k:", lw=0.8)
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_xlabel("z_spec")
        ax.set_ylabel("z_phot")
        ax.set_title(
            f"{label}: σ_NMAD {figures.sigma_nmad:.3f}, outliers "
            f"{100 * figures.outlier_fraction:.1f} %\n(N = {figures.n})",
            fontsize=9,
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_residuals_by_magnitude(scores: PhotozScores, path: Path) -> Path:
    """dz / (1 + z_spec) against r magnitude of the segment flux, every method scored."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    colours = ("tab:blue", "tab:orange")
    for (label, z), colour in zip(_methods(scores), colours, strict=False):
        residual = (z - scores.z_spec) / (1 + scores.z_spec)
        ax.scatter(scores.r_mag, residual, s=8, alpha=0.5, color=colour, label=label, lw=0)
    ax.axhline(0.0, color="k", lw=0.8)
    for sign in (-1, 1):
        ax.axhline(sign * OUTLIER_THRESHOLD, color="k", ls=":", lw=0.8)
    ax.set_ylim(-1.0, 1.0)
    ax.set_xlabel("r (AB mag, segment flux)")
    ax.set_ylabel("(z_phot - z_spec) / (1 + z_spec)")
    ax.legend(loc="upper left", markerscale=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
