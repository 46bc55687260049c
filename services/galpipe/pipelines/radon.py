"""The radon pipeline (paper section 3, steps 1 and 6): stored cutouts → position angles.

Per claimed batch (default 256 galaxies):

1. read each galaxy's ``cutouts`` row and its object from the store, concurrently, checking
   the recorded SHA-256 (step 1; :func:`galpipe.pipelines.stored_cutouts.load_stored_cutout`);
2. decode the FITS with astropy and stack the cubes to ``(N, 4, S, S)``;
3. run the science core once for the whole batch (:func:`galpipe.science.core.measure_batch`);
4. convert image angles to position angles east of north with each cutout's own WCS;
5. hand the per-band and combined records (by column name) to the worker, which writes them
   and completes the tasks in one transaction (step 6, "Transformed").

A cutout that cannot be measured (missing, corrupt, wrong layout) fails with its reason; the
rest of the batch goes on.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from psycopg_pool import ConnectionPool

from galpipe.db.cutouts import cutouts_for
from galpipe.db.measurements import MeasurementRecord, record_measurements
from galpipe.db.queue import Task
from galpipe.errors import ConfigurationError
from galpipe.pipelines.base import Done, Outcome
from galpipe.pipelines.decode_processes import DecodeProcesses
from galpipe.pipelines.stored_cutouts import DecodedCutout, StoredCutoutReader, split_reads
from galpipe.runtime import metrics
from galpipe.science.core import (
    BatchMeasurement,
    FitSinograms,
    RadonConfig,
    concatenate_stamps,
    measure_batch,
    measure_prepared,
)
from galpipe.science.orientation import (
    image_angle_to_position_angle,
)
from galpipe.science.radon import RadonOperator
from galpipe.settings import Settings
from galpipe.storage import (
    ObjectStore,
    object_store_from_settings,
)
from galpipe.storage.instrumented import InstrumentedObjectStore
from galpipe.survey.layout import BANDS

log = logging.getLogger(__name__)

#: Galaxies measured together while the rest of a batch is still being read.
MEASURE_CHUNK = 64


def _nullable(value: Any) -> Any:
    """Python scalar for the database; NaN becomes NULL (its flag says why)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RadonPipeline:
    """Measures position angles of fetched galaxies; see the module docstring.

    Parameters
    ----------
    pool
        Database pool (cutout rows).
    store
        The object store the fetch pipeline wrote to.
    config
        The science choices; ``config.algo_version`` keys every stored row.
    operator
        The Radon operator for ``config`` (built once per process).
    batch_size, threads
        Tasks per claim; concurrent object reads.
    measure_chunk
        Galaxies measured together (default :data:`MEASURE_CHUNK`).
    sinogram_fitter
        Steps 3-5 of the science core; ``None`` for numpy on the CPU, a
        :class:`galpipe.gpu.sinograms.TorchSinogramFitter` for a GPU.
    decode_processes
        Read, decode and prepare (step 2) each batch in these processes and measure it at once
        (:mod:`galpipe.pipelines.decode_processes`); ``None`` reads in threads of this process
        and measures chunk by chunk. The pipeline closes them.
    """

    name = "radon"

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        store: ObjectStore,
        config: RadonConfig,
        operator: RadonOperator,
        batch_size: int = 256,
        threads: int = 16,
        measure_chunk: int | None = None,
        sinogram_fitter: FitSinograms | None = None,
        decode_processes: DecodeProcesses | None = None,
    ) -> None:
        self.config = config
        self.operator = operator
        self.sinogram_fitter = sinogram_fitter
        self.measure_chunk = measure_chunk or MEASURE_CHUNK
        self.batch_size = batch_size
        self.pool = pool
        self.reader = StoredCutoutReader(
            pool, store, threads=threads, name="radon-read", errors=False
        )
        self.decode_processes = decode_processes

    def close(self) -> None:
        self.reader.close()
        if self.decode_processes is not None:
            self.decode_processes.close()

    def process(self, tasks: Sequence[Task]) -> Sequence[Outcome]:
        ids = [t.source_id for t in tasks]
        if self.decode_processes is not None:
            return self._process_in_decode_processes(ids, self.decode_processes)
        # Every read is in flight at once; each chunk is measured as soon as its own reads are
        # in, while the reader threads fetch the rest (object-store latency hides behind the
        # science instead of adding to it).
        reads = self.reader.submit(ids)
        outcomes: list[Outcome] = []
        for start in range(0, len(ids), self.measure_chunk):
            chunk = slice(start, start + self.measure_chunk)
            good, failed = split_reads(ids[chunk], reads[chunk])
            outcomes.extend(failed)
            if good:
                outcomes.extend(self._measure(good))
        return outcomes

    def store(self, conn: psycopg.Connection, done: Sequence[Done]) -> None:
        record_measurements(conn, [row for d in done for row in d.result])

    # -- steps --------------------------------------------------------------------------------

    def _process_in_decode_processes(
        self, ids: list[int], decoders: DecodeProcesses
    ) -> list[Outcome]:
        """The batch read, decoded and prepared in the decode processes, then measured at once."""
        with self.pool.connection() as conn:
            records = cutouts_for(conn, ids)
        chunks = [f.result() for f in decoders.submit([(sid, records.get(sid)) for sid in ids])]
        outcomes: list[Outcome] = [o for c in chunks for o in c.failed]
        prepared = [c for c in chunks if c.stamps is not None]
        if prepared:
            m = measure_prepared(
                concatenate_stamps([c.stamps for c in prepared if c.stamps is not None]),
                self.config,
                self.operator,
                chunk_size=self.measure_chunk,
                sinogram_fitter=self.sinogram_fitter,
            )
            ids_measured = [sid for c in prepared for sid in c.source_ids]
            outcomes.extend(
                self._outcomes(m, ids_measured, np.concatenate([c.jacobians for c in prepared]))
            )
        return outcomes

    def _measure(self, good: list[tuple[int, DecodedCutout]]) -> list[Outcome]:
        images = np.stack([c.data for _, c in good])
        jacobians = np.stack([c.jacobian for _, c in good])
        m = measure_batch(images, self.config, self.operator, sinogram_fitter=self.sinogram_fitter)
        return self._outcomes(m, [sid for sid, _ in good], jacobians)

    def _outcomes(
        self, m: BatchMeasurement, ids: Sequence[int], jacobians: np.ndarray
    ) -> list[Outcome]:
        """The Done outcome of every measured galaxy: its four band rows and combined row."""
        metrics.observe_radon_batch(m)
        sky = _PositionAngles.of(m, jacobians)
        outcomes: list[Outcome] = []
        for i, sid in enumerate(ids):
            records = [_band_record(m, sky, sid, i, b) for b in range(len(BANDS))]
            outcomes.append(Done(sid, [*records, _combined_record(m, sky, sid, i)]))
        return outcomes


