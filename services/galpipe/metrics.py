"""Every Prometheus metric galpipe exports, defined once.

Workers export what they do (counters and latencies of their own work). Gauges derived from the
database (queue depth by state, breaker state, paused flags) are exported by ``galpipe monitor``
alone, so that N replicas never multiply them.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
