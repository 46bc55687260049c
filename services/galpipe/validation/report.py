"""The validation report: ``summary.json``, ``report.md`` and PNG figures, from one summary.

Everything here reads a :class:`~galpipe.validation.summary.ValidationSummary` as it comes back
from ``summary.json``, so the Markdown and the figures can be regenerated from that file alone
(:func:`write_report`). One function writes each section of the Markdown, one each figure.
Figures use matplotlib's Agg backend (files, never windows).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from galpipe.survey.layout import BANDS
from galpipe.validation.gaia import GaiaSummary
from galpipe.validation.lensing import GRID_BINS, BiasFit, IsotropySummary, LensingSummary
from galpipe.validation.oracle import FloorMethod, FloorStats, FloorSummary
from galpipe.validation.peer import PeerOutcomes
from galpipe.validation.protocol import AUGMENTATION_SUBSETS, DeviationStats, ProtocolSummary
from galpipe.validation.stats import Calibration, ErrorStats
from galpipe.validation.summary import ValidationSummary
from galpipe.validation.truth import TruthSummary

__all__ = ["FIGURES", "write_report"]

_METHOD_LABELS = {
    "ours": "ours (Radon, masking on)",
    "ours_nomask": "ours (Radon, masking off)",
    "ours_moments": "ours (sinogram moments, masking on)",
    "peer": "peer (sep second moments)",
    "neighbour_oracle": "neighbour oracle (exact neighbour light subtracted, masking off)",
    "truth": "truth (Gaia-like noise model)",
    "ours_sampled": "ours (Radon, masking on)",
    "peer_sampled": "peer (sep second moments)",
}
_BANDS = (*BANDS, "combined")
# The protocol's figure: ours and the peer on every image, ours unmasked on the sampled fifth.
_PROTOCOL_METHODS = ("ours", "ours_nomask", "peer")
#: The paper's mean deviation over its augmentation protocol, degrees.
_PAPER_MEAN_DEG = 6.17
_STATS_HEADER = ("measured/n", "median °", "mean °", "p68 °", "p95 °")
_FLOOR_LABELS = {"ours": "ours", "ours_nomask": "ours, masking off", "oracle": "oracle"}
_LENSING_LABELS = {
    "ours": "ours (Radon, masking on)",
    "peer": "peer (sep second moments)",
    "truth": "true sheared angles (the estimator alone)",
}
#: The lensing section's verdicts call a p-value below ``_LENSING_ALPHA`` a preferred
#: direction, and a bias beyond ``_BIAS_SIGMAS`` standard errors a significant one.
_LENSING_ALPHA = 0.01
_BIAS_SIGMAS = 3.0


# -- Markdown building blocks -------------------------------------------------------------------


def _fmt(value: Any, digits: int = 2) -> str:
    """A table cell; "–" for a statistic of nothing (None, or NaN in memory)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _stats_cells(stats: ErrorStats) -> list[str]:
    return [
        f"{stats.n_measured}/{stats.n}",
        _fmt(stats.median_deg),
        _fmt(stats.mean_deg),
        _fmt(stats.p68_deg),
        _fmt(stats.p95_deg),
    ]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _binned_table(
    label: str, bins: Sequence[str], by_method: Mapping[str, Sequence[ErrorStats]]
) -> list[str]:
    """One row per bin and method: the methods side by side within each bin."""
    rows = []
    for b, name in enumerate(bins):
        for method, stats in by_method.items():
            rows.append([name, _METHOD_LABELS.get(method, method), *_stats_cells(stats[b])])
    return _table((label, "method", *_STATS_HEADER), rows)


def _peer_outcomes(outcomes: PeerOutcomes, images: str) -> list[str]:
    """How the peer's measurements of ``images`` ended: ``sep``'s failures apart."""
    return [
        f"The peer on {images}: {outcomes.measured} measured, {outcomes.no_detection} without "
        f"a central detection, {outcomes.failed} where `sep` failed (it raised; the last two "
        "count in *n* but not in *measured*).",
        "",
    ]


# -- Markdown sections, in the report's order ---------------------------------------------------


def _title(summary: ValidationSummary) -> list[str]:
    config = summary.config
    return [
        "# Validation of the Radon position angles",
        "",
        f"Configuration: `{config.algo_version}`; peer: `{config.peer}`. Seed {config.seed}"
        + (" (quick mode)." if config.quick else "."),
        "",
    ]


