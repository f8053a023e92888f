-- schedule_advance: records a submitted tick and moves the schedule to its next tick (same
-- transaction as the tick's build and the row lock of schedule_take_due).
-- $1 text: name
-- $2 timestamptz: the tick just submitted
-- $3 uuid: its build
-- $4 integer: older due ticks skipped (missed-ticks policy)
-- $5 timestamptz: the next tick
UPDATE schedules
SET last_tick_at = $2, last_build_id = $3, last_missed = $4, next_tick_at = $5, updated_at = now()
WHERE name = $1
