"""The Galaxy Zoo 2 decision tree, its normalisation, six-class labels and metric (science.gz2)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from galpipe.science import gz2
from galpipe.science.gz2 import (
    ANSWER_COLUMNS,
    N_ANSWERS,
    QUESTIONS,
    SIX_CLASSES,
    FractionsError,
    answer_index,
    check_fractions,
    fractions_from_shares,
    rmse,
    rmse_per_answer,
    shares_from_fractions,
    six_class,
)

# The Kaggle header after GalaxyID, written out by hand from the challenge's data page.
# fmt: off
KAGGLE_COLUMNS = [
    "Class1.1", "Class1.2", "Class1.3",
    "Class2.1", "Class2.2",
    "Class3.1", "Class3.2",
    "Class4.1", "Class4.2",
    "Class5.1", "Class5.2", "Class5.3", "Class5.4",
    "Class6.1", "Class6.2",
    "Class7.1", "Class7.2", "Class7.3",
    "Class8.1", "Class8.2", "Class8.3", "Class8.4", "Class8.5", "Class8.6", "Class8.7",
    "Class9.1", "Class9.2", "Class9.3",
    "Class10.1", "Class10.2", "Class10.3",
    "Class11.1", "Class11.2", "Class11.3", "Class11.4", "Class11.5", "Class11.6",
]
# fmt: on

# What each question's answers sum to, written out by hand from the Kaggle normalisation.
PARENTS = {
    "Q1": None,
    "Q2": "Class1.2",
    "Q3": "Class2.2",
    "Q4": "Class2.2",
    "Q5": "Class2.2",
    "Q6": None,
    "Q7": "Class1.1",
    "Q8": "Class6.1",
    "Q9": "Class2.1",
    "Q10": "Class4.1",
    "Q11": "Class4.1",
}


def random_shares(rng: np.random.Generator, n: int, concentration: float = 0.5) -> np.ndarray:
    """``(n, 37)`` shares: each question's block drawn from a Dirichlet, so it sums to 1."""
    blocks = [rng.dirichlet(np.full(len(q.answers), concentration), size=n) for q in QUESTIONS]
    return np.concatenate(blocks, axis=1)


def col(name: str) -> int:
    return KAGGLE_COLUMNS.index(name)


def smooth_round_galaxy() -> np.ndarray:
    """Shares of one galaxy, (1, 37): mostly smooth and round, nothing odd."""
    shares = np.zeros((1, N_ANSWERS))
    for name, value in {
        "Class1.1": 0.8, "Class1.2": 0.15, "Class1.3": 0.05,
        "Class2.1": 0.2, "Class2.2": 0.8,
        "Class3.1": 0.25, "Class3.2": 0.75,
        "Class4.1": 0.5, "Class4.2": 0.5,
        "Class5.1": 1.0,
        "Class6.1": 0.1, "Class6.2": 0.9,
        "Class7.1": 0.6, "Class7.2": 0.3, "Class7.3": 0.1,
        "Class8.4": 1.0,
        "Class9.1": 1.0,
        "Class10.1": 1.0,
        "Class11.2": 1.0,
    }.items():  # fmt: skip
        shares[0, col(name)] = value
    return shares


# --- the tree as data ---


def test_the_columns_are_the_kaggle_header_in_order() -> None:
    assert list(ANSWER_COLUMNS) == KAGGLE_COLUMNS
    assert N_ANSWERS == 37
    assert [answer_index(c) for c in KAGGLE_COLUMNS] == list(range(37))


def test_every_question_has_its_kaggle_parent_and_a_label_per_answer() -> None:
    assert {q.name: q.parent for q in QUESTIONS} == PARENTS
    for question in QUESTIONS:
        assert len(question.labels) == len(question.answers)
        assert all(label for label in question.labels)
    labels = {c: label for q in QUESTIONS for c, label in zip(q.answers, q.labels, strict=True)}
    assert labels["Class1.2"] == "features or disk"
    assert labels["Class8.6"] == "merger"
    assert labels["Class11.6"] == "can't tell"


