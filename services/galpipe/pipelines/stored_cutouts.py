"""Stored cutouts, read back: the object a fetch wrote, checked and decoded for a science stage.

Every pipeline that works on fetched cutouts (radon, morphology) reads them the same way: the
``cutouts`` row names the object and its SHA-256, the store returns the bytes only if they hash
to it, and the FITS is parsed by the same parser the fetch pipeline used, into the ``(4, S, S)``
griz cube (a band the cutout lacks is an all-zero plane) and the pixel-to-sky Jacobian at the
stamp centre. :func:`load_stored_cutout` turns each way this can go wrong into the task's
outcome: a missing or corrupt object fails, a store outage retries. A cutout stored in a pack
(:mod:`galpipe.pipelines.cutout_packs`) is read as its byte range of the pack, and the galaxies
of a batch that share a pack with one request (:meth:`StoredCutoutReader.submit`).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np
from astropy.io import fits
from psycopg_pool import ConnectionPool

from galpipe.db.cutouts import CutoutRecord, cutouts_for
from galpipe.errors import InputError
from galpipe.pipelines.base import Fail, Outcome, Retry
from galpipe.pipelines.cutout_packs import read_cutout_bytes, read_unit, read_units
from galpipe.science.orientation import OrientationError, sky_jacobian
from galpipe.science.photoz_pixels import sky_noise_errors
from galpipe.storage import ChecksumMismatch, ObjectNotFound, ObjectStore, ObjectStoreError
from galpipe.survey.cutout import CutoutFormatError, parse_cutout
from galpipe.survey.error_planes import ErrorPlaneError, read_error_planes
from galpipe.survey.layout import BANDS

__all__ = [
    "CutoutDecodeError",
    "DecodedCutout",
    "StoredCutoutReader",
    "band_registration_problem",
    "decode_cutout",
    "load_read_unit",
    "load_stored_cutout",
    "pixel_errors",
    "split_reads",
]


class CutoutDecodeError(InputError, ValueError):
    """The stored bytes are not a cutout the core can measure; the message says why."""


@dataclass(frozen=True)
class DecodedCutout:
    """A cube ready for the core, and the Jacobian that maps its pixels to the sky.

    ``errors`` and ``error_source`` are set for a cutout that carries error planes (an SDSS
    cutout, :mod:`galpipe.survey.error_planes`): float32 ``(4, S, S)`` 1-sigma errors in
    nanomaggies, in the cube's band order (0 for a band the cutout does not carry), and where
    they come from; None for a Legacy Survey cutout.
    """

    data: np.ndarray  # float32 (4, S, S), bands g, r, i, z
    jacobian: np.ndarray  # (2, 2) pixel -> (east, north), degrees per pixel
    errors: np.ndarray | None = None
    error_source: str | None = None


def decode_cutout(
    raw: bytes, size: int, bands: str = BANDS, *, errors: bool = True
) -> DecodedCutout:
    """Decode stored FITS bytes into the core's ``(4, S, S)`` layout (bands g, r, i, z).

    The bytes are checked by the same parser the fetch pipeline used
    (:func:`galpipe.survey.cutout.parse_cutout`). A band the cutout does not carry is an all-zero
    plane (the core flags it blank). Error planes, when the file carries them, come with the
    cube (:class:`DecodedCutout`); ``errors=False`` leaves them unread (a stage that does not
    use them: reading an inverse-variance extension takes four times the decode).

    Raises
    ------
    CutoutDecodeError
        If the bytes are not a cutout of that layout, or the WCS is unusable.
    """
    try:
        cutout = parse_cutout(raw, bands=bands, size=size)
    except CutoutFormatError as exc:
        raise CutoutDecodeError(f"{exc.problem}: {exc}") from None
    data = np.zeros((len(BANDS), size, size), dtype=np.float32)
    for i, band in enumerate(bands):
        if band in BANDS:
            data[BANDS.index(band)] = cutout.data[i]
    problem = band_registration_problem(cutout.header)
    if problem is not None:
        raise CutoutDecodeError(f"bands not registered: {problem}")
    try:
        jacobian = _reference_jacobian(cutout.header)
    except OrientationError as exc:
        raise CutoutDecodeError(f"unusable WCS: {exc}") from None
    if not errors:
        return DecodedCutout(data, jacobian)
    try:
        planes = read_error_planes(raw, bands, size)
    except ErrorPlaneError as exc:
        raise CutoutDecodeError(f"error planes: {exc}") from None
    if planes is None:
        return DecodedCutout(data, jacobian)
    sigmas = np.zeros_like(data)
    for i, band in enumerate(bands):
        if band in BANDS:
            sigmas[BANDS.index(band)] = planes.errors[i]
    return DecodedCutout(data, jacobian, sigmas, planes.source)


#: ``error_source`` of a cutout without error planes: the sky noise measured in its stamp.
SKY_NOISE_ERROR_SOURCE = "sky_noise"


def pixel_errors(
    cubes: np.ndarray, cutouts: Sequence[DecodedCutout]
) -> tuple[np.ndarray, list[str]]:
    """Every pixel's 1-sigma error for the photo-z vectors, and where each cutout's come from.

    A cutout with error planes (an SDSS cutout) brings its own; for the others each band's sky
    noise measured in the stamp stands in (:func:`galpipe.science.photoz_pixels.sky_noise_errors`,
    ``sky_noise``). The worker and the training sets call this one function, so a model learns
    from the errors it will be given.

    Parameters
    ----------
    cubes
        float32 ``(N, 4, S, S)``, the cutouts' data stacked, nanomaggies.
    cutouts
        The ``N`` decoded cutouts, in the same order.

    Returns
    -------
    tuple
        float32 ``(N, 4, S, S)`` errors in nanomaggies, and the ``error_source`` of each cutout.
    """
    sigmas = sky_noise_errors(cubes)
    sources: list[str] = []
    for i, cutout in enumerate(cutouts):
        if cutout.errors is not None:
            sigmas[i] = cutout.errors
        sources.append(cutout.error_source or SKY_NOISE_ERROR_SOURCE)
    return sigmas, sources


#: Cards that would tie the band axis (3) of a cube to its sky axes (1, 2).
_BAND_SKY_CARDS = tuple(
    f"{kind}{a}_{b}" for kind in ("PC", "CD") for a, b in ((1, 3), (2, 3), (3, 1), (3, 2))
)


def band_registration_problem(header: fits.Header) -> str | None:
    """Why the band planes of a cutout cube would not share one sky grid, or None.

    A Legacy Survey cutout is one cube with one 2-D WCS: every band plane is on the same grid,
    so registering the bands is the identity. That holds only while no card links the band
    axis to the sky axes (``PCi_j`` / ``CDi_j`` between axis 3 and axes 1, 2) and the band axis
    is not itself a sky coordinate; this checks it instead of assuming it.
    """
    linked = [
        f"{key} = {header[key]!r}"
        for key in _BAND_SKY_CARDS
        if key in header and header[key] not in (0, 0.0)
    ]
    if linked:
        return f"{', '.join(linked)} tie the band axis to the sky axes"
    ctype3 = str(header.get("CTYPE3", ""))
    if ctype3.startswith(("RA", "DEC", "GLON", "GLAT", "ELON", "ELAT")):
        return f"CTYPE3 = {ctype3!r}: the band axis is a sky coordinate"
    return None


def _reference_jacobian(header: fits.Header) -> np.ndarray:
    """Pixel → (east, north) Jacobian at the stamp centre (the reference pixel).

    For a plain TAN header (every cutout of the service and the synthetic sky) that is the CD
    matrix itself, read from the cards; anything else (distortions, CDELT/PC, other
    projections) goes through astropy's WCS in :func:`sky_jacobian`.
    """
    cards = ("CD1_1", "CD1_2", "CD2_1", "CD2_2")
    plain_tan = (
        header.get("CTYPE1") == "RA---TAN"
        and header.get("CTYPE2") == "DEC--TAN"
        and all(c in header for c in cards)
        and "A_ORDER" not in header
        and not any(k.startswith(("PV1_", "PV2_")) for k in header)
    )
    if not plain_tan:
        return sky_jacobian(header)
    try:
        jacobian = np.array(
            [[header["CD1_1"], header["CD1_2"]], [header["CD2_1"], header["CD2_2"]]], dtype=float
        )
    except (TypeError, ValueError) as exc:
        raise OrientationError(f"CD cards are not numbers: {exc}") from None
    if not (np.isfinite(jacobian).all() and np.linalg.det(jacobian) != 0):
        raise OrientationError(f"CD matrix {jacobian.tolist()} is singular or not finite")
    return jacobian


def load_stored_cutout(
    store: ObjectStore, source_id: int, record: CutoutRecord | None, *, errors: bool = True
) -> DecodedCutout | Outcome:
    """Read galaxy ``source_id``'s stored cutout, checked against its recorded SHA-256
    (``errors``: read its error planes too, :func:`decode_cutout`).

    Returns
    -------
    DecodedCutout or Outcome
        The decoded cube, or the task's outcome: ``Fail`` if the galaxy has no cutouts row, or
        its object is missing, corrupt or not a cutout of the recorded layout; ``Retry`` if the
        store could not be reached.
    """
    if record is None:
        return Fail(source_id, "no cutouts row: the galaxy was never fetched")
    try:
        raw: bytes | ObjectStoreError = read_cutout_bytes(store, record)
    except ObjectStoreError as exc:
        raw = exc
    return _decoded_or_outcome(source_id, record, raw, errors)


def load_read_unit(
    store: ObjectStore,
    items: Sequence[tuple[int, CutoutRecord | None]],
    *,
    errors: bool = True,
) -> list[DecodedCutout | Outcome]:
    """Decoded cutouts (or outcomes) of one read of
    :func:`~galpipe.pipelines.cutout_packs.read_units`: one galaxy of any kind, or galaxies of
    one pack read with one request."""
    if len(items) == 1:
        return [load_stored_cutout(store, *items[0], errors=errors)]
    records = [record for _, record in items if record is not None]
    if len(records) != len(items):
        raise ValueError("load_read_unit: every galaxy of a read of several needs its row")
    raws = read_unit(store, records)
    return [
        _decoded_or_outcome(sid, record, raw, errors)
        for (sid, _), record, raw in zip(items, records, raws, strict=True)
    ]


def _decoded_or_outcome(
    source_id: int, record: CutoutRecord, raw: bytes | ObjectStoreError, errors: bool
) -> DecodedCutout | Outcome:
    """The decoded cube of ``raw``, or the task's outcome of a failed read or decode."""
    if isinstance(raw, ObjectNotFound | ChecksumMismatch):
        return Fail(source_id, f"stored cutout unusable: {raw}")
    if isinstance(raw, ObjectStoreError):
        return Retry(source_id, f"object store: {raw}")
    try:
        return decode_cutout(raw, record.size, record.bands, errors=errors)
    except CutoutDecodeError as exc:
        return Fail(source_id, f"{record.stored_key}: {exc}")


