-- schedule_delete: removes a schedule (its builds stay); returns it, or no row when there is none.
-- $1 text: name
DELETE FROM schedules WHERE name = $1 RETURNING *
