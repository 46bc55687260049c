"""Every ``GALPIPE_*`` variable with a wrong value: a ``SettingsError`` naming the variable, or a
value that the processes can build with (enumerated from the Settings class, never listed)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from galpipe.errors import ConfigurationError
from galpipe.settings import Settings, SettingsError
from tests.fuzz.generators import SettingCase, setting_case, setting_fields
from tests.fuzz.oracles import try_setting

FIELDS = setting_fields()
NUMERIC = [(name, env) for name, env, base in FIELDS if base in (int, float)]


def test_every_settings_field_is_enumerated() -> None:
    # The generators read the fields from the class: one added tomorrow is fuzzed too.
    assert {env for _, env, _ in FIELDS} == {
        f.metadata["env"] for f in Settings.__dataclass_fields__.values()
    }
    assert NUMERIC


@pytest.mark.parametrize(("name", "env"), [(n, e) for n, e, _ in FIELDS])
def test_a_blank_value_is_refused_naming_the_variable(name: str, env: str) -> None:
    with pytest.raises(SettingsError, match=env) as caught:
        Settings.from_env({env: "  \t"})
    assert isinstance(caught.value, ConfigurationError)


@pytest.mark.parametrize(("name", "env"), NUMERIC)
@pytest.mark.parametrize("value", ["abc", "nan", "-1", "inf", "1e999", "0x10", "1,5"])
def test_a_number_setting_refuses_what_is_not_one(name: str, env: str, value: str) -> None:
    verdict = try_setting(SettingCase(name, env, value, must_refuse=True))
    assert verdict.handled, verdict.detail


@pytest.mark.parametrize(
    ("env", "value"),
    [
        # Each was accepted before and failed later, outside the ConfigurationError family.
        ("GALPIPE_CUTOUT_CONNECT_TIMEOUT_SECONDS", "1e300"),  # OverflowError in the fetch
        ("GALPIPE_CUTOUT_READ_TIMEOUT_SECONDS", "1e300"),
        ("GALPIPE_RETRY_DELAYS", "30,1e300"),  # PostgreSQL interval out of range
        ("GALPIPE_LEASE_SECONDS", "1e20"),
        ("GALPIPE_CUTOUT_SIZE", "4000"),  # ValueError when the fetch pipeline is built
        ("GALPIPE_CUTOUT_BANDS", "gg"),
        ("GALPIPE_CUTOUT_BANDS", "g r"),
        ("GALPIPE_CUTOUT_LAYER", "ls dr10"),
        ("GALPIPE_CUTOUT_BASE_URL", "http://host/?q=1"),
        ("GALPIPE_DATABASE_URL", " "),  # libpq took it as every default
    ],
)
def test_values_refused_at_start_up_that_used_to_fail_later(env: str, value: str) -> None:
    with pytest.raises(SettingsError, match=env):
        Settings.from_env({env: value})


def test_an_empty_value_means_unset() -> None:
    # Kubernetes renders an unset value as ""; it keeps the default rather than failing.
    name, env, _ = FIELDS[0]
    assert getattr(Settings.from_env({env: ""}), name) == getattr(Settings(), name)


@settings(max_examples=150, deadline=None)
@given(st.randoms(use_true_random=False))
def test_generated_bad_values_are_refused_or_usable(rng: random.Random) -> None:
    case = setting_case(rng)
    verdict = try_setting(case)
    assert verdict.handled, f"{case.env}={case.value!r}: {verdict.detail}"


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(FIELDS),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=60),
)
def test_any_text_is_refused_or_usable(field: tuple[str, str, type], value: str) -> None:
    name, env, _ = field
    verdict = try_setting(SettingCase(name, env, value, must_refuse=False))
    assert verdict.handled, f"{env}={value!r}: {verdict.detail}"
