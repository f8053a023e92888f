-- schedule_take_due: locks one due schedule for this transaction, skipping those another process's
-- scheduler holds (it is submitting their tick right now). With PostgreSQL's clock (db_now), the one
-- time base every process computes ticks from.
-- No parameters.
SELECT s.*, now() AS db_now
FROM schedules s
WHERE NOT paused AND next_tick_at <= now()
ORDER BY next_tick_at
LIMIT 1
FOR UPDATE SKIP LOCKED
