"""The pipeline interface: what a stage of galpipe implements to run under the common worker loop.

A pipeline is one module with an object that has a ``name`` (its tasks' ``pipeline`` column),
a ``batch_size``, ``process`` (the work, with no database access) and ``store`` (its result
rows, written in the transaction that marks the tasks done). The worker loop, queue, leases,
retries, metrics and health endpoints come with it. Which pipelines its successes queue is
configuration in the database, not code: the routes of ``pipeline_routes``
(:mod:`galpipe.db.routes`, ``galpipe routes``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg

from galpipe.db.queue import Task


@dataclass(frozen=True)
class Done:
    """The task succeeded; ``result`` is what :meth:`Pipeline.store` writes."""

    source_id: int
    result: Any = None


@dataclass(frozen=True)
class Retry:
    """A transient failure (timeout, 5xx …): try again after the retry delay.

    ``delay_s`` asks for at least that long a wait (a server's ``Retry-After``).
    """

    source_id: int
    error: str
    delay_s: float | None = None


@dataclass(frozen=True)
class Skip:
    """A permanent, expected condition (e.g. no survey coverage): no result, no retry."""

    source_id: int
    reason: str


@dataclass(frozen=True)
class Fail:
    """A permanent error (e.g. a corrupt answer after the retries): no retry."""

    source_id: int
    reason: str


@dataclass(frozen=True)
class Release:
    """Not worked on (shutting down, or the shared breaker kept it waiting): give it back to
    the queue at once, without counting the attempt."""

    source_id: int
    reason: str


Outcome = Done | Retry | Skip | Fail | Release


class Pipeline(Protocol):
    """A stage of galpipe, run by :class:`galpipe.pipelines.worker.Worker`."""

    name: str
    batch_size: int

    def process(self, tasks: Sequence[Task]) -> Sequence[Outcome]:
        """Do the work of a claimed batch: one outcome per task, in any order.

        One bad galaxy must give one ``Retry``/``Skip``/``Fail``, never an exception for the
        batch; an exception retries every task of the batch.
        """
        ...

    def store(self, conn: psycopg.Connection, done: Sequence[Done]) -> None:
        """Write the result rows of ``done`` on ``conn``, inside the worker's open transaction.

        ``done`` holds only tasks this worker still owns, so each result is written once.
        """
        ...
