-- compatible-with-previous: yes
-- The database roles of least privilege. The role that runs `galpipe migrate` (galpipe_migrator
-- in a deployment: docs/deploy-aws.md) owns the schema and is the only one that may change it
-- or read schema_migrations. The app role (workers, monitor, control, ingest) reads and writes
-- rows, never deletes one, and may only append to audit_log; the scaler role (KEDA's ready-depth
-- query) only reads the two tables that query reads. Both are created without a password:
-- rotation sets it (docs/kubernetes.md, database credentials). Roles are cluster-wide, so a
-- second galpipe database on the same server finds them and only adds its grants.
-- A migration that adds a table grants what these roles need on it, in the same file;
-- tests/integration/db/test_roles.py holds the expected privileges of every table.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'galpipe_app') THEN
        CREATE ROLE galpipe_app LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'galpipe_scaler') THEN
        CREATE ROLE galpipe_scaler LOGIN;
    END IF;
END
$$;

-- No role but the owner creates objects (PostgreSQL < 15 lets PUBLIC create in public; a
-- WARNING, not an error, where the migrating role does not own the schema).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO galpipe_app, galpipe_scaler;

-- Rows are added and moved through their states; nothing of galpipe deletes one.
GRANT SELECT, INSERT ON galaxies TO galpipe_app;
GRANT SELECT, INSERT, UPDATE ON tasks, pipeline_control, rate_limits, breakers,
    cutouts, radon_measurements TO galpipe_app;
GRANT SELECT ON galaxy_states TO galpipe_app;
-- Append-only: the control plane writes and reads its record (the trigger refuses changes too).
GRANT SELECT, INSERT ON audit_log TO galpipe_app;

-- KEDA's ready-depth query (db/queue.py READY_DEPTH_SQL) and nothing else.
GRANT SELECT ON tasks, pipeline_control TO galpipe_scaler;
