"""Agreement with Gaia DR3's own Sérsic position angles, by Gaia ellipticity.

Gaia DR3 ``galaxy_candidates`` carries ``posangle_sersic`` (degrees east of north, [0, 180))
and ``ellipticity_sersic`` (``1 - b/a``) of a Sérsic fit to its line-spread data. Gaia notes
that the angle is meaningless for near-round fits, so the agreement is reported per
ellipticity bin: the axial difference ``|PA_ours - posangle_sersic|`` in [0, 90] degrees.

The columns reach us the way ``galpipe ingest`` keeps them: as extra columns of the catalogue,
stored as a JSON object per galaxy (``galaxies.extra``). :func:`load_gaia_columns` reads a
catalogue file through the ingest reader and that same JSON encoding;
:func:`gaia_columns_from_extras` takes the JSON objects themselves (e.g. from the database).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any, Self

import numpy as np

from galpipe.catalog.extras import extra_json
from galpipe.catalog.read import load_catalog
from galpipe.science.features import axial_difference
from galpipe.synthetic.catalog import GAIA_SERSIC_COLUMNS
from galpipe.validation.stats import (
    ELLIPTICITY_EDGES,
    ErrorStats,
    bin_labels,
    binned_stats,
    error_stats,
    json_ready,
    stats_list,
)

__all__ = [
    "GaiaAgreement",
    "GaiaSummary",
    "gaia_agreement",
    "gaia_columns_from_extras",
    "load_gaia_columns",
]

_POSANGLE, _ELLIPTICITY = GAIA_SERSIC_COLUMNS


def _number(value: Any) -> float:
    """A JSON value as a float; None (a masked or NaN cell) and non-numbers become NaN."""
    return (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) else np.nan
    )


def gaia_columns_from_extras(
    extras: Sequence[str | Mapping[str, Any]],
) -> tuple[np.ndarray, np.ndarray]:
    """``(posangle_sersic, ellipticity_sersic)`` arrays from ``galaxies.extra`` objects.

    Parameters
    ----------
    extras : sequence of str or mapping
        One JSON object (text or parsed) per galaxy.

    Returns
    -------
    tuple of numpy.ndarray
        ``(N,)`` float64 each; NaN where a galaxy lacks the column or it is null.
    """
    parsed = [json.loads(e) if isinstance(e, str) else e for e in extras]
    pa = np.array([_number(p.get(_POSANGLE)) for p in parsed], dtype=np.float64)
    ellipticity = np.array([_number(p.get(_ELLIPTICITY)) for p in parsed], dtype=np.float64)
    return pa, ellipticity


def load_gaia_columns(path: str | PathLike[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(source_id, posangle_sersic, ellipticity_sersic)`` of a catalogue, as ingest stores them.

    Raises
    ------
    galpipe.catalog.CatalogError
        If the file is not a readable catalogue or lacks either Gaia column.
    """
    catalogue = load_catalog(path, keep=list(GAIA_SERSIC_COLUMNS))
    accepted = np.flatnonzero(catalogue.rows.accepted)
    pa, ellipticity = gaia_columns_from_extras(extra_json(catalogue, accepted))
    return catalogue.rows.source_id[accepted], pa, ellipticity


@dataclass(frozen=True)
class GaiaAgreement:
    """One method's axial difference from Gaia's angle: overall and by Gaia ellipticity bin."""

    overall: ErrorStats
    by_ellipticity: tuple[ErrorStats, ...]

    def to_json(self) -> dict[str, Any]:
        """``overall`` and ``by_ellipticity``."""
        return {
            "overall": self.overall.to_json(),
            "by_ellipticity": [s.to_json() for s in self.by_ellipticity],
        }

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Self:
        """The inverse of :meth:`to_json`."""
        return cls(ErrorStats.from_json(values["overall"]), stats_list(values["by_ellipticity"]))


@dataclass(frozen=True)
class GaiaSummary:
    """Every method's agreement with Gaia.

    Attributes
    ----------
    ellipticity_bins : tuple of str
        Labels of every ``by_ellipticity``.
    methods : mapping of str to GaiaAgreement
        Method name -> its agreement.
    source : str
        Where the Gaia values came from, in words (empty: not said).

    ``to_json`` writes the methods by name beside ``ellipticity_bins`` and ``source``.
    """

    ellipticity_bins: tuple[str, ...]
    methods: Mapping[str, GaiaAgreement]
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: ``ellipticity_bins``, ``source`` (if said) and one key per method."""
        values: dict[str, Any] = {"ellipticity_bins": self.ellipticity_bins}
        if self.source:
            values["source"] = self.source
        values.update({name: agreement.to_json() for name, agreement in self.methods.items()})
        return json_ready(values)

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Self:
        """The inverse of :meth:`to_json` (the methods keep the order of ``values``)."""
        return cls(
            ellipticity_bins=tuple(values["ellipticity_bins"]),
            methods={
                name: GaiaAgreement.from_json(agreement)
                for name, agreement in values.items()
                if name not in ("ellipticity_bins", "source")
            },
            source=values.get("source", ""),
        )


def gaia_agreement(
    position_angles_deg: Mapping[str, np.ndarray],
    gaia_pa_deg: np.ndarray,
    gaia_ellipticity: np.ndarray,
    *,
    source: str = "",
) -> GaiaSummary:
    """Axial difference of each method's position angle from Gaia's, by Gaia ellipticity.

    Parameters
    ----------
    position_angles_deg : mapping of str to numpy.ndarray
        Method name -> ``(N,)`` position angles east of north, degrees (NaN: not measured).
    gaia_pa_deg, gaia_ellipticity : numpy.ndarray
        ``(N,)`` Gaia's ``posangle_sersic`` and ``ellipticity_sersic`` for the same galaxies.
    source : str
        Where the Gaia values came from, in words, for the report.

    Returns
    -------
    GaiaSummary
        Galaxies without Gaia values count as unmeasured.
    """
    methods = {}
    for method, pa in position_angles_deg.items():
        difference = axial_difference(pa, gaia_pa_deg)
        methods[method] = GaiaAgreement(
            overall=error_stats(difference),
            by_ellipticity=tuple(binned_stats(difference, gaia_ellipticity, ELLIPTICITY_EDGES)),
        )
    return GaiaSummary(tuple(bin_labels(ELLIPTICITY_EDGES)), methods, source)