def test_every_parent_belongs_to_an_earlier_question() -> None:
    seen: set[str] = set()
    for question in QUESTIONS:
        assert question.parent is None or question.parent in seen, question.name
        seen.update(question.answers)


def test_an_unknown_column_is_named() -> None:
    with pytest.raises(KeyError, match=r"Class12\.1"):
        answer_index("Class12.1")


# --- shares <-> fractions ---


def test_a_smooth_round_galaxy_by_hand() -> None:
    fractions = fractions_from_shares(smooth_round_galaxy())[0]
    # Worked by hand: 0.8 smooth, 0.6 of them "completely round" -> 0.48.
    assert fractions[col("Class7.1")] == pytest.approx(0.48)
    assert fractions[col("Class7.3")] == pytest.approx(0.08)
    # features 0.15 -> edge-on 0.2 of it = 0.03, not edge-on 0.12.
    assert fractions[col("Class2.1")] == pytest.approx(0.03)
    assert fractions[col("Class2.2")] == pytest.approx(0.12)
    # bar 0.25 of the 0.12 not edge-on = 0.03; spiral 0.5 of it = 0.06.
    assert fractions[col("Class3.1")] == pytest.approx(0.03)
    assert fractions[col("Class4.1")] == pytest.approx(0.06)
    # two arms: all of the 0.06 spirals; tight: all of them.
    assert fractions[col("Class11.2")] == pytest.approx(0.06)
    assert fractions[col("Class10.1")] == pytest.approx(0.06)
    # edge-on bulge rounded: all of the 0.03 edge-on.
    assert fractions[col("Class9.1")] == pytest.approx(0.03)
    # Q6 is asked of everyone: its shares are its fractions; irregular = all of odd 0.1.
    assert fractions[col("Class6.1")] == pytest.approx(0.1)
    assert fractions[col("Class8.4")] == pytest.approx(0.1)
    # Q1 is asked of everyone too.
    assert fractions[col("Class1.3")] == pytest.approx(0.05)


def test_shares_to_fractions_to_shares_is_the_identity() -> None:
    rng = np.random.default_rng(7)
    shares = random_shares(rng, 500)
    back = shares_from_fractions(fractions_from_shares(shares))
    np.testing.assert_allclose(back, shares, rtol=1e-9, atol=1e-12)


def test_fractions_to_shares_to_fractions_is_the_identity() -> None:
    rng = np.random.default_rng(8)
    fractions = fractions_from_shares(random_shares(rng, 500))
    again = fractions_from_shares(shares_from_fractions(fractions))
    np.testing.assert_allclose(again, fractions, rtol=1e-12, atol=1e-15)


def test_generated_fractions_obey_the_kaggle_normalisation() -> None:
    rng = np.random.default_rng(9)
    fractions = fractions_from_shares(random_shares(rng, 300))
    for question in QUESTIONS:
        answers = fractions[:, [col(c) for c in question.answers]].sum(axis=1)
        parent = PARENTS[question.name]
        expected = np.ones(len(fractions)) if parent is None else fractions[:, col(parent)]
        np.testing.assert_allclose(answers, expected, atol=1e-12, err_msg=question.name)
    assert check_fractions(fractions, atol=1e-12).shape == (300, 37)


def test_a_question_nobody_reached_gets_uniform_shares() -> None:
    shares = smooth_round_galaxy()
    shares[0, col("Class1.1")], shares[0, col("Class1.2")] = 0.95, 0.0  # no features at all
    fractions = fractions_from_shares(shares)
    back = shares_from_fractions(fractions)[0]
    # Q2 (edge-on, 2 answers) and Q5 (bulge, 4 answers) were never asked.
    np.testing.assert_allclose(back[[col("Class2.1"), col("Class2.2")]], [0.5, 0.5])
    np.testing.assert_allclose(back[[col(f"Class5.{j}") for j in range(1, 5)]], [0.25] * 4)
    np.testing.assert_allclose(back[col("Class1.1")], 0.95)


