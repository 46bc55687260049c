"""Labelled images for the morphology network: Galaxy Zoo fractions with the images they describe.

Two sources, one result (:class:`LabelledImages`: ids, network-ready images, the 37 GZ2
fractions in :data:`galpipe.science.gz2.ANSWER_COLUMNS` order, and the SHA-256 of all three,
the "training data hash" recorded with a model):

- :func:`read_kaggle_layout` -- the Kaggle "Galaxy Zoo -- The Galaxy Challenge" layout:
  ``images_training_rev1/<GalaxyID>.jpg`` (424×424 SDSS gri composites) and
  ``training_solutions_rev1.csv``; every JPG centre-cropped to its central half (212 of 424
  px, about what the challenge entries kept) and resized to ``size``×``size``, RGB in [0, 1].
- :func:`read_fits_with_labels` -- stored FITS cutouts (the survey layout) and a labels table
  (CSV, ECSV or FITS) keyed by ``source_id`` or matched by ``ra``/``dec`` within a radius;
  the cubes go through :func:`galpipe.science.morphology_input.network_input`. Galaxies
  without a label are returned in ``unmatched``, never dropped silently.

Train / validation / test are assigned by :func:`galpipe.learning.dataset.split_by_id`, a hash
of each id, so a galaxy is always in the same split whatever else is in the set.

Every problem is a :class:`MorphologyDataError` naming the file or id and the problem.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from galpipe.catalog.gz2_table import KAGGLE_SUM_ATOL, read_kaggle_solutions
from galpipe.catalog.read import read_table
from galpipe.catalog.validate import CatalogError
from galpipe.errors import ConfigurationError, InputError
from galpipe.learning.dataset import LabelledImages
from galpipe.pipelines.stored_cutouts import CutoutDecodeError, decode_cutout
from galpipe.science.gz2 import ANSWER_COLUMNS, N_ANSWERS, FractionsError, check_fractions
from galpipe.science.morphology_input import INPUT_MODES, channels_for, network_input
from galpipe.survey.layout import CUTOUT_SIZE_PX

__all__ = [
    "KAGGLE_CROP_FRACTION",
    "KAGGLE_IMAGE_DIR",
    "KAGGLE_SOLUTIONS_FILE",
    "MorphologyDataError",
    "match_by_position",
    "match_by_source_id",
    "read_fits_with_labels",
    "read_kaggle_layout",
]

#: The Kaggle layout: image folder and solutions file inside the data directory.
KAGGLE_IMAGE_DIR = "images_training_rev1"
KAGGLE_SOLUTIONS_FILE = "training_solutions_rev1.csv"
#: Side of the central crop of a Kaggle JPG, as a fraction of its side: 212 of 424 px. The
#: galaxy fills the centre; the outer half is mostly sky and neighbours.
KAGGLE_CROP_FRACTION = 0.5
# Examples of unmatched or missing ids shown in a message.
_SHOWN = 5


class MorphologyDataError(InputError, ValueError):
    """Labelled images cannot be read; the message names the file or id and the problem."""


def _examples(ids: Iterable[int | str]) -> str:
    listed = list(ids)
    shown = ", ".join(str(i) for i in listed[:_SHOWN])
    return shown + (f", … ({len(listed) - _SHOWN} more)" if len(listed) > _SHOWN else "")


# --- Kaggle layout ---------------------------------------------------------------------------


def _kaggle_jpgs(image_dir: Path) -> dict[int, Path]:
    """``GalaxyID -> path`` of every ``*.jpg`` in ``image_dir``."""
    found: dict[int, Path] = {}
    for path in image_dir.glob("*.jpg"):
        try:
            galaxy = int(path.stem)
        except ValueError:
            raise MorphologyDataError(
                f"{path}: image name {path.name!r} is not <GalaxyID>.jpg"
            ) from None
        found[galaxy] = path
    return found


def _load_kaggle_jpg(path: Path, size: int) -> npt.NDArray[np.float32]:
    """One Kaggle JPG, its central half resized to ``size``²: float32 (3, S, S) in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            # Let the JPEG decoder scale down by 1/2, 1/4 or 1/8 (DCT scaling) while the crop
            # still has at least size×size pixels: decoding is then several times faster.
            needed = math.ceil(size / KAGGLE_CROP_FRACTION)
            image.draft("RGB", (needed, needed))
            scale_x, scale_y = image.size[0] / width, image.size[1] / height
            margin = (1 - KAGGLE_CROP_FRACTION) / 2
            box = (
                margin * width * scale_x,
                margin * height * scale_y,
                (1 - margin) * width * scale_x,
                (1 - margin) * height * scale_y,
            )
            resized = image.convert("RGB").resize((size, size), Image.Resampling.LANCZOS, box=box)
            pixels = np.asarray(resized, dtype=np.float32)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise MorphologyDataError(f"{path}: cannot decode the JPG: {exc}") from exc
    return np.moveaxis(pixels, -1, 0) / np.float32(255.0)


