"""The cutout client without a network: request building, FITS parsing and classification.

FITS answers are built here with astropy in the layout the real service writes
(``legacysurvey/imagine``, ``map/views.py``, ``MapLayer.write_cutout``): a float32 cube
``(nbands, H, W)``, ``BANDS``/``BANDn`` cards, and a 2-D TAN WCS in a 3-D file.
"""

from __future__ import annotations

import email.utils
import gzip
import io
import threading
from collections.abc import Iterable
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import requests
from astropy.io import fits
from requests.structures import CaseInsensitiveDict

from galpipe.survey.cutout import (
    FITS_BLOCK_BYTES,
    CutoutFormatError,
    band_coverage,
    parse_cutout,
)
from galpipe.survey.legacysurvey import (
    MAX_RETRY_AFTER_S,
    CutoutRequest,
    LegacySurveyClient,
    NoCoverage,
    Permanent,
    Retryable,
    Success,
    classify_response,
    make_session,
    parse_retry_after,
    status_class,
)

RA, DEC = 150.1163213, 2.2058456
NOW = 1_800_000_000.0


def make_cutout_fits(
    ra: float = RA,
    dec: float = DEC,
    *,
    bands: str = "griz",
    size: int = 40,
    pixscale: float = 0.262,
    blank: Iterable[str] = (),
    header_bands: str | None = None,
    shape: tuple[int, ...] | None = None,
    dtype: str = "float32",
    seed: int = 1,
) -> bytes:
    """A cutout FITS file in the service's layout; ``blank`` bands are all-zero planes."""
    rng = np.random.default_rng(seed)
    nbands = len(bands)
    shape = shape if shape is not None else (nbands, size, size)
    data = rng.normal(0.0, 0.01, size=shape).astype(dtype)
    if data.ndim == 3:
        for i, band in enumerate(bands):
            if band in blank:
                data[i] = 0.0
    header = fits.Header()
    header["SURVEY"] = "LegacySurvey"
    header["VERSION"] = "DR10"
    header["IMAGETYP"] = "IMAGE"
    declared = header_bands if header_bands is not None else bands
    header["BANDS"] = declared
    for i, band in enumerate(declared):
        header[f"BAND{i}"] = band
    height, width = shape[-2], shape[-1]
    header["CTYPE1"] = "RA---TAN"
    header["CTYPE2"] = "DEC--TAN"
    header["CRVAL1"] = ra
    header["CRVAL2"] = dec
    header["CRPIX1"] = (width + 1) / 2
    header["CRPIX2"] = (height + 1) / 2
    header["CD1_1"] = -pixscale / 3600
    header["CD1_2"] = 0.0
    header["CD2_1"] = 0.0
    header["CD2_2"] = pixscale / 3600
    header["IMAGEW"] = width
    header["IMAGEH"] = height
    out = io.BytesIO()
    fits.PrimaryHDU(data=data, header=header).writeto(out)
    return out.getvalue()


def classify(body: bytes, status: int = 200, headers: dict[str, str] | None = None):
    return classify_response(
        CutoutRequest(),
        RA,
        DEC,
        status,
        CaseInsensitiveDict(headers or {}),
        body,
        now=NOW,
    )


# ---------------------------------------------------------------------------------------------
# Request building


def test_default_request_always_names_the_layer_and_the_paper_settings() -> None:
    url = urlsplit(CutoutRequest().full_url(RA, DEC))
    query = parse_qs(url.query, strict_parsing=True)
    assert (url.scheme, url.netloc, url.path) == (
        "https",
        "www.legacysurvey.org",
        "/viewer/fits-cutout",
    )
    assert query == {
        "ra": [repr(RA)],
        "dec": [repr(DEC)],
        "layer": ["ls-dr10"],
        "pixscale": ["0.262"],
        "bands": ["griz"],
        "size": ["40"],
    }


def test_request_settings_are_configurable_and_values_are_encoded() -> None:
    request = CutoutRequest(
        base_url="http://127.0.0.1:8080/sky/",
        layer="mzls+bass-dr6",
        bands="gr",
        size=64,
        pixscale=0.5,
    )
    assert request.url == "http://127.0.0.1:8080/sky/viewer/fits-cutout"
    full = request.full_url(0.0, -89.5)
    assert "layer=mzls%2Bbass-dr6" in full  # a literal '+' would read back as a space
    query = parse_qs(urlsplit(full).query)
    assert query["layer"] == ["mzls+bass-dr6"]
    assert query["bands"] == ["gr"]
    assert query["size"] == ["64"]
    assert query["pixscale"] == ["0.5"]
    assert query["dec"] == ["-89.5"]


