-- compatible-with-previous: yes
-- Completions per pipeline and statement, so that the completion rates of `galpipe status` and
-- the control plane read the few rows of the last minute instead of every task done in it:
-- right after a drain at 20,000 tasks/s the range scan of tasks_done_recent visits 1.2 million
-- index entries (82 ms at 10^7 tasks, docs/capacity.md, "The task table at 10⁷ rows"), this
-- table about 80 rows a second.
--
-- The update trigger of migration 0015 appends one row per statement that moves tasks into
-- `done` (a worker's completing statement: one row per batch), with the statement's pipeline,
-- time and count. prune_task_completions(), run with every rollup, deletes rows older than an
-- hour.
--
-- Compatible with the previous release: it writes tasks as before (the trigger follows) and
-- counts recent completions on tasks_done_recent, which stays.

CREATE TABLE task_completions (
    pipeline text NOT NULL,
    at       timestamptz NOT NULL DEFAULT now(),
    n        bigint NOT NULL
);
COMMENT ON TABLE task_completions IS
    'tasks moved into done per statement (pipeline, time, count), the last hour of them';
CREATE INDEX task_completions_at ON task_completions (at, pipeline) INCLUDE (n);

-- No write to tasks between the trigger's new body and the backfill: every completion of the
-- last hour is then counted exactly once.
LOCK TABLE tasks IN SHARE ROW EXCLUSIVE MODE;

-- 0015's function, plus the completions. Rows already done that an UPDATE touches again are
-- not completions: only those whose old state was another one count.
CREATE OR REPLACE FUNCTION task_state_deltas_of_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_state_deltas (pipeline, state, delta)
    SELECT pipeline, state, sum(delta) FROM (
        SELECT pipeline, state, -1 AS delta FROM old_tasks
        UNION ALL
        SELECT pipeline, state, 1 FROM new_tasks
    ) AS moved
    GROUP BY pipeline, state
    HAVING sum(delta) <> 0;
    -- Claims and lease extensions move nothing into done: skip the join for them.
    IF EXISTS (SELECT FROM new_tasks WHERE state = 'done') THEN
        INSERT INTO task_completions (pipeline, n)
        SELECT n.pipeline, count(*)
        FROM new_tasks AS n JOIN old_tasks AS o USING (pipeline, source_id)
        WHERE n.state = 'done' AND o.state <> 'done'
        GROUP BY n.pipeline;
    END IF;
    RETURN NULL;
END
$$;

INSERT INTO task_completions (pipeline, at, n)
SELECT pipeline, updated_at, count(*) FROM tasks
WHERE state = 'done' AND updated_at >= now() - interval '1 hour'
GROUP BY pipeline, updated_at;

-- Drops completions older than an hour (the longest window galpipe.db.status counts). The
-- rollup's callers run it beside the rollup (db/queue.py, ROLL_UP_TASK_COUNTS_SQL), so the
-- table holds at most an hour. SECURITY DEFINER: the app role runs it without holding DELETE.
-- Returns the number of rows dropped.
-- One prune at a time, as one rollup (a second caller returns 0 at once): two would wait on
-- each other's deleted rows.
CREATE FUNCTION prune_task_completions() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    dropped bigint;
BEGIN
    -- The rollup's constant plus one: galpipe's, other than the migrations' lock too.
    IF NOT pg_try_advisory_xact_lock(7022285637306737) THEN
        RETURN 0;
    END IF;
    DELETE FROM task_completions WHERE at < now() - interval '1 hour';
    GET DIAGNOSTICS dropped = ROW_COUNT;
    RETURN dropped;
END
$$;
REVOKE EXECUTE ON FUNCTION prune_task_completions() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION prune_task_completions() TO galpipe_app;

-- Workers' completing statements append (the trigger runs as the writer); readers count.
GRANT SELECT, INSERT ON task_completions TO galpipe_app;
