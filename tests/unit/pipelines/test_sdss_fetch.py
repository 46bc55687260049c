"""The SDSS source's reading of a galaxy's field from its catalogue columns."""

from __future__ import annotations

import pytest

from galpipe.errors import InputError
from galpipe.pipelines.sdss_fetch import SdssField, SdssFieldError, field_from_extras


@pytest.mark.parametrize(
    "extras",
    [
        {"run": 3704, "camcol": 3, "field": 91},
        {"RUN": 3704, "CamCol": 3, "Field": 91, "rerun": "301"},
        {"run": 3704.0, "camcol": "3", "field": " 91 ", "rerun": 301},
    ],
)
def test_casjobs_columns_name_the_field(extras: dict) -> None:
    assert field_from_extras(7, extras, "301") == SdssField(3704, "301", 3, 91)


@pytest.mark.parametrize(
    ("extras", "words"),
    [
        ({}, "no catalogue column 'run', 'camcol', 'field'"),
        ({"run": 3704, "field": 91}, "no catalogue column 'camcol'"),
        ({"run": 3704, "camcol": None, "field": 91}, "'camcol' (or null)"),
        ({"run": 3704.5, "camcol": 3, "field": 91}, "'run' = 3704.5 is not a non-negative"),
        ({"run": 3704, "camcol": True, "field": 91}, "'camcol' = True"),
        ({"run": -1, "camcol": 3, "field": 91}, "'run' = -1"),
        ({"run": 3704, "camcol": 7, "field": 91}, "'camcol' = 7: expected 1"),
        ({"run": 3704, "camcol": 3, "field": 91, "rerun": "157"}, "'rerun' = '157'"),
    ],
)
def test_a_galaxy_without_a_usable_field_is_an_input_error_naming_it(
    extras: dict, words: str
) -> None:
    with pytest.raises(SdssFieldError) as caught:
        field_from_extras(4242, extras, "301")
    assert isinstance(caught.value, InputError)
    assert str(caught.value).startswith("galaxy 4242: ")
    assert words in str(caught.value)
