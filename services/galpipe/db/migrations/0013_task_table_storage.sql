-- compatible-with-previous: yes
-- How the task table is stored and vacuumed at survey scale (10^7 rows and more). Storage
-- parameters only: no rewrite, no new column, so a previous release runs on it unchanged, and
-- ALTER TABLE ... SET takes a lock that lets reads and writes go on. The figures quoted are
-- bench/scale.py at 10^7 tasks, each task claimed and completed once (docs/capacity.md,
-- "The task table at 10⁷ rows"). Every parameter exists in PostgreSQL 16 (the RDS engine).

ALTER TABLE tasks SET (
    -- No update of the queue can be HOT: the claim and the completion change `state`, which
    -- tasks_state indexes and every partial index's predicate reads (the bench counts 0 HOT
    -- updates of 2 * 10^7). PostgreSQL still puts the new row version on the old one's page
    -- when it fits there. With 15 % of each page left free, 26 % of the updates stayed on
    -- their page (under 1 % at the default 100), and the heap ended a full pass at 1316 MiB
    -- instead of 1590 MiB, although it starts 17 % larger.
    fillfactor = 85,
    -- The defaults (vacuum at 20 % dead rows, analyse at 10 % changed) wait for 2 * 10^6 dead
    -- rows and 10^6 changes on 10^7 tasks. Fetch completes about 5 tasks a second (the survey's
    -- rate limit): that is two days between vacuums, while the head of the ready index fills
    -- with the dead entries every claim steps over, and statistics that still say "all
    -- queued" once the queue has drained (the bench saw the status count turn into a Seq Scan
    -- of the whole table). At 1 % and 0.5 % they run every 10^5 dead rows and 5 * 10^4 changes;
    -- on a small table the fixed thresholds behave like the defaults.
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.005,
    autovacuum_analyze_threshold = 1000,
    -- An ingest appends millions of queued rows at once: vacuum them soon, so that the
    -- visibility map is set and the depth and status counts stay index-only.
    autovacuum_vacuum_insert_scale_factor = 0.01,
    -- Ten times the default budget (200 per 2 ms, about 40 MB/s of dirtied pages): a pass over
    -- the table and its five indexes must end before the next 1 % of dead rows has arrived
    -- while workers complete 10^4 tasks a second. The delay stays, so vacuum still yields I/O.
    -- Under a full-speed drain the dead rows peaked at 2.7 * 10^6 (6.8 * 10^6 with the
    -- defaults) and ended at 10^5 (2.5 * 10^6).
    autovacuum_vacuum_cost_limit = 2000,
    autovacuum_vacuum_cost_delay = 2
);