def test_shares_of_a_rounded_table_still_sum_to_one() -> None:
    rng = np.random.default_rng(14)
    rounded = np.round(fractions_from_shares(random_shares(rng, 300)), 6)
    shares = shares_from_fractions(rounded)
    for question in QUESTIONS:
        sums = shares[:, [col(c) for c in question.answers]].sum(axis=1)
        np.testing.assert_allclose(sums, 1.0, atol=1e-12, err_msg=question.name)
    assert shares.min() >= 0.0
    assert shares.max() <= 1.0


def test_negative_shares_and_wrong_shapes_are_rejected() -> None:
    shares = smooth_round_galaxy()
    shares[0, col("Class3.1")], shares[0, col("Class3.2")] = -0.25, 1.25
    with pytest.raises(FractionsError, match=r"row 0: share Class3\.1 \(Q3 bar: yes\) = -0\.25"):
        fractions_from_shares(shares)
    with pytest.raises(FractionsError, match=r"got shape \(2, 38\)"):
        six_class(np.zeros((2, 38)))


def test_shares_that_do_not_sum_to_one_are_rejected() -> None:
    shares = smooth_round_galaxy()
    shares[0, col("Class7.2")] = 0.5  # Q7 now sums to 1.2
    with pytest.raises(FractionsError, match=r"row 0: .*Q7.* sum to 1\.2"):
        fractions_from_shares(shares)


def test_float32_softmax_shares_are_accepted() -> None:
    rng = np.random.default_rng(10)
    shares = random_shares(rng, 200).astype(np.float32)
    fractions = fractions_from_shares(shares)
    check_fractions(fractions, atol=1e-5)


# --- check_fractions ---


@pytest.fixture
def good() -> np.ndarray:
    return fractions_from_shares(random_shares(np.random.default_rng(11), 6))


def test_a_wrong_shape_is_rejected_with_the_shape() -> None:
    with pytest.raises(FractionsError, match=r"shape \(N, 37\).*got shape \(4, 36\)"):
        check_fractions(np.zeros((4, 36)), atol=1e-6)
    with pytest.raises(FractionsError, match=r"got shape \(37,\)"):
        check_fractions(np.zeros(37), atol=1e-6)


def test_a_non_finite_value_is_named(good: np.ndarray) -> None:
    good[3, col("Class5.2")] = np.nan
    with pytest.raises(FractionsError, match=r"row 3: .*Class5\.2 .*nan is not finite") as info:
        check_fractions(good, atol=1e-6)
    assert info.value.row == 3


def test_a_value_above_one_is_named(good: np.ndarray) -> None:
    good[2, col("Class1.1")] = 1.2
    with pytest.raises(FractionsError, match=r"row 2: .*Class1\.1 \(Q1 smooth\) = 1\.2 is outside"):
        check_fractions(good, atol=1e-6)


def test_a_negative_value_is_named(good: np.ndarray) -> None:
    good[4, col("Class8.6")] = -0.01
    with pytest.raises(FractionsError, match=r"row 4: .*Class8\.6 \(Q8 merger\) = -0\.01"):
        check_fractions(good, atol=1e-6)


def test_a_question_off_its_parent_is_named_with_its_values(good: np.ndarray) -> None:
    good[1, col("Class9.2")] += 0.01  # Q9 now sums to Class2.1 + 0.01
    with pytest.raises(FractionsError) as info:
        check_fractions(good, atol=1e-6)
    message = str(info.value)
    assert message.startswith("row 1: ")
    assert "Q9" in message
    assert "parent Class2.1" in message
    assert f"{good[1, col('Class2.1')]:.9g}" in message
    assert "Class9.2" in message
    assert info.value.row == 1


