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
from os import PathLike
from typing import Any

import numpy as np

from galpipe.catalog.extras import extra_json
from galpipe.catalog.read import load_catalog
from galpipe.science.features import axial_difference
from galpipe.synthetic.catalog import GAIA_SERSIC_COLUMNS
from galpipe.validation.stats import ELLIPTICITY_EDGES, bin_labels, binned_stats, error_stats

__all__ = ["gaia_agreement", "gaia_columns_from_extras", "load_gaia_columns"]

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


def gaia_agreement(
    position_angles_deg: Mapping[str, np.ndarray],
    gaia_pa_deg: np.ndarray,
    gaia_ellipticity: np.ndarray,
) -> dict[str, Any]:
    """Axial difference of each method's position angle from Gaia's, by Gaia ellipticity.

    Parameters
    ----------
    position_angles_deg : mapping of str to numpy.ndarray
        Method name -> ``(N,)`` position angles east of north, degrees (NaN: not measured).
    gaia_pa_deg, gaia_ellipticity : numpy.ndarray
        ``(N,)`` Gaia's ``posangle_sersic`` and ``ellipticity_sersic`` for the same galaxies.

    Returns
    -------
    dict
        ``ellipticity_bins`` labels, and per method ``overall`` and ``by_ellipticity`` stats;
        galaxies without Gaia values count as unmeasured.
    """
    result: dict[str, Any] = {"ellipticity_bins": bin_labels(ELLIPTICITY_EDGES)}
    for method, pa in position_angles_deg.items():
        difference = axial_difference(pa, gaia_pa_deg)
        result[method] = {
            "overall": error_stats(difference).as_dict(),
            "by_ellipticity": [
                s.as_dict() for s in binned_stats(difference, gaia_ellipticity, ELLIPTICITY_EDGES)
            ],
        }
    return result
