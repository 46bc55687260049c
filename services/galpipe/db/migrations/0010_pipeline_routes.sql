-- compatible-with-previous: yes
-- Where a pipeline's successes go: one row per (upstream, downstream) edge of the task graph.
-- Completing an upstream task queues one downstream task per route, in the same transaction
-- (db/queue.py TaskQueue.complete). Seeded with fetch -> radon, the one edge the code held
-- before, so a deployment behaves exactly as it did. A release before this table passes its
-- downstream itself and never reads it, so the change only expands the schema.

CREATE TABLE pipeline_routes (
    upstream   text NOT NULL,
    downstream text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (upstream, downstream),
    CHECK (upstream <> downstream)
);
COMMENT ON TABLE pipeline_routes IS
    'task routes: a done upstream task queues a downstream task for the same galaxy';
COMMENT ON COLUMN pipeline_routes.upstream IS 'the pipeline whose done tasks queue the next';
COMMENT ON COLUMN pipeline_routes.downstream IS 'the pipeline whose task each one queues';
COMMENT ON COLUMN pipeline_routes.created_at IS
    'when the route was added (its backfill queued the galaxies done before then)';

INSERT INTO pipeline_routes (upstream, downstream) VALUES ('fetch', 'radon');

-- Workers read the routes on every completion; the operator's commands (galpipe routes, run
-- with the app role) add and remove them. A route is configuration, not a record: removing one
-- deletes its row (the audit log keeps who did it), and the LOCK that add_route takes to
-- serialise itself against completions needs a privilege beyond INSERT.
GRANT SELECT, INSERT, DELETE ON pipeline_routes TO galpipe_app;