def _headline_section(summary: ValidationSummary) -> list[str]:
    head, protocol, floor = summary.truth.headline, summary.protocol, summary.floor
    rows = [
        [
            f"median axial error vs truth, combined ({head.selection})",
            _fmt(head.ours.median_deg),
            _fmt(head.peer.median_deg),
            "< 2°",
        ],
        [
            f"augmentation protocol: mean deviation over {protocol.n_images} images",
            _fmt(protocol.ours.overall.mean_deg),
            _fmt(protocol.peer.overall.mean_deg),
            f"paper: {_PAPER_MEAN_DEG}°",
        ],
        [
            f"protocol mean on {floor.n_images} images of isolated galaxies: "
            "ours / an oracle that knows all but the angle (section 4)",
            f"{_fmt(floor.ours.deviation.overall.mean_deg)} / "
            f"{_fmt(floor.oracle.deviation.overall.mean_deg)}",
            "–",
            "",
        ],
        [
            "augmentation protocol: median deviation",
            _fmt(protocol.ours.overall.median_deg),
            _fmt(protocol.peer.overall.median_deg),
            "",
        ],
        *_lensing_headline_rows(summary.lensing),
        [
            "uncertainty calibration: fraction within 1σ / 2σ (all galaxies)",
            f"{_fmt(summary.headline.coverage_1sigma)} / {_fmt(summary.headline.coverage_2sigma)}",
            "–",
            "0.68 / 0.95",
        ],
    ]
    return [
        "## Headline",
        "",
        *_table(("figure", "ours", "peer", "goal"), rows),
        "Angles are axial: an error is |((measured − true + 90) mod 180) − 90| in [0°, 90°]. "
        "Position angles are east of north, derived from each cutout's WCS. A method that "
        "returns no angle for a galaxy counts in *n* but not in *measured*; statistics are over "
        "the measured ones.",
        "",
    ]


def _lensing_headline_rows(lensing: LensingSummary | None) -> list[list[str]]:
    """The headline's row of the weak-lensing check: ``m`` of ours and the peer (none if off)."""
    if lensing is None:
        return []
    return [
        [
            f"weak lensing: shear calibration bias m ({lensing.n_ring} rings, section 6)",
            _plus_minus(lensing.bias["ours"].m, lensing.bias["ours"].m_err, 3),
            _plus_minus(lensing.bias["peer"].m, lensing.bias["peer"].m_err, 3),
            "0",
        ]
    ]


def _population_section(summary: ValidationSummary) -> list[str]:
    population = summary.population
    return [
        "## 1. The truth population",
        "",
        "GalSim galaxies of the synthetic sky, served as the cutout service's FITS and decoded "
        "by the radon pipeline. Distributions:",
        "",
        *(f"- **{key}**: {value}" for key, value in population.items()),
        "",
        "**S/N definition.** " + population["snr_definition"] + "; F_r the r-band "
        "flux, σ_r the r-band sky noise per pixel, R_e the half-light radius, p the pixel "
        "scale. Background-limited (the source's Poisson noise is in the images, not in the "
        "definition).",
        "",
    ]


def _accuracy_section(summary: ValidationSummary) -> list[str]:
    truth = summary.truth
    lines = [
        "## 2. Accuracy against the truth",
        "",
        "Methods: **ours** = the production measurement (`RadonConfig()`, the paper's peak "
        "estimator, neighbour masking on); **ours, masking off** = the paper's method as "
        "published; **ours, sinogram moments** = the production configuration with the "
        "second-moment estimator from the sinogram's projection variances combined (per band: "
        "that band's moments angle); **peer** = SExtractor's second-moment angle by `sep` on "
        "the same images "
        f"(SHA-256 of the measured array: `{truth.images_sha256['ours'][:16]}…` for every "
        "method).",
        "",
        *_peer_outcomes(truth.peer_outcomes, "the population (combined angle)"),
        "![accuracy](truth_accuracy.png)",
        "",
    ]
    for subset in ("isolated", "neighbours", "all"):
        tables = truth.tables[subset]
        lines += [
            f"### Combined angle, {subset} galaxies, by axis ratio",
            "",
            *_binned_table(
                "q",
                truth.axis_ratio_bins,
                {m: tables[m]["combined"].by_axis_ratio for m in tables},
            ),
            f"### Combined angle, {subset} galaxies, by S/N",
            "",
            *_binned_table(
                "S/N", truth.snr_bins, {m: tables[m]["combined"].by_snr for m in tables}
            ),
        ]
    return lines


