"""Agreement with Gaia's Sérsic angles, and the synthetic catalogue that carries them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from galpipe.synthetic.catalog import (
    gaia_sersic_values,
    make_truths,
    read_catalog,
    write_catalog,
)
from galpipe.validation.gaia import gaia_agreement, gaia_columns_from_extras, load_gaia_columns


def test_extras_with_missing_or_null_columns_give_nan() -> None:
    pa, e = gaia_columns_from_extras(
        ['{"posangle_sersic": 12.5, "ellipticity_sersic": 0.3}', "{}", {"posangle_sersic": None}]
    )
    assert pa[0] == 12.5
    assert e[0] == 0.3
    assert np.isnan(pa[1:]).all()
    assert np.isnan(e[1:]).all()


def test_synthetic_catalogue_carries_gaia_columns_through_the_ingest_reader(tmp_path: Path) -> None:
    truths = make_truths(50, seed=3)
    path = write_catalog(tmp_path / "sky.ecsv", truths, gaia_sersic=True)
    ids, pa, e = load_gaia_columns(path)
    assert ids.tolist() == [t.source_id for t in truths]
    expected = [gaia_sersic_values(t) for t in truths]
    assert pa == pytest.approx([x[0] for x in expected])
    assert e == pytest.approx([x[1] for x in expected])
    assert ((pa >= 0) & (pa < 180)).all()
    assert ((e >= 0) & (e <= 0.95)).all()
    assert read_catalog(path) == truths  # the extra columns change nothing else
    assert (
        "posangle_sersic" not in Table.read(write_catalog(tmp_path / "plain.ecsv", truths)).colnames
    )


def test_gaia_like_angles_are_good_for_elongated_and_meaningless_for_round() -> None:
    truths = make_truths(400, seed=8)
    values = np.array([gaia_sersic_values(t) for t in truths])
    assert values.tolist() == [list(gaia_sersic_values(t)) for t in truths]  # deterministic
    true_pa = np.array([t.position_angle_deg for t in truths])
    q = np.array([t.axis_ratio for t in truths])
    result = gaia_agreement({"truth": true_pa}, values[:, 0], values[:, 1])
    bins = result.methods["truth"].by_ellipticity
    assert result.ellipticity_bins[0] == "[0, 0.1)"
    assert bins[-1].median_deg < 3.0 < bins[0].median_deg
    assert sum(b.n for b in bins) == 400
    assert (q <= 1).all()


def test_a_missing_gaia_column_is_an_error_naming_it(tmp_path: Path) -> None:
    path = write_catalog(tmp_path / "sky.ecsv", make_truths(3, seed=1))
    with pytest.raises(Exception, match="posangle_sersic"):
        load_gaia_columns(path)
