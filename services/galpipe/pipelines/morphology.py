"""The morphology pipeline: stored cutouts → Galaxy Zoo 2 vote fractions, on the common worker loop.

Per claimed batch (default 256 galaxies):

1. read each galaxy's ``cutouts`` row and its object from the store, concurrently, checked
   against the recorded SHA-256 (:func:`galpipe.pipelines.stored_cutouts.load_stored_cutout`,
   as the radon pipeline reads them);
2. render the griz cubes into the network's input
   (:func:`galpipe.science.morphology_input.network_input`, in the model's recorded mode);
3. run the network once for the batch through ONNX Runtime
   (:class:`galpipe.learning.inference.MorphologyModel`): 37 fractions that obey the GZ2
   tree by construction, checked again before they are stored;
4. take the six-class label and its deciding fraction (:func:`galpipe.science.gz2.six_class`);
5. hand the rows to the worker, which writes ``morphology_predictions`` and completes the tasks
   in one transaction.

The model is the registered artefact named by ``GALPIPE_MORPHOLOGY_MODEL``: its bytes are read
from the object store and refused unless they hash to that version
(:func:`galpipe.pipelines.model_artefacts.load_model_bytes`); every prediction row carries it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg_pool import ConnectionPool

from galpipe.db.models import ModelRecord
from galpipe.db.morphology import PredictionRows, record_predictions
from galpipe.db.queue import Task
from galpipe.learning.inference import MorphologyModel
from galpipe.pipelines.base import Done, Fail, Outcome
from galpipe.pipelines.model_artefacts import load_model_bytes
from galpipe.pipelines.stored_cutouts import DecodedCutout, StoredCutoutReader, split_reads
from galpipe.science import gz2
from galpipe.science.morphology_input import channels_for, network_input
from galpipe.settings import Settings, SettingsError
from galpipe.storage import ObjectStore, object_store_from_settings
from galpipe.storage.instrumented import InstrumentedObjectStore

__all__ = ["MorphologyPipeline", "Prediction", "build_morphology_pipeline"]

#: Tree sums of a network's output are exact to float32 rounding; a wider gap is a broken model.
_TREE_ATOL = 1e-4


@dataclass(frozen=True)
class Prediction:
    """One galaxy's result: the 37 fractions (GZ2 column order) and its six-class label."""

    fractions: npt.NDArray[np.float64]
    six_class: str
    six_class_probability: float


class MorphologyPipeline:
    """Predicts Galaxy Zoo 2 vote fractions of fetched galaxies; see the module docstring.

    Parameters
    ----------
    pool
        Database pool (cutout rows).
    store
        The object store the fetch pipeline wrote to.
    model
        The network, ready to run.
    record
        Its ``models`` row: version, input rendering, size and channels.
    batch_size, threads
        Tasks per claim; concurrent object reads.
    """

    name = "morphology"

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        store: ObjectStore,
        model: MorphologyModel,
        record: ModelRecord,
        batch_size: int = 256,
        threads: int = 16,
    ) -> None:
        if channels_for(record.input_mode) != record.input_channels:
            raise ValueError(
                f"model {record.model_version}: input mode {record.input_mode!r} renders "
                f"{channels_for(record.input_mode)} channels, the model takes "
                f"{record.input_channels}"
            )
        self.model = model
        self.record = record
        self.batch_size = batch_size
        self.reader = StoredCutoutReader(
            pool, store, threads=threads, name="morphology-read", errors=False
        )

    @property
    def model_version(self) -> str:
        return self.record.model_version

    def close(self) -> None:
        self.reader.close()

    def process(self, tasks: Sequence[Task]) -> Sequence[Outcome]:
        ids = [t.source_id for t in tasks]
        decoded, outcomes = split_reads(ids, self.reader.submit(ids))
        good: list[tuple[int, DecodedCutout]] = []
        size = self.record.input_size
        for sid, loaded in decoded:
            if loaded.data.shape[-1] != size:
                outcomes.append(
                    Fail(
                        sid,
                        f"cutout is {loaded.data.shape[-1]} px wide; model "
                        f"{self.model_version} takes {size} px",
                    )
                )
            else:
                good.append((sid, loaded))
        if good:
            outcomes.extend(self._predict(good))
        return outcomes

    def store(self, conn: psycopg.Connection, done: Sequence[Done]) -> None:
        predictions: list[Prediction] = [d.result for d in done]
        record_predictions(
            conn,
            self.model_version,
            PredictionRows(
                source_ids=[d.source_id for d in done],
                fractions=np.array([p.fractions for p in predictions]).reshape(-1, gz2.N_ANSWERS),
                six_class=[p.six_class for p in predictions],
                six_class_probability=np.array([p.six_class_probability for p in predictions]),
            ),
        )

    def _predict(self, good: list[tuple[int, DecodedCutout]]) -> list[Outcome]:
        cubes = np.stack([c.data for _, c in good])
        inputs = network_input(cubes, self.record.input_mode)
        fractions = gz2.check_fractions(self.model.predict(inputs), atol=_TREE_ATOL)
        codes, probability = gz2.six_class(fractions)
        return [
            Done(
                sid,
                Prediction(
                    fractions=fractions[i],
                    six_class=gz2.SIX_CLASSES[codes[i]],
                    six_class_probability=float(probability[i]),
                ),
            )
            for i, (sid, _) in enumerate(good)
        ]


def build_morphology_pipeline(
    settings: Settings, pool: ConnectionPool, stop: threading.Event
) -> MorphologyPipeline:
    """The production morphology pipeline, everything from ``GALPIPE_*`` settings.

    Reads the registered model ``GALPIPE_MORPHOLOGY_MODEL`` (refusing bytes that do not hash
    to it) and opens it on ``GALPIPE_MORPHOLOGY_DEVICE``.

    Raises
    ------
    SettingsError
        If no model is configured.
    ModelNotRegistered, ModelArtefactError
        If the model is not registered, or its stored bytes are missing or altered.
    """
    if settings.morphology_model is None:
        raise SettingsError(
            "GALPIPE_MORPHOLOGY_MODEL is not set: a morphology worker needs the version of a "
            "registered model (`galpipe morphology models` lists them)"
        )
    store = InstrumentedObjectStore(object_store_from_settings(settings))
    with pool.connection() as conn:
        record, onnx_bytes = load_model_bytes(conn, store, settings.morphology_model)
    model = MorphologyModel.from_bytes(onnx_bytes, device=settings.morphology_device)
    return MorphologyPipeline(
        pool=pool,
        store=store,
        model=model,
        record=record,
        batch_size=settings.morphology_batch_size,
    )
