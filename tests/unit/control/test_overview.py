"""The pipelines the control plane shows and acts on: every pipeline galpipe knows."""

from __future__ import annotations

import inspect

from galpipe.control.actions import ControlActions
from galpipe.control.overview import PIPELINES, OverviewReader
from galpipe.db import routes


def test_the_control_plane_knows_every_pipeline_galpipe_knows() -> None:
    # One list: the one routes are checked against and `galpipe check` counts by.
    assert PIPELINES == routes.PIPELINES
    assert {"fetch", "radon", "morphology", "photoz"} <= set(PIPELINES)
    assert len(set(PIPELINES)) == len(PIPELINES)


def test_the_overview_and_the_actions_default_to_every_pipeline() -> None:
    for cls in (OverviewReader, ControlActions):
        default = inspect.signature(cls).parameters["pipelines"].default
        assert tuple(default) == routes.PIPELINES, cls.__name__
