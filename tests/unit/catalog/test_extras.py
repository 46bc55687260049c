"""Extra columns as JSON values (``galpipe.catalog.extras``): pure numpy, no files."""

from __future__ import annotations

import numpy as np

from galpipe.catalog.extras import _json_values


def test_json_values_make_nan_inf_and_masked_null() -> None:
    index = np.arange(4)
    floats = np.ma.MaskedArray([1.5, np.nan, np.inf, 2.0], mask=[False, False, False, True])
    assert _json_values(floats, index) == [1.5, None, None, None]
    ints = np.ma.MaskedArray(np.array([1, 2, 3, 4], dtype=np.int16), mask=[0, 1, 0, 0])
    values = _json_values(ints, index)
    assert values == [1, None, 3, 4]
    assert all(type(v) is int for v in values if v is not None)


def test_json_values_of_float32_bytes_bools_arrays_and_objects() -> None:
    index = np.array([1, 0])
    assert _json_values(np.array([0.1, 4.2], dtype=np.float32), index) == [4.2, 0.1]
    assert _json_values(np.array([b"GALAXY", b"AGN"]), index) == ["AGN", "GALAXY"]
    assert _json_values(np.array([True, False]), index) == [False, True]
    matrix = np.array([[1.0, np.nan], [3.0, 4.0]])
    assert _json_values(matrix, index) == [[3.0, 4.0], [1.0, None]]
    objects = np.empty(2, dtype=object)
    objects[:] = [np.array([1.0, np.nan]), None]
    assert _json_values(objects, index) == [None, [1.0, None]]
