-- compatible-with-previous: yes
-- Tasks by (pipeline, state), maintained in the transactions that move tasks, so that
-- `galpipe status` and the monitor's task gauge read a few rows instead of counting every task
-- (1.85 s at 10^7 tasks: docs/capacity.md, "The task table at 10⁷ rows").
--
-- A single counter row per (pipeline, state) updated by every claim would make concurrent
-- claimers queue on that row's lock. Instead each statement that moves tasks appends what it
-- changed to task_state_deltas (insert-only: appends never wait on each other), grouped per
-- statement by AFTER ... FOR EACH STATEMENT triggers over the statement's transition tables: a
-- claim of 256 tasks adds 2 rows (queued -256, running +256), whatever the batch size.
-- roll_up_task_state_counts() folds the deltas into task_state_counts (the monitor calls it
-- every poll, `galpipe status` before it reads); a count is task_state_counts.n plus the
-- pending deltas, read in one statement (db/queue.py task_counts), so it is exact in the
-- reader's snapshot whether or not a rollup ran.
--
-- Compatible with the previous release: it keeps writing tasks as before (the triggers follow),
-- and counts by its own GROUP BY.

CREATE TABLE task_state_counts (
    pipeline text NOT NULL,
    state    task_state NOT NULL,
    n        bigint NOT NULL,
    PRIMARY KEY (pipeline, state)
);
COMMENT ON TABLE task_state_counts IS
    'tasks by (pipeline, state) up to the last rollup; add task_state_deltas for the count now';

CREATE TABLE task_state_deltas (
    pipeline text NOT NULL,
    state    task_state NOT NULL,
    delta    bigint NOT NULL
);
COMMENT ON TABLE task_state_deltas IS
    'net change of tasks by (pipeline, state) per statement on tasks, not yet rolled up';

-- No write to tasks between the triggers' creation and the initial count: the count below
-- and the triggers then account for every row exactly once.
LOCK TABLE tasks IN SHARE ROW EXCLUSIVE MODE;

-- Transition tables allow one event per trigger (and no column list), hence three functions.
-- Each runs once per statement, however many rows it moved.
CREATE FUNCTION task_state_deltas_of_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_state_deltas (pipeline, state, delta)
    SELECT pipeline, state, count(*) FROM inserted_tasks GROUP BY pipeline, state;
    RETURN NULL;
END
$$;

-- Every UPDATE fires it (extend_lease too): rows whose state did not change cancel out, and
-- HAVING leaves them unwritten.
CREATE FUNCTION task_state_deltas_of_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_state_deltas (pipeline, state, delta)
    SELECT pipeline, state, sum(delta) FROM (
        SELECT pipeline, state, -1 AS delta FROM old_tasks
        UNION ALL
        SELECT pipeline, state, 1 FROM new_tasks
    ) AS moved
    GROUP BY pipeline, state
    HAVING sum(delta) <> 0;
    RETURN NULL;
END
$$;

CREATE FUNCTION task_state_deltas_of_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_state_deltas (pipeline, state, delta)
    SELECT pipeline, state, -count(*) FROM deleted_tasks GROUP BY pipeline, state;
    RETURN NULL;
END
$$;

-- TRUNCATE has no transition table: it empties the counts with the tasks.
CREATE FUNCTION task_state_counts_of_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM task_state_deltas;
    DELETE FROM task_state_counts;
    RETURN NULL;
END
$$;

CREATE TRIGGER task_state_deltas_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS inserted_tasks
    FOR EACH STATEMENT EXECUTE FUNCTION task_state_deltas_of_insert();
CREATE TRIGGER task_state_deltas_update AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_tasks NEW TABLE AS new_tasks
    FOR EACH STATEMENT EXECUTE FUNCTION task_state_deltas_of_update();
CREATE TRIGGER task_state_deltas_delete AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS deleted_tasks
    FOR EACH STATEMENT EXECUTE FUNCTION task_state_deltas_of_delete();
CREATE TRIGGER task_state_counts_truncate AFTER TRUNCATE ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION task_state_counts_of_truncate();

INSERT INTO task_state_counts (pipeline, state, n)
SELECT pipeline, state, count(*) FROM tasks GROUP BY pipeline, state;

-- Folds every committed delta into the counts: one statement moves them (DELETE ... RETURNING
-- into the upsert), so a reader sees them either pending or folded, never both or neither.
-- One rollup at a time (a transaction-scoped advisory lock; a second caller returns at once,
-- the deltas being folded by the first): two rollups would otherwise wait on each other's
-- deleted rows and upserted counts. Deltas committed after the DELETE's snapshot stay for the
-- next rollup. SECURITY DEFINER: the app role runs it without holding DELETE on the deltas.
-- Returns the number of delta rows folded.
CREATE FUNCTION roll_up_task_state_counts() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    folded bigint;
BEGIN
    -- An arbitrary constant of galpipe's, other than the migrations' lock (db/migrate.py).
    IF NOT pg_try_advisory_xact_lock(7022285637306736) THEN
        RETURN 0;
    END IF;
    WITH moved AS (
        DELETE FROM task_state_deltas RETURNING pipeline, state, delta
    ), summed AS (
        SELECT pipeline, state, sum(delta) AS delta, count(*) AS n_rows FROM moved
        GROUP BY pipeline, state
    ), upserted AS (
        INSERT INTO task_state_counts (pipeline, state, n)
        SELECT pipeline, state, delta FROM summed
        ON CONFLICT (pipeline, state) DO UPDATE SET n = task_state_counts.n + EXCLUDED.n
    )
    SELECT coalesce(sum(n_rows), 0) INTO folded FROM summed;
    RETURN folded;
END
$$;

-- The app role's statements on tasks append deltas (the triggers run as the writer), and it
-- reads both tables; only the rollup, as the owner, deletes deltas and writes counts.
GRANT SELECT, INSERT ON task_state_deltas TO galpipe_app;
GRANT SELECT ON task_state_counts TO galpipe_app;
REVOKE EXECUTE ON FUNCTION roll_up_task_state_counts() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION roll_up_task_state_counts() TO galpipe_app;
