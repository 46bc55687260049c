SELECT CASE
    WHEN EXISTS (SELECT 1 FROM pipeline_control WHERE pipeline = %(pipeline)s AND paused) THEN 0
    ELSE (SELECT count(*) FROM (
              SELECT 1 FROM tasks WHERE pipeline = %(pipeline)s AND state = 'queued'
              LIMIT %(cap)s + (SELECT count(*) FROM tasks
                               WHERE pipeline = %(pipeline)s AND state = 'queued'
                                 AND not_before > '-infinity' AND not_before > now())) AS queued)
       - (SELECT count(*) FROM tasks
          WHERE pipeline = %(pipeline)s AND state = 'queued'
            AND not_before > '-infinity' AND not_before > now())
END
