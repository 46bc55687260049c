"""Settings: every variable parsed, validated, and named in its error."""

from __future__ import annotations

import pytest

from galpipe.settings import Settings, SettingsError, settings_table


def test_defaults_need_no_environment() -> None:
    s = Settings.from_env({})
    assert s.database_url is None
    assert s.radon_batch_size == 256
    assert s.retry_delays == (30.0, 120.0, 600.0)
    assert s.max_retries == 3
    assert s.log_format == "text"


def test_values_are_parsed() -> None:
    s = Settings.from_env(
        {
            "GALPIPE_DATABASE_URL": "postgresql://u:p@db:5432/galpipe",
            "GALPIPE_OBJECT_STORE": "s3://cutouts/dr10",
            "GALPIPE_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
            "GALPIPE_FETCH_BATCH_SIZE": "64",
            "GALPIPE_LEASE_SECONDS": "90.5",
            "GALPIPE_RETRY_DELAYS": "1, 2,3",
            "GALPIPE_FETCH_RATE_LIMIT": "12.5",
            "GALPIPE_METRICS_PORT": "0",
            "GALPIPE_LOG_FORMAT": "JSON",
            "GALPIPE_MAX_RETRIES": "0",
        }
    )
    assert s.object_store == "s3://cutouts/dr10"
    assert s.batch_size("fetch") == 64
    assert s.lease_seconds == 90.5
    assert s.retry_delays == (1.0, 2.0, 3.0)
    assert s.fetch_rate_limit == 12.5
    assert s.metrics_port == 0
    assert s.log_format == "json"
    assert s.max_retries == 0


def test_empty_value_means_default() -> None:
    assert Settings.from_env({"GALPIPE_LEASE_SECONDS": ""}).lease_seconds == 300.0


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("GALPIPE_DATABASE_URL", "postgresql://u@h:notaport/db", "not a TCP port"),
        ("GALPIPE_DATABASE_URL", "mysql://db/galpipe", "not a PostgreSQL connection"),
        ("GALPIPE_OBJECT_STORE", "gs://bucket", "s3://bucket/prefix or file:///"),
        ("GALPIPE_OBJECT_STORE", "s3:///prefix", "needs a bucket"),
        ("GALPIPE_OBJECT_STORE", "file://relative/dir", "absolute path"),
        ("GALPIPE_S3_ENDPOINT_URL", "localhost:9000", "http:// or https://"),
        ("GALPIPE_RADON_BATCH_SIZE", "0", "positive integer"),
        ("GALPIPE_FETCH_BATCH_SIZE", "ten", "positive integer"),
        ("GALPIPE_LEASE_SECONDS", "-5", "positive"),
        ("GALPIPE_LEASE_SECONDS", "inf", "finite"),
        ("GALPIPE_RETRY_DELAYS", "30,soon", "'soon'"),
        ("GALPIPE_RETRY_DELAYS", ",", "comma-separated"),
        ("GALPIPE_MAX_RETRIES", "-1", ">= 0"),
        ("GALPIPE_BREAKER_FAILURE_RATIO", "1.5", "(0, 1]"),
        ("GALPIPE_METRICS_PORT", "70000", "0..65535"),
        ("GALPIPE_LOG_FORMAT", "xml", "text, json"),
        ("GALPIPE_LOG_LEVEL", "loud", "debug"),
        ("GALPIPE_WORKER_ID", "   ", "empty"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({variable: value})
    assert variable in str(err.value)
    assert message in str(err.value)


def test_poll_bounds_are_consistent() -> None:
    with pytest.raises(SettingsError, match="GALPIPE_POLL_MAX_SECONDS"):
        Settings.from_env({"GALPIPE_POLL_MIN_SECONDS": "5", "GALPIPE_POLL_MAX_SECONDS": "1"})


def test_require_names_the_missing_variable() -> None:
    with pytest.raises(SettingsError, match="GALPIPE_DATABASE_URL is not set"):
        Settings.from_env({}).require("database_url")


def test_unknown_pipeline_batch_size() -> None:
    assert Settings.from_env({"GALPIPE_PHOTOZ_BATCH_SIZE": "64"}).batch_size("photoz") == 64
    with pytest.raises(SettingsError, match="spectra"):
        Settings.from_env({}).batch_size("spectra")


def test_owner_defaults_to_host_and_pid() -> None:
    import os

    assert Settings.from_env({}).owner.endswith(f":{os.getpid()}")
    assert Settings.from_env({"GALPIPE_WORKER_ID": "fetch-7d9f"}).owner == "fetch-7d9f"


def test_readme_table_lists_every_variable() -> None:
    from dataclasses import fields
    from pathlib import Path

    table = settings_table()
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for f in fields(Settings):
        assert f"`{f.metadata['env']}`" in table
    assert table in readme, "README's configuration table is stale: paste settings_table()"


def test_cutout_packing_is_off_by_default_and_its_order_is_checked() -> None:
    assert (Settings().cutout_packing, Settings().cutout_pack_order) == ("none", 7)
    s = Settings.from_env({"GALPIPE_CUTOUT_PACKING": "HEALPix", "GALPIPE_CUTOUT_PACK_ORDER": "5"})
    assert (s.cutout_packing, s.cutout_pack_order) == ("healpix", 5)
    with pytest.raises(SettingsError, match=r"GALPIPE_CUTOUT_PACK_ORDER='30'.*0\.\.29"):
        Settings.from_env({"GALPIPE_CUTOUT_PACK_ORDER": "30"})
    with pytest.raises(SettingsError, match="GALPIPE_CUTOUT_PACKING='tar'"):
        Settings.from_env({"GALPIPE_CUTOUT_PACKING": "tar"})
