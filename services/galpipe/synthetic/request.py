"""The parameters of a cutout request, parsed and validated as the Legacy Surveys viewer takes them.

``ra``, ``dec`` (degrees, required), ``layer`` (default the viewer's older default release),
``pixscale`` (arcsec/pixel, default 0.262), ``bands`` (letters of ``griz``, default all),
``size`` (pixels, default 256 as on the viewer), ``invvar`` (present: append the inverse variance;
the viewer tests the key's presence, not its value).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import parse_qs

from galpipe.errors import InputError
from galpipe.survey.layout import BANDS, PIXSCALE_ARCSEC

__all__ = ["DEFAULT_LAYER", "KNOWN_LAYERS", "MAX_SIZE", "CutoutRequest", "RequestError"]

KNOWN_LAYERS = frozenset({"ls-dr10", "ls-dr10-south", "ls-dr9", "ls-dr9-north", "ls-dr9-south"})
# What the real viewer serves when ``layer`` is absent: an older release (without i).
DEFAULT_LAYER = "ls-dr9"
MAX_SIZE = 512


class RequestError(InputError, ValueError):
    """A cutout request with a missing or malformed parameter (answered 400)."""


@dataclass(frozen=True)
class CutoutRequest:
    """The parameters of one cutout request, validated."""

    ra: float
    dec: float
    layer: str
    pixscale: float
    bands: str
    size: int
    invvar: bool = False

    @classmethod
    def from_query(cls, query: str) -> CutoutRequest:
        """Parse a query string.

        Raises
        ------
        RequestError
            For a missing ``ra``/``dec`` or a parameter that is not a valid number or band list.
        """
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}

        def number(name: str, default: float | None, low: float, high: float) -> float:
            raw = params.get(name)
            if raw is None:
                if default is None:
                    raise RequestError(f"missing parameter {name}")
                return default
            try:
                value = float(raw)
            except ValueError:
                raise RequestError(f"{name}={raw!r}: not a number") from None
            if not (math.isfinite(value) and low <= value <= high):
                raise RequestError(f"{name}={raw!r}: outside [{low}, {high}]")
            return value

        ra = number("ra", None, 0.0, 360.0)
        dec = number("dec", None, -90.0, 90.0)
        pixscale = number("pixscale", PIXSCALE_ARCSEC, 1e-3, 60.0)
        size_raw = params.get("size", "256")
        try:
            size = int(size_raw)
        except ValueError:
            raise RequestError(f"size={size_raw!r}: not an integer") from None
        if not 1 <= size <= MAX_SIZE:
            raise RequestError(f"size={size}: outside [1, {MAX_SIZE}]")
        bands = params.get("bands", BANDS)
        if not bands or set(bands) - set(BANDS) or len(set(bands)) != len(bands):
            raise RequestError(f"bands={bands!r}: expected distinct letters from {BANDS!r}")
        layer = params.get("layer", DEFAULT_LAYER)
        return cls(ra % 360.0, dec, layer, pixscale, bands, size, invvar="invvar" in params)