def test_q1_off_one_is_named(good: np.ndarray) -> None:
    good[0, col("Class1.3")] = 0.0
    good[0, col("Class1.1")] = max(0.0, good[0, col("Class1.1")] - 0.01)
    with pytest.raises(FractionsError, match=r"row 0: .*Q1 .*not to 1"):
        check_fractions(good, atol=1e-6)


def test_the_first_offending_row_is_reported(good: np.ndarray) -> None:
    good[4, col("Class10.1")] += 0.5
    good[2, col("Class3.1")] += 0.5
    with pytest.raises(FractionsError, match=r"row 2: .*Q3") as info:
        check_fractions(good, atol=1e-6)
    assert info.value.row == 2


def test_the_tolerance_decides(good: np.ndarray) -> None:
    good[1, col("Class7.1")] += 2e-6
    check_fractions(good, atol=1e-5)
    with pytest.raises(FractionsError, match="Q7"):
        check_fractions(good, atol=1e-6)


# --- six_class ---


def test_six_class_on_clear_cases() -> None:
    fractions = np.zeros((6, N_ANSWERS))
    winners = ["Class1.1", "Class1.3", "Class2.1", "Class3.1", "Class4.1", "Class8.4"]
    for row, name in enumerate(winners):
        fractions[row, :] = 0.05
        fractions[row, col(name)] = 0.7
    codes, probability = six_class(fractions)
    names = [SIX_CLASSES[c] for c in codes]
    assert names == [
        "Elliptical",
        "Star/Artifact",
        "On_Edge",
        "Spiral_Barred",
        "Spiral",
        "Irregular",
    ]
    np.testing.assert_array_equal(probability, 0.7)
    assert codes.dtype == np.int64


def test_six_class_of_a_tree_normalised_galaxy() -> None:
    fractions = fractions_from_shares(smooth_round_galaxy())
    codes, probability = six_class(fractions)
    # Smooth 0.8 beats star 0.05, edge-on 0.03, bar 0.03, spiral 0.06, irregular 0.1.
    assert SIX_CLASSES[codes[0]] == "Elliptical"
    assert probability[0] == pytest.approx(0.8)


def test_six_class_ignores_answers_outside_its_map() -> None:
    fractions = np.zeros((1, N_ANSWERS))
    fractions[0, col("Class1.2")] = 0.9  # features: not one of the six columns
    fractions[0, col("Class4.1")] = 0.3
    codes, probability = six_class(fractions)
    assert SIX_CLASSES[codes[0]] == "Spiral"
    assert probability[0] == pytest.approx(0.3)


# --- rmse ---


def test_rmse_matches_a_direct_computation() -> None:
    rng = np.random.default_rng(12)
    truth = fractions_from_shares(random_shares(rng, 50))
    predicted = fractions_from_shares(random_shares(rng, 50))
    squared = [(predicted[i, j] - truth[i, j]) ** 2 for i in range(50) for j in range(N_ANSWERS)]
    assert rmse(predicted, truth) == pytest.approx(np.sqrt(sum(squared) / len(squared)))
    per_answer = rmse_per_answer(predicted, truth)
    assert per_answer.shape == (N_ANSWERS,)
    for j in range(N_ANSWERS):
        column = [(predicted[i, j] - truth[i, j]) ** 2 for i in range(50)]
        assert per_answer[j] == pytest.approx(np.sqrt(sum(column) / 50))
    assert np.mean(per_answer**2) == pytest.approx(rmse(predicted, truth) ** 2)


def test_predicting_the_mean_is_worse_than_a_perfect_prediction() -> None:
    rng = np.random.default_rng(13)
    truth = fractions_from_shares(random_shares(rng, 400))
    baseline = np.broadcast_to(truth.mean(axis=0), truth.shape)
    assert rmse(truth, truth) == 0.0
    assert rmse(baseline, truth) > 0.05
    # One wrong answer in one galaxy: sqrt(0.37**2 / (1 * 37)) by hand is about 0.0608.
    one = np.zeros((1, N_ANSWERS))
    other = one.copy()
    other[0, 5] = 0.37
    assert rmse(other, one) == pytest.approx(0.37 / np.sqrt(37))


