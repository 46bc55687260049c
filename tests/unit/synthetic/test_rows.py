"""Row-wise records and seeded chunks shared by the synthetic samplers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from galpipe.synthetic.rows import check_rows, concatenate_rows, run_in_chunks, take_rows


@dataclass(frozen=True)
class Pairs:
    key: np.ndarray
    value: np.ndarray

    def __post_init__(self) -> None:
        check_rows(self, "key", ValueError)


def test_rows_are_checked_taken_and_concatenated() -> None:
    pairs = Pairs(np.arange(4), np.arange(8).reshape(4, 2))
    with pytest.raises(ValueError, match=r"Pairs.value has shape \(3,\); every attribute needs 4"):
        Pairs(np.arange(4), np.arange(3))
    taken = take_rows(pairs, np.array([3, 1]))
    assert taken.key.tolist() == [3, 1]
    assert taken.value.tolist() == [[6, 7], [2, 3]]
    joined = concatenate_rows([taken, pairs])
    assert joined.key.tolist() == [3, 1, 0, 1, 2, 3]
    assert joined.value.shape == (6, 2)


def _draw(first: int, count: int, seed: np.random.SeedSequence) -> tuple[int, np.ndarray]:
    return first, np.random.default_rng(seed).uniform(size=count)


def test_chunks_cover_every_item_with_their_own_seeds_whatever_the_processes() -> None:
    one = run_in_chunks(_draw, 10, 4, seed=3, processes=1)
    two = run_in_chunks(_draw, 10, 4, seed=3, processes=2)
    assert [first for first, _ in one] == [0, 4, 8]
    assert [len(values) for _, values in one] == [4, 4, 2]
    for (_, a), (_, b) in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(np.unique(np.concatenate([v for _, v in one]))) == 10
