"""Column definitions of ``galpipe export --morphology-model`` and the option's parsing."""

from __future__ import annotations

import argparse

import astropy.units as u
import pytest

from galpipe.catalog.cli import register
from galpipe.catalog.export import MORPHOLOGY_DOCS
from galpipe.db import results
from galpipe.db.demo_results import MORPHOLOGY_COLUMNS as DEMO_COLUMNS
from galpipe.science import gz2


def test_one_documented_column_per_selected_column_in_row_order() -> None:
    assert [d.name for d in MORPHOLOGY_DOCS] == list(results.MORPHOLOGY_COLUMNS)
    assert len(MORPHOLOGY_DOCS) == 2 + gz2.N_ANSWERS


def test_names_are_the_demo_catalogue_names() -> None:
    assert {d.name for d in MORPHOLOGY_DOCS} <= set(DEMO_COLUMNS)
    assert [d.name for d in MORPHOLOGY_DOCS[2:]] == [
        "gz2_" + c.lower().replace(".", "_") for c in gz2.ANSWER_COLUMNS
    ]


@pytest.mark.parametrize("answer", ["Class1.1", "Class6.2", "Class8.6", "Class11.6"])
def test_fraction_description_names_the_kaggle_column_question_and_answer(answer: str) -> None:
    doc = next(d for d in MORPHOLOGY_DOCS if d.name == "gz2_" + answer.lower().replace(".", "_"))
    question = next(q for q in gz2.QUESTIONS if answer in q.answers)
    label = question.labels[question.answers.index(answer)]
    assert doc.description.startswith(answer + " ")
    assert question.text in doc.description
    assert label in doc.description
    assert doc.dtype == "float32"


def test_every_morphology_column_is_dimensionless_and_described() -> None:
    for doc in MORPHOLOGY_DOCS:
        assert doc.unit == u.dimensionless_unscaled, doc.name
        assert doc.description, doc.name
    assert MORPHOLOGY_DOCS[0].dtype == "U"
    for label in gz2.SIX_CLASSES:
        assert label in MORPHOLOGY_DOCS[0].description


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(argv)


def test_option_defaults_to_no_morphology() -> None:
    assert _parse(["export", "out.fits"]).morphology_model is None
    version = "ab" * 32
    assert _parse(["export", "o.ecsv", "--morphology-model", version]).morphology_model == version
    assert _parse(["export", "o.ecsv", "--morphology-model", "latest"]).morphology_model == "latest"
