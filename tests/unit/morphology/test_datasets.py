"""The synthetic Galaxy Zoo as a labelled set (morphology.datasets.synthetic_set)."""

from __future__ import annotations

import numpy as np
import pytest

from galpipe.morphology.datasets import synthetic_set
from galpipe.science.morphology_input import channels_for, network_input
from galpipe.survey.layout import CUTOUT_SIZE_PX
from galpipe.synthetic.galaxy_zoo import sample_galaxy_zoo

N = 6


@pytest.mark.parametrize("mode", ["asinh_bands", "lupton_rgb"])
def test_synthetic_set_renders_the_sample_in_the_mode_asked(mode: str) -> None:
    made = synthetic_set(N, seed=4, mode=mode)
    sample = sample_galaxy_zoo(N, seed=4)
    data = made.data

    assert data.images.shape == (N, channels_for(mode), CUTOUT_SIZE_PX, CUTOUT_SIZE_PX)
    assert data.images.dtype == np.float32
    np.testing.assert_array_equal(data.images, network_input(sample.stamps, mode))
    np.testing.assert_array_equal(data.ids, sample.ids)
    # Trained on the volunteers' votes; the noiseless truth and S/N come along.
    np.testing.assert_array_equal(data.fractions, sample.vote_fractions)
    np.testing.assert_array_equal(made.true_fractions, sample.true_fractions)
    np.testing.assert_array_equal(made.snr, sample.morphologies.snr)
    assert made.n_volunteers == sample.n_volunteers
    assert len(data.unmatched) == 0
    assert f"{N} galaxies, seed 4" in data.source
    assert mode in data.source


def test_another_seed_is_another_sample() -> None:
    a, b = synthetic_set(N, seed=0).data, synthetic_set(N, seed=1).data
    assert a.sha256 != b.sha256
    assert synthetic_set(N, seed=0).data.sha256 == a.sha256
