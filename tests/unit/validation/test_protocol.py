"""The augmentation protocol: its prediction, its bookkeeping, its determinism."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from galpipe.science.core import RadonConfig, measure_batch
from galpipe.validation.peer import sep_orientation
from galpipe.validation.protocol import protocol_tables, run_protocol
from tests.unit.validation.test_peer import _batch

# The paper's method (no masking) keeps these tests fast; the run uses the production config.
CONFIG = RadonConfig(mask_neighbours=False)


def _references(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ours = measure_batch(images, CONFIG).angle_image_deg
    return ours, sep_orientation(images, per_band=False).angle_image_deg, ours


def test_bright_elongated_galaxies_follow_the_prediction() -> None:
    images = _batch([10.0, 50.0, 100.0, 160.0], noise=0.002) * 50
    ours, peer, nomask = _references(images)
    result = run_protocol(
        images, ours, peer, nomask, n_augment=120, seed=4, config=CONFIG, chunk_images=50
    )
    assert len(result) == 120
    assert np.bincount(result.galaxy_index).tolist() == [30, 30, 30, 30]
    rotated = result.apply_rotation & ~result.apply_resample
    assert rotated.sum() > 20
    # Rotation (and blur) of a bright galaxy: the measured angle follows alpha closely.
    assert np.nanmax(result.deviation_ours_deg[rotated]) < 2.0
    assert np.nanmax(result.deviation_peer_deg[rotated]) < 2.0
    assert set(np.unique(result.subset)) <= {"R", "B", "N", "RB", "RN", "BN", "RBN"}


def test_the_result_depends_on_the_seed_not_on_the_number_of_workers() -> None:
    images = _batch([30.0, 120.0], noise=0.02)
    ours, peer, nomask = _references(images)
    one = run_protocol(images, ours, peer, nomask, 40, seed=9, config=CONFIG, chunk_images=20)
    same = run_protocol(images, ours, peer, nomask, 40, seed=9, config=CONFIG, chunk_images=20)
    pooled = run_protocol(
        images, ours, peer, nomask, 40, seed=9, config=CONFIG, chunk_images=20, workers=2
    )
    other = run_protocol(images, ours, peer, nomask, 40, seed=10, config=CONFIG, chunk_images=20)
    for name in ("deviation_ours_deg", "deviation_peer_deg", "alpha_deg", "apply_rotation"):
        assert np.array_equal(getattr(one, name), getattr(same, name), equal_nan=True), name
    # The pool's workers run BLAS on one thread: the same draws, sums in another order.
    assert np.array_equal(one.alpha_deg, pooled.alpha_deg)
    np.testing.assert_allclose(pooled.deviation_ours_deg, one.deviation_ours_deg, atol=1e-6)
    np.testing.assert_allclose(pooled.deviation_peer_deg, one.deviation_peer_deg, atol=1e-6)
    assert not np.array_equal(one.alpha_deg, other.alpha_deg)


def test_tables_report_every_method_side_by_side_and_the_unmasked_sample() -> None:
    images = _batch([30.0, 120.0], noise=0.02)
    ours, peer, nomask = _references(images)
    result = run_protocol(images, ours, peer, nomask, 30, seed=1, config=CONFIG, chunk_images=10)
    # Chunks 0, 1, 2: only chunk 0 (every UNMASKED_EVERY-th) is also measured unmasked.
    assert result.unmasked_sampled.tolist() == [True] * 10 + [False] * 20
    assert np.isfinite(result.deviation_ours_nomask_deg[:10]).all()
    assert np.isnan(result.deviation_ours_nomask_deg[10:]).all()
    # CONFIG has masking off already: the sampled unmasked deviations equal ours.
    np.testing.assert_array_equal(
        result.deviation_ours_nomask_deg[:10], result.deviation_ours_deg[:10]
    )
    tables = protocol_tables(
        result,
        np.array([0.3, 0.8]),
        np.array([60.0, 8.0]),
        np.array([True, False]),
        np.array([True, False]),
        unflagged=np.array([False, True]),
    )
    assert (tables.n_images, tables.n_sampled) == (30, 10)
    for method, stats in (("ours", tables.ours), ("peer", tables.peer)):
        assert stats.overall.n == 30
        assert sum(s.n for s in stats.by_axis_ratio) == 30
        assert stats.isolated.n + stats.neighbours.n == 30
        assert stats.headline.n == stats.isolated.n == 15
        # Galaxy 1's 15 images (j * 2 // 30 = 1 for j >= 15), its deviations exactly.
        assert stats.unflagged.n == 15
        deviation = getattr(result, f"deviation_{method}_deg")[15:]
        assert stats.unflagged.mean_deg == pytest.approx(np.nanmean(deviation))
        assert sum(s.n for s in stats.by_subset.values()) == 30
    for stats in (tables.ours_nomask, tables.ours_sampled, tables.peer_sampled):
        assert stats.overall.n == 10
    assert tables.ours_nomask.overall == tables.ours_sampled.overall
    # Every image is measured by the peer, fails, or has no detection; sep failed on none.
    outcomes = tables.peer_outcomes
    assert outcomes.measured + outcomes.no_detection + outcomes.failed == 30
    assert outcomes.measured == int(result.peer_measured.sum()) > 0
    assert outcomes.failed == 0
    assert "log-U[1000, 100000)" in tables.distributions["N"]


def test_the_neighbour_oracle_subtracts_the_light_as_the_image_carries_it() -> None:
    galaxies = _batch([30.0, 120.0], noise=0.02)
    # A bright round "neighbour" off-centre in galaxy 0 only: its exact light is known.
    rows, cols = np.mgrid[0:40, 0:40]
    star = np.exp(-((rows - 12.0) ** 2 + (cols - 27.0) ** 2) / (2 * 1.5**2)).astype(np.float32)
    light = np.zeros_like(galaxies)
    light[0] = 3.0 * star
    images = galaxies + light
    ours, peer, nomask = _references(images)
    oracle = measure_batch(images - light, CONFIG).angle_image_deg
    protocol = functools.partial(
        run_protocol, images, ours, peer, nomask, 30, seed=2, config=CONFIG, chunk_images=20
    )
    result = protocol(neighbour_light=light, oracle_reference_deg=oracle)
    sampled = result.unmasked_sampled
    deviation = result.deviation_neighbour_oracle_deg
    assert np.isnan(deviation[~sampled]).all()
    assert np.isfinite(deviation[sampled]).all()
    # Galaxy 1 has no neighbour light: the oracle is the unmasked measurement.
    alone = sampled & (result.galaxy_index == 1)
    crowded = sampled & (result.galaxy_index == 0)
    assert alone.any()
    assert crowded.any()
    np.testing.assert_array_equal(deviation[alone], result.deviation_ours_nomask_deg[alone])
    # With the star subtracted, galaxy 0 follows the rotation as a lone galaxy does; through
    # the star, the unmasked angle is the star's pull (here: the same in both images).
    assert not np.allclose(deviation[crowded], result.deviation_ours_nomask_deg[crowded])
    without = protocol()
    assert np.isnan(without.deviation_neighbour_oracle_deg).all()
    np.testing.assert_array_equal(without.deviation_ours_deg, result.deviation_ours_deg)
    with pytest.raises(ValueError, match="go together"):
        protocol(neighbour_light=light)
    with pytest.raises(ValueError, match="one stamp of neighbour light per image"):
        protocol(neighbour_light=light[:1], oracle_reference_deg=oracle)
