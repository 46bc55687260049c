"""The synthetic sky over real HTTP on 127.0.0.1: cutouts, validation, faults, limits, log, CLI."""

from __future__ import annotations

import argparse
import io
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

pytest.importorskip("galsim")

from galpipe.runtime.service import serve
from galpipe.synthetic.catalog import make_truths, read_catalog
from galpipe.synthetic.cli import register
from galpipe.synthetic.faults import BlankRegion, FaultConfig, max_in_window
from galpipe.synthetic.fitsfile import cutout_fits_bytes
from galpipe.synthetic.server import SkyProcess, SyntheticSky
from galpipe.synthetic.truth import (
    SkyConfig,
    TruthGalaxy,
    source_id_for_position,
)

TIMEOUT = (2.0, 5.0)
TRUTHS = make_truths(40, seed=11, ra_range=(150, 151), dec_range=(1, 2))


def cutout_params(truth: TruthGalaxy | None = None, **overrides: object) -> dict[str, object]:
    ra, dec = (truth.ra, truth.dec) if truth is not None else (150.5, 1.5)
    params: dict[str, object] = {
        "ra": repr(ra),
        "dec": repr(dec),
        "layer": "ls-dr10",
        "pixscale": 0.262,
        "bands": "griz",
        "size": 40,
    }
    params.update(overrides)
    return params


def get(sky: SyntheticSky, **params: object) -> requests.Response:
    return requests.get(f"{sky.url}/viewer/fits-cutout", params=params, timeout=TIMEOUT)


@pytest.fixture
def sky_factory() -> Iterator:
    started: list[SyntheticSky] = []

    def start(**kwargs: object) -> SyntheticSky:
        kwargs.setdefault("rate", 0.0)
        sky = SyntheticSky(TRUTHS, **kwargs).start()  # type: ignore[arg-type]
        started.append(sky)
        return sky

    yield start
    for sky in started:
        sky.stop()


def open_fits(body: bytes) -> fits.PrimaryHDU:
    hdul = fits.open(io.BytesIO(body))
    hdu = hdul[0]
    hdu.data  # noqa: B018 -- load the data before the buffer goes
    return hdu


# -- answers -----------------------------------------------------------------------------------


def test_catalogued_galaxy_served_as_the_contract_fits(sky_factory) -> None:
    sky = sky_factory()
    truth = TRUTHS[3]
    response = get(sky, **cutout_params(truth))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/fits"
    assert response.content == cutout_fits_bytes(truth)
    hdu = open_fits(response.content)
    assert hdu.data.shape == (4, 40, 40)
    assert hdu.header["SURVEY"] == "galpipe-synthetic"
    assert hdu.header["SRCID"] == truth.source_id
    wcs = WCS(hdu.header, naxis=2)
    assert wcs.wcs.crval[0] == pytest.approx(truth.ra)
    assert wcs.wcs.crval[1] == pytest.approx(truth.dec)
    # Asking again (a retry) gets the same bytes, from the cache.
    assert get(sky, **cutout_params(truth)).content == response.content
    assert sky.cache_hits == 1


def test_invvar_appends_the_inverse_variance_of_the_sky_noise_as_the_viewer_does(
    sky_factory,
) -> None:
    sky = sky_factory()
    truth = TRUTHS[5]
    plain = get(sky, **cutout_params(truth)).content
    response = get(sky, **cutout_params(truth), invvar="")
    assert response.status_code == 200
    assert response.content[: len(plain)] == plain  # the image HDU is unchanged
    with fits.open(io.BytesIO(response.content)) as hdul:
        assert len(hdul) == 2
        image, invvar = hdul
        assert (image.header["IMAGETYP"], invvar.header["IMAGETYP"]) == ("IMAGE", "INVVAR")
        assert invvar.header["BANDS"] == "griz"
        assert invvar.data.shape == (4, 40, 40)
        for index, band in enumerate("griz"):
            np.testing.assert_allclose(invvar.data[index], truth.sky_sigma[band] ** -2, rtol=1e-6)
    # North of the split the i band has no exposure: inverse variance 0.
    north = get(sky, **cutout_params(ra=180.0, dec=40.0), invvar="").content
    with fits.open(io.BytesIO(north)) as hdul:
        assert not hdul[1].data[2].any()
        assert hdul[1].data[[0, 1, 3]].all()