def read_kaggle_layout(
    directory: Path, size: int = CUTOUT_SIZE_PX, limit: int | None = None
) -> LabelledImages:
    """Read the Kaggle Galaxy Zoo training set: JPGs and their solutions.

    Parameters
    ----------
    directory : pathlib.Path
        Holds ``images_training_rev1/<GalaxyID>.jpg`` and ``training_solutions_rev1.csv``.
    size : int, optional
        Side of the output images, pixels (default the survey cutout size, 40). Each JPG's
        central half (:data:`KAGGLE_CROP_FRACTION`; 212 of 424 px) is resized to it with a
        Lanczos filter.
    limit : int, optional
        Read only the first ``limit`` galaxies of the CSV (file order).

    Returns
    -------
    LabelledImages
        Galaxies in CSV order; images ``(N, 3, size, size)`` RGB in [0, 1].

    Raises
    ------
    MorphologyDataError
        If the directory, image folder or CSV is missing, the CSV is invalid
        (:func:`galpipe.catalog.gz2_table.read_kaggle_solutions`), a CSV row has no JPG or a
        JPG no row (ids named), or a JPG cannot be decoded (file named).
    ConfigurationError
        If Pillow is not installed.
    """
    directory = Path(directory)
    if size < 1:
        raise MorphologyDataError(f"size must be a positive number of pixels, got {size}")
    if limit is not None and limit < 1:
        raise MorphologyDataError(f"limit must be a positive number of galaxies, got {limit}")
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "reading the Kaggle JPGs needs Pillow: pip install pillow (or galpipe[local])"
        ) from None
    if not directory.is_dir():
        raise MorphologyDataError(f"{directory}: no such directory (the Kaggle data directory)")
    csv_path = directory / KAGGLE_SOLUTIONS_FILE
    image_dir = directory / KAGGLE_IMAGE_DIR
    if not csv_path.is_file():
        raise MorphologyDataError(f"{directory}: no {KAGGLE_SOLUTIONS_FILE} in the directory")
    if not image_dir.is_dir():
        raise MorphologyDataError(f"{directory}: no {KAGGLE_IMAGE_DIR}/ folder in the directory")
    # SolutionsFileError is already an InputError naming the file and line.
    ids, fractions = read_kaggle_solutions(csv_path)
    jpgs = _kaggle_jpgs(image_dir)
    without_jpg = [int(i) for i in ids if int(i) not in jpgs]
    if without_jpg:
        raise MorphologyDataError(
            f"{csv_path}: {len(without_jpg)} galaxies have no image in {image_dir}: GalaxyID "
            f"{_examples(without_jpg)} (expected e.g. {image_dir / f'{without_jpg[0]}.jpg'})"
        )
    in_csv = set(ids.tolist())
    without_row = sorted(g for g in jpgs if g not in in_csv)
    if without_row:
        raise MorphologyDataError(
            f"{image_dir}: {len(without_row)} images have no row in {csv_path.name}: "
            f"{_examples(f'{g}.jpg' for g in without_row)}"
        )
    if limit is not None:
        ids, fractions = ids[:limit], fractions[:limit]
    images = np.empty((len(ids), 3, size, size), dtype=np.float32)
    for k, galaxy in enumerate(ids):
        images[k] = _load_kaggle_jpg(jpgs[int(galaxy)], size)
    return LabelledImages(ids=ids, images=images, fractions=fractions, source=str(directory))


# --- FITS cutouts and a labels table ---------------------------------------------------------


def _cutout_items(
    cutouts: Mapping[int, bytes] | Iterable[tuple[int, bytes]],
) -> list[tuple[int, bytes]]:
    """The cutouts as a list of ``(source_id, bytes)``, ids checked unique."""
    items = list(cutouts.items()) if isinstance(cutouts, Mapping) else list(cutouts)
    seen: set[int] = set()
    repeated: list[int] = []
    out: list[tuple[int, bytes]] = []
    for source_id, raw in items:
        galaxy = int(source_id)
        if galaxy in seen:
            repeated.append(galaxy)
        seen.add(galaxy)
        out.append((galaxy, raw))
    if repeated:
        raise MorphologyDataError(
            f"cutouts: {len(repeated)} source_id given more than once: {_examples(repeated)}"
        )
    if not out:
        raise MorphologyDataError("cutouts: none given")
    return out


