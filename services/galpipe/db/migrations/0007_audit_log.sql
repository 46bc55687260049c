-- The operator audit log: one row per control-plane action (who, what, on what, why, the state
-- before and after, and how it ended). Append-only: a trigger refuses UPDATE, DELETE and
-- TRUNCATE, so a row once written is the record, whoever holds the table's privileges.

CREATE TABLE audit_log (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    -- Not `user`: unquoted, that word is SQL's CURRENT_USER, so a query that forgot the quotes
    -- would silently read the database role instead of the operator.
    user_name text NOT NULL,
    groups    text[] NOT NULL DEFAULT '{}',
    action    text NOT NULL,
    pipeline  text,
    target    jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- At least one character that is not white space (trim() strips only spaces, not tabs).
    reason    text NOT NULL CHECK (reason ~ '[^[:space:]]'),
    before    jsonb,
    after     jsonb,
    result    text NOT NULL CHECK (result IN ('ok', 'failed', 'dry_run')),
    error     text
);
COMMENT ON TABLE audit_log IS 'operator actions of the control plane; append-only';
COMMENT ON COLUMN audit_log.user_name IS 'the operator, as the cluster''s TokenReview named them';
COMMENT ON COLUMN audit_log.groups IS 'the operator''s groups, from the same TokenReview';
COMMENT ON COLUMN audit_log.target IS
    'what was acted on: Deployment, ScaledObject or HelmRelease name, filters, counts';

-- The console's filters: newest first overall, by operator, by action, by pipeline.
CREATE INDEX audit_log_at ON audit_log (at DESC, id DESC);
CREATE INDEX audit_log_user_at ON audit_log (user_name, at DESC);
CREATE INDEX audit_log_action_at ON audit_log (action, at DESC);
CREATE INDEX audit_log_pipeline_at ON audit_log (pipeline, at DESC);

CREATE FUNCTION audit_log_refuse_change() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- Statement-level, so even an UPDATE or DELETE that matches no row is refused.
CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();
