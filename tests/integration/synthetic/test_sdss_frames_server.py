"""The synthetic sky's SDSS frames over HTTP, read by the real frame client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from galpipe.survey.legacysurvey import NoCoverage, Permanent, Retryable
from galpipe.survey.sdss import FrameSuccess, SdssFrameClient
from galpipe.synthetic import FaultConfig, SyntheticSky, truth_for
from galpipe.synthetic.sdss_frames import field_centre, field_of

pytest.importorskip("galsim", reason="the synthetic sky renders with GalSim")

RUN, CAMCOL, FIELD = field_of(150.0, 2.0)
NAME = f"{RUN}-{CAMCOL}-{FIELD}"


def client_of(faults: FaultConfig | None = None, **kwargs: object) -> Iterator[SdssFrameClient]:
    truth = truth_for(1, *field_centre(RUN, CAMCOL, FIELD))
    sky = SyntheticSky([truth], faults=faults, rate=0, **kwargs).start()  # type: ignore[arg-type]
    client = SdssFrameClient(f"{sky.url}/sas", read_timeout=5.0)
    try:
        yield client
    finally:
        client.close()
        sky.stop()


@pytest.fixture
def client() -> Iterator[SdssFrameClient]:
    yield from client_of(damaged_frames={f"{NAME}-i"})


def test_frames_are_served_at_the_clients_urls(client: SdssFrameClient) -> None:
    result = client.fetch(RUN, CAMCOL, FIELD, "r")
    assert isinstance(result, FrameSuccess)
    assert result.frame.name == f"{NAME}-r"
    assert result.raw_bytes.startswith(b"BZh")


def test_a_frame_the_sky_lacks_is_no_coverage_naming_it(client: SdssFrameClient) -> None:
    result = client.fetch(RUN, CAMCOL, FIELD, "u")
    assert isinstance(result, NoCoverage)
    assert f"{NAME}-u" in result.reason


def test_a_frame_damaged_on_the_server_is_permanent(client: SdssFrameClient) -> None:
    result = client.fetch(RUN, CAMCOL, FIELD, "i")
    assert isinstance(result, Permanent)
    assert result.kind == "not_fits"
    assert f"SDSS frame {NAME}-i: bzip2 stream truncated" in result.reason
    assert "damaged on the server" in result.reason


@pytest.mark.parametrize(("mode", "outcome"), [("short", Permanent), ("dropped", Retryable)])
def test_a_body_cut_in_transit_is_retried_unless_its_length_was_announced_short(
    mode: str, outcome: type
) -> None:
    faults = FaultConfig(truncated_ratio=1.0, truncate_mode=mode)  # type: ignore[arg-type]
    for client in client_of(faults):
        result = client.fetch(RUN, CAMCOL, FIELD, "g")
        assert isinstance(result, outcome)
        assert isinstance(result, Permanent | Retryable)
        assert "truncated" in result.reason