def split_reads(
    source_ids: Sequence[int], reads: Sequence[Future[DecodedCutout | Outcome]]
) -> tuple[list[tuple[int, DecodedCutout]], list[Outcome]]:
    """Wait for ``reads`` in order: the decoded cutouts with their ids, and the outcomes of the
    galaxies whose cutout could not be read (:func:`load_stored_cutout`)."""
    decoded: list[tuple[int, DecodedCutout]] = []
    outcomes: list[Outcome] = []
    for sid, read in zip(source_ids, reads, strict=True):
        loaded = read.result()
        if isinstance(loaded, DecodedCutout):
            decoded.append((sid, loaded))
        else:
            outcomes.append(loaded)
    return decoded, outcomes


class StoredCutoutReader:
    """Reads a claimed batch's stored cutouts concurrently, for a pipeline that works on them.

    :meth:`submit` looks up the batch's ``cutouts`` rows in one query and puts every read in
    flight at once on ``threads`` threads; each future gives :func:`load_stored_cutout`'s
    result, in the order of the ids. A pipeline can start on the first cutouts while the
    rest are still being read, so object-store latency hides behind its own work.

    Parameters
    ----------
    pool
        Database pool (cutout rows).
    store
        The object store the fetch pipeline wrote to.
    threads
        Concurrent object reads.
    name
        Prefix of the reader threads' names.
    errors
        Read each cutout's error planes too (photo-z); the stages that measure the cube alone
        pass False.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        store: ObjectStore,
        *,
        threads: int = 16,
        name: str = "read",
        errors: bool = True,
    ) -> None:
        self.pool = pool
        self.store = store
        self.errors = errors
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)

    def submit(self, source_ids: Sequence[int]) -> list[Future[DecodedCutout | Outcome]]:
        """One future per galaxy of ``source_ids``, in that order.

        The galaxies that share a pack are one read (one ranged GET, each galaxy checked
        against its own SHA-256, :func:`load_read_unit`); their futures complete together.
        """
        with self.pool.connection() as conn:
            records = cutouts_for(conn, source_ids)
        items = [(sid, records.get(sid)) for sid in source_ids]
        futures: list[Future[DecodedCutout | Outcome]] = [Future() for _ in items]
        for unit in read_units([record for _, record in items]):
            read = self._executor.submit(
                load_read_unit, self.store, [items[i] for i in unit], errors=self.errors
            )
            read.add_done_callback(partial(_deliver, futures=[futures[i] for i in unit]))
        return futures

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def _deliver(
    read: Future[list[DecodedCutout | Outcome]], futures: Sequence[Future[DecodedCutout | Outcome]]
) -> None:
    """Hand one unit's results (or its exception) to the futures of its galaxies."""
    if read.cancelled():
        for future in futures:
            future.cancel()
        return
    error = read.exception()
    if error is not None:
        for future in futures:
            future.set_exception(error)
        return
    for future, loaded in zip(futures, read.result(), strict=True):
        future.set_result(loaded)
