"""Step 2: sanitising, min-shift, circular mask, blank bands."""

from __future__ import annotations

import numpy as np
import pytest

from galpipe.science.preprocess import (
    apply_circular_mask,
    circular_mask,
    preprocess,
    sanitise_and_shift,
)


def test_circular_mask_uses_pixel_centres_and_the_inscribed_radius() -> None:
    mask = circular_mask(4)  # centre (1.5, 1.5), radius 2
    # Corner pixel centre is at distance sqrt(4.5) > 2; its neighbours at sqrt(2.5) < 2.
    expected = np.array([[0, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 0]], dtype=bool)
    np.testing.assert_array_equal(mask, expected)
    big = circular_mask(40)
    assert big.sum() == 1264
    # Point-symmetric and symmetric under transposition about the centre.
    np.testing.assert_array_equal(big, big[::-1, ::-1])
    np.testing.assert_array_equal(big, big.T)
    assert not big[0, 0]
    assert big[0, 19]
    assert big[19, 0]


def test_shift_puts_each_band_minimum_at_zero() -> None:
    rng = np.random.default_rng(3)
    images = rng.normal(-5.0, 2.0, size=(3, 4, 8, 8)).astype(np.float32)
    out = sanitise_and_shift(images)
    assert out.images.dtype == np.float32
    np.testing.assert_allclose(out.images.min(axis=(-2, -1)), 0.0, atol=0)
    # The shape of each band is untouched: differences are preserved.
    np.testing.assert_allclose(
        out.images - out.images[..., :1, :1], images - images[..., :1, :1], atol=1e-5
    )
    assert not out.blank.any()
    assert (out.nonfinite_count == 0).all()


def test_nonfinite_pixels_are_counted_and_become_the_band_minimum() -> None:
    images = np.full((1, 2, 6, 6), 3.0, dtype=np.float32)
    images[0, 0] = np.arange(36, dtype=np.float32).reshape(6, 6) + 10.0
    images[0, 0, 2, 3] = np.nan
    images[0, 0, 4, 4] = np.inf
    images[0, 0, 5, 0] = -np.inf
    images[0, 1, 0, 0] = np.nan  # the rest of band 1 is constant: blank
    out = sanitise_and_shift(images)
    assert out.nonfinite_count.tolist() == [[3, 1]]
    band = out.images[0, 0]
    assert np.isfinite(band).all()
    assert band[2, 3] == 0.0
    assert band[4, 4] == 0.0
    assert band[5, 0] == 0.0
    assert band.min() == 0.0
    assert band.max() == 35.0
    assert out.blank.tolist() == [[False, True]]


def test_no_data_marks_nonfinite_and_exact_zero_pixels_before_the_shift() -> None:
    images = np.full((1, 1, 4, 4), -2.0, dtype=np.float32)
    images[0, 0, 0, :2] = 0.0  # the cutout service's fill
    images[0, 0, 1, 1] = np.nan
    images[0, 0, 3, 3] = 5.0
    out = sanitise_and_shift(images)
    expected = np.zeros((4, 4), dtype=bool)
    expected[0, :2] = expected[1, 1] = True
    np.testing.assert_array_equal(out.no_data[0, 0], expected)
    # After the shift the fill is no longer 0: nothing but no_data still marks it.
    assert out.images[0, 0, 0, 0] == 2.0


@pytest.mark.parametrize(
    ("fill", "blank"),
    [(0.0, True), (np.nan, True), (7.5, True), (np.inf, True)],
)
def test_blank_bands_are_detected_and_zeroed(fill: float, blank: bool) -> None:
    images = np.zeros((1, 2, 5, 5), dtype=np.float32)
    images[0, 0] = fill
    images[0, 1, 2, 2] = 1.0  # a band with something in it
    out = sanitise_and_shift(images)
    assert out.blank[0, 0] == blank
    assert not out.blank[0, 1]
    assert (out.images[0, 0] == 0).all()


def test_preprocess_masks_outside_the_circle_only() -> None:
    images = np.ones((2, 1, 10, 10), dtype=np.float32)
    images[:, :, 0, 0] = 0.0  # so that the minimum is 0 and the shift keeps the ones
    out = preprocess(images)
    mask = circular_mask(10)
    assert (out.images[:, :, ~mask] == 0).all()
    assert (out.images[:, :, mask] == 1).all()
    np.testing.assert_array_equal(
        apply_circular_mask(images)[0, 0], np.where(mask, 1.0, 0.0) * (images[0, 0])
    )


@pytest.mark.parametrize("shape", [(4, 40, 40), (1, 4, 40, 39), (2, 2, 2, 3, 3)])
def test_wrong_shapes_are_rejected_with_the_shape_named(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="images"):
        sanitise_and_shift(np.zeros(shape, dtype=np.float32))
