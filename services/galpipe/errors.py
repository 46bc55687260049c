"""The errors galpipe raises: one root, :class:`GalpipeError`, and a family for each kind of cause.

Every exception class of the package derives from one family below, so a caller can catch what
it can handle (``except StorageError``) and the ``galpipe`` command (:func:`galpipe.cli.main`)
turns each family into its exit status without knowing the individual classes (2 for a
configuration error, 1 for the others):

- :class:`ConfigurationError` -- a setting or the installation is missing or wrong;
- :class:`InputError` -- what the user gave is unusable: a catalogue file or row, an option
  value, a cutout request or body;
- :class:`StorageError` -- the object store failed;
- :class:`ServiceError` -- the database, another service or a child process failed;
- :class:`CommandError` -- a command ran but could not do its job.

The message of every error names the input and the problem, for the operator: the command prints
it after ``galpipe COMMAND:``. Classes keep a built-in base where callers catch that
(``class CatalogError(InputError, ValueError)``).

This module imports nothing of galpipe, so every layer (``db`` and ``storage`` included) may
use it. The science core (:mod:`galpipe.science`) imports nothing else of galpipe and keeps
plain ``ValueError`` subclasses; the pipelines translate them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = [
    "CommandError",
    "ConfigurationError",
    "GalpipeError",
    "InputError",
    "ServiceError",
    "StorageError",
    "reraise_as",
]


class GalpipeError(Exception):
    """Root of every error galpipe raises; the message says what failed and why."""


class ConfigurationError(GalpipeError):
    """A setting (a ``GALPIPE_*`` variable) or the installation is missing or malformed."""


class InputError(GalpipeError):
    """Input from the user cannot be used: a file, a row, an option value, a request, a body."""


class StorageError(GalpipeError):
    """An object store operation failed."""


class ServiceError(GalpipeError):
    """A service galpipe depends on failed: the database, a cutout service, a child process."""


class CommandError(GalpipeError):
    """A command ran but could not do its job; the message says why."""


@contextlib.contextmanager
def reraise_as(
    family: type[GalpipeError], *causes: type[BaseException], context: str = ""
) -> Iterator[None]:
    """Re-raise any of ``causes`` raised inside the block as ``family``, chained to it.

    For command handlers that let a third-party error through (``psycopg.Error``, an
    ``OSError`` of a file) and want it reported, and given an exit status, like one of
    galpipe's own. The new error's message is the cause's, after ``context`` and a colon if
    ``context`` is given.

    Examples
    --------
    >>> with reraise_as(ServiceError, ConnectionError, context="cat.fits: database error"):
    ...     raise ConnectionError("server closed the connection")
    Traceback (most recent call last):
    galpipe.errors.ServiceError: cat.fits: database error: server closed the connection
    """
    try:
        yield
    except GalpipeError:
        raise  # already typed (e.g. a CatalogError is a ValueError too): keep its family
    except causes as exc:
        raise family(f"{context}: {exc}" if context else str(exc)) from exc
