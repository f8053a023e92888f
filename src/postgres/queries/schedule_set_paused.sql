-- schedule_set_paused: pauses (next tick null) or resumes (next tick given: the first one after now;
-- ticks while paused are not made up) a schedule; no row when there is none.
-- $1 text: name
-- $2 boolean: paused
-- $3 timestamptz: the next tick when resuming (null when pausing)
UPDATE schedules
SET paused = $2,
    next_tick_at = CASE WHEN $2 THEN NULL
                        WHEN paused OR next_tick_at IS NULL THEN $3
                        ELSE next_tick_at END,
    last_error = CASE WHEN $2 THEN last_error ELSE NULL END,
    updated_at = now()
WHERE name = $1
RETURNING *