def test_rmse_refuses_mismatched_or_empty_tables() -> None:
    with pytest.raises(
        FractionsError, match=r"predicted has shape \(2, 37\) but truth .*\(3, 37\)"
    ):
        rmse(np.zeros((2, 37)), np.zeros((3, 37)))
    with pytest.raises(FractionsError, match="empty"):
        rmse_per_answer(np.zeros((0, 37)), np.zeros((0, 37)))
    bad = np.zeros((2, 37))
    bad[1, 0] = np.inf
    with pytest.raises(FractionsError, match=r"row 1: truth Class1\.1"):
        rmse(np.zeros((2, 37)), bad)


@settings(max_examples=200, deadline=None)
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(1, 8), st.just(gz2.N_ANSWERS)),
        elements=st.floats(-50.0, 50.0, allow_nan=False),
    )
)
def test_any_logits_give_fractions_that_obey_the_tree(logits: np.ndarray) -> None:
    fractions = gz2.fractions_from_logits(logits)

    assert ((fractions >= 0.0) & (fractions <= 1.0)).all()
    gz2.check_fractions(fractions, atol=1e-9)


def test_logits_that_are_not_finite_are_named() -> None:
    logits = np.zeros((2, gz2.N_ANSWERS))
    logits[1, gz2.answer_index("Class8.4")] = np.inf
    with pytest.raises(gz2.FractionsError, match=r"row 1: logit Class8\.4.*not finite"):
        gz2.fractions_from_logits(logits)


# Ten Kaggle training galaxies, their six mapped fractions (Class1.1, 1.3, 2.1, 3.1, 4.1, 8.4)
# and the label a published walk-through of the six-class scheme gave each by the largest one.
PUBLISHED_SIX_CLASS_ROWS = (
    (100008, (0.383147, 0.0, 0.0, 0.038452149, 0.418397819, 0.0272265), "Spiral"),
    (100023, (0.327001, 0.009222, 0.031178269, 0.467369636, 0.591327989, 0.0), "Spiral"),
    (100053, (0.765717, 0.056931, 0.0, 0.0, 0.0, 0.0), "Elliptical"),
    (100078, (0.693377, 0.068059, 0.0, 0.109493481, 0.189098232, 0.0961194), "Elliptical"),
    (100090, (0.933839, 0.066161, 0.0, 0.0, 0.0, 0.0), "Elliptical"),
    (100122, (0.738832, 0.023009, 0.0, 0.0, 0.0, 0.098965), "Elliptical"),
    (100123, (0.462492, 0.081475, 0.0, 0.0, 0.0, 0.0), "Elliptical"),
    (100128, (0.687783, 0.023873, 0.0, 0.069098179, 0.0, 0.0), "Elliptical"),
    (100134, (0.021834, 0.001214, 0.021750859, 0.313076726, 0.546490632, 0.4502247), "Spiral"),
    (100143, (0.269843, 0.0, 0.730157, 0.0, 0.0, 0.0), "On_Edge"),
)


def test_six_class_labels_the_published_example_rows_alike() -> None:
    table = np.zeros((len(PUBLISHED_SIX_CLASS_ROWS), gz2.N_ANSWERS))
    for row, (_, mapped, _) in enumerate(PUBLISHED_SIX_CLASS_ROWS):
        for column, value in zip(
            ("Class1.1", "Class1.3", "Class2.1", "Class3.1", "Class4.1", "Class8.4"),
            mapped,
            strict=True,
        ):
            table[row, gz2.answer_index(column)] = value

    codes, probability = gz2.six_class(table)

    assert [gz2.SIX_CLASSES[c] for c in codes] == [label for *_, label in PUBLISHED_SIX_CLASS_ROWS]
    assert probability.tolist() == [max(mapped) for _, mapped, _ in PUBLISHED_SIX_CLASS_ROWS]