def _paired_section(summary: ValidationSummary) -> list[str]:
    truth = summary.truth
    lines = [
        "### Ours and the peer on the same galaxies (combined, by axis ratio)",
        "",
        "The peer gives no angle for some of the hardest galaxies (see measured/n above); "
        "here both methods are compared on the galaxies both measured.",
        "",
    ]
    for subset, paired in truth.paired.items():
        lines += [f"**{subset}**", ""]
        lines += _binned_table(
            "q", truth.axis_ratio_bins, {"ours": paired.ours, "peer": paired.peer}
        )
    return lines


def _band_section(summary: ValidationSummary) -> list[str]:
    rows = [
        [band, _METHOD_LABELS[method], *_stats_cells(tables[band].overall)]
        for band in _BANDS
        for method, tables in summary.truth.tables["all"].items()
    ]
    return [
        "### Per band (all galaxies)",
        "",
        "![bands](truth_bands.png)",
        "",
        *_table(("band", "method", *_STATS_HEADER), rows),
    ]


def _grid_section(summary: ValidationSummary) -> list[str]:
    truth = summary.truth
    grid_ours = truth.tables["isolated"]["ours"]["combined"].grid or ()
    grid_peer = truth.tables["isolated"]["peer"]["combined"].grid or ()
    rows = [
        [q_bin]
        + [
            f"{_fmt(o.median_deg, 1)} / {_fmt(p.median_deg, 1)} (n={o.n})"
            for o, p in zip(ours_row, peer_row, strict=True)
        ]
        for q_bin, ours_row, peer_row in zip(
            truth.axis_ratio_bins, grid_ours, grid_peer, strict=True
        )
    ]
    return [
        "### Median combined error on the q × S/N grid (isolated; ours / peer)",
        "",
        *_table(("q \\ S/N", *truth.snr_bins), rows),
    ]


def _calibration_section(summary: ValidationSummary) -> list[str]:
    rows = [
        [
            subset,
            name,
            str(c.n),
            _fmt(c.within_1sigma, 3),
            _fmt(c.within_2sigma, 3),
            _fmt(c.median_ratio, 3),
        ]
        for subset, estimators in summary.truth.calibration.items()
        for name, c in estimators.items()
    ]
    return [
        "## 3. Calibration of our uncertainties",
        "",
        "Fraction of galaxies whose true error is within 1σ and 2σ of the reported uncertainty "
        "(a calibrated Gaussian error: 0.683 and 0.954; median |error|/σ 0.674). `ours_combined`"
        " is the combined angle's error (the sinusoid fit's standard error on the 1/sigma-"
        "weighted band stack, scaled up by the Birge ratio where the bands disagree beyond "
        "their errors, then calibrated from the stack's b/a and the neighbour flag with "
        "constants fitted on another synthetic population; docs/science.md); "
        "`ours_band_fit` / `ours_band_window` are per band, the sinusoid fit's "
        "standard error and the paper's window-drop error. The peer reports no angle "
        "uncertainty.",
        "",
        "![calibration](calibration.png)",
        "",
        *_table(("subset", "estimator", "n", "≤ 1σ", "≤ 2σ", "median |err|/σ"), rows),
        *_coverage_bins_section(summary),
        *_reliability_section(summary),
    ]


def _reliability_section(summary: ValidationSummary) -> list[str]:
    """How well ``unreliable_angle`` detects large errors, per pair of thresholds."""
    rel = summary.truth.reliability
    chosen = rel.chosen
    if chosen is None:
        verdict = f"No pair of thresholds reaches a purity of {rel.min_purity:g}."
    else:
        verdict = (
            f"Chosen (the most complete pair with purity ≥ {rel.min_purity:g}): anisotropy < "
            f"{chosen.min_anisotropy:g} or band spread > {chosen.max_band_spread_deg:g}°, "
            f"flagging {chosen.n_flagged} of {chosen.n}: purity {_fmt(chosen.purity, 3)}, "
            f"completeness {_fmt(chosen.completeness, 3)}."
        )
    shipped = rel.shipped
    if shipped is not None:
        verdict += (
            f" Shipped as the `UNRELIABLE` flag (bit 128; `RadonConfig`): anisotropy < "
            f"{shipped.min_anisotropy:g} or band spread > {shipped.max_band_spread_deg:g}°, "
            f"flagging {shipped.n_flagged} of {shipped.n} on this run: purity "
            f"{_fmt(shipped.purity, 3)}, completeness {_fmt(shipped.completeness, 3)}."
        )
    rows = [
        [
            _fmt(s.min_anisotropy, 4),
            _fmt(s.max_band_spread_deg, 0),
            f"{s.n_flagged}/{s.n}",
            str(s.n_bad),
            _fmt(s.purity, 3),
            _fmt(s.completeness, 3),
        ]
        for s in rel.sweep
    ]
    return [
        f"### Detecting unreliable angles (combined error > {rel.bad_deg:g}°, all galaxies)",
        "",
        "An angle is marked unreliable when the band stack's anisotropy b/a is below a "
        "threshold or the per-band angles spread more than another "
        "(`galpipe.science.reliability.unreliable_angle`). Purity: the fraction of marked "
        f"galaxies whose error exceeds {rel.bad_deg:g}°; completeness: the fraction of those "
        "that are marked. " + verdict,
        "",
        *_table(
            ("b/a <", "spread > °", "marked/n", "bad", "purity", "completeness"),
            rows,
        ),
    ]