def _label_fractions(table: Any, path: Path) -> npt.NDArray[np.float64]:
    """The 37 answer columns of the labels table, validated: float64 (N, 37)."""
    missing = [c for c in ANSWER_COLUMNS if c not in table.colnames]
    if missing:
        raise MorphologyDataError(
            f"{path}: labels table lacks {len(missing)} of the {N_ANSWERS} answer columns: "
            f"{_examples(missing)} (expected Class1.1 .. Class11.6)"
        )
    columns = []
    for name in ANSWER_COLUMNS:
        column = table[name]
        if getattr(column, "mask", None) is not None and np.any(column.mask):
            row = int(np.flatnonzero(column.mask)[0])
            raise MorphologyDataError(f"{path}: row {row}: {name} is empty")
        try:
            columns.append(np.asarray(column, dtype=np.float64))
        except (TypeError, ValueError):
            raise MorphologyDataError(f"{path}: column {name} is not numeric") from None
    try:
        return check_fractions(np.stack(columns, axis=1), atol=KAGGLE_SUM_ATOL)
    except FractionsError as exc:
        raise MorphologyDataError(f"{path}: labels: {exc}") from exc


def _integer_column(table: Any, name: str, path: Path) -> npt.NDArray[np.int64]:
    column = table[name]
    if getattr(column, "mask", None) is not None and np.any(column.mask):
        raise MorphologyDataError(
            f"{path}: row {int(np.flatnonzero(column.mask)[0])}: {name} is empty"
        )
    values = np.asarray(column)
    if not np.issubdtype(values.dtype, np.integer):
        raise MorphologyDataError(f"{path}: column {name} holds {values.dtype}, not integers")
    return values.astype(np.int64)


def _float_column(table: Any, name: str, path: Path) -> npt.NDArray[np.float64]:
    values = np.asarray(table[name], dtype=np.float64)
    bad = ~np.isfinite(values)
    if getattr(table[name], "mask", None) is not None:
        bad |= np.asarray(table[name].mask, dtype=bool)
    if bad.any():
        raise MorphologyDataError(
            f"{path}: row {int(np.flatnonzero(bad)[0])}: {name} is not finite"
        )
    return values


def match_by_source_id(table: Any, path: Path, galaxies: list[int]) -> npt.NDArray[np.intp]:
    """Row of ``table`` (its ``source_id`` column) of each galaxy, -1 where it has none.

    Raises
    ------
    MorphologyDataError
        If the table has no ``source_id`` column, or repeats an id.
    """
    if "source_id" not in table.colnames:
        raise MorphologyDataError(
            f"{path}: no source_id column to match by (columns: {_examples(table.colnames)}); "
            "match by ra/dec instead"
        )
    label_ids = _integer_column(table, "source_id", path)
    unique, counts = np.unique(label_ids, return_counts=True)
    if (counts > 1).any():
        raise MorphologyDataError(
            f"{path}: source_id repeated in the labels: {_examples(unique[counts > 1].tolist())}"
        )
    row_of = {int(i): k for k, i in enumerate(label_ids)}
    return np.asarray([row_of.get(g, -1) for g in galaxies], dtype=np.intp)


def match_by_position(
    table: Any,
    path: Path,
    galaxies: list[int],
    positions: Mapping[int, tuple[float, float]] | None,
    radius_arcsec: float,
) -> npt.NDArray[np.intp]:
    """Row of ``table`` (its ``ra``, ``dec`` columns, degrees) within ``radius_arcsec`` of each
    galaxy's position, -1 where none.

    Raises
    ------
    MorphologyDataError
        If positions or a column are missing, or the radius is not positive.
    """
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    if positions is None:
        raise MorphologyDataError("match='radec' needs positions (source_id -> (ra, dec) deg)")
    if not (math.isfinite(radius_arcsec) and radius_arcsec > 0):
        raise MorphologyDataError(f"radius_arcsec must be > 0, got {radius_arcsec!r}")
    for name in ("ra", "dec"):
        if name not in table.colnames:
            raise MorphologyDataError(
                f"{path}: no {name} column to match by (columns: {_examples(table.colnames)})"
            )
    no_position = [g for g in galaxies if g not in positions]
    if no_position:
        raise MorphologyDataError(
            f"positions: {len(no_position)} cutouts have no position: source_id "
            f"{_examples(no_position)}"
        )
    ra_dec = np.asarray([positions[g] for g in galaxies], dtype=np.float64).reshape(-1, 2)
    labels = SkyCoord(
        _float_column(table, "ra", path) * u.deg, _float_column(table, "dec", path) * u.deg
    )
    cutouts = SkyCoord(ra_dec[:, 0] * u.deg, ra_dec[:, 1] * u.deg)
    index, separation, _ = cutouts.match_to_catalog_sky(labels)
    row = np.where(separation.to_value(u.arcsec) <= radius_arcsec, index, -1).astype(np.intp)
    matched = row[row >= 0]
    unique, counts = np.unique(matched, return_counts=True)
    if (counts > 1).any():
        shared = int(unique[counts > 1][0])
        claimants = [g for g, r in zip(galaxies, row, strict=True) if r == shared]
        raise MorphologyDataError(
            f'{path}: label row {shared} lies within {radius_arcsec:g}" of several galaxies '
            f"(source_id {_examples(claimants)}); use a smaller radius or match by source_id"
        )
    return row


