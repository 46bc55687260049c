"""The cutout layout is defined once: every default that repeats it agrees with it.

``galpipe.science`` imports nothing else of galpipe and ``db``'s per-band columns are fixed by
its migrations, so those two keep their own copy; these tests are what keeps the copies equal.
"""

from __future__ import annotations

import inspect
from urllib.parse import parse_qs, urlsplit

from galpipe.db import results
from galpipe.science.core import RadonConfig
from galpipe.science.radon import DEFAULT_STAMP_SIZE, RadonOperator
from galpipe.settings import Settings
from galpipe.survey import layout
from galpipe.survey.legacysurvey import CutoutRequest


def test_layout_is_the_legacy_survey_dr10_cutout_of_the_paper() -> None:
    assert layout.LAYER == "ls-dr10"
    assert layout.BANDS == "griz"
    assert layout.PIXSCALE_ARCSEC == 0.262
    assert layout.CUTOUT_SIZE_PX == 40


def test_science_default_stamp_side_is_the_cutout_size() -> None:
    assert DEFAULT_STAMP_SIZE == layout.CUTOUT_SIZE_PX
    assert RadonConfig().size == layout.CUTOUT_SIZE_PX
    for constructor in (RadonOperator.build, RadonOperator.load_or_build):
        default = inspect.signature(constructor).parameters["size"].default
        assert default == layout.CUTOUT_SIZE_PX, constructor.__name__


def test_default_request_asks_the_service_for_the_layout() -> None:
    url = CutoutRequest(base_url="http://127.0.0.1:8080").full_url(150.0, 2.0)
    query = {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}
    assert query["layer"] == layout.LAYER
    assert query["bands"] == layout.BANDS
    assert int(query["size"]) == layout.CUTOUT_SIZE_PX
    assert float(query["pixscale"]) == layout.PIXSCALE_ARCSEC


def test_settings_default_to_the_layout() -> None:
    settings = Settings.from_env({})
    assert settings.cutout_layer == layout.LAYER
    assert settings.cutout_bands == layout.BANDS
    assert settings.cutout_size == layout.CUTOUT_SIZE_PX
    assert settings.cutout_pixscale == layout.PIXSCALE_ARCSEC


def test_database_band_columns_are_the_layout_bands() -> None:
    assert tuple(layout.BANDS) == results.BANDS
