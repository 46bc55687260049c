"""The validation report: ``summary.json``, ``report.md`` and PNG figures, from one summary.

Everything here reads the JSON-ready summary built by :mod:`galpipe.validation.run`, so the
Markdown and the figures can be regenerated from ``summary.json`` alone
(:func:`write_report`). Figures use matplotlib's Agg backend (files, never windows).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["FIGURES", "write_report"]

#: The figures written next to ``report.md``.
FIGURES = (
    "truth_accuracy.png",
    "truth_bands.png",
    "calibration.png",
    "protocol.png",
    "gaia.png",
)
_METHOD_LABELS = {
    "ours": "ours (Radon, masking on)",
    "ours_nomask": "ours (Radon, masking off)",
    "ours_moments": "ours (sinogram moments, masking on)",
    "peer": "peer (sep second moments)",
    "truth": "truth (Gaia-like noise model)",
    "ours_sampled": "ours (Radon, masking on)",
    "peer_sampled": "peer (sep second moments)",
}
_BANDS = ("g", "r", "i", "z", "combined")
# The protocol's figure: ours and the peer on every image, ours unmasked on the sampled fifth.
_PROTOCOL_METHODS = ("ours", "ours_nomask", "peer")
_SUBSETS = ("R", "B", "N", "RB", "RN", "BN", "RBN")


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _stats_cells(stats: dict[str, Any]) -> list[str]:
    return [
        f"{stats['n_measured']}/{stats['n']}",
        _fmt(stats["median_deg"]),
        _fmt(stats["mean_deg"]),
        _fmt(stats["p68_deg"]),
        _fmt(stats["p95_deg"]),
    ]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


_STATS_HEADER = ("measured/n", "median °", "mean °", "p68 °", "p95 °")


def _binned_table(
    label: str, bins: Sequence[str], by_method: dict[str, list[dict[str, Any]]]
) -> list[str]:
    """One row per bin and method: the methods side by side within each bin."""
    rows = []
    for b, name in enumerate(bins):
        for method, stats in by_method.items():
            rows.append([name, _METHOD_LABELS.get(method, method), *_stats_cells(stats[b])])
    return _table((label, "method", *_STATS_HEADER), rows)


_FLOOR_LABELS = {"ours": "ours", "ours_nomask": "ours, masking off", "oracle": "oracle"}


def _floor_section(floor: dict[str, Any]) -> list[str]:
    """Section 4's last part: ours beside the oracle that knows everything but the angle."""
    se = floor["deviation_mean_se_deg"]
    ours_mean = floor["ours"]["deviation"]["overall"]["mean_deg"]
    oracle_mean = floor["oracle"]["deviation"]["overall"]["mean_deg"]
    lines = [
        f"### The information floor: an oracle on the same images ({floor['n_images']} images "
        f"of {floor['n_galaxies']} isolated galaxies)",
        "",
        "How much of the deviation is the method's, and how much the data's? The oracle knows "
        "each galaxy's noiseless image (the truth rendered by GalSim without noise) and fits "
        "only its angle: it renders the galaxy at every trial angle "
        f"({floor['offsets_deg']}), applies the image's own R and B to each, models every "
        "pixel's noise (the sky through R and B, the photon noise, N's clipping at zero and "
        "resampling) and takes the angle of greatest Gaussian likelihood. Shape, size, flux, "
        "centre, PSF and noise levels are the truth's. It measures the same augmented images "
        "as ours, so any method that must also estimate the galaxy's shape can at best hope to "
        "approach it; where pixels are correlated (R, B without N) its independent-pixel "
        "likelihood is not optimal and ours can score better. Ours with neighbour masking off "
        "(the paper's method) is shown too: these galaxies have no neighbour, so whatever "
        "masking changes here is the cost of its false detections in starved images.",
        "",
        f"Mean deviation ± standard error over galaxies: ours {_fmt(ours_mean)} ± "
        f"{_fmt(se['ours'])}°, oracle {_fmt(oracle_mean)} ± {_fmt(se['oracle'])}°; "
        f"ours − oracle {_fmt(floor['deviation_ours_minus_oracle_deg'])} ± "
        f"{_fmt(se['ours_minus_oracle'])}° (paired, the same images).",
        "",
    ]
    selections = (
        ("all", "overall"),
        ("N with 10³–10⁴ photons", "resample_low"),
        ("N with 10⁴–10⁵ photons", "resample_high"),
        ("no N (R and/or B)", "no_resample"),
    )
    for kind, title in (
        ("deviation", "The protocol's deviation |(R_aug − α) − R_orig|"),
        ("error", "Error against the true angle on the augmented images"),
    ):
        lines += [f"#### {title}", ""]
        methods = ("ours", "ours_nomask", "oracle")
        rows = [
            [name, _FLOOR_LABELS[m], *_stats_cells(floor[m][kind][key])]
            for name, key in selections
            for m in methods
        ]
        rows += [
            [f"q {label}", _FLOOR_LABELS[m], *_stats_cells(floor[m][kind]["by_axis_ratio"][b])]
            for b, label in enumerate(floor["axis_ratio_bins"])
            for m in methods
        ]
        lines += _table(("images", "method", *_STATS_HEADER), rows)
    return lines


