-- schedule_select: one schedule by name, with PostgreSQL's clock (the scheduler's time base).
-- $1 text: name
SELECT s.*, now() AS db_now FROM schedules s WHERE name = $1