def read_fits_with_labels(
    cutouts: Mapping[int, bytes] | Iterable[tuple[int, bytes]],
    labels_path: Path,
    *,
    match: Literal["source_id", "radec"] = "source_id",
    positions: Mapping[int, tuple[float, float]] | None = None,
    radius_arcsec: float = 1.0,
    mode: str = "asinh_bands",
    size: int = CUTOUT_SIZE_PX,
) -> LabelledImages:
    """Stored FITS cutouts with the Galaxy Zoo fractions of a labels table.

    Parameters
    ----------
    cutouts : mapping or iterable
        ``source_id -> FITS bytes`` or ``(source_id, FITS bytes)`` pairs, in the survey cutout
        layout (:func:`galpipe.pipelines.stored_cutouts.decode_cutout`).
    labels_path : pathlib.Path
        CSV, ECSV or FITS table with the 37 answer columns (named as
        :data:`galpipe.science.gz2.ANSWER_COLUMNS`) and a ``source_id`` column or ``ra``,
        ``dec`` columns in degrees.
    match : {"source_id", "radec"}, optional
        Pair cutouts and labels by id, or each cutout with the nearest label within
        ``radius_arcsec`` of its position.
    positions : mapping, optional
        ``source_id -> (ra, dec)``, degrees; required for ``match="radec"``.
    radius_arcsec : float, optional
        Largest accepted separation for ``match="radec"``, arcseconds.
    mode : str, optional
        Network input mode (:data:`galpipe.science.morphology_input.INPUT_MODES`).
    size : int, optional
        Side of the cutouts, pixels.

    Returns
    -------
    LabelledImages
        The matched galaxies in the order of ``cutouts``; images ``(N, C, size, size)`` from
        :func:`~galpipe.science.morphology_input.network_input`; ``unmatched`` the ids of the
        cutouts without a label.

    Raises
    ------
    MorphologyDataError
        If the table cannot be read or lacks columns, its fractions fail
        :func:`galpipe.science.gz2.check_fractions`, a label id repeats, a cutout id repeats,
        a cutout cannot be decoded (id named), positions are missing, one label matches
        several cutouts, or no cutout matches a label (count and examples).
    """
    labels_path = Path(labels_path)
    if mode not in INPUT_MODES:
        try:
            channels_for(mode)
        except ValueError as exc:  # it names the mode and the choices
            raise MorphologyDataError(str(exc)) from None
    if match not in ("source_id", "radec"):
        raise MorphologyDataError(f"match must be 'source_id' or 'radec', got {match!r}")
    items = _cutout_items(cutouts)
    try:
        table = read_table(labels_path)
    except CatalogError as exc:
        raise MorphologyDataError(f"labels table: {exc}") from exc
    fractions = _label_fractions(table, labels_path)
    galaxies = [g for g, _ in items]
    if match == "source_id":
        row = match_by_source_id(table, labels_path, galaxies)
    else:
        row = match_by_position(table, labels_path, galaxies, positions, radius_arcsec)
    matched = row >= 0
    unmatched = np.asarray([g for g, m in zip(galaxies, matched, strict=True) if not m], np.int64)
    if not matched.any():
        raise MorphologyDataError(
            f"{labels_path}: none of the {len(galaxies)} cutouts has a label (match={match}): "
            f"source_id {_examples(galaxies)}"
        )
    cubes = np.empty((int(matched.sum()), 4, size, size), dtype=np.float32)
    kept = [(g, raw) for (g, raw), m in zip(items, matched, strict=True) if m]
    for k, (galaxy, raw) in enumerate(kept):
        try:
            cubes[k] = decode_cutout(raw, size, errors=False).data
        except CutoutDecodeError as exc:
            raise MorphologyDataError(f"cutout of source_id {galaxy}: {exc}") from exc
    source = f"{labels_path} (match={match}, {len(kept)} of {len(galaxies)} cutouts labelled)"
    return LabelledImages(
        ids=np.asarray([g for g, _ in kept], dtype=np.int64),
        images=network_input(cubes, mode),
        fractions=fractions[row[matched]],
        source=source,
        unmatched=unmatched,
    )


# --- Splits ---------------------------------------------------------------------------------