def test_coordinates_keep_full_float_precision() -> None:
    ra = 359.99999999999994
    params = CutoutRequest().params(ra, -0.1)
    assert float(params["ra"]) == ra
    assert params["dec"] == "-0.1"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("base_url", "ftp://example.org"),
        ("base_url", "www.legacysurvey.org"),
        ("base_url", "https://example.org/?layer=x"),
        ("layer", ""),
        ("layer", "ls dr10"),
        ("bands", ""),
        ("bands", "gg"),
        ("bands", "g,r"),
        ("size", 0),
        ("size", 3001),
        ("size", 40.0),
        ("pixscale", 0.0),
        ("pixscale", float("nan")),
    ],
)
def test_invalid_request_settings_are_refused_with_the_field_named(
    field: str, value: object
) -> None:
    with pytest.raises(ValueError, match=field):
        CutoutRequest(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ra", "dec"), [(-0.1, 0.0), (360.5, 0.0), (10.0, 90.5), (float("nan"), 0.0)]
)
def test_invalid_position_is_permanent_and_sends_nothing(ra: float, dec: float) -> None:
    def no_session() -> requests.Session:
        raise AssertionError("a request was attempted")

    client = LegacySurveyClient(session_factory=no_session)
    result = client.fetch(ra, dec)
    assert isinstance(result, Permanent)
    assert result.kind == "invalid_position"
    assert "nothing sent" in result.reason


# ---------------------------------------------------------------------------------------------
# Parsing FITS in the service's layout


def test_cube_with_band_cards_and_2d_wcs_in_a_3d_file_parses() -> None:
    body = make_cutout_fits()
    cutout = parse_cutout(body, bands="griz", size=40, center=(RA, DEC), pixscale=0.262)
    assert cutout.data.dtype == np.float32
    assert cutout.data.shape == (4, 40, 40)
    assert cutout.bands == ("g", "r", "i", "z")
    assert cutout.header["NAXIS"] == 3
    assert cutout.wcs.naxis == 2
    assert cutout.missing_bands == ()
    # The centre of the 40 x 40 image (0-based pixel 19.5) is the requested position.
    ra, dec = cutout.wcs.pixel_to_world_values(19.5, 19.5)
    assert ra == pytest.approx(RA, abs=1e-9)
    assert dec == pytest.approx(DEC, abs=1e-9)
    # North up, east left: +x goes west (RA decreases), +y goes north.
    ra_x, _ = cutout.wcs.pixel_to_world_values(20.5, 19.5)
    _, dec_y = cutout.wcs.pixel_to_world_values(19.5, 20.5)
    assert ra_x < RA
    assert dec_y > DEC


def test_blank_i_plane_is_success_with_i_missing() -> None:
    body = make_cutout_fits(blank="i")
    result = classify(body)
    assert isinstance(result, Success)
    assert result.missing_bands == ("i",)
    assert result.cutout.covered_bands == ("g", "r", "z")
    assert result.cutout.coverage.tolist() == [True, True, False, True]
    assert result.raw_bytes == body


def test_every_band_blank_is_no_coverage() -> None:
    result = classify(make_cutout_fits(blank="griz"))
    assert isinstance(result, NoCoverage)
    assert "every band" in result.reason
    assert "'griz'" in result.reason


def test_coverage_ignores_non_finite_pixels() -> None:
    data = np.zeros((3, 4, 4), np.float32)
    data[0, 1, 1] = np.nan
    data[1, 2, 2] = np.inf
    data[2, 0, 0] = -0.003
    assert band_coverage(data).tolist() == [False, False, True]


def test_single_band_2d_image_is_read_as_a_one_band_cube() -> None:
    body = make_cutout_fits(bands="r", shape=(40, 40))
    cutout = parse_cutout(body, bands="r", size=40)
    assert cutout.data.shape == (1, 40, 40)
    assert cutout.bands == ("r",)


def test_float64_cube_is_accepted_as_float32() -> None:
    cutout = parse_cutout(make_cutout_fits(dtype="float64"), bands="griz", size=40)
    assert cutout.data.dtype == np.float32


# ---------------------------------------------------------------------------------------------
# Malformed answers


def test_unknown_layer_text_body_is_permanent_configuration_error() -> None:
    result = classify(b"no such layer")
    assert isinstance(result, Permanent)
    assert result.kind == "unknown_layer"
    assert "'ls-dr10'" in result.reason


