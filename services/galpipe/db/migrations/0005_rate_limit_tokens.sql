-- The token bucket's refill, written once: the tokens a rate_limits row holds at as_of, given
-- it held `tokens` at updated_at and refills at `rate` per second up to `burst`. An as_of
-- before updated_at (a statement that read the clock, then waited for the row lock while
-- another one moved updated_at on) means no refill since, never a refill counted twice.
-- IMMUTABLE and a single expression, so the planner inlines it into every query that calls it.
CREATE FUNCTION rate_limit_tokens(
    tokens     double precision,
    rate       double precision,
    burst      double precision,
    updated_at timestamptz,
    as_of      timestamptz
) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT LEAST(burst, tokens + rate * GREATEST(0, EXTRACT(EPOCH FROM as_of - updated_at)::float8))
$$;
