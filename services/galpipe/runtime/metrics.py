"""Every Prometheus metric galpipe exports, defined once.

Workers export what they do (counters and latencies of their own work, object store calls, and
for the radon pipeline the science histograms). Gauges derived from the database (queue depth
by state, breaker state, paused flags) are exported by ``galpipe monitor`` alone, so that N
replicas never multiply them; they are the :class:`DerivedMetric` constants at the end.
The Grafana dashboards and the alert rules use these names: add metrics, never rename one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from galpipe.survey.layout import BANDS

if TYPE_CHECKING:
    from galpipe.science.core import BatchMeasurement

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

TASKS_CLAIMED = Counter(
    "galpipe_tasks_claimed_total", "Tasks claimed by this worker.", ["pipeline"]
)
TASKS_FINISHED = Counter(
    "galpipe_tasks_finished_total",
    "Tasks this worker finished, by outcome (done, retry, failed, skipped, released, lost).",
    ["pipeline", "outcome"],
)
BATCH_SECONDS = Histogram(
    "galpipe_batch_seconds",
    "Wall time of one batch, by phase (claim, process, commit).",
    ["pipeline", "phase"],
    buckets=_LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "galpipe_batch_size",
    "Tasks per claimed batch.",
    ["pipeline"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
IDLE_POLLS = Counter("galpipe_idle_polls_total", "Claims that found no ready task.", ["pipeline"])
WORKER_BUSY = Gauge(
    "galpipe_worker_busy", "1 while this worker holds a batch, else 0.", ["pipeline"]
)
RATE_LIMIT_WAIT_SECONDS = Histogram(
    "galpipe_rate_limit_wait_seconds",
    "Time a request waited for a token of the shared bucket.",
    ["bucket"],
    buckets=(0, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
BREAKER_REJECTIONS = Counter(
    "galpipe_breaker_rejections_total",
    "Requests not sent because the shared circuit breaker was open.",
    ["breaker"],
)
CUTOUT_REQUESTS = Counter(
    "galpipe_cutout_requests_total",
    "Cutout requests by status class (2xx, 3xx, 4xx, 429, 5xx, timeout, connection, truncated).",
    ["status_class"],
)
CUTOUT_REQUEST_SECONDS = Histogram(
    "galpipe_cutout_request_seconds",
    "Latency of one cutout request, from sending to the last body byte.",
    ["status_class"],
    buckets=_LATENCY_BUCKETS,
)
CUTOUT_RESPONSE_BYTES = Counter(
    "galpipe_cutout_response_bytes_total", "Body bytes received from the cutout service."
)
CUTOUT_RESULTS = Counter(
    "galpipe_cutout_results_total",
    "Classified fetch results by outcome (success, no_coverage, retryable, permanent) and kind.",
    ["outcome", "kind"],
)
STORED_BYTES = Counter(
    "galpipe_object_store_written_bytes_total", "Bytes written to the object store.", ["pipeline"]
)
BREAKER_WAIT_SECONDS = Counter(
    "galpipe_breaker_wait_seconds_total",
    "Time requests spent waiting for the shared circuit breaker to let them through.",
    ["breaker"],
)

# -- object store (observed by galpipe.storage.instrumented.InstrumentedObjectStore) ---------------

OBJECT_STORE_OPERATIONS = Counter(
    "galpipe_object_store_operations_total",
    "Object store calls by operation (put, get, exists, delete) and outcome (ok, not_found, "
    "checksum_mismatch, error).",
    ["operation", "outcome"],
)
OBJECT_STORE_SECONDS = Histogram(
    "galpipe_object_store_operation_seconds",
    "Latency of one object store call, whatever its outcome.",
    ["operation"],
    buckets=_LATENCY_BUCKETS,
)
OBJECT_STORE_READ_BYTES = Counter(
    "galpipe_object_store_read_bytes_total", "Bytes read from the object store."
)

# -- science (observed by the radon pipeline once per measured batch) --------------------------

#: The band axis of :class:`galpipe.science.core.BatchMeasurement`, in order.
_MEASURED_BANDS = tuple(BANDS)

RADON_GALAXIES = Counter(
    "galpipe_radon_galaxies_measured_total", "Galaxies the radon pipeline measured."
)
RADON_FLAGGED = Counter(
    "galpipe_radon_galaxies_flagged_total",
    "Measured galaxies carrying each quality flag (galpipe.science.core.Flag, per galaxy).",
    ["flag"],
)
RADON_ANGLE_ERROR = Histogram(
    "galpipe_radon_angle_error_degrees",
    "Uncertainty of the position angle, degrees, per band and combined (finite values only).",
    ["band"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 90),
)
RADON_ANISOTROPY = Histogram(
    "galpipe_radon_anisotropy",
    "Anisotropy b/a of the Radon sinusoid, per band and combined (finite values only).",
    ["band"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0),
)
RADON_BAND_OFFSET = Histogram(
    "galpipe_radon_band_offset_degrees",
    "Axial difference between a band's angle and the combined angle, degrees in [0, 90].",
    ["band"],
    buckets=(0.5, 1, 2, 5, 10, 15, 20, 30, 45, 60, 90),
)


def observe_radon_batch(m: BatchMeasurement) -> None:
    """Count one measured batch in the science metrics above.

    Parameters
    ----------
    m
        What :func:`galpipe.science.core.measure_batch` returned for ``N`` galaxies in the
        bands g, r, i, z (in that order). NaN values (a blank band, no valid band) are left
        out of the histograms: their flags count them instead.
    """
    from galpipe.science.core import Flag

    n = int(m.flags.shape[0])
    RADON_GALAXIES.inc(n)
    for flag in Flag:
        RADON_FLAGGED.labels(str(flag.name).lower()).inc(int(np.count_nonzero(m.flags & int(flag))))
    per_band = {"combined": (m.angle_err_deg, m.anisotropy)}
    for b, band in enumerate(_MEASURED_BANDS):
        per_band[band] = (m.band_angle_err_fit_deg[:, b], m.band_anisotropy[:, b])
        # Angles are axial (period 180 degrees): the offset folds into [0, 90].
        offset = np.abs((m.band_angle_image_deg[:, b] - m.angle_image_deg + 90.0) % 180.0 - 90.0)
        _observe_finite(RADON_BAND_OFFSET.labels(band), offset)
    for band, (error, anisotropy) in per_band.items():
        _observe_finite(RADON_ANGLE_ERROR.labels(band), error)
        _observe_finite(RADON_ANISOTROPY.labels(band), anisotropy)


def _observe_finite(histogram: Histogram, values: npt.NDArray[np.floating[Any]]) -> None:
    for value in np.asarray(values, dtype=float)[np.isfinite(values)]:
        histogram.observe(float(value))


# -- the control plane (exported by `galpipe control`) -------------------------------------------

CONTROL_LOGIN_FAILURES = Counter(
    "galpipe_control_login_failures_total",
    "Console logins refused: a token the cluster did not accept, or too many attempts.",
)
CONTROL_REVIEWS = Counter(
    "galpipe_control_reviews_total",
    "TokenReviews and SubjectAccessReviews by review (token, access), outcome (allowed, denied, "
    "error) and whether the answer came from the short-TTL cache.",
    ["review", "outcome", "cached"],
)
CONTROL_ACTIONS = Counter(
    "galpipe_control_actions_total",
    "Operator actions by action, pipeline and result (ok, denied, failed, dry_run).",
    ["action", "pipeline", "result"],
)


# -- database-derived: exported by `galpipe monitor` alone -------------------------------------
# These are not prometheus_client metrics of the process: the monitor renders each poll of the
# database through a collector (galpipe.ops.monitor), so that a scrape never sees half a poll and a
# pipeline or bucket that disappeared from the database disappears from /metrics too.


@dataclass(frozen=True)
class DerivedMetric:
    """A metric the monitor derives from the database, rendered from one poll's values.

    Attributes
    ----------
    name
        Metric name; a counter's samples get the ``_total`` suffix.
    kind
        ``gauge`` or ``counter`` (a counter only for values the database keeps monotonic).
    documentation
        The HELP text.
    labels
        Label names, in the order of each sample's label values.
    """

    name: str
    kind: Literal["gauge", "counter"]
    documentation: str
    labels: tuple[str, ...] = ()

    def family(self, samples: Mapping[tuple[str, ...], float]) -> Metric:
        """The metric family holding ``samples`` (label values -> value)."""
        family: GaugeMetricFamily | CounterMetricFamily
        if self.kind == "gauge":
            family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        else:
            family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, value in samples.items():
            family.add_metric(list(values), value)
        return family


TASKS = DerivedMetric(
    "galpipe_tasks",
    "gauge",
    "Tasks by pipeline and state; state=done is the pipeline's completions so far.",
    ("pipeline", "state"),
)
TASKS_READY = DerivedMetric(
    "galpipe_tasks_ready",
    "gauge",
    "Ready tasks (queued and due; 0 while paused): the autoscaler's queue depth.",
    ("pipeline",),
)
QUEUE_OLDEST_QUEUED_AGE = DerivedMetric(
    "galpipe_queue_oldest_queued_age_seconds",
    "gauge",
    "Age of the head of the queue (queued, due or not), seconds since it was enqueued.",
    ("pipeline",),
)
QUEUE_OLDEST_READY_AGE = DerivedMetric(
    "galpipe_queue_oldest_ready_age_seconds",
    "gauge",
    "Age of the oldest ready task, seconds since it was enqueued.",
    ("pipeline",),
)
QUEUE_AGE_SLO = DerivedMetric(
    "galpipe_queue_age_slo_seconds",
    "gauge",
    "Objective for the oldest ready task's age, seconds (GALPIPE_QUEUE_AGE_SLO_SECONDS).",
    ("pipeline",),
)
PIPELINE_PAUSED = DerivedMetric(
    "galpipe_pipeline_paused", "gauge", "1 while an operator paused the pipeline.", ("pipeline",)
)
BREAKER_STATE = DerivedMetric(
    "galpipe_breaker_state",
    "gauge",
    "1 for the shared circuit breaker's current state (closed, open, half_open), else 0.",
    ("breaker", "state"),
)
BREAKER_CONSECUTIVE_FAILURES = DerivedMetric(
    "galpipe_breaker_consecutive_failures",
    "gauge",
    "Failures in a row recorded by the shared circuit breaker.",
    ("breaker",),
)
RATE_LIMIT_RATE = DerivedMetric(
    "galpipe_rate_limit_rate",
    "gauge",
    "Refill rate of the shared token bucket, tokens (requests) per second.",
    ("bucket",),
)
RATE_LIMIT_BURST = DerivedMetric(
    "galpipe_rate_limit_burst", "gauge", "Capacity of the shared token bucket.", ("bucket",)
)
RATE_LIMIT_TOKENS = DerivedMetric(
    "galpipe_rate_limit_tokens",
    "gauge",
    "Tokens in the shared bucket now; negative while reservations wait.",
    ("bucket",),
)
RATE_LIMIT_GRANTED = DerivedMetric(
    "galpipe_rate_limit_granted",
    "counter",
    "Tokens the shared bucket granted to every process since it was created.",
    ("bucket",),
)
DATABASE_UP = DerivedMetric(
    "galpipe_database_up", "gauge", "1 if the monitor's last poll of the database succeeded."
)
DATABASE_SIZE = DerivedMetric(
    "galpipe_database_size_bytes", "gauge", "Size of the galpipe database on disk."
)
RELATION_SIZE = DerivedMetric(
    "galpipe_database_relation_size_bytes",
    "gauge",
    "On-disk size of each galpipe table, with its indexes and TOAST.",
    ("relation",),
)
DATABASE_CONNECTIONS = DerivedMetric(
    "galpipe_database_connections",
    "gauge",
    "Connections to the galpipe database by state (active, idle, ...).",
    ("state",),
)
MONITOR_POLL_SECONDS = DerivedMetric(
    "galpipe_monitor_poll_seconds", "gauge", "Wall time of the monitor's last database poll."
)
MONITOR_LAST_SUCCESS = DerivedMetric(
    "galpipe_monitor_last_success_timestamp_seconds",
    "gauge",
    "Unix time of the monitor's last successful poll.",
)

# The control plane's derived gauge: `galpipe control` renders it at scrape time from the active
# overrides, so a released override disappears from /metrics instead of leaving a stale series.
CONTROL_OVERRIDE_ACTIVE_SINCE = DerivedMetric(
    "galpipe_control_override_active_since_timestamp_seconds",
    "gauge",
    "Unix time an operator override (pause, hold, pin) of a pipeline began; one series per "
    "active override.",
    ("pipeline", "override"),
)
