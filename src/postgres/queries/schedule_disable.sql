-- schedule_disable: pauses a schedule whose tick's build cannot be made (a definition this version
-- no longer accepts), with the reason, so that it does not block the scheduler on every pass.
-- $1 text: name
-- $2 text: why
UPDATE schedules
SET paused = true, next_tick_at = NULL, last_error = $2, updated_at = now()
WHERE name = $1
