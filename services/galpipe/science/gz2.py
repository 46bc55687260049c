"""(ours) Galaxy Zoo 2 vote fractions: the decision tree, its normalisation, labels and metric.

Galaxy Zoo 2 (GZ2) volunteers answer up to 11 questions about a galaxy, each asked only of those
who gave a certain answer before (the decision tree). The Kaggle challenge "Galaxy Zoo -- The
Galaxy Challenge" (``training_solutions_rev1.csv``) gives, for each galaxy, 37 *tree-normalised
fractions*: the fraction of all volunteers who reached an answer. Each question's answers
therefore sum to the fraction of its parent answer (to 1 for Q1 and, in the Kaggle
normalisation, for Q6, which counts as asked of everyone).

:data:`QUESTIONS` is the tree as data, the one source of truth for the column names, their order,
their parents and their labels; :data:`ANSWER_COLUMNS` lists the 37 columns in the Kaggle order.

Pure functions over ``(N, 37)`` float arrays, vectorised over the galaxies:

- :func:`fractions_from_shares` -- per-question conditional shares (a network's per-question
  softmax outputs) to tree-normalised fractions; :func:`shares_from_fractions` the inverse;
  :func:`fractions_from_logits` -- raw outputs through a softmax per question, then the tree;
- :func:`check_fractions` -- a table of fractions validated, or a :class:`FractionsError` naming
  the first offending column or question, row and values;
- :func:`six_class` -- the six-class label (:data:`SIX_CLASSES`) with its winning fraction;
- :func:`rmse`, :func:`rmse_per_answer` -- the Kaggle metric.

Every fraction and share is dimensionless, in [0, 1]. This module imports nothing else of
galpipe; its errors are plain ``ValueError`` subclasses, translated at the I/O edge
(:mod:`galpipe.catalog.gz2_table`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "ANSWER_COLUMNS",
    "N_ANSWERS",
    "QUESTIONS",
    "SIX_CLASSES",
    "SIX_CLASS_COLUMNS",
    "FractionsError",
    "Question",
    "answer_index",
    "check_fractions",
    "fractions_from_logits",
    "fractions_from_shares",
    "rmse",
    "rmse_per_answer",
    "shares_from_fractions",
    "six_class",
]


@dataclass(frozen=True)
class Question:
    """One question of the GZ2 decision tree.

    Attributes
    ----------
    name
        ``"Q1"`` .. ``"Q11"``, the Kaggle numbering (``Class<k>.<j>`` is answer j of question k).
    text
        The question as a short human phrase.
    parent
        The answer column whose fraction this question's answers sum to; None where they sum
        to 1 (Q1, and Q6 in the Kaggle normalisation).
    answers
        The answer columns, in the Kaggle order.
    labels
        One human label per answer, in the same order.
    """

    name: str
    text: str
    parent: str | None
    answers: tuple[str, ...]
    labels: tuple[str, ...]


def _question(k: int, text: str, parent: str | None, *labels: str) -> Question:
    answers = tuple(f"Class{k}.{j}" for j in range(1, len(labels) + 1))
    return Question(f"Q{k}", text, parent, answers, labels)


#: The decision tree of the Kaggle challenge, questions in order: every parent answer belongs
#: to an earlier question, so one pass in this order builds the fractions.
QUESTIONS: tuple[Question, ...] = (
    _question(1, "smooth or features?", None, "smooth", "features or disk", "star or artifact"),
    _question(2, "edge-on?", "Class1.2", "edge-on: yes", "edge-on: no"),
    _question(3, "bar?", "Class2.2", "bar: yes", "bar: no"),
    _question(4, "spiral arms?", "Class2.2", "spiral: yes", "spiral: no"),
    _question(
        5,
        "bulge prominence?",
        "Class2.2",
        "bulge: none",
        "bulge: just noticeable",
        "bulge: obvious",
        "bulge: dominant",
    ),
    _question(6, "anything odd?", None, "odd: yes", "odd: no"),
    _question(
        7,
        "how rounded?",
        "Class1.1",
        "completely round",
        "in between",
        "cigar-shaped",
    ),
    _question(
        8,
        "odd feature?",
        "Class6.1",
        "ring",
        "lens or arc",
        "disturbed",
        "irregular",
        "other",
        "merger",
        "dust lane",
    ),
    _question(9, "edge-on bulge shape?", "Class2.1", "rounded", "boxy", "no bulge"),
    _question(10, "arm tightness?", "Class4.1", "tight", "medium", "loose"),
    _question(
        11,
        "number of arms?",
        "Class4.1",
        "1 arm",
        "2 arms",
        "3 arms",
        "4 arms",
        "more than four arms",
        "can't tell",
    ),
)

#: The 37 answer columns in the Kaggle order (after ``GalaxyID`` in the solutions file).
ANSWER_COLUMNS: tuple[str, ...] = tuple(c for q in QUESTIONS for c in q.answers)
N_ANSWERS = len(ANSWER_COLUMNS)
_INDEX = {name: i for i, name in enumerate(ANSWER_COLUMNS)}
_LABELS = {c: (q, label) for q in QUESTIONS for c, label in zip(q.answers, q.labels, strict=True)}
# Each question's answers are contiguous: (start, stop) of its slice of the 37 columns.
_SLICES = tuple((_INDEX[q.answers[0]], _INDEX[q.answers[-1]] + 1) for q in QUESTIONS)

#: The six classes of the six-class labelling, and the answer column that stands for each.
SIX_CLASSES: tuple[str, ...] = (
    "Elliptical",
    "Star/Artifact",
    "On_Edge",
    "Spiral_Barred",
    "Spiral",
    "Irregular",
)
SIX_CLASS_COLUMNS: tuple[str, ...] = (
    "Class1.1",
    "Class1.3",
    "Class2.1",
    "Class3.1",
    "Class4.1",
    "Class8.4",
)


class FractionsError(ValueError):
    """A table of GZ2 fractions or shares is malformed; the message names where and how.

    Attributes
    ----------
    row
        Index of the first offending row (0-based), or None for a problem of the whole array.
    detail
        The problem without the row, for callers that name the row their own way (a line
        number, a galaxy id).
    """

    def __init__(self, detail: str, row: int | None = None) -> None:
        super().__init__(detail if row is None else f"row {row}: {detail}")
        self.row = row
        self.detail = detail


def answer_index(column: str) -> int:
    """Position of ``column`` among :data:`ANSWER_COLUMNS`.

    Raises
    ------
    KeyError
        If ``column`` is not one of the 37 answer columns.
    """
    try:
        return _INDEX[column]
    except KeyError:
        raise KeyError(f"{column!r} is not a GZ2 answer column (Class1.1 .. Class11.6)") from None


def _describe(column: str) -> str:
    question, label = _LABELS[column]
    return f"{column} ({question.name} {label})"


def _as_table(values: npt.ArrayLike, what: str) -> npt.NDArray[np.float64]:
    """``values`` as a float64 ``(N, 37)`` array, or a FractionsError naming its shape."""
    table = np.asarray(values, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != N_ANSWERS:
        raise FractionsError(
            f"{what} must have shape (N, {N_ANSWERS}) (one column per answer, "
            f"Class1.1 .. Class11.6), got shape {table.shape}"
        )
    return table


def _check_finite_in_unit_interval(table: npt.NDArray[np.float64], what: str) -> None:
    """Raise for the first cell (row-major) that is not finite, then for one outside [0, 1]."""
    for bad, problem in (
        (~np.isfinite(table), "is not finite"),
        ((table < 0.0) | (table > 1.0), "is outside [0, 1]"),
    ):
        if bad.any():
            row, col = (int(i) for i in np.argwhere(bad)[0])
            count = int(bad.sum())
            more = f" ({count - 1} more such values)" if count > 1 else ""
            value = float(table[row, col])
            raise FractionsError(
                f"{what} {_describe(ANSWER_COLUMNS[col])} = {value!r} {problem}{more}", row
            )


def _check_sums(table: npt.NDArray[np.float64], atol: float, what: str, *, to_parent: bool) -> None:
    """Raise for the first (row, question) whose values do not sum to what they must.

    That is the parent answer's fraction where ``to_parent`` (fractions) and the question has a
    parent, else 1 (shares; Q1 and Q6 of fractions).
    """
    parents = np.ones((table.shape[0], len(QUESTIONS)))
    if to_parent:
        for k, question in enumerate(QUESTIONS):
            if question.parent is not None:
                parents[:, k] = table[:, _INDEX[question.parent]]
    sums = np.stack([table[:, a:b].sum(axis=1) for a, b in _SLICES], axis=1)
    bad = ~(np.abs(sums - parents) <= atol)
    if not bad.any():
        return
    row, k = (int(i) for i in np.argwhere(bad)[0])
    question = QUESTIONS[k]
    a, b = _SLICES[k]
    terms = " + ".join(
        f"{c} {table[row, i]:.9g}" for c, i in zip(question.answers, range(a, b), strict=True)
    )
    target = (
        f"parent {_describe(question.parent)} = {parents[row, k]:.9g}"
        if to_parent and question.parent is not None
        else "1"
    )
    count = int(bad[:, k].sum())
    more = f"; {count - 1} more rows fail {question.name}" if count > 1 else ""
    raise FractionsError(
        f"{what} of {question.name} ({question.text}) sum to {sums[row, k]:.9g} ({terms}), "
        f"not to {target}: off by {abs(sums[row, k] - parents[row, k]):.3g} > atol {atol:g}"
        f"{more}",
        row,
    )


def check_fractions(fractions: npt.ArrayLike, *, atol: float) -> npt.NDArray[np.float64]:
    """Validate a table of tree-normalised GZ2 fractions.

    The checks, in order, each reporting its first offence in row order: the shape is
    ``(N, 37)``; every value is finite; every value is within [0, 1]; every question's answers
    sum to its parent answer's fraction (to 1 for Q1 and Q6) within ``atol``.

    Parameters
    ----------
    fractions : array_like
        ``(N, 37)`` fractions in the order of :data:`ANSWER_COLUMNS`, dimensionless.
    atol : float
        Largest accepted ``|sum of a question's answers - parent fraction|``, dimensionless;
        it absorbs the rounding of a file (each value rounded to d decimals contributes up to
        ``0.5e-d``).

    Returns
    -------
    numpy.ndarray
        The fractions as a float64 ``(N, 37)`` array.

    Raises
    ------
    FractionsError
        On the first failed check; the message names the column or question, the row index
        (also in ``row``) and the values.
    """
    if not atol >= 0.0:
        raise ValueError(f"atol must be a number >= 0, got {atol!r}")
    table = _as_table(fractions, "fractions")
    _check_finite_in_unit_interval(table, "fraction")
    _check_sums(table, atol, "the answers", to_parent=True)
    return table


def fractions_from_shares(shares: npt.ArrayLike, *, atol: float = 1e-5) -> npt.NDArray[np.float64]:
    """Tree-normalised fractions from per-question conditional shares.

    Each answer's fraction is its parent answer's fraction (1 for Q1 and Q6) times its share.
    This turns a network's per-question softmax outputs into GZ2 fractions that obey the
    tree exactly.

    Parameters
    ----------
    shares : array_like
        ``(N, 37)`` shares in the order of :data:`ANSWER_COLUMNS`, dimensionless, in [0, 1];
        each question's shares sum to 1.
    atol : float, optional
        Largest accepted ``|sum of a question's shares - 1|``, dimensionless. The default
        1e-5 admits float32 softmax outputs (their sums are off by ~1e-7) and rejects shares
        that were never normalised.

    Returns
    -------
    numpy.ndarray
        ``(N, 37)`` float64 fractions; each question's answers sum to its parent's fraction
        (to within the shares' own sum error times that fraction).

    Raises
    ------
    FractionsError
        If the shape is not ``(N, 37)``, a share is not finite or outside [0, 1], or a
        question's shares do not sum to 1 within ``atol``.
    """
    table = _as_table(shares, "shares")
    _check_finite_in_unit_interval(table, "share")
    _check_sums(table, atol, "the shares", to_parent=False)
    fractions = np.empty_like(table)
    for question, (a, b) in zip(QUESTIONS, _SLICES, strict=True):
        if question.parent is None:
            fractions[:, a:b] = table[:, a:b]
        else:
            # The parent's question comes earlier in QUESTIONS, so its fractions are final.
            fractions[:, a:b] = fractions[:, _INDEX[question.parent], None] * table[:, a:b]
    return fractions


def fractions_from_logits(logits: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Tree-normalised fractions from a network's 37 raw outputs: a softmax per question.

    The output head of a GZ2 regressor: the logits of each question's answers go through
    their own softmax (conditional shares summing to 1), then :func:`fractions_from_shares`.
    Any finite logits give fractions that obey the tree; a sigmoid head per answer (the
    seeds' EfficientNet tail) does not, and needs the tree applied afterwards.

    Parameters
    ----------
    logits : array_like
        ``(N, 37)`` finite real numbers in the order of :data:`ANSWER_COLUMNS`.

    Returns
    -------
    numpy.ndarray
        ``(N, 37)`` float64 fractions in [0, 1] obeying the tree.

    Raises
    ------
    FractionsError
        If the shape is not ``(N, 37)`` or a logit is not finite.
    """
    table = _as_table(logits, "logits")
    bad = ~np.isfinite(table)
    if bad.any():
        row, col = (int(i[0]) for i in np.nonzero(bad))
        raise FractionsError(
            f"logit {_describe(ANSWER_COLUMNS[col])} is {table[row, col]!r}, not finite", row
        )
    shares = np.empty_like(table)
    for a, b in _SLICES:
        # Shifted by the row maximum: exp never overflows, and the largest term is exactly 1.
        exp = np.exp(table[:, a:b] - table[:, a:b].max(axis=1, keepdims=True))
        shares[:, a:b] = exp / exp.sum(axis=1, keepdims=True)
    return fractions_from_shares(shares)


def shares_from_fractions(fractions: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Per-question conditional shares from tree-normalised fractions; inverse of
    :func:`fractions_from_shares`.

    Each answer's share is its fraction divided by the sum of its question's fractions. On a
    consistent table that sum is the parent's fraction, so this is ``fraction / parent``; on a
    rounded table (a file) dividing by the sum keeps every question's shares summing to 1.
    Where a question's fractions sum to 0 (no volunteer reached it: its parent's fraction is
    0), its shares are uniform, ``1 / (number of answers)``: nothing says one answer more
    likely than another.

    Parameters
    ----------
    fractions : array_like
        ``(N, 37)`` fractions in the order of :data:`ANSWER_COLUMNS`, dimensionless, finite
        and non-negative (validate a table with :func:`check_fractions`).

    Returns
    -------
    numpy.ndarray
        ``(N, 37)`` float64 shares in [0, 1]; each question's shares sum to 1.

    Raises
    ------
    FractionsError
        If the shape is not ``(N, 37)`` or a fraction is not finite or outside [0, 1].
    """
    table = _as_table(fractions, "fractions")
    _check_finite_in_unit_interval(table, "fraction")
    shares = np.empty_like(table)
    for a, b in _SLICES:
        block = table[:, a:b]
        total = block.sum(axis=1, keepdims=True)
        reached = total > 0.0
        shares[:, a:b] = np.where(reached, block / np.where(reached, total, 1.0), 1.0 / (b - a))
    return shares


def six_class(
    fractions: npt.ArrayLike,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """The six-class label of each galaxy and the fraction that decided it.

    The label is the class whose answer column (:data:`SIX_CLASS_COLUMNS`: Class1.1 ->
    Elliptical, Class1.3 -> Star/Artifact, Class2.1 -> On_Edge, Class3.1 -> Spiral_Barred,
    Class4.1 -> Spiral, Class8.4 -> Irregular) has the largest fraction; a tie goes to the
    class listed first in :data:`SIX_CLASSES`.

    Parameters
    ----------
    fractions : array_like
        ``(N, 37)`` tree-normalised fractions in the order of :data:`ANSWER_COLUMNS`.

    Returns
    -------
    codes : numpy.ndarray
        ``(N,)`` int64 index into :data:`SIX_CLASSES`.
    probability : numpy.ndarray
        ``(N,)`` float64 winning fraction, dimensionless (the fraction of volunteers who
        gave that answer, used as the label's probability).

    Raises
    ------
    FractionsError
        If the shape is not ``(N, 37)`` or a fraction is not finite or outside [0, 1].
    """
    table = _as_table(fractions, "fractions")
    _check_finite_in_unit_interval(table, "fraction")
    candidates = table[:, [_INDEX[c] for c in SIX_CLASS_COLUMNS]]
    codes = np.argmax(candidates, axis=1).astype(np.int64)
    probability = np.take_along_axis(candidates, codes[:, None], axis=1)[:, 0]
    return codes, probability


def _paired(
    predicted: npt.ArrayLike, truth: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    pred = _as_table(predicted, "predicted")
    true = _as_table(truth, "truth")
    if pred.shape != true.shape:
        raise FractionsError(
            f"predicted has shape {pred.shape} but truth has shape {true.shape}; "
            "they must hold the same galaxies"
        )
    if pred.shape[0] == 0:
        raise FractionsError("no galaxies: the RMSE of an empty table is undefined")
    for name, values in (("predicted", pred), ("truth", true)):
        if not np.isfinite(values).all():
            row, col = (int(i) for i in np.argwhere(~np.isfinite(values))[0])
            value = float(values[row, col])
            raise FractionsError(
                f"{name} {_describe(ANSWER_COLUMNS[col])} = {value!r} is not finite", row
            )
    return pred, true


def rmse(predicted: npt.ArrayLike, truth: npt.ArrayLike) -> float:
    """The Kaggle metric: root mean square error over all galaxies and all 37 answers.

    Parameters
    ----------
    predicted, truth : array_like
        ``(N, 37)`` fractions in the order of :data:`ANSWER_COLUMNS`, dimensionless, N >= 1.

    Returns
    -------
    float
        ``sqrt(mean((predicted - truth) ** 2))``, dimensionless.

    Raises
    ------
    FractionsError
        If a shape is not ``(N, 37)``, the shapes differ, N is 0 or a value is not finite.
    """
    pred, true = _paired(predicted, truth)
    return float(np.sqrt(np.mean((pred - true) ** 2)))


def rmse_per_answer(predicted: npt.ArrayLike, truth: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Root mean square error of each answer column over the galaxies.

    Parameters
    ----------
    predicted, truth : array_like
        ``(N, 37)`` fractions in the order of :data:`ANSWER_COLUMNS`, dimensionless, N >= 1.

    Returns
    -------
    numpy.ndarray
        ``(37,)`` float64, dimensionless, in the order of :data:`ANSWER_COLUMNS`; the mean of
        their squares is the square of :func:`rmse`.

    Raises
    ------
    FractionsError
        If a shape is not ``(N, 37)``, the shapes differ, N is 0 or a value is not finite.
    """
    pred, true = _paired(predicted, truth)
    return np.asarray(np.sqrt(np.mean((pred - true) ** 2, axis=0)), dtype=np.float64)
