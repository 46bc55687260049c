"""The deployment's fetched cutouts as a labelled set: rows in PostgreSQL, bytes in the store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from psycopg_pool import ConnectionPool

from galpipe.errors import InputError
from galpipe.morphology.datasets import fetched_cutouts_with_labels
from galpipe.pipelines.stored_cutouts import decode_cutout
from galpipe.science.gz2 import ANSWER_COLUMNS, QUESTIONS, fractions_from_shares
from galpipe.science.morphology_input import network_input
from galpipe.storage import ChecksumMismatch, LocalObjectStore
from galpipe.survey.layout import CUTOUT_SIZE_PX
from galpipe.synthetic.catalog import make_truths
from galpipe.synthetic.fitsfile import cutout_fits_bytes
from galpipe.synthetic.truth import TruthGalaxy
from tests.integration.fetched_cutouts import store_fetched

SIZE = CUTOUT_SIZE_PX


@pytest.fixture(scope="module")
def truths() -> list[TruthGalaxy]:
    return make_truths(5, seed=21)


@pytest.fixture(scope="module")
def blobs(truths: list[TruthGalaxy]) -> dict[int, bytes]:
    """Five rendered cutouts by source_id, as the cutout service sends them."""
    return {t.source_id: cutout_fits_bytes(t) for t in truths}


def _positions(ids: Sequence[int]) -> dict[int, tuple[float, float]]:
    """Where the galaxies table puts them: 36" apart along the equator, nowhere near the
    positions the cutouts' headers were rendered at."""
    return {sid: (40.0 + 0.01 * k, 1.0) for k, sid in enumerate(ids)}


def _fetched(pool: ConnectionPool, store: LocalObjectStore, blobs: Mapping[int, bytes]) -> None:
    """Galaxies as a fetch leaves them: galaxies rows, stored objects and cutouts rows."""
    store_fetched(pool, store, blobs, _positions(list(blobs)))


def _fractions(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shares = np.concatenate(
        [rng.dirichlet(np.full(len(q.answers), 0.7), size=n) for q in QUESTIONS], axis=1
    )
    return np.round(fractions_from_shares(shares), 6)


def _labels(path: Path, rows: Sequence[Mapping[str, float]], fractions: np.ndarray) -> Path:
    table = Table(rows=rows)
    for j, name in enumerate(ANSWER_COLUMNS):
        table[name] = fractions[:, j]
    table.write(path)
    return path


def test_labelled_by_source_id_the_images_are_the_decoded_cutouts(
    pool: ConnectionPool, tmp_path: Path, blobs: dict[int, bytes]
) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    _fetched(pool, store, blobs)
    ids = sorted(blobs)
    labelled, unlabelled = ids[:4], ids[4]
    fractions = _fractions(4, seed=1)
    path = _labels(tmp_path / "labels.csv", [{"source_id": s} for s in labelled], fractions)

    data = fetched_cutouts_with_labels(pool, store, path, mode="lupton_rgb")

    assert sorted(data.ids.tolist()) == labelled
    np.testing.assert_array_equal(data.unmatched, [unlabelled])
    cubes = np.stack([decode_cutout(blobs[s], SIZE).data for s in data.ids])
    np.testing.assert_array_equal(data.images, network_input(cubes, "lupton_rgb"))
    assert data.images.shape == (4, 3, SIZE, SIZE)
    row = {s: k for k, s in enumerate(labelled)}
    np.testing.assert_allclose(data.fractions, fractions[[row[s] for s in data.ids]], atol=1e-9)


def test_matched_by_radec_the_galaxies_positions_are_used(
    pool: ConnectionPool, tmp_path: Path, blobs: dict[int, bytes], truths: list[TruthGalaxy]
) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    _fetched(pool, store, blobs)
    where = _positions(list(blobs))
    order = sorted(blobs, reverse=True)
    # Labels 0.4" from each galaxy's catalogued position, far from its cutout's header.
    rows = [{"ra": where[s][0], "dec": where[s][1] + 0.4 / 3600} for s in order]
    fractions = _fractions(len(order), seed=2)
    path = _labels(tmp_path / "labels.ecsv", rows, fractions)

    data = fetched_cutouts_with_labels(pool, store, path, match="radec", radius_arcsec=1.0)

    assert sorted(data.ids.tolist()) == sorted(blobs)
    assert len(data.unmatched) == 0
    expected = fractions[[order.index(s) for s in data.ids]]
    np.testing.assert_allclose(data.fractions, expected, atol=1e-9)
    assert data.images.shape == (len(blobs), 4, SIZE, SIZE)
    # Labels at the positions the cutouts were rendered at (their headers') match nothing.
    at_headers = [{"ra": t.ra, "dec": t.dec} for t in truths]
    path = _labels(tmp_path / "at_headers.ecsv", at_headers, fractions)
    with pytest.raises(InputError, match="none of the 5 cutouts"):
        fetched_cutouts_with_labels(pool, store, path, match="radec", radius_arcsec=1.0)


def test_nothing_fetched_is_an_input_error(pool: ConnectionPool, tmp_path: Path) -> None:
    path = _labels(tmp_path / "labels.csv", [{"source_id": 1}], _fractions(1, seed=3))
    with pytest.raises(InputError, match="no cutouts have been fetched yet"):
        fetched_cutouts_with_labels(pool, LocalObjectStore(tmp_path / "objects"), path)


def test_cutouts_of_several_sizes_are_refused(
    pool: ConnectionPool, tmp_path: Path, blobs: dict[int, bytes]
) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    first, *rest = sorted(blobs)
    _fetched(pool, store, {s: blobs[s] for s in rest})
    store_fetched(pool, store, {first: blobs[first]}, {first: (1.0, 1.0)}, size=64)
    path = _labels(tmp_path / "labels.csv", [{"source_id": s} for s in blobs], _fractions(5, 4))
    with pytest.raises(InputError, match=r"several sizes \[40, 64\]"):
        fetched_cutouts_with_labels(pool, store, path)


def test_a_cutout_changed_in_the_store_is_refused(
    pool: ConnectionPool, tmp_path: Path, blobs: dict[int, bytes]
) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    _fetched(pool, store, blobs)
    tampered = sorted(blobs)[2]
    (tmp_path / "objects" / f"cutouts/test/{tampered}.fits").write_bytes(b"changed")
    path = _labels(tmp_path / "labels.csv", [{"source_id": s} for s in blobs], _fractions(5, 5))
    with pytest.raises(ChecksumMismatch, match=str(tampered)):
        fetched_cutouts_with_labels(pool, store, path)
