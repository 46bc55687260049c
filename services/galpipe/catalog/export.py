"""``galpipe export``: the results catalogue as FITS, ECSV or Parquet, written with astropy.

One row per galaxy: ``source_id``, ``ra``, ``dec``, ``catalog``, the catalogue's ``extra``
columns flattened (e.g. Gaia's ``posangle_sersic``), the galaxy ``state``, then the combined
measurement of one ``algo_version`` (``pa``, ``pa_err``, …) and, with ``--bands all``, every
band's measurement beside it (``pa_g``, ``pa_err_g``, …, ``pa_z``) and, with
``--morphology-model``, one morphology model's prediction (``morph_class``,
``morph_class_probability`` and the 37 Galaxy Zoo 2 fractions ``gz2_class1_1`` …
``gz2_class11_6``). Every column carries a unit and a description; the table's ``meta`` records
the version, the selection, the morphology model (``MORPHVER``) and the export time.

Missing values (a galaxy without a measurement or prediction, a quantity its flags say could not
be measured) are masked, never a silent NaN: ECSV writes them as empty cells, FITS as NaN for
floats, ``TNULL`` for integers and an empty string for text (astropy reads all three back as
masked), Parquet (astropy's layout) as a ``<name>.mask`` column beside the data.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
from astropy.table import Column, MaskedColumn, Table
from psycopg_pool import ConnectionPool

from galpipe.db import results as db
from galpipe.db.models import list_models
from galpipe.db.morphology import latest_predicted_model
from galpipe.errors import InputError
from galpipe.science import gz2

__all__ = [
    "FORMATS",
    "GALAXY_DOCS",
    "KNOWN_CATALOG_COLUMNS",
    "LATEST_MODEL",
    "MORPHOLOGY_DOCS",
    "STATE_DOC",
    "ColumnDoc",
    "ExportError",
    "ExportSummary",
    "build_results_table",
    "check_choices",
    "choose_morphology_model",
    "choose_version",
    "export_meta",
    "export_results",
    "extra_column_doc",
    "format_for",
    "measured_docs",
    "write_results",
]

#: ``--format`` values and the astropy format name each one writes.
FORMATS = {"fits": "fits", "ecsv": "ascii.ecsv", "parquet": "parquet"}
_SUFFIXES = {".fits": "fits", ".fit": "fits", ".fits.gz": "fits", ".ecsv": "ecsv"}
_SUFFIXES |= {".parquet": "parquet", ".pq": "parquet"}
BAND_SELECTIONS = ("combined", "all")
#: ``--morphology-model`` value that takes the newest registered model with predictions.
LATEST_MODEL = "latest"

_DIMENSIONLESS = u.dimensionless_unscaled
# How a unit the FITS standard lacks is spelled on a TUNITn card.
_NON_FITS_UNIT_NAMES = {u.nanomaggy: "nanomaggy"}


class ExportError(InputError):
    """The export cannot be made as asked; the message names the input and the problem."""


@dataclass(frozen=True)
class ColumnDoc:
    """Name, type, unit and description of one exported column.

    Attributes
    ----------
    name
        Column name in the file.
    dtype
        numpy dtype of the column (``"U"`` for text).
    unit
        astropy unit (``dimensionless_unscaled`` for counts, ratios and bit masks); ``None``
        only for catalogue columns whose unit was not recorded at ingest.
    description
        One sentence, with conventions where they matter.
    """

    name: str
    dtype: str
    unit: u.UnitBase | None
    description: str


#: The galaxy's columns, first in every export (``state`` comes after the catalogue's own).
GALAXY_DOCS = (
    ColumnDoc("source_id", "int64", _DIMENSIONLESS, "galaxy id from the input catalogue"),
    ColumnDoc("ra", "float64", u.deg, "ICRS right ascension"),
    ColumnDoc("dec", "float64", u.deg, "ICRS declination"),
    ColumnDoc("catalog", "U", _DIMENSIONLESS, "name of the catalogue the galaxy was ingested from"),
)
STATE_DOC = ColumnDoc(
    "state",
    "U",
    _DIMENSIONLESS,
    "galaxy state from the task queue: pending, fetched, transformed or failed",
)

# Keys: radon_measurements columns. Angles are in [0, 180) degrees; "image" angles run counter-
# clockwise from +x (FITS column axis) towards +y; position angles run east of north.
_COMBINED_DOCS: Mapping[str, ColumnDoc] = {
    "angle_image_deg": ColumnDoc(
        "angle_image", "float64", u.deg, "combined major-axis angle in the image, CCW from +x"
    ),
    "position_angle_deg": ColumnDoc(
        "pa", "float64", u.deg, "combined major-axis position angle, east of north, [0, 180)"
    ),
    "angle_err_deg": ColumnDoc(
        "pa_err",
        "float64",
        u.deg,
        "uncertainty of pa: the band-stack fit's, times the bands' Birge ratio if > 1, "
        "calibrated on the synthetic truth (docs/science.md)",
    ),
    "anisotropy": ColumnDoc(
        "anisotropy",
        "float64",
        _DIMENSIONLESS,
        "b/a of the sinusoid fit of the band stack (0 = round)",
    ),
    "band_spread_deg": ColumnDoc(
        "band_spread", "float64", u.deg, "spread of the per-band angles that were combined"
    ),
    "n_bands": ColumnDoc("n_bands", "int16", _DIMENSIONLESS, "number of bands combined"),
    "nonfinite_pixels": ColumnDoc(
        "nonfinite_pixels",
        "int32",
        _DIMENSIONLESS,
        "NaN/inf pixels in the cutout, all bands (replaced before measuring)",
    ),
    "masked_fraction": ColumnDoc(
        "masked_fraction",
        "float32",
        _DIMENSIONLESS,
        "fraction of the stamp masked as neighbouring sources",
    ),
    "contaminated": ColumnDoc(
        "contaminated",
        "int16",
        _DIMENSIONLESS,
        "1 if neighbour masking found other sources in the stamp, else 0 (flags bit 64)",
    ),
    "flags": ColumnDoc(
        "flags",
        "int32",
        _DIMENSIONLESS,
        "quality bits (galpipe.science.core.Flag): 1 band blank, 2 non-finite pixels, "
        "4 low signal, 8 round, 16 point-like, 32 no valid band, 64 contaminated, "
        "128 unreliable angle",
    ),
}

# Per band, ``{band}`` is filled in; names get the suffix ``_{band}``.
_BAND_DOCS: Mapping[str, ColumnDoc] = {
    "angle_image_deg": ColumnDoc(
        "angle_image", "float64", u.deg, "{band}-band peak angle of the sinusoid fit, CCW from +x"
    ),
    "position_angle_deg": ColumnDoc(
        "pa", "float64", u.deg, "{band}-band position angle, east of north, [0, 180)"
    ),
    "angle_err_deg": ColumnDoc(
        "pa_err", "float64", u.deg, "{band}-band standard error of the fitted peak angle"
    ),
    "angle_err_window_deg": ColumnDoc(
        "angle_err_window", "float64", u.deg, "{band}-band window-drop error (normal fit width)"
    ),
    "angle_err_window_std_deg": ColumnDoc(
        "angle_err_window_std",
        "float64",
        u.deg,
        "{band}-band standard deviation of the window-drop angles",
    ),
    "angle_argmax_deg": ColumnDoc(
        "angle_argmax",
        "float64",
        u.deg,
        "{band}-band discrete peak of the pooled Radon curve, image angle (a check)",
    ),
    "sinusoid_a": ColumnDoc(
        "sinusoid_a",
        "float64",
        u.nanomaggy,
        "{band}-band sinusoid offset a of the pooled Radon curve (cutout flux along a line)",
    ),
    "sinusoid_b": ColumnDoc(
        "sinusoid_b",
        "float64",
        u.nanomaggy,
        "{band}-band sinusoid amplitude b of the pooled Radon curve (cutout flux along a line)",
    ),
    "anisotropy": ColumnDoc("anisotropy", "float64", _DIMENSIONLESS, "{band}-band b/a"),
    "moments_angle_deg": ColumnDoc(
        "moments_angle_image", "float64", u.deg, "{band}-band second-moments angle, CCW from +x"
    ),
    "moments_position_angle_deg": ColumnDoc(
        "moments_pa", "float64", u.deg, "{band}-band second-moments position angle, E of N"
    ),
    "moments_err_deg": ColumnDoc(
        "moments_pa_err", "float64", u.deg, "{band}-band uncertainty of the moments angle"
    ),
    "moments_ellipticity": ColumnDoc(
        "moments_ellipticity", "float64", _DIMENSIONLESS, "{band}-band second-moments ellipticity"
    ),
    "nonfinite_pixels": ColumnDoc(
        "nonfinite_pixels", "int32", _DIMENSIONLESS, "{band}-band NaN/inf pixels"
    ),
    "flags": ColumnDoc(
        "flags", "int32", _DIMENSIONLESS, "{band}-band quality bits (galpipe.science.core.Flag)"
    ),
}


def _fraction_doc(answer: str) -> ColumnDoc:
    """The column of the predicted fraction of GZ2 answer ``answer`` (``ClassN.M``)."""
    question = next(q for q in gz2.QUESTIONS if answer in q.answers)
    label = question.labels[question.answers.index(answer)]
    return ColumnDoc(
        f"gz2_{answer.lower().replace('.', '_')}",
        "float32",
        _DIMENSIONLESS,
        # The Kaggle column first: FITS keeps only the start of a description on its card.
        f"{answer} ({question.name} {question.text} {label}): predicted GZ2 vote fraction, "
        "tree-normalised (a question's answers sum to its parent answer's fraction)",
    )


#: The columns a morphology model's prediction adds, in the order of
#: :data:`galpipe.db.results.MORPHOLOGY_COLUMNS` (``morphology_predictions`` stores reals).
MORPHOLOGY_DOCS: tuple[ColumnDoc, ...] = (
    ColumnDoc(
        "morph_class",
        "U",
        _DIMENSIONLESS,
        "predicted six-class label (Elliptical, Star/Artifact, On_Edge, Spiral_Barred, Spiral, "
        "Irregular): the largest of its deciding GZ2 fractions",
    ),
    ColumnDoc(
        "morph_class_probability",
        "float32",
        _DIMENSIONLESS,
        "predicted GZ2 vote fraction of the answer that decided morph_class",
    ),
    *(_fraction_doc(answer) for answer in gz2.ANSWER_COLUMNS),
)

#: Units and descriptions of catalogue columns that ``galaxies.extra`` may carry (ingest keeps
#: the values, not their units). Gaia DR3 ``galaxy_candidates`` Sérsic fit columns.
KNOWN_CATALOG_COLUMNS: Mapping[str, tuple[u.UnitBase, str]] = {
    "posangle_sersic": (u.deg, "Gaia DR3 Sersic position angle, east of north"),
    "posangle_sersic_error": (u.deg, "Gaia DR3 uncertainty of posangle_sersic"),
    "ellipticity_sersic": (_DIMENSIONLESS, "Gaia DR3 Sersic ellipticity, 1 - b/a"),
    "ellipticity_sersic_error": (_DIMENSIONLESS, "Gaia DR3 uncertainty of ellipticity_sersic"),
    "radius_sersic": (u.mas, "Gaia DR3 Sersic effective radius"),
    "radius_sersic_error": (u.mas, "Gaia DR3 uncertainty of radius_sersic"),
    "n_sersic": (_DIMENSIONLESS, "Gaia DR3 Sersic index"),
    "classprob_dsc_combmod_galaxy": (_DIMENSIONLESS, "Gaia DR3 DSC galaxy probability"),
    "redshift_ugc": (_DIMENSIONLESS, "Gaia DR3 UGC redshift"),
}


@dataclass(frozen=True)
class ExportSummary:
    """What :func:`export_results` wrote."""

    path: Path
    format: str
    rows: int
    columns: int
    algo_version: str
    morphology_model: str | None = None


def format_for(path: Path, requested: str | None) -> str:
    """The export format: ``requested`` if given, else guessed from the file name's suffix.

    Raises
    ------
    ExportError
        If ``requested`` is not a known format, or none is given and the suffix names none.
    """
    if requested is not None:
        if requested.lower() not in FORMATS:
            raise ExportError(f"unknown format {requested!r}: expected one of {', '.join(FORMATS)}")
        return requested.lower()
    name = path.name.lower()
    for suffix, fmt in _SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    raise ExportError(
        f"{path}: cannot tell the format from the suffix {path.suffix!r}; "
        f"use {', '.join(sorted(_SUFFIXES))} or pass --format {{{','.join(FORMATS)}}}"
    )


def check_choices(selection: str, bands: str) -> None:
    """Refuse a ``selection`` or ``bands`` that is not one of the documented values.

    Raises
    ------
    ExportError
        Naming the value and the ones expected.
    """
    if selection not in db.SELECTIONS:
        raise ExportError(f"unknown state {selection!r}: expected one of {db.SELECTIONS}")
    if bands not in BAND_SELECTIONS:
        raise ExportError(f"unknown bands {bands!r}: expected one of {BAND_SELECTIONS}")


def choose_version(pool: ConnectionPool, requested: str | None) -> str:
    """The ``algo_version`` to export: ``requested``, or the most recently measured one.

    Raises
    ------
    ExportError
        If there are no results, or ``requested`` is not among the versions present.
    """
    with pool.connection() as conn:
        versions = db.algo_versions(conn)
    if not versions:
        raise ExportError("no radon results in the database: nothing to export")
    if requested is None:
        return versions[0].version
    if requested not in {v.version for v in versions}:
        present = ", ".join(repr(v.version) for v in versions)
        raise ExportError(f"unknown algo_version {requested!r}; versions present: {present}")
    return requested


def choose_morphology_model(pool: ConnectionPool, requested: str) -> str:
    """The model version ``--morphology-model`` names: a registered one, or ``latest``."""
    with pool.connection() as conn:
        if requested == LATEST_MODEL:
            latest = latest_predicted_model(conn)
            if latest is None:
                raise ExportError(
                    "--morphology-model latest: no registered morphology model has predictions"
                )
            return latest
        registered = [m.model_version for m in list_models(conn, "morphology")]
    if requested not in registered:
        present = ", ".join(registered) if registered else "none are registered"
        raise ExportError(
            f"unknown morphology model {requested!r}; registered morphology models: {present}"
        )
    return requested


class _TextBuffer:
    """Values of one text column, chunk by chunk; NULL (``None``) becomes masked."""

    def __init__(self, doc: ColumnDoc) -> None:
        self.doc = doc
        self._data: list[str] = []
        self._mask: list[bool] = []

    def extend(self, values: Sequence[Any]) -> None:
        self._data.extend("" if v is None else str(v) for v in values)
        self._mask.extend(v is None for v in values)

    def column(self) -> MaskedColumn:
        # Empty is the fill: FITS readers (astropy's too) take an empty string as null.
        return MaskedColumn(
            np.array(self._data, dtype=str),
            name=self.doc.name,
            mask=np.array(self._mask, dtype=bool),
            unit=self.doc.unit,
            description=self.doc.description,
            fill_value="",
        )


class _ColumnBuffer:
    """Values of one numeric column, chunk by chunk; NULL (``None``) becomes masked."""

    def __init__(self, doc: ColumnDoc) -> None:
        self.doc = doc
        self._data: list[np.ndarray] = []
        self._mask: list[np.ndarray] = []

    def extend(self, values: Sequence[Any]) -> None:
        if self.doc.dtype == "int64":  # ids: exact only as integers (never NULL here)
            self._data.append(np.array(values, dtype=np.int64))
            self._mask.append(np.zeros(len(values), dtype=bool))
            return
        # Through float64 (None -> NaN) in C: exact for the int16/int32 columns too.
        as_float = np.array(values, dtype=np.float64)
        mask = np.isnan(as_float)
        if np.dtype(self.doc.dtype).kind in "iu":
            as_float[mask] = 0
        self._data.append(as_float.astype(self.doc.dtype))
        self._mask.append(mask)

    def column(self) -> MaskedColumn:
        dtype = np.dtype(self.doc.dtype)
        data = np.concatenate(self._data) if self._data else np.zeros(0, dtype)
        mask = np.concatenate(self._mask) if self._mask else np.zeros(0, bool)
        # An integer column's null is written to FITS as TNULL = fill_value: one no value takes.
        fill = np.iinfo(dtype).min if dtype.kind in "iu" else np.nan
        return MaskedColumn(
            data,
            name=self.doc.name,
            mask=mask,
            unit=self.doc.unit,
            description=self.doc.description,
            fill_value=fill,
        )


def extra_column_doc(key: str, taken: Collection[str], dtype: str) -> ColumnDoc:
    """The column of catalogue key ``key`` (from ``galaxies.extra``), typed ``dtype``.

    Named ``key``, or ``catalog_<key>`` where ``key`` is one of the ``taken`` column names;
    a known Gaia column gets its unit, any other one no unit (ingest kept no unit for it).
    """
    unit, description = KNOWN_CATALOG_COLUMNS.get(
        key, (None, f"catalogue column {key!r} as ingested (its unit was not recorded)")
    )
    return ColumnDoc(key if key not in taken else f"catalog_{key}", dtype, unit, description)


def _extra_column(doc: ColumnDoc, values: list[Any]) -> Column:
    """A catalogue column from ``galaxies.extra`` values (``None`` where absent or null)."""
    present = [v for v in values if v is not None]
    mask = np.array([v is None for v in values], dtype=bool)
    if present and all(isinstance(v, bool) for v in present):
        data: np.ndarray = np.array([int(v) if v is not None else 0 for v in values], np.int16)
        fill: Any = np.iinfo(np.int16).min
    elif present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        data = np.array([0 if v is None else v for v in values], np.int64)
        fill = np.iinfo(np.int64).min
    elif present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        data = np.array([np.nan if v is None else v for v in values], np.float64)
        fill = np.nan
    else:  # text, or mixed types / lists / objects kept readable as JSON
        data = np.array(
            ["" if v is None else v if isinstance(v, str) else json.dumps(v) for v in values],
            dtype=str,
        )
        fill = ""
    return MaskedColumn(
        data, name=doc.name, mask=mask, unit=doc.unit, description=doc.description, fill_value=fill
    )


def measured_docs(bands: str, *, morphology: bool) -> list[ColumnDoc]:
    """The measurement columns of an export, in the order of its database rows.

    The combined measurement, then (``bands="all"``) each band's, then (``morphology``)
    :data:`MORPHOLOGY_DOCS`.
    """
    docs = [doc for col, doc in _COMBINED_DOCS.items() if col in db.COMBINED_COLUMNS]
    for band in db.BANDS if bands == "all" else ():
        band_docs = _band_docs(band)
        docs += [band_docs[col] for col in db.BAND_COLUMNS]
    return docs + list(MORPHOLOGY_DOCS) if morphology else docs


def _band_docs(band: str) -> dict[str, ColumnDoc]:
    return {
        col: ColumnDoc(f"{doc.name}_{band}", doc.dtype, doc.unit, doc.description.format(band=band))
        for col, doc in _BAND_DOCS.items()
    }


def build_results_table(
    pool: ConnectionPool,
    *,
    algo_version: str | None = None,
    selection: str = "transformed",
    bands: str = "combined",
    morphology_model: str | None = None,
    now: datetime | None = None,
    chunk_rows: int = 10_000,
) -> Table:
    """The results catalogue as an astropy table (see the module docstring for its layout).

    Parameters
    ----------
    pool
        Connection pool on the galpipe database.
    algo_version
        Measurements of this version; ``None`` takes the most recently measured one.
    selection
        ``"transformed"`` (radon done, with results of the version) or ``"all"`` (every
        galaxy, measurements masked where it has none).
    bands
        ``"combined"``: the combined measurement only; ``"all"``: also each band's.
    morphology_model
        Add the prediction of this registered morphology model (64-hex version), or of the
        newest registered one with predictions (``"latest"``); ``None`` adds no morphology.
    now
        Export time recorded in ``meta["EXPORTED"]`` (UTC); default: the current time.
    chunk_rows
        Rows per fetch from the database.

    Raises
    ------
    ExportError
        If there are no results, the version or morphology model is unknown, the selection or
        band choice is not one of the documented values, or no galaxy matches.
    """
    check_choices(selection, bands)
    version = choose_version(pool, algo_version)
    model = None if morphology_model is None else choose_morphology_model(pool, morphology_model)
    wide = bands == "all"
    numeric: list[_ColumnBuffer | _TextBuffer] = [
        _TextBuffer(d) if d.dtype == "U" else _ColumnBuffer(d)
        for d in (*GALAXY_DOCS[:3], *measured_docs(bands, morphology=model is not None))
    ]
    catalogs: list[str] = []
    states: list[str] = []
    extras: list[Mapping[str, Any]] = []
    n_galaxy = len(db.GALAXY_COLUMNS)
    with pool.connection() as conn:
        for rows in db.stream_results(
            conn,
            version,
            selection=selection,
            wide=wide,
            morphology_model=model,
            chunk_rows=chunk_rows,
        ):
            columns = list(zip(*rows, strict=True))
            source_ids, ra, dec, catalog, extra, state = columns[:n_galaxy]
            numeric[0].extend(source_ids)
            numeric[1].extend(ra)
            numeric[2].extend(dec)
            for buffer, values in zip(numeric[3:], columns[n_galaxy:], strict=True):
                buffer.extend(values)
            catalogs.extend(catalog)
            states.extend(state)
            extras.extend(extra)
    if not states:
        what = "transformed galaxies" if selection == "transformed" else "galaxies"
        raise ExportError(f"no {what} with results of algo_version {version!r}")
    return _assemble(numeric, catalogs, states, extras, version, selection, bands, model, now)


def _assemble(
    numeric: list[_ColumnBuffer | _TextBuffer],
    catalogs: list[str],
    states: list[str],
    extras: list[Mapping[str, Any]],
    version: str,
    selection: str,
    bands: str,
    model: str | None,
    now: datetime | None,
) -> Table:
    table = Table()
    for buffer in numeric[:3]:
        column = buffer.column()
        # Never NULL: plain columns, so FITS writes no TNULL for them.
        table[column.name] = Column(
            column.data.data, unit=column.unit, description=column.description
        )
    catalog_doc = GALAXY_DOCS[3]
    table[catalog_doc.name] = Column(
        catalogs, dtype=str, unit=catalog_doc.unit, description=catalog_doc.description
    )
    taken = set(table.colnames) | {d.doc.name for d in numeric} | {STATE_DOC.name}
    for key in sorted({k for e in extras for k in e}):
        doc = extra_column_doc(key, taken, "")  # the dtype follows the values
        table[doc.name] = _extra_column(doc, [e.get(key) for e in extras])
    table[STATE_DOC.name] = Column(
        states, dtype=str, unit=STATE_DOC.unit, description=STATE_DOC.description
    )
    for buffer in numeric[3:]:
        table[buffer.doc.name] = buffer.column()
    table.meta.update(export_meta(version, selection, bands, model, now))
    return table


def export_meta(
    version: str, selection: str, bands: str, model: str | None, now: datetime | None
) -> dict[str, Any]:
    """The metadata of an export: what was selected, when, and ``comments`` (a list of lines).

    Short upper-case keys: the same meta is a plain FITS header card in every format.
    ``MORPHVER`` (and its comment) only where a morphology ``model`` was exported.
    """
    exported = (now or datetime.now(UTC)).astimezone(UTC)
    meta: dict[str, Any] = {
        "ORIGIN": "galpipe export",
        "ALGOVER": version,
        "EXPORTED": exported.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "SELSTATE": selection,
        "SELBANDS": bands,
        "comments": [
            "galpipe radon position angles: image angles CCW from +x (FITS column axis), "
            "position angles east of north, both in degrees in [0, 180).",
            "Masked cells: no measurement, or a quantity its flags say could not be measured.",
        ],
    }
    if model is not None:
        meta["MORPHVER"] = model
        meta["comments"].append(
            f"Morphology: Galaxy Zoo 2 predictions of model {model} (SHA-256 of its ONNX "
            "bytes); masked where the galaxy has no prediction of it."
        )
    return meta


def _fits_column_cards(header: Any, table: Table) -> None:
    """Give FITS readers what astropy keeps only in its YAML comments.

    Each TTYPEn card gets the column's description as its comment (shortened to fit the card),
    and a unit outside the FITS standard gets a TUNITn card all the same, spelled as the
    Legacy Surveys spell it in their image headers (astropy reads it as an unrecognised unit
    rather than dropping it).
    """
    for index, name in enumerate(table.colnames, start=1):
        description = table[name].description or ""
        room = 80 - 10 - max(len(name) + 2, 20) - 3  # "TTYPEn  = " + value + " / "
        header.comments[f"TTYPE{index}"] = description[:room]
        unit = table[name].unit
        if unit is not None and f"TUNIT{index}" not in header:
            text = _NON_FITS_UNIT_NAMES.get(unit, unit.to_string())
            header.insert(f"TFORM{index}", (f"TUNIT{index}", text), after=True)


def write_results(table: Table, path: Path, fmt: str, *, overwrite: bool = True) -> None:
    """Write ``table`` to ``path`` as ``fmt`` (a key of :data:`FORMATS`).

    Raises
    ------
    ExportError
        If the format needs a package that is missing, or the file cannot be written.
    """
    try:
        if fmt != "fits":
            table.write(path, format=FORMATS[fmt], overwrite=overwrite)
            return
        from astropy.io import fits

        with warnings.catch_warnings():
            # Units FITS cannot name (nanomaggy) are written by _fits_column_cards instead.
            warnings.filterwarnings("ignore", message=".*could not be saved in native FITS")
            table.write(path, format="fits", overwrite=overwrite)
        with fits.open(path, mode="update") as hdul:
            _fits_column_cards(hdul[1].header, table)
    except ModuleNotFoundError as exc:
        raise ExportError(f"{path}: format {fmt} needs the {exc.name!r} package") from None
    except OSError as exc:
        raise ExportError(f"{path}: cannot write: {exc}") from None


def export_results(
    pool: ConnectionPool,
    out: Path,
    *,
    fmt: str | None = None,
    algo_version: str | None = None,
    selection: str = "transformed",
    bands: str = "combined",
    morphology_model: str | None = None,
    now: datetime | None = None,
) -> ExportSummary:
    """Build the results table and write it to ``out``; see :func:`build_results_table`."""
    out = Path(out)
    chosen = format_for(out, fmt)
    table = build_results_table(
        pool,
        algo_version=algo_version,
        selection=selection,
        bands=bands,
        morphology_model=morphology_model,
        now=now,
    )
    write_results(table, out, chosen)
    return ExportSummary(
        out,
        chosen,
        len(table),
        len(table.colnames),
        table.meta["ALGOVER"],
        table.meta.get("MORPHVER"),
    )
