"""The synthetic sky: GalSim galaxies with known truth, served like the Legacy Surveys viewer.

Modules, one job each: :mod:`.truth` (what a galaxy is, from its ``source_id``),
:mod:`.render` (GalSim), :mod:`.fitsfile` (the service's FITS layout), :mod:`.request` (query
parameters), :mod:`.catalog` (ECSV catalogue and lookup by position), :mod:`.faults` (what goes
wrong), :mod:`.server` (HTTP), :mod:`.cli` (``galpipe sky``).

Names are imported lazily so that ``from galpipe.synthetic.cli import register`` does not
load GalSim.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from galpipe.synthetic.catalog import (
        SkyIndex,
        make_truths,
        read_catalog,
        truth_table,
        write_catalog,
    )
    from galpipe.synthetic.faults import BlankRegion, FaultConfig, max_in_window
    from galpipe.synthetic.fitsfile import SURVEY, cube_fits_bytes, cutout_fits_bytes
    from galpipe.synthetic.render import render_cutout
    from galpipe.synthetic.server import SyntheticSky
    from galpipe.synthetic.truth import Neighbour, SkyConfig, TruthGalaxy, truth_for

_EXPORTS = {
    "SkyIndex": "catalog",
    "make_truths": "catalog",
    "read_catalog": "catalog",
    "truth_table": "catalog",
    "write_catalog": "catalog",
    "BlankRegion": "faults",
    "FaultConfig": "faults",
    "max_in_window": "faults",
    "SURVEY": "fitsfile",
    "cube_fits_bytes": "fitsfile",
    "cutout_fits_bytes": "fitsfile",
    "render_cutout": "render",
    "SyntheticSky": "server",
    "Neighbour": "truth",
    "SkyConfig": "truth",
    "TruthGalaxy": "truth",
    "truth_for": "truth",
}

__all__ = [
    "SURVEY",
    "BlankRegion",
    "FaultConfig",
    "Neighbour",
    "SkyConfig",
    "SkyIndex",
    "SyntheticSky",
    "TruthGalaxy",
    "cube_fits_bytes",
    "cutout_fits_bytes",
    "make_truths",
    "max_in_window",
    "read_catalog",
    "render_cutout",
    "truth_for",
    "truth_table",
    "write_catalog",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