def _coverage_cells(c: Calibration) -> list[str]:
    return [str(c.n), _fmt(c.within_1sigma, 3), _fmt(c.within_2sigma, 3), _fmt(c.median_ratio, 3)]


def _coverage_bins_section(summary: ValidationSummary) -> list[str]:
    """The combined angle's coverage by axis ratio and by S/N, every subset."""
    truth = summary.truth
    header = ("n", "≤ 1σ", "≤ 2σ", "median |err|/σ")
    lines = [
        "### Coverage of the combined angle's σ (`ours_combined`) by axis ratio and by S/N",
        "",
        "Where the overall fractions hide a σ too small in one bin and too large in another.",
        "",
    ]
    for subset, coverage in truth.coverage.items():
        by_q = [
            [label, *_coverage_cells(c)]
            for label, c in zip(truth.axis_ratio_bins, coverage.by_axis_ratio, strict=True)
        ]
        by_snr = [
            [label, *_coverage_cells(c)]
            for label, c in zip(truth.snr_bins, coverage.by_snr, strict=True)
        ]
        lines += [
            f"**{subset}** (overall: {_coverage_cells(coverage.overall)[1]} ≤ 1σ, "
            f"{_coverage_cells(coverage.overall)[2]} ≤ 2σ, n = {coverage.overall.n})",
            "",
            *_table(("q", *header), by_q),
            *_table(("S/N", *header), by_snr),
        ]
    return lines


#: The protocol's image selections: (row title, its statistics).
_PROTOCOL_SELECTIONS: tuple[tuple[str, Callable[[DeviationStats], ErrorStats]], ...] = (
    ("all", lambda d: d.overall),
    ("isolated, q < 0.5, S/N > 50", lambda d: d.headline),
    ("unflagged (ours: no flag on the original)", lambda d: d.unflagged),
    ("isolated", lambda d: d.isolated),
    ("neighbours", lambda d: d.neighbours),
)


def _protocol_section(summary: ValidationSummary) -> list[str]:
    protocol = summary.protocol
    methods = protocol.methods()
    rows = [
        [name, _METHOD_LABELS[m], *_stats_cells(select(methods[m]))]
        for name, select in _PROTOCOL_SELECTIONS
        for m in ("ours", "peer")
    ]
    return [
        "## 4. The paper's augmentation protocol",
        "",
        "Distributions:",
        "",
        *(f"- **{k}**: {v}" for k, v in protocol.distributions.items()),
        "",
        "![protocol](protocol.png)",
        "",
        *_table(("images", "method", *_STATS_HEADER), rows),
        *_peer_outcomes(protocol.peer_outcomes, f"the {protocol.n_images} augmented images"),
    ]


def _protocol_nomask_section(summary: ValidationSummary) -> list[str]:
    protocol = summary.protocol
    methods = protocol.methods()
    sampled = ("ours_sampled", "ours_nomask", "neighbour_oracle", "peer_sampled")
    rows = [
        [name, _METHOD_LABELS[m], *_stats_cells(select(methods[m]))]
        for name, select in _PROTOCOL_SELECTIONS
        for m in sampled
    ]
    rows += [
        [f"subset {s}", _METHOD_LABELS[m], *_stats_cells(methods[m].by_subset[s])]
        for s in AUGMENTATION_SUBSETS
        for m in sampled
    ]
    return [
        f"### The paper's method (masking off) on the same images ({protocol.n_sampled} "
        "images: every 5th chunk)",
        "",
        "The protocol measures self-consistency, not accuracy. Masking decides per image what "
        "to remove: after N (few photons) a neighbour masked in the original can be missed, "
        "or split differently, in the augmented image and the angle jumps, while the unmasked "
        "measurement is dragged by the neighbour the same way in both. Compare the rows for "
        "isolated galaxies and for galaxies with neighbours here with the truth tables above, "
        "where masking off is far worse for galaxies with neighbours. The neighbour oracle "
        "knows each neighbour's exact light and subtracts it (in the augmented image as R and "
        "B carried it), then measures with masking off: what perfect neighbour handling would "
        "score. On galaxies with neighbours it is the reference for ours; no handling of "
        "neighbours that measures the galaxy, not its neighbour, can expect to be more "
        "consistent than it.",
        "",
        *_table(("images", "method", *_STATS_HEADER), rows),
    ]


