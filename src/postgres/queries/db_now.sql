-- db_now: PostgreSQL's clock (schedules compute their ticks from it, so every process agrees).
-- No parameters.
SELECT now() AS now