def test_nearby_position_draws_the_catalogued_galaxy_off_centre(sky_factory) -> None:
    sky = sky_factory()
    truth = TRUTHS[5]
    response = get(sky, **cutout_params(truth, ra=repr(truth.ra + 0.5 / 3600)))
    hdu = open_fits(response.content)
    assert hdu.header["SRCID"] == truth.source_id
    assert hdu.header["CRVAL1"] == pytest.approx(truth.ra + 0.5 / 3600)


def test_uncatalogued_position_is_seeded_by_its_rounded_coordinates(sky_factory) -> None:
    sky = sky_factory()
    first = get(sky, **cutout_params(ra=200.0, dec=-10.0))
    second = get(sky, **cutout_params(ra=200.0, dec=-10.0))
    assert first.status_code == 200
    assert first.content == second.content
    assert open_fits(first.content).header["SRCID"] == source_id_for_position(200.0, -10.0)


def test_requested_bands_size_and_pixscale(sky_factory) -> None:
    sky = sky_factory()
    hdu = open_fits(get(sky, **cutout_params(TRUTHS[0], bands="rz", size=24, pixscale=0.5)).content)
    assert hdu.data.shape == (2, 24, 24)
    assert hdu.header["BANDS"] == "rz"
    assert hdu.header["CD2_2"] == pytest.approx(0.5 / 3600)