def _protocol_bins_section(summary: ValidationSummary) -> list[str]:
    protocol = summary.protocol
    ours_and_peer = {"ours": protocol.ours, "peer": protocol.peer}
    by_subset = [
        [s, _METHOD_LABELS[m], *_stats_cells(stats.by_subset[s])]
        for s in AUGMENTATION_SUBSETS
        for m, stats in ours_and_peer.items()
    ]
    return [
        "### By axis ratio",
        "",
        *_binned_table(
            "q",
            protocol.axis_ratio_bins,
            {m: stats.by_axis_ratio for m, stats in ours_and_peer.items()},
        ),
        "### By S/N",
        "",
        *_binned_table(
            "S/N", protocol.snr_bins, {m: stats.by_snr for m, stats in ours_and_peer.items()}
        ),
        "### By augmentation subset",
        "",
        *_table(("subset", "method", *_STATS_HEADER), by_subset),
    ]


def _floor_section(summary: ValidationSummary) -> list[str]:
    """Section 4's last part: ours beside the oracle that knows everything but the angle."""
    floor = summary.floor
    se = floor.deviation_mean_se_deg
    ours_mean = floor.ours.deviation.overall.mean_deg
    oracle_mean = floor.oracle.deviation.overall.mean_deg
    return [
        f"### The information floor: an oracle on the same images ({floor.n_images} images "
        f"of {floor.n_galaxies} isolated galaxies)",
        "",
        "How much of the deviation is the method's, and how much the data's? The oracle knows "
        "each galaxy's noiseless image (the truth rendered by GalSim without noise) and fits "
        "only its angle: it renders the galaxy at every trial angle "
        f"({floor.offsets_deg}), applies the image's own R and B to each, models every "
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
        f"{_fmt(se.ours)}°, oracle {_fmt(oracle_mean)} ± {_fmt(se.oracle)}°; "
        f"ours − oracle {_fmt(floor.deviation_ours_minus_oracle_deg)} ± "
        f"{_fmt(se.ours_minus_oracle)}° (paired, the same images).",
        "",
        *_floor_table(
            "The protocol's deviation |(R_aug − α) − R_orig|", floor, lambda m: m.deviation
        ),
        *_floor_table(
            "Error against the true angle on the augmented images", floor, lambda m: m.error
        ),
    ]


#: The floor's image selections: (row title, its statistics).
_FLOOR_SELECTIONS: tuple[tuple[str, Callable[[FloorStats], ErrorStats]], ...] = (
    ("all", lambda s: s.overall),
    ("N with 10³–10⁴ photons", lambda s: s.resample_low),
    ("N with 10⁴–10⁵ photons", lambda s: s.resample_high),
    ("no N (R and/or B)", lambda s: s.no_resample),
)


def _floor_table(
    title: str, floor: FloorSummary, kind: Callable[[FloorMethod], FloorStats]
) -> list[str]:
    """One of the floor's tables: every method, by image selection and by axis ratio."""
    methods = {m: kind(method) for m, method in floor.methods().items()}
    rows = [
        [name, _FLOOR_LABELS[m], *_stats_cells(select(stats))]
        for name, select in _FLOOR_SELECTIONS
        for m, stats in methods.items()
    ]
    rows += [
        [f"q {label}", _FLOOR_LABELS[m], *_stats_cells(stats.by_axis_ratio[b])]
        for b, label in enumerate(floor.axis_ratio_bins)
        for m, stats in methods.items()
    ]
    return [f"#### {title}", "", *_table(("images", "method", *_STATS_HEADER), rows)]


def _gaia_section(summary: ValidationSummary) -> list[str]:
    gaia = summary.gaia
    return [
        "## 5. Agreement with Gaia DR3's Sérsic angles",
        "",
        gaia.source,
        "",
        "![gaia](gaia.png)",
        "",
        *_binned_table(
            "Gaia e = 1 − b/a",
            gaia.ellipticity_bins,
            {m: agreement.by_ellipticity for m, agreement in gaia.methods.items()},
        ),
    ]


