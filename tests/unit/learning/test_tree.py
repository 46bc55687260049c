"""The torch tree normalisation is the numpy one, obeys the tree and is differentiable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from galpipe.learning.tree import fractions_from_logits_torch
from galpipe.science.gz2 import (
    N_ANSWERS,
    QUESTIONS,
    answer_index,
    check_fractions,
    fractions_from_logits,
)

logit_tables = st.integers(1, 6).flatmap(
    lambda n: arrays(
        np.float64,
        (n, N_ANSWERS),
        elements=st.floats(-30.0, 30.0, allow_nan=False, allow_infinity=False),
    )
)


@settings(max_examples=100, deadline=None)
@given(logits=logit_tables)
def test_torch_twin_equals_numpy(logits: np.ndarray) -> None:
    expected = fractions_from_logits(logits)
    for dtype in (torch.float64, torch.float32):
        got = fractions_from_logits_torch(torch.tensor(logits, dtype=dtype)).double().numpy()
        np.testing.assert_allclose(got, expected, rtol=0.0, atol=1e-6)


@settings(max_examples=50, deadline=None)
@given(logits=logit_tables)
def test_children_sum_to_their_parent(logits: np.ndarray) -> None:
    fractions = fractions_from_logits_torch(torch.tensor(logits, dtype=torch.float32)).numpy()
    check_fractions(fractions, atol=1e-6)
    for question in QUESTIONS:
        columns = [answer_index(a) for a in question.answers]
        total = fractions[:, columns].sum(axis=1)
        parent = 1.0 if question.parent is None else fractions[:, answer_index(question.parent)]
        np.testing.assert_allclose(total, parent, atol=1e-6)


def test_gradients_reach_every_logit() -> None:
    logits = torch.randn(3, N_ANSWERS, dtype=torch.float64, requires_grad=True)
    # A weighted sum: each answer's fraction depends on its own logit.
    weights = torch.linspace(0.5, 2.0, N_ANSWERS, dtype=torch.float64)
    (fractions_from_logits_torch(logits) * weights).sum().backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad.abs() > 0).all()


@pytest.mark.parametrize("shape", [(4, 36), (4, 38), (N_ANSWERS,)])
def test_wrong_shape_is_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"shape \(N, 37\)"):
        fractions_from_logits_torch(torch.zeros(shape))
