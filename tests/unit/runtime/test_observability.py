"""Worker-side observability: the science histograms and the instrumented object store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from galpipe.runtime import metrics
from galpipe.science.core import BatchMeasurement, Flag
from galpipe.storage import (
    ChecksumMismatch,
    LocalObjectStore,
    ObjectNotFound,
    ObjectStoreError,
)
from galpipe.storage.instrumented import InstrumentedObjectStore

NAN = float("nan")


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _batch() -> BatchMeasurement:
    """Two galaxies: one measured in every band, one whose z band is blank."""
    n, b = 2, 4
    band_angle = np.array([[10.0, 12.0, 178.0, 40.0], [90.0, 95.0, 100.0, NAN]])
    band_err = np.array([[0.4, 0.6, 1.5, 8.0], [2.0, 2.5, 4.0, NAN]])
    band_anisotropy = np.array([[0.3, 0.25, 0.2, 0.004], [0.05, 0.06, 0.04, NAN]])
    zeros = np.zeros((n, b))
    return BatchMeasurement(
        band_angle_image_deg=band_angle,
        band_angle_err_fit_deg=band_err,
        band_angle_err_window_deg=zeros,
        band_angle_err_window_std_deg=zeros,
        band_angle_argmax_deg=band_angle,
        band_sinusoid_a=zeros,
        band_sinusoid_b=zeros,
        band_anisotropy=band_anisotropy,
        band_moments_angle_deg=band_angle,
        band_moments_err_deg=zeros,
        band_moments_ellipticity=zeros,
        band_flags=np.array([[0, 0, 0, Flag.ROUND], [0, 0, 0, Flag.BAND_BLANK]]),
        nonfinite_count=np.zeros((n, b), dtype=int),
        angle_image_deg=np.array([11.0, 95.0]),
        angle_err_deg=np.array([0.3, 1.6]),
        band_spread_deg=np.array([5.0, 5.0]),
        anisotropy=np.array([0.27, 0.05]),
        n_bands=np.array([3, 3]),
        flags=np.array([0, int(Flag.BAND_BLANK | Flag.CONTAMINATED)]),
        masked_fraction=np.zeros(n),
        contaminated=np.array([False, True]),
    )


def test_observe_radon_batch_counts_galaxies_flags_and_finite_values() -> None:
    before = {
        "measured": sample("galpipe_radon_galaxies_measured_total"),
        "blank": sample("galpipe_radon_galaxies_flagged_total", flag="band_blank"),
        "contaminated": sample("galpipe_radon_galaxies_flagged_total", flag="contaminated"),
        "round": sample("galpipe_radon_galaxies_flagged_total", flag="round"),
        "z_errors": sample("galpipe_radon_angle_error_degrees_count", band="z"),
        "combined_errors": sample("galpipe_radon_angle_error_degrees_count", band="combined"),
        "combined_error_sum": sample("galpipe_radon_angle_error_degrees_sum", band="combined"),
        "i_offsets_le_10": sample("galpipe_radon_band_offset_degrees_bucket", band="i", le="10.0"),
        "i_offsets_le_5": sample("galpipe_radon_band_offset_degrees_bucket", band="i", le="5.0"),
        "anisotropy_lt_005": sample("galpipe_radon_anisotropy_bucket", band="z", le="0.005"),
    }
    metrics.observe_radon_batch(_batch())

    def delta(key: str, name: str, **labels: str) -> float:
        return sample(name, **labels) - before[key]

    assert delta("measured", "galpipe_radon_galaxies_measured_total") == 2
    assert delta("blank", "galpipe_radon_galaxies_flagged_total", flag="band_blank") == 1
    assert delta("contaminated", "galpipe_radon_galaxies_flagged_total", flag="contaminated") == 1
    # Per-galaxy flags only: the first galaxy's round z band does not flag the galaxy.
    assert delta("round", "galpipe_radon_galaxies_flagged_total", flag="round") == 0
    # The blank z band of the second galaxy is left out, not observed as NaN.
    assert delta("z_errors", "galpipe_radon_angle_error_degrees_count", band="z") == 1
    assert delta("combined_errors", "galpipe_radon_angle_error_degrees_count", band="combined") == 2
    assert delta(
        "combined_error_sum", "galpipe_radon_angle_error_degrees_sum", band="combined"
    ) == pytest.approx(1.9)
    # Axial offsets: 178 vs 11 degrees is 13 degrees apart, 100 vs 95 is 5.
    assert (
        delta("i_offsets_le_10", "galpipe_radon_band_offset_degrees_bucket", band="i", le="10.0")
        == 1
    )
    assert (
        delta("i_offsets_le_5", "galpipe_radon_band_offset_degrees_bucket", band="i", le="5.0") == 1
    )
    assert delta("anisotropy_lt_005", "galpipe_radon_anisotropy_bucket", band="z", le="0.005") == 1


def _ops(operation: str, outcome: str) -> float:
    return sample("galpipe_object_store_operations_total", operation=operation, outcome=outcome)


def test_instrumented_store_counts_each_outcome_and_keeps_errors(tmp_path: Path) -> None:
    store = InstrumentedObjectStore(LocalObjectStore(tmp_path / "objects"))
    # Zero-valued series exist from the start, so an error ratio is defined before any error.
    assert (
        REGISTRY.get_sample_value(
            "galpipe_object_store_operations_total", {"operation": "get", "outcome": "error"}
        )
        is not None
    )
    before = {
        (op, out): _ops(op, out)
        for op in ("put", "get")
        for out in ("ok", "not_found", "checksum_mismatch", "error")
    }
    read_before = sample("galpipe_object_store_read_bytes_total")
    timed_before = sample("galpipe_object_store_operation_seconds_count", operation="get")

    stored = store.put("a/b.fits", b"cutout")
    assert store.get("a/b.fits", stored.sha256) == b"cutout"
    with pytest.raises(ObjectNotFound):
        store.get("missing.fits")
    with pytest.raises(ChecksumMismatch):
        store.get("a/b.fits", "0" * 64)
    broken = InstrumentedObjectStore(LocalObjectStore(tmp_path / "objects" / "a" / "b.fits"))
    with pytest.raises(ObjectStoreError):
        broken.put("c.fits", b"x")  # its root is a file: the store itself fails

    def counted(op: str, out: str) -> float:
        return _ops(op, out) - before[(op, out)]

    assert counted("put", "ok") == 1
    assert counted("put", "error") == 1
    assert counted("get", "ok") == 1
    assert counted("get", "not_found") == 1
    assert counted("get", "checksum_mismatch") == 1
    assert counted("get", "error") == 0
    assert sample("galpipe_object_store_read_bytes_total") - read_before == len(b"cutout")
    assert (
        sample("galpipe_object_store_operation_seconds_count", operation="get") - timed_before == 3
    )
    assert store.url == (tmp_path / "objects").as_uri()
    assert store.exists("a/b.fits")


def test_derived_metric_families_render_gauges_and_counters() -> None:
    gauge = metrics.TASKS.family({("fetch", "queued"): 3, ("fetch", "done"): 5})
    counter = metrics.RATE_LIMIT_GRANTED.family({("fetch",): 42})
    assert gauge.type == "gauge"
    assert {(s.name, s.labels["state"], s.value) for s in gauge.samples} == {
        ("galpipe_tasks", "queued", 3),
        ("galpipe_tasks", "done", 5),
    }
    assert counter.type == "counter"
    assert [(s.name, s.labels, s.value) for s in counter.samples] == [
        ("galpipe_rate_limit_granted_total", {"bucket": "fetch"}, 42)
    ]
