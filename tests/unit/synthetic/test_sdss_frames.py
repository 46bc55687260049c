"""Synthetic SDSS frames: the layout of fields, the frame paths, and frames whose error image
describes their noise."""

from __future__ import annotations

import numpy as np
import pytest

from galpipe.survey.sdss import frame_url, parse_frame
from galpipe.synthetic.sdss_frames import (
    FRAME_COLS,
    FRAME_ROWS,
    FRAMES_PREFIX,
    FrameId,
    SyntheticFrames,
    field_centre,
    field_of,
    parse_frame_path,
)
from galpipe.synthetic.truth import truth_for

pytest.importorskip("galsim", reason="the synthetic frames render with GalSim")


@pytest.mark.parametrize(("ra", "dec"), [(150.0, 2.0), (0.01, -30.5), (359.99, 60.0)])
def test_a_field_holds_its_centre_and_its_centre_names_the_field(ra: float, dec: float) -> None:
    run, camcol, field = field_of(ra, dec)
    assert 1 <= camcol <= 6
    assert run >= 0
    assert field >= 0
    ra_c, dec_c = field_centre(run, camcol, field)
    assert field_of(ra_c, dec_c) == (run, camcol, field)
    # The position is within the box: at most half a frame from the centre.
    assert abs(dec - dec_c) * 3600 <= FRAME_ROWS * 0.396 / 2 + 1e-6
    east = ((ra - ra_c + 180) % 360 - 180) * np.cos(np.radians(dec_c)) * 3600
    assert abs(east) <= FRAME_COLS * 0.396 / 2 + 1e-6


def test_frame_paths_are_the_clients_urls() -> None:
    url = frame_url(5095, 2, 887, "r", base_url="http://127.0.0.1:1/sas")
    path = url.removeprefix("http://127.0.0.1:1/sas")
    assert path.startswith(FRAMES_PREFIX.removeprefix("/sas"))
    frame = parse_frame_path("/sas" + path)
    assert frame == FrameId("301", 5095, 2, 887, "r")
    assert frame.name == "5095-2-887-r"
    assert parse_frame_path("/sas" + path.replace("005095", "005096")) is None
    assert parse_frame_path("/viewer/fits-cutout") is None


def test_an_empty_frames_noise_is_what_its_error_image_says() -> None:
    run, camcol, field = field_of(150.0, 2.0)
    frames = SyntheticFrames([])
    for band in "gz":
        body = frames.frame_bytes(FrameId("301", run, camcol, field, band))
        assert body is not None
        frame = parse_frame(body, run=run, camcol=camcol, field=field, band=band)
        assert frame.shape == (FRAME_ROWS, FRAME_COLS)
        pulls = frame.image / frame.error
        assert abs(float(np.std(pulls)) - 1.0) < 0.02
        # The parser's error includes the pixel's own (noisy) counts, as the data model's recipe
        # does, so a low pixel gets a slightly smaller error: a bias of a few per cent of sigma.
        assert abs(float(np.mean(pulls))) < 0.05


def test_a_frame_draws_the_galaxies_of_its_box_where_its_wcs_puts_them() -> None:
    run, camcol, field = field_of(150.0, 2.0)
    ra_c, dec_c = field_centre(run, camcol, field)
    truth = truth_for(11, ra_c + 0.004, dec_c - 0.003)
    frames = SyntheticFrames([truth])
    assert frames.truths_in(FrameId("301", run, camcol, field, "r")) == [truth]
    assert frames.truths_in(FrameId("301", run, camcol, field + 1, "r")) == []
    body = frames.frame_bytes(FrameId("301", run, camcol, field, "r"))
    assert body is not None
    frame = parse_frame(body, run=run, camcol=camcol, field=field, band="r")
    x, y = (float(v) for v in frame.wcs.world_to_pixel_values(truth.ra, truth.dec))
    row, col = np.unravel_index(np.argmax(frame.image), frame.shape)
    assert abs(row - y) <= 1.5
    assert abs(col - x) <= 1.5


def test_u_frames_other_reruns_and_damaged_frames() -> None:
    run, camcol, field = field_of(150.0, 2.0)
    frames = SyntheticFrames([], damaged={f"{run}-{camcol}-{field}-i"})
    assert frames.frame_bytes(FrameId("301", run, camcol, field, "u")) is None
    assert frames.frame_bytes(FrameId("302", run, camcol, field, "g")) is None
    whole = frames.frame_bytes(FrameId("301", run, camcol, field, "z"))
    cut = frames.frame_bytes(FrameId("301", run, camcol, field, "i"))
    assert whole is not None
    assert cut is not None
    assert cut.startswith(b"BZh")
    assert frames.renders == 2


def test_the_catalogue_can_carry_each_galaxys_field() -> None:
    from galpipe.synthetic.catalog import make_truths, truth_table

    truths = make_truths(5, seed=4)
    table = truth_table(truths, sdss_fields=True)
    for truth, row in zip(truths, table, strict=True):
        assert (row["run"], row["camcol"], row["field"]) == field_of(truth.ra, truth.dec)
        assert row["rerun"] == "301"
    assert "run" not in truth_table(truths).colnames
