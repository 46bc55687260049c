"""``galpipe demo``: the whole system on one machine, in one command.

- :mod:`galpipe.demo.run`: the run, step by step (:func:`~galpipe.demo.run.run_demo`);
- :mod:`galpipe.demo.processes`: its child processes (the synthetic sky, the workers);
- :mod:`galpipe.demo.model`: the morphology network shipped with the demo, and the routes that
  queue the pipelines it runs;
- :mod:`galpipe.demo.progress`: task counts while the workers run;
- :mod:`galpipe.demo.report`: the results catalogue joined with the truth, the accuracy, the
  Markdown report and the console summary;
- :mod:`galpipe.demo.figures`: the figures.
"""

from galpipe.errors import CommandError


class DemoError(CommandError, RuntimeError):
    """The demo could not run; the message says which step and why."""