def test_other_text_body_with_200_is_retryable_not_fits_and_permanent_when_exhausted() -> None:
    result = classify(b"<html><body>Down for NERSC maintenance</body></html>")
    assert isinstance(result, Retryable)
    assert result.kind == "not_fits"
    assert "HTTP 200" in result.reason
    assert "Down for NERSC" in result.reason
    final = result.when_exhausted()
    assert isinstance(final, Permanent)
    assert final.kind == "not_fits"


def test_gzip_body_without_content_encoding_is_named() -> None:
    result = classify(gzip.compress(make_cutout_fits()))
    assert isinstance(result, Retryable)
    assert result.kind == "not_fits"
    assert "gzip" in result.reason


def test_binary_garbage_is_not_fits() -> None:
    result = classify(bytes(range(256)) * 8)
    assert isinstance(result, Retryable)
    assert result.kind == "not_fits"
    assert "binary" in result.reason


def test_empty_body_is_retryable_truncated() -> None:
    result = classify(b"")
    assert isinstance(result, Retryable)
    assert result.kind == "truncated"
    assert "empty body" in result.reason


@pytest.mark.parametrize(
    "cut",
    [
        FITS_BLOCK_BYTES // 2,  # inside the header
        FITS_BLOCK_BYTES * 2 + 100,  # header complete, data short
        -1000,  # data short by a little
    ],
)
def test_truncated_fits_is_retryable_with_the_byte_counts(cut: int) -> None:
    body = make_cutout_fits()
    result = classify(body[:cut])
    assert isinstance(result, Retryable)
    assert result.kind == "truncated"
    assert "truncated" in result.reason
    assert str(len(body[:cut])) in result.reason


# ---------------------------------------------------------------------------------------------
# The inverse variance (invvar)


def _with_invvar(body: bytes, invvar: np.ndarray | None = None) -> bytes:
    """``body`` with the service's inverse-variance HDU after it (its header, IMAGETYP changed)."""
    with fits.open(io.BytesIO(body)) as hdul:
        header = hdul[0].header.copy()
        shape = hdul[0].data.shape
    header["IMAGETYP"] = "INVVAR"
    for key in ("SIMPLE", "EXTEND"):
        header.remove(key, ignore_missing=True)
    data = np.full(shape, 1e4, np.float32) if invvar is None else invvar
    out = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data=data, header=header)]).writeto(out)
    return body + out.getvalue()[FITS_BLOCK_BYTES:]


def classify_invvar(body: bytes) -> object:
    return classify_response(
        CutoutRequest(invvar=True), RA, DEC, 200, CaseInsensitiveDict(), body, now=NOW
    )


def test_invvar_is_asked_by_the_keys_presence_and_doubles_the_body_allowance() -> None:
    plain, asked = CutoutRequest(), CutoutRequest(invvar=True)
    assert "invvar" not in plain.params(RA, DEC)
    assert asked.params(RA, DEC)["invvar"] == ""
    query = parse_qs(urlsplit(asked.full_url(RA, DEC)).query, keep_blank_values=True)
    assert query["invvar"] == [""]
    assert asked.max_body_bytes == 2 * plain.max_body_bytes


def test_an_answer_with_the_inverse_variance_is_a_success_keeping_every_byte() -> None:
    body = _with_invvar(make_cutout_fits())
    result = classify_invvar(body)
    assert isinstance(result, Success)
    assert result.raw_bytes == body


def test_an_answer_without_the_asked_inverse_variance_is_retried_then_permanent() -> None:
    body = make_cutout_fits()
    assert isinstance(classify(body), Success)  # not asked: nothing is missing
    result = classify_invvar(body)
    assert isinstance(result, Retryable)
    assert result.kind == "truncated"
    assert "IMAGETYP = 'INVVAR'" in result.reason
    final = result.when_exhausted()
    assert isinstance(final, Permanent)
    assert "native pixel scale" in final.reason
    assert "GALPIPE_CUTOUT_INVVAR" in final.reason


def test_an_inverse_variance_cut_short_is_retryable_truncated() -> None:
    body = _with_invvar(make_cutout_fits())
    result = classify_invvar(body[: -FITS_BLOCK_BYTES * 3])
    assert isinstance(result, Retryable)
    assert result.kind == "truncated"
    assert "ends at byte" in result.reason