def _plus_minus(value: float, error: float, digits: int, scale: float = 1.0) -> str:
    """``value ± error`` (both times ``scale``); the value alone where the error is NaN."""
    if math.isnan(error):
        return _fmt(value * scale, digits)
    return f"{_fmt(value * scale, digits)} ± {_fmt(error * scale, digits)}"


def _isotropy_verdict(name: str, iso: IsotropySummary) -> str:
    """One sentence: whether ``name``'s angles showed a preferred direction."""
    if any(math.isnan(p) for p in (iso.ks_p, iso.grid_p)):
        return f"{name}: too few angles to test for a preferred direction."
    found = []
    if iso.ks_p < _LENSING_ALPHA:
        found.append(f"its angles are not uniform (KS p = {iso.ks_p:.2g})")
    if iso.grid_p < _LENSING_ALPHA:
        found.append(f"its error depends on the angle to the pixel grid (p = {iso.grid_p:.2g})")
    if not found:
        return (
            f"{name}: no preferred direction detected (KS p = {iso.ks_p:.2g}, grid "
            f"p = {iso.grid_p:.2g}; both above {_LENSING_ALPHA})."
        )
    return f"{name}: a preferred direction: " + "; ".join(found) + "."


def _bias_verdict(name: str, bias: BiasFit) -> str:
    """One sentence: the signal ``name`` keeps (``m``) and whether it adds a spurious shear."""
    if math.isnan(bias.m) or math.isnan(bias.m_err):
        return f"{name}: the shear could not be estimated."
    if abs(bias.m) <= _BIAS_SIGMAS * bias.m_err:
        kept = (
            f"m = {_plus_minus(bias.m, bias.m_err, 3)}, consistent with 0 within "
            f"{_BIAS_SIGMAS:.0f} standard errors"
        )
    else:
        verb = "loses" if bias.m < 0 else "gains"
        kept = f"it {verb} {abs(bias.m) * 100:.1f} ± {bias.m_err * 100:.1f} % of the shear signal"
    additive = [
        (c, err)
        for c, err in ((bias.c1, bias.c1_err), (bias.c2, bias.c2_err))
        if not math.isnan(err) and abs(c) > _BIAS_SIGMAS * err
    ]
    spurious = (
        "a significant additive bias c (a spurious shear)"
        if additive
        else "no significant additive bias c"
    )
    return f"{name}: {kept}, and {spurious}."


