"""Scores of a predictor: RMSE, per-answer RMSE, six-class accuracy and confusion matrix."""

from __future__ import annotations

import numpy as np
import pytest

from galpipe.errors import InputError
from galpipe.learning.metrics import confusion_matrix, evaluate, evaluate_fractions
from galpipe.science.gz2 import N_ANSWERS, SIX_CLASS_COLUMNS, answer_index


def _one_hot(classes: list[int]) -> np.ndarray:
    """Fractions with all votes on the answer column that stands for each six-class code."""
    table = np.zeros((len(classes), N_ANSWERS))
    for row, code in enumerate(classes):
        table[row, answer_index(SIX_CLASS_COLUMNS[code])] = 1.0
    return table


def test_a_hand_made_case() -> None:
    truth = _one_hot([0, 0, 2, 4, 5])
    predicted = _one_hot([0, 2, 2, 4, 1])

    scores = evaluate_fractions(predicted, truth)

    expected = np.zeros((6, 6), np.int64)
    expected[0, 0] = expected[0, 2] = expected[2, 2] = expected[4, 4] = expected[5, 1] = 1
    np.testing.assert_array_equal(scores.confusion, expected)
    assert scores.six_class_accuracy == pytest.approx(3 / 5)
    assert scores.n_galaxies == 5
    # Two wrong galaxies, each wrong by 1 in two of the 5 x 37 cells.
    assert scores.rmse == pytest.approx(np.sqrt(4 / (5 * N_ANSWERS)))
    wrong = {answer_index(SIX_CLASS_COLUMNS[c]) for c in (0, 1, 2, 5)}
    for column, value in enumerate(scores.rmse_per_answer):
        assert value == pytest.approx(np.sqrt(1 / 5) if column in wrong else 0.0)
    assert scores.as_dict()["confusion"][0] == [1, 0, 1, 0, 0, 0]


def test_a_predictor_object_and_a_function_score_alike() -> None:
    truth = _one_hot([1, 3, 4])
    images = np.zeros((3, 2, 8, 8), np.float32)

    class Constant:
        def predict(self, x: np.ndarray) -> np.ndarray:
            return _one_hot([4] * x.shape[0])

    by_object = evaluate(Constant(), images, truth)
    by_function = evaluate(Constant().predict, images, truth)
    assert by_object.six_class_accuracy == by_function.six_class_accuracy == pytest.approx(1 / 3)
    np.testing.assert_array_equal(by_object.confusion, by_function.confusion)


def test_malformed_inputs_are_refused() -> None:
    with pytest.raises(InputError, match=r"images \(2, 1, 4, 4\) and fractions \(3, 37\)"):
        evaluate(lambda x: x, np.zeros((2, 1, 4, 4)), np.zeros((3, N_ANSWERS)))
    with pytest.raises(InputError, match="cannot evaluate the predictions"):
        evaluate_fractions(np.full((1, N_ANSWERS), 2.0), np.zeros((1, N_ANSWERS)))
    with pytest.raises(InputError, match=r"codes must lie in \[0, 6\), got 0..6"):
        confusion_matrix([0, 1], [0, 6])
