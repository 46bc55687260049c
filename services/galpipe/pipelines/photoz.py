"""The photo-z pipeline: stored cutouts → photometric redshifts from pixels, on the common loop.

Per claimed batch (default 256 galaxies):

1. read each galaxy's ``cutouts`` row and its object from the store, concurrently, checked
   against the recorded SHA-256 (:class:`galpipe.pipelines.stored_cutouts.StoredCutoutReader`,
   as the radon and morphology pipelines read them);
2. the bands are registered: a Legacy Survey cutout is one griz cube on one 2-D WCS, so
   registration is the identity, and the reader checks that no WCS card ties the band axis to
   the sky (:func:`galpipe.pipelines.stored_cutouts.band_registration_problem`) rather than
   assuming it;
3. give every pixel an error: a Legacy Survey cutout carries no error image, so each band's
   sky noise measured in the stamp (:func:`galpipe.science.photoz_pixels.sky_noise_errors`;
   ``error_source`` ``sky_noise``); a cutout with error planes (one the fetch pipeline built
   from SDSS frames) brings its own, and its row says where they come from
   (``sdss_sky_hdu``);
4. segment each stamp and keep the segment at the catalogue position (the stamp's centre),
   one vector per pixel (:func:`galpipe.science.photoz_pixels.pixel_vectors`, with the
   segmentation settings saved in the model);
5. predict every pixel's redshift and combine them per galaxy with the model
   (:meth:`galpipe.learning.pixel_redshift.PixelRedshiftModel.predict_galaxies`);
6. hand the rows to the worker, which writes ``photoz_predictions`` and completes the tasks in
   one transaction.

A galaxy whose stamp has no segment at its position fails alone, with the reason, and is not
retried (the same bytes give the same answer).

The model is the registered artefact named by ``GALPIPE_PHOTOZ_MODEL``: its bytes are read from
the object store and refused unless they hash to that version
(:func:`galpipe.pipelines.model_artefacts.load_model_bytes`); every row carries it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg_pool import ConnectionPool

from galpipe.db.models import ModelRecord
from galpipe.db.photoz import PhotozRows, record_photoz_predictions
from galpipe.db.queue import Task
from galpipe.learning.pixel_redshift import PixelRedshiftModel
from galpipe.pipelines.base import Done, Fail, Outcome
from galpipe.pipelines.model_artefacts import load_model_bytes
from galpipe.pipelines.stored_cutouts import (
    SKY_NOISE_ERROR_SOURCE,
    DecodedCutout,
    StoredCutoutReader,
    pixel_errors,
    split_reads,
)
from galpipe.science.photoz_pixels import pixel_vectors
from galpipe.settings import Settings, SettingsError
from galpipe.storage import ObjectStore, object_store_from_settings
from galpipe.storage.instrumented import InstrumentedObjectStore
from galpipe.survey.layout import PIXSCALE_ARCSEC

__all__ = ["PhotozPipeline", "PhotozPrediction", "build_photoz_pipeline"]

#: Where the errors of a Legacy Survey cutout's pixels come from (``photoz_predictions``).
ERROR_SOURCE = SKY_NOISE_ERROR_SOURCE


@dataclass(frozen=True)
class PhotozPrediction:
    """One galaxy's redshift combined from its pixels, its uncertainty and the pixels used."""

    z_phot: float
    z_err: float
    n_pixels: int
    error_source: str = ERROR_SOURCE