def _lensing_section(summary: ValidationSummary) -> list[str]:
    """Section 6: isotropy and the shear calibration bias (:mod:`galpipe.validation.lensing`)."""
    title = "## 6. Fit for weak lensing"
    lensing = summary.lensing
    if lensing is None:
        return [
            title,
            "",
            "Not run: `--lensing-galaxies 0` or `--lensing-rings 0` switched it off.",
            "",
        ]
    iso = lensing.isotropy
    methods = ("ours", "peer")
    shears = ", ".join(f"({g1:.3g}, {g2:.3g})" for g1, g2 in lensing.shears)
    iso_rows = [
        ["measured/n", *(f"{iso[m].n_measured}/{lensing.n_isotropic}" for m in methods)],
        [
            "KS p, position angles vs uniform (D)",
            *(f"{_fmt(iso[m].ks_p, 3)} ({_fmt(iso[m].ks_d, 3)})" for m in methods),
        ],
        ["Kruskal–Wallis p over the grid bins", *(_fmt(iso[m].grid_p, 3) for m in methods)],
        [
            "median error, as rendered / mirrored WCS, °",
            *(
                f"{_fmt(iso[m].median_err_deg, 4)} / {_fmt(iso[m].median_err_mirrored_deg, 4)}"
                for m in methods
            ),
        ],
        [
            "largest per-galaxy difference, mirrored, °",
            *(_fmt(iso[m].mirror_max_diff_deg, 3) for m in methods),
        ],
    ]
    width = 90.0 / GRID_BINS
    grid_rows = [
        [
            f"{b * width:.0f}–{(b + 1) * width:.0f}°",
            *(
                _plus_minus(iso[m].grid_median_deg[b], iso[m].grid_median_err_deg[b], 2)
                for m in methods
            ),
        ]
        for b in range(len(iso["ours"].grid_median_deg))
    ]
    bias_rows = [
        [
            _LENSING_LABELS.get(method, method),
            _plus_minus(fit.m, fit.m_err, 3),
            _plus_minus(fit.c1, fit.c1_err, 2, 1e3),
            _plus_minus(fit.c2, fit.c2_err, 2, 1e3),
        ]
        for method, fit in lensing.bias.items()
    ]
    return [
        title,
        "",
        "Weak gravitational lensing stretches the images of distant galaxies coherently, by a "
        "shear g of about 1 %; position angles alone carry it (Whittaker, Brown & Battye 2014). "
        "A measurement fit for it must have **no preferred direction** of its own and must keep "
        "the shear's signal. Both are checked on isolated galaxies of the truth population's "
        "shapes, S/N 50–200, rendered and decoded as above "
        '(docs/science.md, "Fit for weak lensing").',
        "",
        f"**No preferred direction.** {lensing.n_isotropic} galaxies with random orientations: "
        "are the measured position angles uniform (Kolmogorov–Smirnov), is the error the same "
        f"at every angle to the pixel grid (Kruskal–Wallis over {GRID_BINS} bins of the true "
        "angle modulo 90°), and is it the same when the sky is seen through a mirrored WCS "
        "(east right)? A small p-value would mean a preferred direction.",
        "",
        *_table(("test", *(_LENSING_LABELS[m] for m in methods)), iso_rows),
        "Median axial error by the true angle to the pixel grid (modulo 90°), ° ± standard error:",
        "",
        *_table(("angle to grid", *(_LENSING_LABELS[m] for m in methods)), grid_rows),
        f"**Shear calibration bias.** A ring test: {lensing.n_ring} galaxies, each rendered at "
        "four orientations 45° apart (their intrinsic shapes cancel), under the input shears "
        f"(g1, g2) = {shears}. The shear is estimated from the position angles alone "
        f"(response α = {_fmt(lensing.alpha_weak)} at |g| = 0.03, from the galaxies' true "
        "ellipticities) and fitted as ĝ = (1 + m) g + c: **m** is the multiplicative shear "
        "calibration bias (m = −0.05: 5 % of the signal lost), **c** = (c1, c2) the additive "
        "bias, a spurious shear that a preferred direction would add. Errors: bootstrap over "
        "rings. The true sheared angles measure the estimator alone.",
        "",
        *_table(("angles", "m", "c1 × 10³", "c2 × 10³"), bias_rows),
        *(
            f"- {line}"
            for line in (
                *(_isotropy_verdict(_LENSING_LABELS[m], iso[m]) for m in methods),
                *(_bias_verdict(_LENSING_LABELS[m], lensing.bias[m]) for m in methods),
            )
        ),
        "",
    ]


def _reproduction_section(summary: ValidationSummary) -> list[str]:
    timing = summary.timing
    return [
        "## Reproduction",
        "",
        f"`{summary.config.command}`",
        "",
        f"Wall time per stage, total, and CPU time (all processes), {timing.workers} worker(s):",
        "",
        *(f"- {name}: {_fmt(seconds, 1)} s" for name, seconds in timing.seconds().items()),
    ]


_SECTIONS: tuple[Callable[[ValidationSummary], list[str]], ...] = (
    _title,
    _headline_section,
    _population_section,
    _accuracy_section,
    _paired_section,
    _band_section,
    _grid_section,
    _calibration_section,
    _protocol_section,
    _protocol_nomask_section,
    _protocol_bins_section,
    _floor_section,
    _gaia_section,
    _lensing_section,
    _reproduction_section,
)


def _markdown(summary: ValidationSummary) -> str:
    return "\n".join(line for section in _SECTIONS for line in section(summary)) + "\n"


# -- Figures ------------------------------------------------------------------------------------


def _plot_binned(
    axis: Any, labels: Sequence[str], series: Mapping[str, Sequence[ErrorStats]], title: str
) -> None:
    x = list(range(len(labels)))
    for method, stats in series.items():
        median = [s.median_deg for s in stats]
        p68 = [s.p68_deg for s in stats]
        line = axis.plot(x, median, "o-", label=f"{_METHOD_LABELS.get(method, method)} median")
        axis.plot(x, p68, "s--", color=line[0].get_color(), alpha=0.6, label="68th percentile")
    axis.set_xticks(x, list(labels), rotation=30, fontsize=8)
    axis.set_yscale("log")
    axis.set_ylabel("axial error (deg)")
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3)


