"""The peer (sep second moments): conventions, bands, centring, degenerate stamps."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from galpipe.science.features import axial_difference
from galpipe.validation import peer as peer_module
from galpipe.validation.peer import PeerConfig, PeerOutcomes, sep_orientation

SIZE = 40


def _galaxy(angle_deg: float, q: float = 0.4, sigma: float = 4.0, centre=(0.0, 0.0)) -> np.ndarray:
    """An elongated Gaussian, major axis at ``angle_deg`` CCW from +x (column) towards +y (row)."""
    offset = np.arange(SIZE) - (SIZE - 1) / 2.0
    y, x = np.meshgrid(offset - centre[1], offset - centre[0], indexing="ij")
    phi = np.deg2rad(angle_deg)
    u = x * np.cos(phi) + y * np.sin(phi)
    v = -x * np.sin(phi) + y * np.cos(phi)
    return np.exp(-0.5 * ((u / sigma) ** 2 + (v / (q * sigma)) ** 2))


def _batch(angles: list[float], noise: float = 0.01, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    flux = np.array([0.6, 1.0, 1.3, 1.5])[:, None, None]
    images = np.stack([_galaxy(a) * flux for a in angles])
    return (images + rng.normal(0.0, noise, images.shape)).astype(np.float32)


def test_peer_recovers_image_angles_per_band_and_combined() -> None:
    angles = [0.0, 20.0, 45.0, 90.0, 135.0, 170.0]
    peer = sep_orientation(_batch(angles))
    assert axial_difference(peer.angle_image_deg, np.array(angles)).max() < 1.0
    assert axial_difference(peer.band_angle_image_deg, np.array(angles)[:, None]).max() < 1.5
    assert peer.ellipticity == pytest.approx(0.6, abs=0.1)


def test_rotating_the_array_by_90_degrees_turns_the_peer_angle_by_90() -> None:
    images = _batch([30.0])
    turned = np.rot90(images, k=-1, axes=(-2, -1)).copy()  # +90 deg CCW with rows upwards
    before = sep_orientation(images).angle_image_deg
    after = sep_orientation(turned).angle_image_deg
    assert axial_difference(after, before + 90.0)[0] < 0.5


def test_a_neighbour_is_deblended_and_does_not_drag_the_angle() -> None:
    images = _batch([60.0], noise=0.005)
    star = np.exp(
        -0.5
        * (((np.arange(SIZE) - 33.0) ** 2)[:, None] + ((np.arange(SIZE) - 8.0) ** 2)[None, :])
        / 1.5**2
    )
    images = images + star[None, None].astype(np.float32)
    assert axial_difference(sep_orientation(images).angle_image_deg, np.array(60.0))[0] < 2.0


def test_blank_and_off_centre_stamps_give_nan_not_an_angle() -> None:
    blank = np.zeros((1, 4, SIZE, SIZE), np.float32)
    off = (
        _galaxy(10.0, centre=(14.0, 14.0), sigma=1.5)[None, None] * np.ones((1, 4, 1, 1))
    ).astype(np.float32)
    peer = sep_orientation(np.concatenate([blank, off]))
    assert np.isnan(peer.angle_image_deg).all()
    assert np.isnan(peer.band_angle_image_deg).all()


def test_per_band_off_leaves_bands_unmeasured_and_combined_unchanged() -> None:
    images = _batch([75.0, 110.0])
    full = sep_orientation(images, PeerConfig())
    combined_only = sep_orientation(images, per_band=False)
    assert np.isnan(combined_only.band_angle_image_deg).all()
    assert np.array_equal(full.angle_image_deg, combined_only.angle_image_deg)


def test_peer_rejects_a_wrong_shape() -> None:
    with pytest.raises(ValueError, match="square"):
        sep_orientation(np.zeros((2, 40, 40), np.float32))


def test_a_sep_failure_is_counted_as_failed_not_as_no_detection(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """sep raises on the first galaxy only; the blank stamp is the one without a detection."""
    images = np.concatenate([_batch([40.0, 100.0]), np.zeros((1, 4, SIZE, SIZE), np.float32)])
    extract = peer_module.sep.extract
    calls = {"n": 0}

    def fails_first(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise Exception("internal pixel buffer full")  # what sep raises: a bare Exception
        return extract(*args, **kwargs)

    monkeypatch.setattr(peer_module.sep, "extract", fails_first)
    with caplog.at_level(logging.WARNING, logger=peer_module.__name__):
        peer = sep_orientation(images, per_band=False)
    assert peer.failed.tolist() == [True, False, False]
    assert np.isnan(peer.angle_image_deg[[0, 2]]).all()
    assert np.isfinite(peer.angle_image_deg[1])
    assert peer.outcomes() == PeerOutcomes(measured=1, no_detection=1, failed=1)
    assert "sep failed on 1 of 3 images (first: internal pixel buffer full)" in caplog.text


def test_per_band_failures_are_marked_per_band(monkeypatch: pytest.MonkeyPatch) -> None:
    def always_fails(*args: Any, **kwargs: Any) -> Any:
        raise Exception("object too large")

    monkeypatch.setattr(peer_module.sep, "extract", always_fails)
    peer = sep_orientation(_batch([10.0]))
    assert peer.band_failed.all()
    assert peer.failed.all()
    assert peer.outcomes() == PeerOutcomes(measured=0, no_detection=0, failed=1)


def test_without_failures_an_empty_stamp_is_no_detection() -> None:
    images = np.concatenate([_batch([70.0]), np.zeros((1, 4, SIZE, SIZE), np.float32)])
    peer = sep_orientation(images)
    assert not peer.failed.any()
    assert not peer.band_failed.any()
    assert peer.outcomes() == PeerOutcomes(measured=1, no_detection=1, failed=0)
    assert PeerOutcomes.from_json(peer.outcomes().to_json()) == peer.outcomes()