class PhotozPipeline:
    """Estimates the redshifts of fetched galaxies from their pixels; see the module docstring.

    Parameters
    ----------
    pool
        Database pool (cutout rows).
    store
        The object store the fetch pipeline wrote to.
    model
        The fitted pixel-redshift model.
    record
        Its ``models`` row (version, input size).
    batch_size, threads
        Tasks per claim; concurrent object reads.
    """

    name = "photoz"

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        store: ObjectStore,
        model: PixelRedshiftModel,
        record: ModelRecord,
        batch_size: int = 256,
        threads: int = 16,
    ) -> None:
        self.model = model
        self.record = record
        self.batch_size = batch_size
        self.reader = StoredCutoutReader(pool, store, threads=threads, name="photoz-read")

    @property
    def model_version(self) -> str:
        return self.record.model_version

    def close(self) -> None:
        self.reader.close()

    def process(self, tasks: Sequence[Task]) -> Sequence[Outcome]:
        ids = [t.source_id for t in tasks]
        good, outcomes = split_reads(ids, self.reader.submit(ids))
        if good:
            outcomes.extend(self._predict(good))
        return outcomes

    def store(self, conn: psycopg.Connection, done: Sequence[Done]) -> None:
        predictions: list[PhotozPrediction] = [d.result for d in done]

        def column(name: str) -> np.ndarray:
            return np.array([getattr(p, name) for p in predictions], dtype=float)

        record_photoz_predictions(
            conn,
            self.model_version,
            PhotozRows(
                source_ids=[d.source_id for d in done],
                z_phot=column("z_phot"),
                z_err=column("z_err"),
                n_pixels=np.array([p.n_pixels for p in predictions], dtype=np.int64),
                error_source=[p.error_source for p in predictions],
            ),
        )

    def _predict(self, good: list[tuple[int, DecodedCutout]]) -> list[Outcome]:
        cubes = np.stack([c.data for _, c in good]).astype(np.float32)
        size = cubes.shape[-1]
        # The catalogue position is the cutout's centre: 0-based pixel (size - 1) / 2.
        positions = np.full((len(good), 2), (size - 1) / 2.0)
        sigmas, error_sources = pixel_errors(cubes, [c for _, c in good])
        vectors = pixel_vectors(
            cubes,
            sigmas,
            positions,
            self.model.vector_config,
            pixel_scale_arcsec=PIXSCALE_ARCSEC,
        )
        galaxies = self.model.predict_galaxies(vectors)
        outcomes: list[Outcome] = []
        for i, (sid, _) in enumerate(good):
            if galaxies.n_pixels[i] == 0 or not np.isfinite(galaxies.z[i]):
                reason = galaxies.reasons[i] or vectors.reasons[i] or "no pixels"
                outcomes.append(Fail(sid, f"no redshift: {reason}"))
                continue
            outcomes.append(
                Done(
                    sid,
                    PhotozPrediction(
                        # A learner's average of redshifts >= 0 is >= 0 but for rounding.
                        z_phot=max(float(galaxies.z[i]), 0.0),
                        z_err=float(galaxies.z_err[i]),
                        n_pixels=int(galaxies.n_pixels[i]),
                        error_source=error_sources[i],
                    ),
                )
            )
        return outcomes


def build_photoz_pipeline(
    settings: Settings, pool: ConnectionPool, stop: threading.Event
) -> PhotozPipeline:
    """The production photo-z pipeline, everything from ``GALPIPE_*`` settings.

    Reads the registered model ``GALPIPE_PHOTOZ_MODEL``, refusing bytes that do not hash to it.

    Raises
    ------
    SettingsError
        If no model is configured.
    ModelNotRegistered, ModelArtefactError
        If the model is not a registered photo-z model, or its stored bytes are missing or
        altered.
    """
    if settings.photoz_model is None:
        raise SettingsError(
            "GALPIPE_PHOTOZ_MODEL is not set: a photo-z worker needs the version of a "
            "registered model (`galpipe photoz models` lists them)"
        )
    store = InstrumentedObjectStore(object_store_from_settings(settings))
    with pool.connection() as conn:
        record, data = load_model_bytes(conn, store, settings.photoz_model, pipeline="photoz")
    model = PixelRedshiftModel.from_bytes(data)
    return PhotozPipeline(
        pool=pool, store=store, model=model, record=record, batch_size=settings.photoz_batch_size
    )
