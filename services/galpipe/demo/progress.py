"""The demo's progress: task counts per pipeline while the workers run, until all are terminal."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from psycopg_pool import ConnectionPool
from rich.console import Console
from rich.live import Live
from rich.table import Table as RichTable

from galpipe.db.queue import STATES, task_counts
from galpipe.demo.processes import DEFAULT_PIPELINES, ChildProcess

#: Task states a task leaves no more.
TERMINAL_STATES = ("done", "failed", "skipped")
# How often progress is polled (seconds), the window of the displayed rate, and how often a
# progress line is printed without the live table.
_POLL_S = 0.5
_RATE_WINDOW_S = 5.0
_LINE_EVERY_S = 5.0


def terminal_count(counts: Mapping[str, int]) -> int:
    """Tasks in a terminal state, of one pipeline's ``{state: count}``."""
    return sum(counts.get(s, 0) for s in TERMINAL_STATES)


def expected_tasks(counts: Mapping[str, Mapping[str, int]], pipeline: str, n_galaxies: int) -> int:
    """Tasks ``pipeline`` has once every task upstream is terminal: one per galaxy for fetch,
    one per done fetch for a pipeline that measures fetched cutouts (radon, morphology)."""
    return n_galaxies if pipeline == "fetch" else counts.get("fetch", {}).get("done", 0)


class Progress:
    """Counts per pipeline over time, and the rate of terminal tasks over the last seconds.

    Parameters
    ----------
    started : float
        ``time.monotonic()`` at the workers' start, seconds.
    pipelines : sequence of str
        The pipelines that run, fetch first.

    Attributes
    ----------
    counts : dict
        The latest ``{pipeline: {state: count}}``.
    finished_at : dict
        Seconds from ``started`` at which each finished pipeline's last task became terminal.
    """

    def __init__(self, started: float, pipelines: Sequence[str] = DEFAULT_PIPELINES) -> None:
        self.started = started
        self.pipelines = tuple(pipelines)
        self.history: dict[str, deque[tuple[float, int]]] = {p: deque() for p in self.pipelines}
        self.counts: dict[str, dict[str, int]] = {}
        self.finished_at: dict[str, float] = {}

    def update(self, counts: dict[str, dict[str, int]], now: float) -> None:
        self.counts = counts
        for pipeline in self.pipelines:
            history = self.history[pipeline]
            history.append((now, terminal_count(counts.get(pipeline, {}))))
            while history and now - history[0][0] > _RATE_WINDOW_S:
                history.popleft()

    def mark_finished(self, n_galaxies: int, now: float) -> None:
        """Record the pipelines whose every task has become terminal by ``now``."""
        for pipeline in self.pipelines:
            # A downstream pipeline cannot be finished before fetch is: fetch still queues its
            # tasks.
            upstream_done = pipeline == "fetch" or "fetch" in self.finished_at
            expected = expected_tasks(self.counts, pipeline, n_galaxies)
            if (
                pipeline not in self.finished_at
                and upstream_done
                and stage_done(self.counts, pipeline, expected)
            ):
                self.finished_at[pipeline] = now - self.started

    @property
    def all_finished(self) -> bool:
        return all(p in self.finished_at for p in self.pipelines)

    def rate(self, pipeline: str) -> float:
        history = self.history[pipeline]
        if len(history) < 2 or history[-1][0] <= history[0][0]:
            return 0.0
        return (history[-1][1] - history[0][1]) / (history[-1][0] - history[0][0])

    def table(self, n_galaxies: int) -> RichTable:
        elapsed = time.monotonic() - self.started
        table = RichTable(title=f"galpipe demo: {n_galaxies:,} galaxies, {elapsed:5.1f} s")
        table.add_column("pipeline")
        for state in STATES:
            table.add_column(state, justify="right")
        table.add_column("rate /s", justify="right")
        for pipeline in self.pipelines:
            row = self.counts.get(pipeline, dict.fromkeys(STATES, 0))
            table.add_row(
                pipeline, *(f"{row.get(s, 0):,}" for s in STATES), f"{self.rate(pipeline):6.1f}"
            )
        return table

    def line(self) -> str:
        parts = []
        for pipeline in self.pipelines:
            row = self.counts.get(pipeline, {})
            parts.append(
                f"{pipeline}: "
                + " ".join(f"{s} {row.get(s, 0)}" for s in STATES)
                + f" ({self.rate(pipeline):.1f}/s)"
            )
        return f"[{time.monotonic() - self.started:6.1f} s] " + " | ".join(parts)


def stage_done(counts: Mapping[str, Mapping[str, int]], pipeline: str, expected: int) -> bool:
    """At least ``expected`` tasks of ``pipeline`` are terminal, and none is queued or running."""
    row = counts.get(pipeline, {})
    return terminal_count(row) >= expected and not (row.get("queued", 0) or row.get("running", 0))


def watch_until_terminal(
    pool: ConnectionPool,
    source_ids: Sequence[int],
    workers: Mapping[str, Sequence[ChildProcess]],
    console: Console,
    *,
    timeout_s: float,
    live: bool,
) -> tuple[Progress, list[str]]:
    """Poll task counts until every task of ``source_ids`` is terminal (or trouble).

    The pipelines watched are those of ``workers`` (fetch first). Returns the progress record
    and the problems seen (a pipeline's workers all gone while it still has work, or the
    timeout).
    """
    progress = Progress(time.monotonic(), tuple(workers))
    problems: list[str] = []
    last_line = 0.0
    context: contextlib.AbstractContextManager[Any] = (
        Live(progress.table(len(source_ids)), console=console, refresh_per_second=4)
        if live
        else contextlib.nullcontext()
    )
    with context as display:
        while True:
            now = time.monotonic()
            with pool.connection() as conn:
                progress.update(task_counts(conn, source_ids), now)
            progress.mark_finished(len(source_ids), now)
            if display is not None:
                display.update(progress.table(len(source_ids)))
            elif now - last_line >= _LINE_EVERY_S:
                console.print(progress.line(), highlight=False)
                last_line = now
            if progress.all_finished:
                break
            problems = _trouble(progress, workers, now, timeout_s)
            if problems:
                break
            time.sleep(_POLL_S)
    if not live:
        console.print(progress.line(), highlight=False)
    return progress, problems


def _trouble(
    progress: Progress,
    workers: Mapping[str, Sequence[ChildProcess]],
    now: float,
    timeout_s: float,
) -> list[str]:
    """Why waiting longer is pointless: a pipeline with work but no worker left, or the time."""
    problems = [
        f"every {pipeline} worker exited early; see " + ", ".join(str(c.log_path) for c in children)
        for pipeline, children in workers.items()
        if pipeline not in progress.finished_at and not any(c.alive for c in children)
    ]
    if not problems and now - progress.started > timeout_s:
        problems.append(f"tasks still not terminal after {timeout_s:.0f} s")
    return problems