def _markdown(summary: dict[str, Any]) -> str:
    truth, protocol, gaia = summary["truth"], summary["protocol"], summary["gaia"]
    floor = summary["floor"]
    head = truth["headline"]
    lines = [
        "# Validation of the Radon position angles",
        "",
        f"Configuration: `{summary['config']['algo_version']}`; peer: "
        f"`{summary['config']['peer']}`. Seed {summary['config']['seed']}"
        + (" (quick mode)." if summary["config"]["quick"] else "."),
        "",
        "## Headline",
        "",
        *_table(
            ("figure", "ours", "peer", "goal"),
            [
                [
                    f"median axial error vs truth, combined ({head['selection']})",
                    _fmt(head["ours"]["median_deg"]),
                    _fmt(head["peer"]["median_deg"]),
                    "< 2°",
                ],
                [
                    f"augmentation protocol: mean deviation over {protocol['n_images']} images",
                    _fmt(protocol["ours"]["overall"]["mean_deg"]),
                    _fmt(protocol["peer"]["overall"]["mean_deg"]),
                    "paper: 6.17°",
                ],
                [
                    f"protocol mean on {floor['n_images']} images of isolated galaxies: "
                    "ours / an oracle that knows all but the angle (section 4)",
                    f"{_fmt(floor['ours']['deviation']['overall']['mean_deg'])} / "
                    f"{_fmt(floor['oracle']['deviation']['overall']['mean_deg'])}",
                    "–",
                    "",
                ],
                [
                    "augmentation protocol: median deviation",
                    _fmt(protocol["ours"]["overall"]["median_deg"]),
                    _fmt(protocol["peer"]["overall"]["median_deg"]),
                    "",
                ],
                [
                    "uncertainty calibration: fraction within 1σ / 2σ (all galaxies)",
                    f"{_fmt(summary['headline']['coverage_1sigma'])} / "
                    f"{_fmt(summary['headline']['coverage_2sigma'])}",
                    "–",
                    "0.68 / 0.95",
                ],
            ],
        ),
        "Angles are axial: an error is |((measured − true + 90) mod 180) − 90| in [0°, 90°]. "
        "Position angles are east of north, derived from each cutout's WCS. A method that "
        "returns no angle for a galaxy counts in *n* but not in *measured*; statistics are over "
        "the measured ones.",
        "",
        "## 1. The truth population",
        "",
        "GalSim galaxies of the synthetic sky, served as the cutout service's FITS and decoded "
        "by the radon pipeline. Distributions:",
        "",
    ]
    for key, value in summary["population"].items():
        lines.append(f"- **{key}**: {value}")
    lines += [
        "",
        "**S/N definition.** " + summary["population"]["snr_definition"] + "; F_r the r-band "
        "flux, σ_r the r-band sky noise per pixel, R_e the half-light radius, p the pixel "
        "scale. Background-limited (the source's Poisson noise is in the images, not in the "
        "definition).",
        "",
        "## 2. Accuracy against the truth",
        "",
        "Methods: **ours** = the production measurement (`RadonConfig()`, the paper's peak "
        "estimator, neighbour masking on); **ours, masking off** = the paper's method as "
        "published; **ours, sinogram moments** = the production configuration with the "
        "second-moment estimator from the sinogram's projection variances combined (per band: "
        "that band's moments angle); **peer** = SExtractor's second-moment angle by `sep` on "
        "the same images "
        f"(SHA-256 of the measured array: `{truth['images_sha256']['ours'][:16]}…` for every "
        "method).",
        "",
        "![accuracy](truth_accuracy.png)",
        "",
    ]
    for subset in ("isolated", "neighbours", "all"):
        tables = truth["tables"][subset]
        lines += [
            f"### Combined angle, {subset} galaxies, by axis ratio",
            "",
            *_binned_table(
                "q",
                truth["axis_ratio_bins"],
                {m: tables[m]["combined"]["by_axis_ratio"] for m in tables},
            ),
            f"### Combined angle, {subset} galaxies, by S/N",
            "",
            *_binned_table(
                "S/N", truth["snr_bins"], {m: tables[m]["combined"]["by_snr"] for m in tables}
            ),
        ]
    lines += [
        "### Ours and the peer on the same galaxies (combined, by axis ratio)",
        "",
        "The peer gives no angle for some of the hardest galaxies (see measured/n above); "
        "here both methods are compared on the galaxies both measured.",
        "",
    ]
    for subset, methods in truth["paired"].items():
        lines += [f"**{subset}**", ""]
        lines += _binned_table("q", truth["axis_ratio_bins"], methods)
    lines += ["### Per band (all galaxies)", "", "![bands](truth_bands.png)", ""]
    rows = []
    for band in _BANDS:
        for method, tables in truth["tables"]["all"].items():
            rows.append([band, _METHOD_LABELS[method], *_stats_cells(tables[band]["overall"])])
    lines += _table(("band", "method", *_STATS_HEADER), rows)
    lines += [
        "### Median combined error on the q × S/N grid (isolated; ours / peer)",
        "",
    ]
    grid_ours = truth["tables"]["isolated"]["ours"]["combined"]["grid"]
    grid_peer = truth["tables"]["isolated"]["peer"]["combined"]["grid"]
    grid_rows = [
        [q_bin]
        + [
            f"{_fmt(o['median_deg'], 1)} / {_fmt(p['median_deg'], 1)} (n={o['n']})"
            for o, p in zip(grid_ours[i], grid_peer[i], strict=True)
        ]
        for i, q_bin in enumerate(truth["axis_ratio_bins"])
    ]
    lines += _table(("q \\ S/N", *truth["snr_bins"]), grid_rows)
    lines += [
        "## 3. Calibration of our uncertainties",
        "",
        "Fraction of galaxies whose true error is within 1σ and 2σ of the reported uncertainty "
        "(a calibrated Gaussian error: 0.683 and 0.954; median |error|/σ 0.674). `ours_combined`"
        " is the combined angle's error (the sinusoid fit's standard error on the 1/sigma-"
        "weighted band stack, scaled up by the Birge ratio where the bands disagree beyond "
        "their errors); "
        "`ours_band_fit` / `ours_band_window` are per band, the sinusoid fit's "
        "standard error and the paper's window-drop error. The peer reports no angle "
        "uncertainty.",
        "",
        "![calibration](calibration.png)",
        "",
    ]
    rows = []
    for subset, estimators in truth["calibration"].items():
        for name, c in estimators.items():
            rows.append(
                [
                    subset,
                    name,
                    str(c["n"]),
                    _fmt(c["within_1sigma"], 3),
                    _fmt(c["within_2sigma"], 3),
                    _fmt(c["median_ratio"], 3),
                ]
            )
    lines += _table(("subset", "estimator", "n", "≤ 1σ", "≤ 2σ", "median |err|/σ"), rows)
    lines += ["## 4. The paper's augmentation protocol", "", "Distributions:", ""]
    lines += [f"- **{k}**: {v}" for k, v in protocol["distributions"].items()]
    lines += ["", "![protocol](protocol.png)", ""]
    selections = (
        ("all", "overall"),
        ("isolated, q < 0.5, S/N > 50", "headline"),
        ("unflagged (ours: no flag on the original)", "unflagged"),
        ("isolated", "isolated"),
        ("neighbours", "neighbours"),
    )
    rows = [
        [name, _METHOD_LABELS[m], *_stats_cells(protocol[m][key])]
        for name, key in selections
        for m in ("ours", "peer")
    ]
    lines += _table(("images", "method", *_STATS_HEADER), rows)
    lines += [
        f"### The paper's method (masking off) on the same images ({protocol['n_sampled']} "
        "images: every 5th chunk)",
        "",
        "The protocol measures self-consistency, not accuracy. Masking decides per image what "
        "to remove: after N (few photons) a neighbour masked in the original can be missed, "
        "or split differently, in the augmented image and the angle jumps, while the unmasked "
        "measurement is dragged by the neighbour the same way in both. Compare the rows for "
        "isolated galaxies and for galaxies with neighbours here with the truth tables above, "
        "where masking off is far worse for galaxies with neighbours.",
        "",
    ]
    sampled = ("ours_sampled", "ours_nomask", "peer_sampled")
    rows = [
        [name, _METHOD_LABELS[m], *_stats_cells(protocol[m][key])]
        for name, key in selections[:2]
        for m in sampled
    ]
    rows += [
        [f"subset {s}", _METHOD_LABELS[m], *_stats_cells(protocol[m]["by_subset"][s])]
        for s in _SUBSETS
        for m in sampled
    ]
    lines += _table(("images", "method", *_STATS_HEADER), rows)
    lines += ["### By axis ratio", ""]
    lines += _binned_table(
        "q",
        protocol["axis_ratio_bins"],
        {m: protocol[m]["by_axis_ratio"] for m in ("ours", "peer")},
    )
    lines += ["### By S/N", ""]
    lines += _binned_table(
        "S/N", protocol["snr_bins"], {m: protocol[m]["by_snr"] for m in ("ours", "peer")}
    )
    lines += ["### By augmentation subset", ""]
    subsets = _SUBSETS
    lines += _table(
        ("subset", "method", *_STATS_HEADER),
        [
            [s, _METHOD_LABELS[m], *_stats_cells(protocol[m]["by_subset"][s])]
            for s in subsets
            for m in ("ours", "peer")
        ],
    )
    lines += _floor_section(summary["floor"])
    lines += [
        "## 5. Agreement with Gaia DR3's Sérsic angles",
        "",
        gaia["source"],
        "",
        "![gaia](gaia.png)",
        "",
    ]
    lines += _binned_table(
        "Gaia e = 1 − b/a",
        gaia["ellipticity_bins"],
        {m: gaia[m]["by_ellipticity"] for m in gaia if m not in ("ellipticity_bins", "source")},
    )
    lines += ["## Reproduction", "", f"`{summary['config']['command']}`", ""]
    timing = dict(summary["timing_s"])
    workers = timing.pop("workers")
    lines += [f"Wall time per stage, total, and CPU time (all processes), {workers} worker(s):", ""]
    lines += [f"- {k}: {_fmt(v, 1)} s" for k, v in timing.items()]
    return "\n".join(lines) + "\n"