@dataclass(frozen=True)
class _PositionAngles:
    """A batch's image angles turned east of north (degrees) by each cutout's Jacobian.

    NaN angles go in as 0 (the conversion needs numbers); the records store NULL for them.
    """

    band: np.ndarray  # (N, 4) per band
    band_moments: np.ndarray  # (N, 4) per band, the sinogram moments' angle
    combined: np.ndarray  # (N,)

    @classmethod
    def of(cls, m: BatchMeasurement, jacobians: np.ndarray) -> _PositionAngles:
        per_band = jacobians[:, None]
        return cls(
            band=image_angle_to_position_angle(np.nan_to_num(m.band_angle_image_deg), per_band),
            band_moments=image_angle_to_position_angle(
                np.nan_to_num(m.band_moments_angle_deg), per_band
            ),
            combined=image_angle_to_position_angle(np.nan_to_num(m.angle_image_deg), jacobians),
        )


def _band_record(
    m: BatchMeasurement, sky: _PositionAngles, sid: int, i: int, b: int
) -> MeasurementRecord:
    """Galaxy ``i``'s row for band ``b``; the combined-only columns stay NULL."""
    blank = not math.isfinite(float(m.band_angle_image_deg[i, b]))
    return MeasurementRecord(
        source_id=sid,
        algo_version=m.algo_version,
        band=BANDS[b],
        angle_image_deg=_nullable(m.band_angle_image_deg[i, b]),
        position_angle_deg=None if blank else _nullable(sky.band[i, b]),
        angle_err_deg=_nullable(m.band_angle_err_fit_deg[i, b]),
        angle_err_window_deg=_nullable(m.band_angle_err_window_deg[i, b]),
        angle_err_window_std_deg=_nullable(m.band_angle_err_window_std_deg[i, b]),
        angle_argmax_deg=_nullable(m.band_angle_argmax_deg[i, b]),
        sinusoid_a=_nullable(m.band_sinusoid_a[i, b]),
        sinusoid_b=_nullable(m.band_sinusoid_b[i, b]),
        anisotropy=_nullable(m.band_anisotropy[i, b]),
        moments_angle_deg=_nullable(m.band_moments_angle_deg[i, b]),
        moments_position_angle_deg=None if blank else _nullable(sky.band_moments[i, b]),
        moments_err_deg=_nullable(m.band_moments_err_deg[i, b]),
        moments_ellipticity=_nullable(m.band_moments_ellipticity[i, b]),
        nonfinite_pixels=_nullable(m.nonfinite_count[i, b]),
        flags=int(m.band_flags[i, b]),
    )


