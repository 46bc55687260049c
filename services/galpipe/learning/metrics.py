"""(numpy, no torch) How well a predictor of GZ2 fractions does on labelled images.

:func:`evaluate` runs any predictor -- a :class:`galpipe.learning.inference.MorphologyModel`,
or a function such as ``functools.partial(predict_fractions, network)`` for a torch network
-- over images and compares its fractions with the truth: the Kaggle RMSE over all answers
and per answer (:func:`galpipe.science.gz2.rmse`, :func:`~galpipe.science.gz2.rmse_per_answer`)
and the six-class labels (:func:`galpipe.science.gz2.six_class`): accuracy and confusion matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from galpipe.errors import InputError
from galpipe.science.gz2 import SIX_CLASSES, FractionsError, rmse, rmse_per_answer, six_class

__all__ = ["Evaluation", "Predictor", "confusion_matrix", "evaluate", "evaluate_fractions"]


@runtime_checkable
class Predictor(Protocol):
    """Anything with ``predict(images (N, C, S, S)) -> (N, 37) fractions``."""

    def predict(self, images: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]: ...


@dataclass(frozen=True)
class Evaluation:
    """A predictor's scores on labelled galaxies; every figure is dimensionless.

    Attributes
    ----------
    n_galaxies : int
        Galaxies scored.
    rmse : float
        Root mean square error over all galaxies and the 37 answers (the Kaggle metric).
    rmse_per_answer : numpy.ndarray
        ``(37,)`` RMSE of each answer, in the order of
        :data:`galpipe.science.gz2.ANSWER_COLUMNS`.
    six_class_accuracy : float
        Share of galaxies whose predicted six-class label is the true one.
    confusion : numpy.ndarray
        ``(6, 6)`` int64 counts: row = true class, column = predicted class, both in the
        order of :data:`galpipe.science.gz2.SIX_CLASSES`.
    """

    n_galaxies: int
    rmse: float
    rmse_per_answer: npt.NDArray[np.float64]
    six_class_accuracy: float
    confusion: npt.NDArray[np.int64]

    def as_dict(self) -> dict[str, object]:
        """The scores as JSON-ready values (the ``metrics`` of a model's record)."""
        return {
            "n_galaxies": self.n_galaxies,
            "rmse": self.rmse,
            "rmse_per_answer": [float(v) for v in self.rmse_per_answer],
            "six_class_accuracy": self.six_class_accuracy,
            "six_classes": list(SIX_CLASSES),
            "confusion": [[int(v) for v in row] for row in self.confusion],
        }


def confusion_matrix(
    true_codes: npt.ArrayLike, predicted_codes: npt.ArrayLike, n_classes: int = len(SIX_CLASSES)
) -> npt.NDArray[np.int64]:
    """``(n_classes, n_classes)`` counts of (true class, predicted class) pairs.

    Raises
    ------
    InputError
        If the code arrays differ in length or hold a code outside ``[0, n_classes)``.
    """
    true = np.asarray(true_codes, dtype=np.int64).ravel()
    pred = np.asarray(predicted_codes, dtype=np.int64).ravel()
    if true.shape != pred.shape:
        raise InputError(
            f"{true.size} true class codes but {pred.size} predicted ones; they must pair up"
        )
    for name, codes in (("true", true), ("predicted", pred)):
        if codes.size and (codes.min() < 0 or codes.max() >= n_classes):
            raise InputError(
                f"{name} class codes must lie in [0, {n_classes}), got {codes.min()}..{codes.max()}"
            )
    counts = np.bincount(true * n_classes + pred, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes).astype(np.int64)


def evaluate_fractions(predicted: npt.ArrayLike, truth: npt.ArrayLike) -> Evaluation:
    """Scores of predicted ``(N, 37)`` fractions against the true ones.

    Raises
    ------
    InputError
        If a table is malformed (shape, non-finite or out-of-range values) or N is 0.
    """
    try:
        true_codes, _ = six_class(truth)
        pred_codes, _ = six_class(predicted)
        overall = rmse(predicted, truth)
        per_answer = rmse_per_answer(predicted, truth)
    except FractionsError as exc:
        raise InputError(f"cannot evaluate the predictions: {exc}") from exc
    confusion = confusion_matrix(true_codes, pred_codes)
    return Evaluation(
        n_galaxies=int(true_codes.size),
        rmse=overall,
        rmse_per_answer=per_answer,
        six_class_accuracy=float(np.trace(confusion) / true_codes.size),
        confusion=confusion,
    )


def evaluate(
    model_or_predict: Predictor | Callable[[npt.NDArray[np.float32]], npt.ArrayLike],
    images: npt.ArrayLike,
    fractions: npt.ArrayLike,
) -> Evaluation:
    """Run a predictor over labelled images and score its fractions.

    Parameters
    ----------
    model_or_predict : Predictor or callable
        An object with ``predict(images) -> (N, 37) fractions`` (a
        :class:`~galpipe.learning.inference.MorphologyModel`), or such a function itself.
    images : array_like
        ``(N, C, S, S)`` network inputs, converted to float32.
    fractions : array_like
        ``(N, 37)`` true fractions in the order of :data:`galpipe.science.gz2.ANSWER_COLUMNS`.

    Returns
    -------
    Evaluation
        RMSE overall and per answer, six-class accuracy and confusion matrix.

    Raises
    ------
    InputError
        If images and fractions hold different numbers of galaxies, or a table is malformed.
    """
    x = np.asarray(images, dtype=np.float32)
    truth = np.asarray(fractions, dtype=np.float64)
    if x.ndim != 4 or truth.ndim != 2 or x.shape[0] != truth.shape[0]:
        raise InputError(
            f"images {x.shape} and fractions {truth.shape} must be (N, C, S, S) and (N, 37) "
            "for the same N galaxies"
        )
    predicted: npt.ArrayLike
    if isinstance(model_or_predict, Predictor):
        predicted = model_or_predict.predict(x)
    else:
        predicted = model_or_predict(x)
    return evaluate_fractions(np.asarray(predicted, dtype=np.float64), truth)
