"""(torch) The GZ2 tree normalisation of a network's 37 outputs, inside the graph.

The torch twin of :func:`galpipe.science.gz2.fractions_from_logits`: a softmax over each
question's answers (conditional shares), then each answer's fraction is its parent answer's
fraction times its share. It is built from :data:`galpipe.science.gz2.QUESTIONS`, the one
statement of the tree, and uses only slicing, softmax, products and a concatenation, so it is
differentiable and exports to ONNX: an exported network outputs fractions directly.
"""

from __future__ import annotations

import torch

from galpipe.science.gz2 import N_ANSWERS, QUESTIONS, answer_index

__all__ = ["fractions_from_logits_torch"]

# Each question's answers are contiguous columns: (start, stop) of its slice of the 37.
_SLICES: tuple[tuple[int, int], ...] = tuple(
    (answer_index(q.answers[0]), answer_index(q.answers[-1]) + 1) for q in QUESTIONS
)


def _parent_position(parent: str | None) -> tuple[int, int] | None:
    """(question index, offset within its slice) of a parent answer column, None for a root."""
    if parent is None:
        return None
    column = answer_index(parent)
    for k, (start, stop) in enumerate(_SLICES):
        if start <= column < stop:
            return k, column - start
    raise AssertionError(f"{parent} lies in no question's slice")  # the tree is malformed


# Where each question's parent fraction lives among the blocks built before it: QUESTIONS lists
# every parent's question earlier, so one pass in this order builds the fractions.
_PARENTS: tuple[tuple[int, int] | None, ...] = tuple(_parent_position(q.parent) for q in QUESTIONS)


def fractions_from_logits_torch(logits: torch.Tensor) -> torch.Tensor:
    """Tree-normalised GZ2 fractions from ``(N, 37)`` logits: a softmax per question.

    Parameters
    ----------
    logits : torch.Tensor
        ``(N, 37)`` finite real numbers in the order of
        :data:`galpipe.science.gz2.ANSWER_COLUMNS`, any floating dtype.

    Returns
    -------
    torch.Tensor
        ``(N, 37)`` fractions in [0, 1], dimensionless, of the dtype of the softmax (float32
        for float32 logits); each question's answers sum to its parent answer's fraction (to 1
        for Q1 and Q6).

    Raises
    ------
    ValueError
        If ``logits`` is not ``(N, 37)``.
    """
    if logits.ndim != 2 or logits.shape[1] != N_ANSWERS:
        raise ValueError(
            f"logits must have shape (N, {N_ANSWERS}) (one column per GZ2 answer), "
            f"got shape {tuple(logits.shape)}"
        )
    blocks: list[torch.Tensor] = []
    for (start, stop), parent in zip(_SLICES, _PARENTS, strict=True):
        shares = torch.softmax(logits[:, start:stop], dim=1)
        if parent is None:
            blocks.append(shares)
        else:
            k, offset = parent
            blocks.append(blocks[k][:, offset : offset + 1] * shares)
    return torch.cat(blocks, dim=1)
