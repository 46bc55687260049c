-- galpipe status: done tasks of the last minute as an index range scan, not a scan of all tasks.
CREATE INDEX tasks_done_recent ON tasks (pipeline, updated_at) WHERE state = 'done';
