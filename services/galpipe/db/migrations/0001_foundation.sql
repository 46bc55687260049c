-- galpipe foundation: galaxies, the task queue, shared rate limits, breakers, pipeline control.

CREATE TABLE galaxies (
    source_id   bigint PRIMARY KEY,
    ra          double precision NOT NULL CHECK (ra >= 0 AND ra < 360),
    dec         double precision NOT NULL CHECK (dec >= -90 AND dec <= 90),
    catalog     text NOT NULL,
    extra       jsonb NOT NULL DEFAULT '{}'::jsonb,
    ingested_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON COLUMN galaxies.ra IS 'ICRS right ascension, degrees, [0, 360)';
COMMENT ON COLUMN galaxies.dec IS 'ICRS declination, degrees, [-90, 90]';
COMMENT ON COLUMN galaxies.extra IS 'columns the catalogue carried beyond id/ra/dec (e.g. Gaia posangle_sersic)';

CREATE TYPE task_state AS ENUM ('queued', 'running', 'done', 'failed', 'skipped');

CREATE TABLE tasks (
    pipeline      text NOT NULL,
    source_id     bigint NOT NULL REFERENCES galaxies (source_id),
    -- FIFO order: a sequence, not enqueued_at, because a bulk enqueue shares one timestamp.
    seq           bigint GENERATED ALWAYS AS IDENTITY,
    state         task_state NOT NULL DEFAULT 'queued',
    attempts      integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    not_before    timestamptz NOT NULL DEFAULT '-infinity',
    lease_owner   text,
    lease_expires timestamptz,
    last_error    text,
    enqueued_at   timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline, source_id),
    CHECK ((state = 'running') = (lease_owner IS NOT NULL AND lease_expires IS NOT NULL))
);
COMMENT ON COLUMN tasks.attempts IS 'times the task was claimed; the first claim is attempt 1';
COMMENT ON COLUMN tasks.not_before IS 'a queued task is ready once now() >= not_before (retry delay)';

-- The ready queue: claims walk it in seq order, skipping delayed rows without a heap visit.
CREATE INDEX tasks_ready ON tasks (pipeline, seq) INCLUDE (not_before) WHERE state = 'queued';
-- Lease recovery looks only at running rows.
CREATE INDEX tasks_leases ON tasks (pipeline, lease_expires) WHERE state = 'running';
-- Counts by state (monitor gauges; the depth query counts its queued range index-only). Btree
-- deduplication stores each (pipeline, state) once per page: ~6 MB per million rows.
CREATE INDEX tasks_state ON tasks (pipeline, state);
-- Queued tasks given a retry delay (a fresh task keeps not_before = '-infinity'): the depth
-- query subtracts the ones not yet due from the queued count instead of testing every row.
CREATE INDEX tasks_delayed ON tasks (pipeline, not_before)
    WHERE state = 'queued' AND not_before > '-infinity';

CREATE TABLE pipeline_control (
    pipeline   text PRIMARY KEY,
    paused     boolean NOT NULL DEFAULT false,
    reason     text,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Token buckets shared by every process: one global request rate whatever the replica count.
CREATE TABLE rate_limits (
    name       text PRIMARY KEY,
    rate       double precision NOT NULL CHECK (rate > 0),
    burst      double precision NOT NULL CHECK (burst > 0),
    tokens     double precision NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    granted    bigint NOT NULL DEFAULT 0
);
COMMENT ON COLUMN rate_limits.rate IS 'tokens per second';
COMMENT ON COLUMN rate_limits.tokens IS 'tokens at updated_at; negative while reservations wait';

CREATE TYPE breaker_state AS ENUM ('closed', 'open', 'half_open');

CREATE TABLE breakers (
    name                 text PRIMARY KEY,
    state                breaker_state NOT NULL DEFAULT 'closed',
    consecutive_failures integer NOT NULL DEFAULT 0,
    window_start         timestamptz NOT NULL DEFAULT clock_timestamp(),
    window_requests      integer NOT NULL DEFAULT 0,
    window_failures      integer NOT NULL DEFAULT 0,
    opened_at            timestamptz,
    probe_owner          text,
    probe_expires        timestamptz,
    last_error           text,
    updated_at           timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The paper's galaxy states (pending -> fetched -> transformed, or failed), derived from tasks.
CREATE VIEW galaxy_states AS
SELECT g.source_id,
       CASE
           WHEN r.state = 'done' THEN 'transformed'
           WHEN f.state IN ('failed', 'skipped') OR r.state IN ('failed', 'skipped') THEN 'failed'
           WHEN f.state = 'done' THEN 'fetched'
           ELSE 'pending'
       END AS state
FROM galaxies g
LEFT JOIN tasks f ON f.pipeline = 'fetch' AND f.source_id = g.source_id
LEFT JOIN tasks r ON r.pipeline = 'radon' AND r.source_id = g.source_id;