def test_a_negative_inverse_variance_is_permanent_bad_invvar() -> None:
    invvar = np.full((4, 40, 40), 1e4, np.float32)
    invvar[3, 0, 0] = -5.0
    result = classify_invvar(_with_invvar(make_cutout_fits(), invvar))
    assert isinstance(result, Permanent)
    assert result.kind == "bad_invvar"
    assert "band 'z', row 0, column 0" in result.reason


def test_missing_final_padding_is_tolerated() -> None:
    body = make_cutout_fits(size=41)
    header_bytes = (body.index(b"END" + b" " * 77) // FITS_BLOCK_BYTES + 1) * FITS_BLOCK_BYTES
    data_end = header_bytes + 4 * 4 * 41 * 41
    assert data_end < len(body)  # 26,896 data bytes are not a whole number of blocks
    result = classify_response(
        CutoutRequest(size=41), RA, DEC, 200, CaseInsensitiveDict(), body[:data_end], now=NOW
    )
    assert isinstance(result, Success)
    assert result.cutout.data.shape == (4, 41, 41)


@pytest.mark.parametrize(
    ("kwargs", "kind", "words"),
    [
        ({"shape": (4, 40, 39)}, "wrong_shape", "(4, 40, 39)"),
        ({"shape": (40, 40)}, "wrong_shape", "(40, 40)"),
        ({"bands": "grz"}, "wrong_shape", "(3, 40, 40)"),
        ({"header_bands": "grzi"}, "wrong_bands", "BANDS = 'grzi'"),
        ({"dtype": "int32"}, "wrong_type", "BITPIX = 32"),
        ({"ra": RA + 1.0}, "wrong_position", "arcsec"),
    ],
)
def test_wrong_cube_is_permanent_with_a_clear_reason(kwargs: dict, kind: str, words: str) -> None:
    result = classify(make_cutout_fits(**kwargs))
    assert isinstance(result, Permanent)
    assert result.kind == kind
    assert words in result.reason
    assert result.reason.startswith("HTTP 200 but ")


def test_band_card_mismatch_names_the_card() -> None:
    body = make_cutout_fits()
    body = body.replace(b"BAND2   = 'i", b"BAND2   = 'y", 1)
    with pytest.raises(CutoutFormatError, match="BAND2 = 'y'") as info:
        parse_cutout(body, bands="griz", size=40)
    assert info.value.problem == "wrong_bands"


def test_non_tan_wcs_is_refused() -> None:
    body = (
        make_cutout_fits()
        .replace(b"'RA---TAN'", b"'RA---SIN'")
        .replace(b"'DEC--TAN'", b"'DEC--SIN'")
    )
    with pytest.raises(CutoutFormatError, match="CTYPE1") as info:
        parse_cutout(body, bands="griz", size=40)
    assert info.value.problem == "bad_wcs"


def test_missing_reference_pixel_is_refused_not_defaulted() -> None:
    header_card = next(
        body_card
        for body_card in (make_cutout_fits()[i : i + 80] for i in range(0, 2880 * 2, 80))
        if body_card.startswith(b"CRPIX1")
    )
    body = make_cutout_fits().replace(header_card, b"COMMENT".ljust(80), 1)
    with pytest.raises(CutoutFormatError) as info:
        parse_cutout(body, bands="griz", size=40)
    assert info.value.problem == "bad_wcs"


def test_fits_checksums_are_verified_when_present() -> None:
    data = np.random.default_rng(2).normal(0, 0.01, (4, 40, 40)).astype(np.float32)
    header = fits.Header.fromstring(make_cutout_fits()[:2880])
    out = io.BytesIO()
    fits.PrimaryHDU(data=data, header=header).writeto(out, checksum=True)
    good = out.getvalue()
    assert parse_cutout(good, bands="griz", size=40).data.shape == (4, 40, 40)
    flipped = bytearray(good)
    flipped[2880 * 2 + 100] ^= 0xFF
    with pytest.raises(CutoutFormatError) as info:
        parse_cutout(bytes(flipped), bands="griz", size=40)
    assert info.value.problem == "corrupt"


def test_the_wcs_object_is_built_only_when_asked_for() -> None:
    cutout = parse_cutout(make_cutout_fits(), bands="griz", size=40)
    assert "wcs" not in cutout.__dict__  # the fetch path never pays for it
    assert cutout.wcs.naxis == 2
    assert cutout.wcs.wcs.ctype[0] == "RA---TAN"


# ---------------------------------------------------------------------------------------------
# HTTP statuses


def test_429_honours_retry_after_seconds() -> None:
    result = classify(b"slow down", 429, {"Retry-After": "7"})
    assert isinstance(result, Retryable)
    assert (result.kind, result.retry_after_s) == ("throttled", 7.0)
    assert "HTTP 429" in result.reason


def test_429_honours_retry_after_http_date() -> None:
    when = email.utils.formatdate(NOW + 90, usegmt=True)
    result = classify(b"", 429, {"Retry-After": when})
    assert isinstance(result, Retryable)
    assert result.retry_after_s == pytest.approx(90.0)


def test_503_is_retryable_and_keeps_retry_after() -> None:
    result = classify(b"<h1>Service Unavailable</h1>", 503, {"Retry-After": "30"})
    assert isinstance(result, Retryable)
    assert (result.kind, result.retry_after_s) == ("server_error", 30.0)
    assert "HTTP 503 Service Unavailable" in result.reason


def test_500_is_retryable_then_no_coverage_when_it_persists() -> None:
    result = classify(b"<h1>Server Error (500)</h1>", 500)
    assert isinstance(result, Retryable)
    assert result.kind == "http_500"
    assert result.retry_after_s is None
    final = result.when_exhausted()
    assert isinstance(final, NoCoverage)
    assert "HTTP 500" in final.reason


@pytest.mark.parametrize("status", [502, 504, 408])
def test_other_server_errors_are_retryable_then_permanent(status: int) -> None:
    result = classify(b"", status)
    assert isinstance(result, Retryable)
    assert result.kind == "server_error"
    final = result.when_exhausted()
    assert isinstance(final, Permanent)
    assert final.kind == "retries_exhausted"
    assert f"HTTP {status}" in final.reason


@pytest.mark.parametrize("status", [400, 403, 404, 410])
def test_other_client_errors_are_permanent(status: int) -> None:
    result = classify(b"Not Found", status)
    assert isinstance(result, Permanent)
    assert result.kind == "http_4xx"
    assert f"HTTP {status}" in result.reason


def test_unexpected_final_status_is_permanent() -> None:
    result = classify(b"", 304)
    assert isinstance(result, Permanent)
    assert result.kind == "unexpected_status"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("120", 120.0),
        ("1.5", 1.5),
        ("-3", None),
        ("soon", None),
        ("nan", None),
        ("9999999", MAX_RETRY_AFTER_S),
        (email.utils.formatdate(NOW - 60, usegmt=True), 0.0),
        (email.utils.formatdate(NOW + 3.0, usegmt=True), 3.0),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(
    ("status", "label"), [(200, "2xx"), (301, "3xx"), (404, "4xx"), (429, "429"), (503, "5xx")]
)
def test_status_class(status: int, label: str) -> None:
    assert status_class(status) == label


# ---------------------------------------------------------------------------------------------
# Sessions


def test_each_thread_gets_its_own_session_and_keeps_it() -> None:
    made: list[requests.Session] = []

    def factory() -> requests.Session:
        session = requests.Session()
        made.append(session)
        return session

    client = LegacySurveyClient(session_factory=factory)
    seen: dict[str, tuple[int, int]] = {}

    def use(name: str) -> None:
        seen[name] = (id(client.session()), id(client.session()))

    threads = [threading.Thread(target=use, args=(f"t{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen["t0"][0] == seen["t0"][1]
    assert seen["t1"][0] == seen["t1"][1]
    assert seen["t0"][0] != seen["t1"][0]
    assert len(made) == 2
    client.close()


def test_default_session_retries_only_failed_connects() -> None:
    session = make_session()
    retry = session.get_adapter("https://www.legacysurvey.org").max_retries
    assert (retry.total, retry.connect, retry.read, retry.status, retry.other) == (1, 1, 0, 0, 0)
    assert not retry.status_forcelist
    assert session.headers["Accept-Encoding"] == "identity"
    none = make_session(connect_retries=0).get_adapter("http://x").max_retries
    assert (none.total, none.connect) == (0, 0)


def test_timeouts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="read_timeout"):
        LegacySurveyClient(read_timeout=0)


def test_checksum_cards_that_do_not_match_are_retryable_corrupt() -> None:
    hdul = fits.open(io.BytesIO(make_cutout_fits()))
    out = io.BytesIO()
    hdul.writeto(out, checksum=True)
    good = out.getvalue()
    assert isinstance(classify(good), Success)
    flip = len(good) - 5000
    bad = good[:flip] + bytes([good[flip] ^ 0x40]) + good[flip + 1 :]
    result = classify(bad)
    assert isinstance(result, Retryable)
    assert result.kind == "corrupt"
    assert "DATASUM" in result.reason