def test_unknown_layer_is_plain_text_200(sky_factory) -> None:
    sky = sky_factory()
    response = get(sky, **cutout_params(layer="ls-dr99"))
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.text == "no such layer"
    assert not response.content.startswith(b"SIMPLE")


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"ra": "abc"}, "ra='abc'"),
        ({"dec": "95"}, "dec='95'"),
        ({"size": "4.5"}, "size='4.5'"),
        ({"size": "0"}, "size=0"),
        ({"pixscale": "nan"}, "pixscale"),
        ({"bands": "gy"}, "bands='gy'"),
        ({"ra": None}, "missing parameter ra"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(sky_factory, overrides, fragment) -> None:
    sky = sky_factory()
    params = {k: v for k, v in {**cutout_params(), **overrides}.items() if v is not None}
    response = get(sky, **params)
    assert response.status_code == 400
    assert fragment in response.text


def test_unknown_path_is_404(sky_factory) -> None:
    sky = sky_factory()
    assert requests.get(f"{sky.url}/viewer/jpeg-cutout", timeout=TIMEOUT).status_code == 404


# -- coverage ----------------------------------------------------------------------------------


def test_north_of_the_boundary_the_i_plane_is_zero(sky_factory) -> None:
    sky = sky_factory()
    north = open_fits(get(sky, **cutout_params(ra=180.0, dec=40.0)).content).data
    assert np.all(north[2] == 0.0)
    assert all(np.any(north[b] != 0.0) for b in (0, 1, 3))
    south = open_fits(get(sky, **cutout_params(ra=180.0, dec=10.0)).content).data
    assert np.any(south[2] != 0.0)
    # The older default layer (DR9) has no i band anywhere.
    params = cutout_params(ra=180.0, dec=10.0)
    del params["layer"]
    assert np.all(open_fits(get(sky, **params).content).data[2] == 0.0)


def test_blank_regions_answer_500_or_zero_planes(sky_factory) -> None:
    faults = FaultConfig(
        blank_regions=(BlankRegion(10, 20, -5, 5, "http500"), BlankRegion(30, 40, -5, 5, "zeros"))
    )
    sky = sky_factory(faults=faults)
    assert get(sky, **cutout_params(ra=15.0, dec=0.0)).status_code == 500
    zeros = get(sky, **cutout_params(ra=35.0, dec=0.0))
    assert zeros.status_code == 200
    assert np.all(open_fits(zeros.content).data == 0.0)
    assert get(sky, **cutout_params(ra=25.0, dec=0.0)).status_code == 200


# -- injected faults ---------------------------------------------------------------------------


def test_error_ratio_gives_503s_in_proportion(sky_factory) -> None:
    sky = sky_factory(faults=FaultConfig(error_ratio=0.3, seed=5))
    with requests.Session() as session:
        codes = [
            session.get(
                f"{sky.url}/viewer/fits-cutout", params=cutout_params(TRUTHS[i % 40]), timeout=5
            ).status_code
            for i in range(200)
        ]
    assert set(codes) == {200, 503}
    assert 0.2 < codes.count(503) / 200 < 0.4
    faults = [entry["fault"] for entry in sky.log]
    assert faults.count("error") == codes.count(503)


def test_throttle_ratio_gives_429_with_retry_after(sky_factory) -> None:
    sky = sky_factory(faults=FaultConfig(throttle_ratio=1.0, retry_after_s=3))
    response = get(sky, **cutout_params())
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"


def test_timeout_by_sleeping_beyond_the_client_timeout(sky_factory) -> None:
    sky = sky_factory(faults=FaultConfig(timeout_ratio=1.0, timeout_sleep_s=3.0))
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{sky.url}/viewer/fits-cutout", params=cutout_params(), timeout=(1, 0.3))
    assert time.monotonic() - started < 2.0
    assert sky.log[-1]["status"] == 0
    assert sky.log[-1]["fault"] == "timeout"


def test_timeout_by_closing_without_an_answer(sky_factory) -> None:
    sky = sky_factory(faults=FaultConfig(timeout_ratio=1.0, timeout_mode="close"))
    with pytest.raises(requests.exceptions.ConnectionError):
        get(sky, **cutout_params())


def test_truncated_body_dropped_mid_transfer(sky_factory) -> None:
    sky = sky_factory(faults=FaultConfig(truncated_ratio=1.0))
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
        get(sky, **cutout_params(TRUTHS[0]))


def test_truncated_body_with_a_short_length(sky_factory) -> None:
    sky = sky_factory(faults=FaultConfig(truncated_ratio=1.0, truncate_mode="short"))
    response = get(sky, **cutout_params(TRUTHS[0]))
    full = cutout_fits_bytes(TRUTHS[0])
    assert response.status_code == 200
    assert response.content == full[: len(full) // 2]


def test_corrupt_body_is_not_fits(sky_factory) -> None:
    sky = sky_factory(faults=FaultConfig(corrupt_ratio=1.0))
    response = get(sky, **cutout_params(TRUTHS[0]))
    assert response.status_code == 200
    assert len(response.content) == len(cutout_fits_bytes(TRUTHS[0]))
    assert not response.content.startswith(b"SIMPLE")
    with pytest.raises(OSError, match="SIMPLE"):
        fits.open(io.BytesIO(response.content))


def test_latency_fixed_plus_jitter(sky_factory) -> None:
    sky = sky_factory(faults=FaultConfig(latency_s=0.2, latency_jitter_s=0.1))
    with requests.Session() as session:
        for _ in range(3):
            started = time.monotonic()
            session.get(f"{sky.url}/viewer/fits-cutout", params=cutout_params(), timeout=5)
            assert 0.2 <= time.monotonic() - started < 1.0


# -- outages -----------------------------------------------------------------------------------


def test_configured_outage_window(sky_factory) -> None:
    sky = sky_factory(faults=FaultConfig(outages=((0.0, 0.6),)))
    assert get(sky, **cutout_params()).status_code == 503
    time.sleep(0.7)
    assert get(sky, **cutout_params()).status_code == 200


def test_outage_started_through_the_admin_endpoint(sky_factory) -> None:
    sky = sky_factory()
    assert get(sky, **cutout_params()).status_code == 200
    admin = requests.post(f"{sky.url}/admin/outage", params={"seconds": 0.5}, timeout=TIMEOUT)
    assert admin.status_code == 200
    assert get(sky, **cutout_params()).status_code == 503
    time.sleep(0.6)
    assert get(sky, **cutout_params()).status_code == 200
    bad = requests.post(f"{sky.url}/admin/outage", params={"seconds": "x"}, timeout=TIMEOUT)
    assert bad.status_code == 400


# -- the server's own rate limit and the log ---------------------------------------------------


class ManualClock:
    """A monotonic clock the test moves by hand, so limits do not depend on machine speed."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limit_answers_429_beyond_five_per_second(sky_factory) -> None:
    clock = ManualClock()
    sky = sky_factory(rate=5.0, clock=clock)
    with requests.Session() as session:
        responses = [
            session.get(f"{sky.url}/viewer/fits-cutout", params=cutout_params(), timeout=5)
            for _ in range(12)
        ]
    statuses = [r.status_code for r in responses]
    assert statuses == [200] * 5 + [429] * 7
    assert all(int(r.headers["Retry-After"]) >= 1 for r in responses[5:])
    assert [e["fault"] for e in sky.log[5:]] == ["rate-limit"] * 7
    clock.now += 0.99
    assert get(sky, **cutout_params()).status_code == 429
    clock.now += 0.02
    assert get(sky, **cutout_params()).status_code == 200


def test_rate_limit_lifted_at_runtime(sky_factory) -> None:
    sky = sky_factory(rate=5.0)
    lifted = requests.post(f"{sky.url}/admin/rate", params={"per_second": 0}, timeout=TIMEOUT)
    assert lifted.status_code == 200
    with requests.Session() as session:
        codes = {
            session.get(
                f"{sky.url}/viewer/fits-cutout", params=cutout_params(), timeout=5
            ).status_code
            for _ in range(20)
        }
    assert codes == {200}


def test_request_log_endpoint_and_json_lines_file(sky_factory, tmp_path: Path) -> None:
    log_file = tmp_path / "requests.jsonl"
    sky = sky_factory(rate=2.0, log_path=log_file, clock=ManualClock())
    for _ in range(3):
        get(sky, **cutout_params(TRUTHS[1]))
    get(sky, **cutout_params(layer="nope"))  # refused by the limit before validation
    entries = requests.get(f"{sky.url}/admin/log", timeout=TIMEOUT).json()
    assert [e["status"] for e in entries] == [200, 200, 429, 429]
    assert entries[0]["bytes"] == len(cutout_fits_bytes(TRUTHS[1]))
    assert entries[0]["path"].startswith("/viewer/fits-cutout?")
    assert entries[2]["fault"] == "rate-limit"
    assert entries[0]["time"] <= entries[1]["time"] <= entries[3]["time"]
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert lines == entries
    assert requests.delete(f"{sky.url}/admin/log", timeout=TIMEOUT).status_code == 200
    assert requests.get(f"{sky.url}/admin/log", timeout=TIMEOUT).json() == []


def test_concurrent_clients_never_pass_the_limit(sky_factory) -> None:
    sky = sky_factory(rate=5.0)
    local = threading.local()

    def fetch(_: int) -> int:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        url = f"{sky.url}/viewer/fits-cutout"
        return session.get(url, params=cutout_params(), timeout=5).status_code

    deadline = time.monotonic() + 1.6
    statuses: list[int] = []
    with ThreadPoolExecutor(8) as pool:
        while time.monotonic() < deadline:
            statuses.extend(pool.map(fetch, range(16)))
    admitted = [e["time"] for e in sky.log if e["status"] == 200]
    assert 5 <= len(admitted) <= 10
    assert max_in_window(admitted, 1.0) <= 5
    assert 429 in statuses


# -- pre-rendering and throughput --------------------------------------------------------------


def test_prerendered_catalogue_is_served_from_the_cache(sky_factory) -> None:
    sky = sky_factory()
    assert sky.prerender() == len(TRUTHS)
    local = threading.local()

    def fetch(truth: TruthGalaxy) -> bytes:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        url = f"{sky.url}/viewer/fits-cutout"
        return session.get(url, params=cutout_params(truth), timeout=5).content

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(fetch, TRUTHS * 5))
    elapsed = time.monotonic() - started
    assert sky.renders == 0
    assert sky.cache_hits == 5 * len(TRUTHS)
    assert bodies[: len(TRUTHS)] == [cutout_fits_bytes(t) for t in TRUTHS]
    # Generous floor for a loaded 2-core CI box (about 900/s measured on an idle one).
    assert len(bodies) / elapsed > 100


# -- CLI ---------------------------------------------------------------------------------------


def _sky_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="galpipe")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_catalog_command_writes_a_readable_ecsv(tmp_path: Path, capsys) -> None:
    out = tmp_path / "sky.ecsv"
    args = _sky_parser().parse_args(
        [
            "sky", "catalog", "--n", "25", "--out", str(out), "--seed", "4",
            "--ra-range", "10", "12", "--dec-range", "-1", "1", "--neighbour-fraction", "1",
        ]
    )  # fmt: skip
    args.handler(args, None)
    assert "25" in capsys.readouterr().out
    table = Table.read(out, format="ascii.ecsv")
    assert len(table) == 25
    assert table["ra"].unit == "deg"
    assert table["flux_r"].unit == "nmgy"
    assert table["position_angle"].description.startswith("major-axis position angle")
    assert np.all((table["ra"] >= 10) & (table["ra"] <= 12))
    assert np.all(table["n_neighbours"] >= 1)
    truths = read_catalog(out)
    expected = make_truths(
        25, seed=4, ra_range=(10, 12), dec_range=(-1, 1), config=SkyConfig(neighbour_fraction=1.0)
    )
    assert truths == expected


def test_serve_options_become_a_fault_config() -> None:
    from galpipe.synthetic.cli import fault_config_from_args

    args = _sky_parser().parse_args(
        [
            "sky", "serve", "--port", "0", "--error-ratio", "0.2", "--timeout-ratio", "0.05",
            "--corrupt-ratio", "0.02", "--outage", "30:10", "--blank-region", "1:2:3:4:zeros",
            "--no-north",
        ]
    )  # fmt: skip
    config = fault_config_from_args(args)
    assert config.error_ratio == 0.2
    assert config.outages == ((30.0, 10.0),)
    assert config.blank_regions == (BlankRegion(1, 2, 3, 4, "zeros"),)
    assert config.north_without_i_dec is None
    with pytest.raises(SystemExit):
        _sky_parser().parse_args(["sky", "serve", "--error-ratio", "1.5"])


# -- the `galpipe sky serve` process -----------------------------------------------------------


def _serve_in_thread(process: SkyProcess) -> threading.Thread:
    thread = threading.Thread(target=serve, args=(process,), kwargs={"port": 0}, daemon=True)
    thread.start()
    return thread


def test_sky_process_prerenders_announces_and_serves_until_stopped() -> None:
    lines: list[str] = []
    sky = SyntheticSky(TRUTHS[:3], rate=0.0)
    process = SkyProcess(sky, prerender_workers=1, announce=lines.append)
    assert process.readiness() == (False, "not serving yet")
    thread = _serve_in_thread(process)
    try:
        deadline = time.monotonic() + 30
        while process.readiness() != (True, "ok"):
            assert time.monotonic() < deadline, "the sky never became ready"
            time.sleep(0.02)
        assert lines == [
            "pre-rendered 3 cutouts",
            f"synthetic sky on {sky.url}/viewer/fits-cutout (3 galaxies, unlimited)",
        ]
        assert get(sky, **cutout_params(TRUTHS[0])).status_code == 200
        assert sky.cache_hits == 1
        assert process.liveness() == (True, "ok")
    finally:
        process.request_stop()
        thread.join(10)
    assert not thread.is_alive()
    assert not sky.serving
    assert process.readiness() == (False, "stopping")
    with pytest.raises(requests.ConnectionError):
        get(sky, **cutout_params(TRUTHS[0]))


def test_a_stop_during_the_prerendering_ends_the_run_before_serving() -> None:
    lines: list[str] = []
    sky = SyntheticSky(TRUTHS[:2], rate=0.0)
    process = SkyProcess(sky, prerender_workers=1, announce=lines.append)
    process.request_stop()  # as a SIGTERM while the catalogue renders
    serve(process, port=0)
    assert lines == ["pre-rendered 2 cutouts"]
    assert sky.port == 0  # never bound


def test_sky_process_is_dead_when_its_server_thread_ended_on_its_own() -> None:
    sky = SyntheticSky(TRUTHS[:1], rate=0.0)
    process = SkyProcess(sky, announce=lambda line: None)
    thread = _serve_in_thread(process)
    try:
        deadline = time.monotonic() + 10
        while not sky.serving:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        sky.stop()  # the HTTP server goes away under the running process
        alive, detail = process.liveness()
        assert not alive
        assert "not running" in detail
    finally:
        process.request_stop()
        thread.join(10)


def test_sky_serve_command_exits_zero_on_sigterm() -> None:
    """The real command: it prints its URL, answers, and SIGTERM ends it with status 0."""
    command = [sys.executable, "-m", "galpipe.cli", "sky", "serve", "--port", "0", "--rate", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.match(r"synthetic sky on (http://[^/\s]+)/viewer/fits-cutout", line)
        assert match, line + (process.stderr.read() if process.stderr else "")
        health = requests.get(f"{match.group(1)}/healthz", timeout=TIMEOUT)
        assert (health.status_code, health.text) == (200, "ok\n")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
