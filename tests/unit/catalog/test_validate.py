"""Row validation of catalog ingest (``galpipe.catalog.validate``): pure numpy, no files."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from galpipe.catalog.validate import CatalogError, validate_rows

GAIA_ID = 6_917_528_997_577_384_320


def reasons(ids, ra, dec, **kwargs) -> list[str]:
    return list(validate_rows(ids, ra, dec, **kwargs).reason)


def test_valid_rows_are_accepted_with_ids_and_degrees() -> None:
    v = validate_rows(
        np.array([GAIA_ID, 0, 2**63 - 1]), np.array([0.0, 359.9, 180.0]), [-90.0, 90.0, 0]
    )
    assert v.accepted.all()
    assert v.source_id.dtype == np.int64
    assert v.source_id.tolist() == [GAIA_ID, 0, 2**63 - 1]
    assert v.ra.tolist() == [0.0, 359.9, 180.0]
    assert v.dec.tolist() == [-90.0, 90.0, 0.0]
    assert list(v.reason) == ["", "", ""]
    assert v.rejected_rows.size == 0


def test_non_finite_coordinates() -> None:
    assert reasons([1, 2, 3], [np.nan, np.inf, 1.0], [0.0, 0.0, -np.inf]) == [
        "ra is not finite",
        "ra is not finite",
        "dec is not finite",
    ]


@pytest.mark.parametrize(
    ("ra", "dec", "reason"),
    [
        (-1e-9, 0.0, "ra outside [0, 360)"),
        (360.0, 0.0, "ra outside [0, 360)"),
        (725.0, 0.0, "ra outside [0, 360)"),
        (10.0, 90.000001, "dec outside [-90, 90]"),
        (10.0, -91.0, "dec outside [-90, 90]"),
        (np.nextafter(360.0, 0.0), 90.0, ""),
        (0.0, -90.0, ""),
    ],
)
def test_coordinate_ranges(ra: float, dec: float, reason: str) -> None:
    assert reasons([1], [ra], [dec]) == [reason]


def test_masked_values_are_missing() -> None:
    ids = np.ma.MaskedArray([1, 2, 3], mask=[True, False, False])
    ra = np.ma.MaskedArray([1.0, 2.0, 3.0], mask=[False, True, False])
    dec = np.ma.MaskedArray([0.0, 0.0, 0.0], mask=[False, False, True])
    assert reasons(ids, ra, dec) == ["source_id is missing", "ra is missing", "dec is missing"]


def test_text_coordinates_are_parsed_and_non_numbers_rejected() -> None:
    v = validate_rows(
        [1, 2, 3, 4, 5], ["10.5", " 11 ", "ten", "", "NaN"], ["0", "1e1", "0", "0", "0"]
    )
    assert v.ra[:2].tolist() == [10.5, 11.0]
    assert v.dec[1] == 10.0
    assert list(v.reason) == ["", "", "ra is not a number", "ra is missing", "ra is not finite"]


def test_text_ids() -> None:
    ids = np.array(
        [
            "12",
            " 13 ",
            str(GAIA_ID),
            "-4",
            "1.5",
            "abc",
            "",
            "9223372036854775808",
            "123456789012345678901",
        ]
    )
    v = validate_rows(ids, np.ones(len(ids)), np.zeros(len(ids)))
    assert v.source_id[:3].tolist() == [12, 13, GAIA_ID]
    assert list(v.reason) == [
        "",
        "",
        "",
        "source_id is negative",
        "source_id is not an integer",
        "source_id is not an integer",
        "source_id is missing",
        "source_id does not fit a 64-bit signed integer",
        "source_id does not fit a 64-bit signed integer",
    ]


def test_bytes_ids_from_fits_text_columns() -> None:
    v = validate_rows(np.array([b"7", b"x"]), [1.0, 1.0], [0.0, 0.0])
    assert v.source_id.tolist() == [7, 0]
    assert list(v.reason) == ["", "source_id is not an integer"]


def test_integer_ids() -> None:
    assert reasons(np.array([-1, 5]), [1.0, 1.0], [0.0, 0.0]) == ["source_id is negative", ""]
    unsigned = np.array([2**63, 2**63 - 1], dtype=np.uint64)
    assert reasons(unsigned, [1.0, 1.0], [0.0, 0.0]) == [
        "source_id does not fit a 64-bit signed integer",
        "",
    ]


def test_float_ids_must_be_integral_and_exact() -> None:
    ids = np.array([5.0, 5.5, np.nan, 2.0**53, 2.0**53 + 2, float(GAIA_ID), -3.0])
    v = validate_rows(ids, np.ones(len(ids)), np.zeros(len(ids)))
    assert v.accepted.tolist() == [True, False, False, True, False, False, False]
    assert v.source_id[[0, 3]].tolist() == [5, 2**53]
    beyond = (
        "source_id is a floating-point number beyond 2**53 and may have been rounded "
        "(write ids as integers)"
    )
    assert list(v.reason[1:]) == [
        "source_id is not an integer",
        "source_id is not an integer",
        "",
        beyond,
        beyond,
        "source_id is negative",
    ]


def test_duplicates_keep_the_first_valid_row() -> None:
    ids = np.array([7, 8, 7, 9, 7, 8, 10, 10])
    ra = np.array([1.0, np.nan, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    v = validate_rows(ids, ra, np.zeros(8))
    assert list(v.reason) == [
        "",
        "ra is not finite",
        "duplicate source_id (first at row 1)",
        "",
        "duplicate source_id (first at row 1)",
        "",  # row 2 with id 8 was rejected, so row 6 is the first valid one
        "",
        "duplicate source_id (first at row 7)",
    ]
    assert v.source_id[v.accepted].tolist() == [7, 9, 8, 10]


def test_every_reason_of_a_row_is_given_with_the_users_column_names() -> None:
    assert reasons(["x"], [400.0], [np.nan], names=("gaia_id", "alpha", "delta")) == [
        "gaia_id is not an integer; alpha outside [0, 360); delta is not finite"
    ]


def test_columns_of_the_wrong_kind_raise() -> None:
    with pytest.raises(CatalogError, match="column 'source_id' holds bool values"):
        validate_rows(np.array([True]), [1.0], [0.0])
    with pytest.raises(CatalogError, match=r"column 'ra': expected one value per row"):
        validate_rows([1], np.ones((1, 2)), [0.0])
    with pytest.raises(CatalogError, match="column 'dec' holds complex128 values"):
        validate_rows([1], [1.0], np.array([1j]))
    with pytest.raises(CatalogError, match="columns differ in length"):
        validate_rows([1, 2], [1.0], [0.0])


def test_empty_columns_validate_to_nothing() -> None:
    v = validate_rows(np.array([], dtype=np.int64), np.array([]), np.array([]))
    assert v.accepted.shape == (0,)


rows = st.integers(min_value=0, max_value=60)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), n=rows)
def test_property_every_row_is_accepted_or_rejected_with_a_reason(data, n: int) -> None:
    ids = data.draw(hnp.arrays(np.int64, n, elements=st.integers(-3, 12)))
    coords = st.floats(allow_nan=True, allow_infinity=True, width=64) | st.floats(-100, 400)
    ra = data.draw(hnp.arrays(np.float64, n, elements=coords))
    dec = data.draw(hnp.arrays(np.float64, n, elements=coords))
    v = validate_rows(ids, ra, dec)

    # nothing silently dropped: a row is accepted exactly when it has no reason
    assert ((v.reason == "") == v.accepted).all()
    good = v.accepted
    assert len(set(v.source_id[good].tolist())) == good.sum()
    assert (v.source_id[good] >= 0).all()
    assert ((v.ra[good] >= 0) & (v.ra[good] < 360)).all()
    assert ((v.dec[good] >= -90) & (v.dec[good] <= 90)).all()
    # every valid id value is kept exactly once (its first valid row)
    valid = (ids >= 0) & np.isfinite(ra) & (ra >= 0) & (ra < 360)
    valid &= np.isfinite(dec) & (np.abs(dec) <= 90)
    assert set(v.source_id[good].tolist()) == set(ids[valid].tolist())
    for i in np.flatnonzero(good):
        assert i == np.flatnonzero(valid & (ids == ids[i]))[0]