def _truth_accuracy_figure(truth: TruthSummary) -> Figure:
    tables = truth.tables["all"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    _plot_binned(
        axes[0],
        truth.axis_ratio_bins,
        {m: tables[m]["combined"].by_axis_ratio for m in tables},
        "vs truth by axis ratio q (all galaxies)",
    )
    _plot_binned(
        axes[1],
        truth.snr_bins,
        {m: tables[m]["combined"].by_snr for m in tables},
        "vs truth by S/N (all galaxies)",
    )
    axes[0].legend(fontsize=7)
    return fig


def _truth_bands_figure(truth: TruthSummary) -> Figure:
    tables = truth.tables["all"]
    fig, axis = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(tables)
    for k, method in enumerate(tables):
        axis.bar(
            [i + (k - (len(tables) - 1) / 2) * width for i in range(len(_BANDS))],
            [tables[method][b].overall.median_deg for b in _BANDS],
            width,
            label=_METHOD_LABELS[method],
        )
    axis.set_xticks(range(len(_BANDS)), _BANDS)
    axis.set_ylabel("median axial error vs truth (deg)")
    axis.legend(fontsize=8)
    return fig


def _calibration_figure(truth: TruthSummary) -> Figure:
    estimators = truth.calibration["all"]
    names = list(estimators)
    fig, axis = plt.subplots(figsize=(7, 4))
    coverages = (
        ("within 1sigma", 0.683, [estimators[n].within_1sigma for n in names]),
        ("within 2sigma", 0.954, [estimators[n].within_2sigma for n in names]),
    )
    for k, (label, expected, values) in enumerate(coverages):
        axis.bar([i + (k - 0.5) * 0.38 for i in range(len(names))], values, 0.38, label=label)
        axis.axhline(expected, ls="--", color=f"C{k}", lw=1)
    axis.set_xticks(range(len(names)), names)
    axis.set_ylim(0, 1)
    axis.set_ylabel("fraction of galaxies (dashed: Gaussian)")
    axis.legend(fontsize=8)
    return fig


def _protocol_figure(protocol: ProtocolSummary) -> Figure:
    methods = {m: protocol.methods()[m] for m in _PROTOCOL_METHODS}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    _plot_binned(
        axes[0],
        protocol.axis_ratio_bins,
        {m: stats.by_axis_ratio for m, stats in methods.items()},
        f"augmentation protocol by q ({protocol.n_images} images; masking off: "
        f"{protocol.n_sampled})",
    )
    subsets = AUGMENTATION_SUBSETS
    for k, (method, stats) in enumerate(methods.items()):
        axes[1].bar(
            [i + (k - 1) * 0.27 for i in range(len(subsets))],
            [stats.by_subset[s].mean_deg for s in subsets],
            0.27,
            label=_METHOD_LABELS[method],
        )
    axes[1].axhline(
        _PAPER_MEAN_DEG, ls="--", color="k", lw=1, label=f"paper: {_PAPER_MEAN_DEG}° mean"
    )
    axes[1].set_xticks(range(len(subsets)), subsets)
    axes[1].set_ylabel("mean deviation (deg)")
    axes[1].set_title("by augmentation subset", fontsize=9)
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    return fig


def _gaia_figure(gaia: GaiaSummary) -> Figure:
    fig, axis = plt.subplots(figsize=(7, 4))
    _plot_binned(
        axis,
        gaia.ellipticity_bins,
        {m: agreement.by_ellipticity for m, agreement in gaia.methods.items()},
        "|PA − Gaia posangle_sersic| by Gaia ellipticity",
    )
    axis.legend(fontsize=7)
    return fig


#: Each figure written next to ``report.md``, and what draws it.
_FIGURE_MAKERS: dict[str, Callable[[ValidationSummary], Figure]] = {
    "truth_accuracy.png": lambda s: _truth_accuracy_figure(s.truth),
    "truth_bands.png": lambda s: _truth_bands_figure(s.truth),
    "calibration.png": lambda s: _calibration_figure(s.truth),
    "protocol.png": lambda s: _protocol_figure(s.protocol),
    "gaia.png": lambda s: _gaia_figure(s.gaia),
}
#: The figures written next to ``report.md``.
FIGURES = tuple(_FIGURE_MAKERS)


def _figures(summary: ValidationSummary, out_dir: Path) -> None:
    for name, make in _FIGURE_MAKERS.items():
        fig = make(summary)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)


def write_report(summary: ValidationSummary, out_dir: Path) -> Path:
    """Write ``summary.json``, ``report.md`` and :data:`FIGURES` into ``out_dir``.

    Returns
    -------
    pathlib.Path
        The Markdown report.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(summary.to_json(), indent=2, sort_keys=True, allow_nan=False)
    (out_dir / "summary.json").write_text(text + "\n")
    # Render what the file holds (keys sorted), so a report regenerated from it is identical.
    written = ValidationSummary.from_json(json.loads(text))
    _figures(written, out_dir)
    report = out_dir / "report.md"
    report.write_text(_markdown(written))
    return report
