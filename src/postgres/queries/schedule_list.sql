-- schedule_list: every schedule, by name, with PostgreSQL's clock.
SELECT s.*, now() AS db_now FROM schedules s ORDER BY name
