"""The synthetic catalogue: galaxies with their truth, as an ECSV table, and lookup by position.

The table has ``source_id``, ``ra``, ``dec`` (what ``galpipe ingest`` reads) followed by every
truth column with its unit and description; neighbours are one JSON column. The table, not the
seed, is authoritative once written: the server renders what the table says.

Optionally (``gaia_sersic=True``) it also carries Gaia DR3 ``galaxy_candidates``-like columns
``posangle_sersic`` (degrees east of north) and ``ellipticity_sersic`` (``1 - b/a``): the truth
seen through a noise model of ours (:func:`gaia_sersic_values`), not Gaia's own fits, so that
the comparison with Gaia's angles can be tested end to end (ingest keeps them as extra columns).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import Table
from scipy.spatial import cKDTree

from galpipe.survey.layout import BANDS
from galpipe.synthetic.truth import SkyConfig, TruthGalaxy, truth_for

__all__ = [
    "GAIA_SERSIC_COLUMNS",
    "SkyIndex",
    "gaia_sersic_values",
    "make_truths",
    "read_catalog",
    "truth_table",
    "truths_from_table",
    "write_catalog",
]

# Gaia DR3 source_ids are 64-bit; synthetic ones are drawn from the same range.
_ID_RANGE = (2**40, 2**62)
# Seeds the Gaia-like noise of a galaxy, apart from its truth streams.
_GAIA_SALT = 0x6A1A
#: Names of the Gaia-like columns (as in gaiadr3.galaxy_candidates).
GAIA_SERSIC_COLUMNS = ("posangle_sersic", "ellipticity_sersic")
# The Gaia-like noise model (ours), see gaia_sersic_values.
_GAIA_E_SIGMA = 0.03
_GAIA_PA_SIGMA_TIMES_E = 2.0
_GAIA_ROUND_E = 0.05


@dataclass(frozen=True)
class _Column:
    name: str
    unit: u.UnitBase | None
    description: str


_COLUMNS: tuple[_Column, ...] = (
    _Column("source_id", None, "synthetic galaxy id; seeds its truth"),
    _Column("ra", u.deg, "right ascension (ICRS)"),
    _Column("dec", u.deg, "declination (ICRS)"),
    _Column("sersic_n", None, "Sersic index"),
    _Column("half_light_radius", u.arcsec, "half-light radius"),
    _Column("axis_ratio", None, "minor over major axis, b/a"),
    _Column("position_angle", u.deg, "major-axis position angle, east of north, [0, 180)"),
    *(_Column(f"flux_{b}", u.nanomaggy, f"{b}-band flux of the galaxy") for b in BANDS),
    _Column("psf_fwhm", u.arcsec, "seeing FWHM (all bands)"),
    _Column("psf_model", None, "PSF profile: moffat or gaussian"),
    _Column("moffat_beta", None, "Moffat power-law index"),
    *(
        _Column(f"sky_sigma_{b}", u.nanomaggy, f"{b}-band Gaussian sky noise per pixel")
        for b in BANDS
    ),
    _Column("gain", u.electron / u.nanomaggy, "electrons per nanomaggy (Poisson noise)"),
    _Column("n_neighbours", None, "number of stars and companion galaxies around it"),
    _Column(
        "neighbours",
        None,
        "JSON list: kind, east_arcsec, north_arcsec (offsets from the galaxy), flux per "
        "band (nanomaggies), and for galaxies sersic_n, half_light_radius_arcsec, axis_ratio, "
        "position_angle_deg (east of north)",
    ),
)


def make_truths(
    n: int,
    *,
    seed: int = 0,
    ra_range: tuple[float, float] = (0.0, 360.0),
    dec_range: tuple[float, float] = (-20.0, 50.0),
    config: SkyConfig | None = None,
) -> list[TruthGalaxy]:
    """``n`` galaxies uniformly distributed on the sphere within the given ranges.

    Parameters
    ----------
    n : int
        How many galaxies.
    seed : int
        Seeds the ids and positions (each galaxy's truth is then seeded by its id).
    ra_range, dec_range : tuple of float
        ``(low, high)`` in degrees; ``0 <= ra < 360``, ``-90 <= dec <= 90``.
    config : SkyConfig, optional
        The truth distributions.
    """
    if n < 0:
        raise ValueError(f"n {n}: must not be negative")
    ra_lo, ra_hi = ra_range
    dec_lo, dec_hi = dec_range
    if not 0.0 <= ra_lo <= ra_hi <= 360.0:
        raise ValueError(f"ra range {ra_range}: expected 0 <= low <= high <= 360 degrees")
    if not -90.0 <= dec_lo <= dec_hi <= 90.0:
        raise ValueError(f"dec range {dec_range}: expected -90 <= low <= high <= 90 degrees")
    rng = np.random.default_rng(seed)
    ids: set[int] = set()
    while len(ids) < n:
        ids.update(int(i) for i in rng.integers(*_ID_RANGE, size=n - len(ids)))
    ordered = sorted(ids)
    ra = rng.uniform(ra_lo, ra_hi, size=n) % 360.0
    # Uniform in sin(dec) gives a uniform density on the sphere.
    sin_dec = rng.uniform(math.sin(math.radians(dec_lo)), math.sin(math.radians(dec_hi)), size=n)
    dec = np.degrees(np.arcsin(sin_dec))
    return [
        truth_for(sid, float(r), float(d), config)
        for sid, r, d in zip(ordered, ra, dec, strict=True)
    ]


def gaia_sersic_values(truth: TruthGalaxy) -> tuple[float, float]:
    """Gaia-like ``(posangle_sersic, ellipticity_sersic)`` of a truth: a noise model (ours).

    With ``e = 1 - q`` the true ellipticity: ``ellipticity_sersic = clip(e + N(0, 0.03), 0,
    0.95)``; ``posangle_sersic = (PA + N(0, (2 / e) deg)) mod 180`` degrees east of north, and
    uniform on [0, 180) for ``e < 0.05`` (Gaia notes its angle is meaningless for near-round
    fits). Deterministic per ``source_id``.
    """
    rng = np.random.default_rng(np.random.SeedSequence([_GAIA_SALT, truth.source_id]))
    true_e = 1.0 - truth.axis_ratio
    ellipticity = float(np.clip(true_e + rng.normal(0.0, _GAIA_E_SIGMA), 0.0, 0.95))
    noise = rng.normal(0.0, _GAIA_PA_SIGMA_TIMES_E / max(true_e, _GAIA_ROUND_E))
    uniform = rng.uniform(0.0, 180.0)
    angle = uniform if true_e < _GAIA_ROUND_E else truth.position_angle_deg + noise
    return float(angle % 180.0), ellipticity


def truth_table(
    truths: Sequence[TruthGalaxy], *, gaia_sersic: bool = False, sdss_fields: bool = False
) -> Table:
    """The catalogue as an astropy table, with units and descriptions on every column.

    ``gaia_sersic`` adds the Gaia-like columns of :func:`gaia_sersic_values`; ``sdss_fields``
    adds ``run``, ``rerun``, ``camcol`` and ``field``, the synthetic SDSS field that holds each
    galaxy (:func:`galpipe.synthetic.sdss_frames.field_of`), as a CasJobs query gives them.
    """
    values: dict[str, list[object]] = {
        "source_id": [t.source_id for t in truths],
        "ra": [t.ra for t in truths],
        "dec": [t.dec for t in truths],
        "sersic_n": [t.sersic_n for t in truths],
        "half_light_radius": [t.half_light_radius_arcsec for t in truths],
        "axis_ratio": [t.axis_ratio for t in truths],
        "position_angle": [t.position_angle_deg for t in truths],
        **{f"flux_{b}": [t.flux[b] for t in truths] for b in BANDS},
        "psf_fwhm": [t.psf_fwhm_arcsec for t in truths],
        "psf_model": [t.psf_model for t in truths],
        "moffat_beta": [t.moffat_beta for t in truths],
        **{f"sky_sigma_{b}": [t.sky_sigma[b] for t in truths] for b in BANDS},
        "gain": [t.gain_e_per_nmgy for t in truths],
        "n_neighbours": [len(t.neighbours) for t in truths],
        "neighbours": [t.neighbours_json() for t in truths],
    }
    table = Table()
    for column in _COLUMNS:
        data = values[column.name]
        dtype: type | None = None
        if column.name in ("source_id", "n_neighbours"):
            dtype = np.int64
        elif column.name in ("psf_model", "neighbours"):
            dtype = str
        table[column.name] = np.asarray(data, dtype=dtype) if data else np.zeros(0, dtype=dtype)
        table[column.name].unit = column.unit
        table[column.name].description = column.description
    if gaia_sersic:
        pairs = [gaia_sersic_values(t) for t in truths]
        table["posangle_sersic"] = np.array([p[0] for p in pairs], dtype=np.float64)
        table["posangle_sersic"].unit = u.deg
        table[
            "posangle_sersic"
        ].description = "Gaia-like Sersic position angle, east of north (synthetic noise model)"
        table["ellipticity_sersic"] = np.array([p[1] for p in pairs], dtype=np.float64)
        table["ellipticity_sersic"].description = "Gaia-like Sersic ellipticity 1 - b/a (synthetic)"
    if sdss_fields:
        from galpipe.survey.sdss import DEFAULT_RERUN
        from galpipe.synthetic.sdss_frames import field_of

        fields = np.array([field_of(t.ra, t.dec) for t in truths], dtype=np.int64).reshape(-1, 3)
        for i, (name, description) in enumerate(
            (
                ("run", "SDSS imaging run of the galaxy's field (synthetic layout)"),
                ("camcol", "SDSS camera column of the galaxy's field (synthetic layout)"),
                ("field", "SDSS field number of the galaxy's field (synthetic layout)"),
            )
        ):
            table[name] = fields[:, i]
            table[name].description = description
        table["rerun"] = np.full(len(truths), DEFAULT_RERUN)
        table["rerun"].description = "SDSS processing rerun of the frames"
    table.meta["survey"] = "galpipe-synthetic"
    table.meta["comments"] = [
        "Synthetic galaxies rendered by `galpipe sky serve`; each truth is seeded by source_id."
    ]
    return table


def truths_from_table(table: Table) -> list[TruthGalaxy]:
    """Rebuild the truths from a table written by :func:`truth_table`.

    Raises
    ------
    ValueError
        If a column is missing (the message names it).
    """
    missing = [c.name for c in _COLUMNS if c.name not in table.colnames]
    if missing:
        raise ValueError(f"synthetic catalogue: missing column(s) {missing}")
    truths = []
    for row in table:
        truths.append(
            TruthGalaxy(
                source_id=int(row["source_id"]),
                ra=float(row["ra"]),
                dec=float(row["dec"]),
                sersic_n=float(row["sersic_n"]),
                half_light_radius_arcsec=float(row["half_light_radius"]),
                axis_ratio=float(row["axis_ratio"]),
                position_angle_deg=float(row["position_angle"]),
                flux={b: float(row[f"flux_{b}"]) for b in BANDS},
                psf_fwhm_arcsec=float(row["psf_fwhm"]),
                psf_model=str(row["psf_model"]),  # type: ignore[arg-type]
                moffat_beta=float(row["moffat_beta"]),
                sky_sigma={b: float(row[f"sky_sigma_{b}"]) for b in BANDS},
                gain_e_per_nmgy=float(row["gain"]),
                neighbours=TruthGalaxy.neighbours_from_json(str(row["neighbours"])),
            )
        )
    return truths


def write_catalog(
    path: str | Path,
    truths: Sequence[TruthGalaxy],
    *,
    gaia_sersic: bool = False,
    sdss_fields: bool = False,
) -> Path:
    """Write the catalogue as ECSV (overwriting ``path``); returns the path.

    ``gaia_sersic`` adds the Gaia-like columns (:func:`gaia_sersic_values`), ``sdss_fields``
    each galaxy's synthetic SDSS field (:func:`truth_table`).
    """
    target = Path(path)
    table = truth_table(truths, gaia_sersic=gaia_sersic, sdss_fields=sdss_fields)
    table.write(target, format="ascii.ecsv", overwrite=True)
    return target


def read_catalog(path: str | Path) -> list[TruthGalaxy]:
    """Read a catalogue written by :func:`write_catalog`."""
    return truths_from_table(Table.read(Path(path), format="ascii.ecsv"))


def _unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    ra_rad, dec_rad = np.radians(ra), np.radians(dec)
    return np.column_stack(
        (np.cos(dec_rad) * np.cos(ra_rad), np.cos(dec_rad) * np.sin(ra_rad), np.sin(dec_rad))
    )


class SkyIndex:
    """Find the catalogued galaxy nearest to a position (a k-d tree on unit vectors)."""

    def __init__(self, truths: Sequence[TruthGalaxy]) -> None:
        self.truths = list(truths)
        if self.truths:
            ra = np.array([t.ra for t in self.truths])
            dec = np.array([t.dec for t in self.truths])
            self._tree: cKDTree | None = cKDTree(_unit_vectors(ra, dec))
        else:
            self._tree = None

    def __len__(self) -> int:
        return len(self.truths)

    def nearest(self, ra: float, dec: float, radius_arcsec: float) -> TruthGalaxy | None:
        """The catalogued galaxy nearest to ``(ra, dec)`` within ``radius_arcsec``, or None."""
        if self._tree is None:
            return None
        chord = 2.0 * math.sin(math.radians(radius_arcsec / 3600.0) / 2.0)
        point = _unit_vectors(np.array([ra]), np.array([dec]))[0]
        distance, index = self._tree.query(point, distance_upper_bound=chord)
        if not np.isfinite(distance):
            return None
        return self.truths[int(index)]