def _combined_record(
    m: BatchMeasurement, sky: _PositionAngles, sid: int, i: int
) -> MeasurementRecord:
    """Galaxy ``i``'s combined row; the per-band-only columns stay NULL."""
    combined_ok = math.isfinite(float(m.angle_image_deg[i]))
    return MeasurementRecord(
        source_id=sid,
        algo_version=m.algo_version,
        band="combined",
        angle_image_deg=_nullable(m.angle_image_deg[i]),
        position_angle_deg=_nullable(sky.combined[i]) if combined_ok else None,
        angle_err_deg=_nullable(m.angle_err_deg[i]),
        anisotropy=_nullable(m.anisotropy[i]),
        band_spread_deg=_nullable(m.band_spread_deg[i]),
        n_bands=_nullable(m.n_bands[i]),
        nonfinite_pixels=_nullable(m.nonfinite_count[i].sum()),
        masked_fraction=_nullable(m.masked_fraction[i]),
        contaminated=bool(m.contaminated[i]),
        flags=int(m.flags[i]),
    )


def build_radon_pipeline(
    settings: Settings, pool: ConnectionPool, stop: threading.Event
) -> RadonPipeline:
    """The production radon pipeline, everything from ``GALPIPE_*`` settings.

    The one place it is wired: the science configuration for the cutout size, its Radon
    operator (loaded from ``GALPIPE_RADON_CACHE_DIR``, built and cached there on a miss), and
    the object store, reporting to the process's metrics.

    Parameters
    ----------
    settings
        The process's configuration.
    pool
        Database pool (cutout rows).
    stop
        The worker's stop event (a batch is measured whole, so the pipeline does not watch it).
    """
    config = RadonConfig(size=settings.cutout_size)
    operator = RadonOperator.load_or_build(
        config.size,
        np.asarray(config.angles_deg),
        config.order,
        cache_dir=settings.radon_cache_dir,
    )
    return RadonPipeline(
        pool=pool,
        store=InstrumentedObjectStore(object_store_from_settings(settings)),
        config=config,
        operator=operator,
        batch_size=settings.radon_batch_size,
        # A GPU batch is only worth its launch and copy when it is large: measure a whole
        # claim at once there (the CPU path measures as the reads come in).
        measure_chunk=settings.radon_batch_size if settings.radon_device == "cuda" else None,
        sinogram_fitter=gpu_sinogram_fitter(settings, operator),
        decode_processes=(
            DecodeProcesses(
                settings.radon_decode_processes,
                settings.require("object_store"),
                settings.s3_endpoint_url,
                config,
            )
            if settings.radon_decode_processes > 0
            else None
        ),
    )


def gpu_sinogram_fitter(settings: Settings, operator: RadonOperator) -> FitSinograms | None:
    """The GPU's steps 3-5 when ``GALPIPE_RADON_DEVICE=cuda``, else ``None`` (numpy).

    Raises
    ------
    ConfigurationError
        With ``cuda``, when PyTorch is not installed (the CPU image) or sees no CUDA device.
    """
    if settings.radon_device != "cuda":
        return None
    try:
        from galpipe.gpu.sinograms import TorchSinogramFitter
    except ImportError as exc:
        raise ConfigurationError(
            "GALPIPE_RADON_DEVICE=cuda: PyTorch is not installed in this image "
            f"({exc}); run the GPU image (`<tag>-gpu`) or set GALPIPE_RADON_DEVICE=cpu"
        ) from exc
    try:
        return TorchSinogramFitter(
            operator,
            device="cuda",
            precision=settings.radon_precision,  # type: ignore[arg-type]
        )
    except ValueError as exc:
        raise ConfigurationError(f"GALPIPE_RADON_DEVICE=cuda: {exc}") from exc
