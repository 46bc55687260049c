"""One error root: every exception class of galpipe is a GalpipeError of one family."""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil

import pytest

import galpipe
from galpipe.catalog.export import ExportError
from galpipe.catalog.validate import CatalogError
from galpipe.db.embedded import EmbeddedPostgresMissingError
from galpipe.db.migrate import MigrationError
from galpipe.db.ratelimit import RateLimitTimeoutError
from galpipe.demo import DemoError
from galpipe.errors import (
    CommandError,
    ConfigurationError,
    GalpipeError,
    InputError,
    ServiceError,
    StorageError,
    reraise_as,
)
from galpipe.pipelines.stored_cutouts import CutoutDecodeError
from galpipe.settings import SettingsError
from galpipe.storage import (
    ChecksumMismatch,
    InvalidKey,
    InvalidStoreURL,
    ObjectNotFound,
    ObjectStoreError,
)
from galpipe.survey.cutout import CutoutFormatError
from galpipe.synthetic.request import RequestError

FAMILIES = (ConfigurationError, InputError, StorageError, ServiceError, CommandError)

# The science core imports nothing else of galpipe: its errors stay plain ValueErrors.
PURE = "galpipe.science"


def _galpipe_modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(galpipe.__path__, "galpipe.")]
    return [n for n in names if n != PURE and not n.startswith(f"{PURE}.")]


def _exception_classes() -> list[type[BaseException]]:
    found = []
    for name in _galpipe_modules():
        module = importlib.import_module(name)
        found += [
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj)
            and issubclass(obj, BaseException)
            and obj.__module__ == module.__name__
        ]
    return found


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def test_the_walk_finds_the_package_and_leaves_science_out() -> None:
    modules = _galpipe_modules()
    assert {"galpipe.cli", "galpipe.errors", "galpipe.db.migrate", "galpipe.storage"} <= set(
        modules
    )
    assert not [m for m in modules if m.startswith(PURE)]


def test_every_exception_class_of_galpipe_derives_from_the_root() -> None:
    classes = _exception_classes()
    assert len(classes) >= 20, [c.__qualname__ for c in classes]
    rootless = [
        f"{c.__module__}.{c.__qualname__}" for c in classes if not issubclass(c, GalpipeError)
    ]
    assert not rootless, f"not a GalpipeError: {rootless}"


def test_every_exception_class_of_galpipe_is_in_a_family() -> None:
    """The root itself aside, a class outside every family would get no intended exit status."""
    orphans = [
        _name(c)
        for c in _exception_classes()
        if c is not GalpipeError and not issubclass(c, FAMILIES)
    ]
    assert not orphans


def test_families_are_distinct_children_of_the_root() -> None:
    assert all(family.__bases__ == (GalpipeError,) for family in FAMILIES)
    for family in FAMILIES:
        assert [f for f in FAMILIES if issubclass(family, f)] == [family]


@pytest.mark.parametrize(
    ("error", "family", "builtin"),
    [
        (SettingsError, ConfigurationError, ValueError),
        (EmbeddedPostgresMissingError, ConfigurationError, RuntimeError),
        (CatalogError, InputError, ValueError),
        (ExportError, InputError, Exception),
        (RequestError, InputError, ValueError),
        (CutoutFormatError, InputError, ValueError),
        (CutoutDecodeError, InputError, ValueError),
        (ObjectStoreError, StorageError, Exception),
        (InvalidKey, StorageError, ValueError),
        (InvalidStoreURL, StorageError, ValueError),
        (MigrationError, ServiceError, RuntimeError),
        (RateLimitTimeoutError, ServiceError, TimeoutError),
        (DemoError, CommandError, RuntimeError),
    ],
)
def test_each_error_is_in_its_family_and_keeps_its_builtin_base(
    error: type[Exception], family: type[GalpipeError], builtin: type[Exception]
) -> None:
    """Callers that catch the built-in base (``except ValueError``) still catch the error."""
    assert issubclass(error, family)
    assert issubclass(error, builtin)


def test_errors_with_their_own_constructor_still_pickle() -> None:
    """Object-store errors cross process pools; the new base must not break their pickling."""
    for error in (
        ObjectNotFound("a/b.fits", "file:///tmp/store"),
        ChecksumMismatch("a/b.fits", "0" * 64, "1" * 64, "file:///tmp/store/a/b.fits"),
    ):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert str(copy) == str(error)


def test_rate_limit_timeout_keeps_its_message_and_fields() -> None:
    error = RateLimitTimeoutError("fetch", 2, 1.5, 0.25)
    assert str(error) == (
        "rate limit 'fetch': 2 token(s) only after 1.500 s, longer than max_wait=0.25 s; "
        "nothing reserved"
    )
    assert (error.bucket, error.wait, error.max_wait) == ("fetch", 1.5, 0.25)


def test_reraise_as_types_a_foreign_error_and_chains_it() -> None:
    cause = ConnectionError("server closed the connection")
    with (
        pytest.raises(ServiceError) as caught,
        reraise_as(ServiceError, ConnectionError, context="cat.fits: database error"),
    ):
        raise cause
    assert str(caught.value) == "cat.fits: database error: server closed the connection"
    assert caught.value.__cause__ is cause


def test_reraise_as_without_context_keeps_the_message() -> None:
    with (
        pytest.raises(InputError, match=r"^n -1: must not be negative$"),
        reraise_as(InputError, ValueError),
    ):
        raise ValueError("n -1: must not be negative")


def test_reraise_as_leaves_galpipe_errors_in_their_family() -> None:
    """A SettingsError is a ValueError too; it must stay a configuration error."""
    with pytest.raises(SettingsError), reraise_as(InputError, ValueError):
        raise SettingsError("GALPIPE_LEASE_SECONDS='soon': expected a positive number")


def test_reraise_as_lets_other_errors_through() -> None:
    with pytest.raises(KeyError), reraise_as(InputError, ValueError):
        raise KeyError("not a cause")
