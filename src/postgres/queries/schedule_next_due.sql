-- schedule_next_due: milliseconds from now (PostgreSQL's clock) to the soonest tick of an unpaused
-- schedule (negative: overdue), or null when there is none. The scheduler sleeps that long.
-- No parameters.
SELECT (EXTRACT(EPOCH FROM (min(next_tick_at) - now())) * 1000)::float8 AS ms
FROM schedules
WHERE NOT paused
