"""Labelled images as arrays, and the split by a hash of each id."""

from __future__ import annotations

import numpy as np
import pytest

from galpipe.learning.dataset import split_by_id


def test_split_is_deterministic_disjoint_and_complete() -> None:
    ids = np.random.default_rng(10).choice(10**12, size=10_000, replace=False)
    train, val, test = split_by_id(ids, (0.8, 0.1, 0.1), seed=3)
    again = split_by_id(ids, (0.8, 0.1, 0.1), seed=3)
    for part, same in zip((train, val, test), again, strict=True):
        np.testing.assert_array_equal(part, same)
    everything = np.concatenate([train, val, test])
    assert len(everything) == len(ids)
    np.testing.assert_array_equal(np.sort(everything), np.arange(len(ids)))
    # Proportions: binomial σ of the train share on 10,000 is 0.004; 5σ bounds.
    assert abs(len(train) / 10_000 - 0.8) < 0.02
    assert abs(len(val) / 10_000 - 0.1) < 0.015
    assert abs(len(test) / 10_000 - 0.1) < 0.015
    # Another seed, another assignment.
    other = split_by_id(ids, (0.8, 0.1, 0.1), seed=4)
    assert not np.array_equal(other[1], val)


def test_split_of_a_galaxy_ignores_the_others() -> None:
    ids = np.arange(1, 5001, dtype=np.int64) * 7919
    full = split_by_id(ids, seed=0)
    label = np.empty(len(ids), dtype=int)
    for part, indices in enumerate(full):
        label[indices] = part
    keep = np.random.default_rng(11).random(len(ids)) < 0.3
    subset = ids[keep]
    sub_label = np.empty(len(subset), dtype=int)
    for part, indices in enumerate(split_by_id(subset[::-1], seed=0)):
        sub_label[indices] = part
    np.testing.assert_array_equal(sub_label[::-1], label[keep])


def test_split_edge_cases_and_validation() -> None:
    ids = np.arange(1000)
    train, val, test = split_by_id(ids, (1.0, 0.0, 0.0))
    assert len(train) == 1000
    assert len(val) == len(test) == 0
    assert all(len(p) == 0 for p in split_by_id(np.zeros(0, dtype=np.int64)))
    for bad in [(0.8, 0.1), (0.8, 0.3, -0.1), (0.5, 0.2, 0.2), (float("nan"), 0.5, 0.5)]:
        with pytest.raises(ValueError, match="split fractions"):
            split_by_id(ids, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="integers"):
        split_by_id(np.array([1.5, 2.5]))