def _plot_binned(
    axis: Any, labels: Sequence[str], series: dict[str, list[dict[str, Any]]], title: str
) -> None:
    x = list(range(len(labels)))
    for method, stats in series.items():
        median = [s["median_deg"] if s["median_deg"] is not None else float("nan") for s in stats]
        p68 = [s["p68_deg"] if s["p68_deg"] is not None else float("nan") for s in stats]
        line = axis.plot(x, median, "o-", label=f"{_METHOD_LABELS.get(method, method)} median")
        axis.plot(x, p68, "s--", color=line[0].get_color(), alpha=0.6, label="68th percentile")
    axis.set_xticks(x, list(labels), rotation=30, fontsize=8)
    axis.set_yscale("log")
    axis.set_ylabel("axial error (deg)")
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3)


def _figures(summary: dict[str, Any], out_dir: Path) -> None:
    truth, protocol, gaia = summary["truth"], summary["protocol"], summary["gaia"]
    tables = truth["tables"]["all"]

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    _plot_binned(
        axes[0],
        truth["axis_ratio_bins"],
        {m: tables[m]["combined"]["by_axis_ratio"] for m in tables},
        "vs truth by axis ratio q (all galaxies)",
    )
    _plot_binned(
        axes[1],
        truth["snr_bins"],
        {m: tables[m]["combined"]["by_snr"] for m in tables},
        "vs truth by S/N (all galaxies)",
    )
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "truth_accuracy.png", dpi=110)
    plt.close(fig)

    fig, axis = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(tables)
    for k, method in enumerate(tables):
        values = [tables[method][b]["overall"]["median_deg"] or float("nan") for b in _BANDS]
        axis.bar(
            [i + (k - (len(tables) - 1) / 2) * width for i in range(len(_BANDS))],
            values,
            width,
            label=_METHOD_LABELS[method],
        )
    axis.set_xticks(range(len(_BANDS)), _BANDS)
    axis.set_ylabel("median axial error vs truth (deg)")
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "truth_bands.png", dpi=110)
    plt.close(fig)

    fig, axis = plt.subplots(figsize=(7, 4))
    estimators = truth["calibration"]["all"]
    names = list(estimators)
    for k, (key, expected) in enumerate((("within_1sigma", 0.683), ("within_2sigma", 0.954))):
        values = [estimators[n][key] or float("nan") for n in names]
        axis.bar(
            [i + (k - 0.5) * 0.38 for i in range(len(names))],
            values,
            0.38,
            label=key.replace("_", " "),
        )
        axis.axhline(expected, ls="--", color=f"C{k}", lw=1)
    axis.set_xticks(range(len(names)), names)
    axis.set_ylim(0, 1)
    axis.set_ylabel("fraction of galaxies (dashed: Gaussian)")
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "calibration.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    _plot_binned(
        axes[0],
        protocol["axis_ratio_bins"],
        {m: protocol[m]["by_axis_ratio"] for m in _PROTOCOL_METHODS},
        f"augmentation protocol by q ({protocol['n_images']} images; masking off: "
        f"{protocol['n_sampled']})",
    )
    subsets = _SUBSETS
    for k, method in enumerate(_PROTOCOL_METHODS):
        means = [protocol[method]["by_subset"][s]["mean_deg"] or float("nan") for s in subsets]
        axes[1].bar(
            [i + (k - 1) * 0.27 for i in range(len(subsets))],
            means,
            0.27,
            label=_METHOD_LABELS[method],
        )
    axes[1].axhline(6.17, ls="--", color="k", lw=1, label="paper: 6.17° mean")
    axes[1].set_xticks(range(len(subsets)), subsets)
    axes[1].set_ylabel("mean deviation (deg)")
    axes[1].set_title("by augmentation subset", fontsize=9)
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "protocol.png", dpi=110)
    plt.close(fig)

    fig, axis = plt.subplots(figsize=(7, 4))
    _plot_binned(
        axis,
        gaia["ellipticity_bins"],
        {m: gaia[m]["by_ellipticity"] for m in gaia if m not in ("ellipticity_bins", "source")},
        "|PA − Gaia posangle_sersic| by Gaia ellipticity",
    )
    axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "gaia.png", dpi=110)
    plt.close(fig)


def write_report(summary: dict[str, Any], out_dir: Path) -> Path:
    """Write ``summary.json``, ``report.md`` and :data:`FIGURES` into ``out_dir``.

    Returns
    -------
    pathlib.Path
        The Markdown report.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(summary, indent=2, sort_keys=True, allow_nan=False)
    (out_dir / "summary.json").write_text(text + "\n")
    # Render what the file holds (keys sorted), so a report regenerated from it is identical.
    summary = json.loads(text)
    _figures(summary, out_dir)
    report = out_dir / "report.md"
    report.write_text(_markdown(summary))
    return report
