"""Everything that is SQL: migrations, the task queue, the shared rate limiter and breaker."""
