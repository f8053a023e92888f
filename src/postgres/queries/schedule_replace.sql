-- schedule_replace: replaces an existing schedule's definition (its tick history stays); no row when
-- there is no such schedule. The next tick is computed by the caller from the new expression; it is
-- kept only when the schedule is not paused after the update.
-- $1 text name, $2 text cron, $3 text timezone, $4 text strategy id, $5 jsonb params,
-- $6 integer priority, $7 jsonb requires, $8 integer max retries | null, $9 integer timeout | null,
-- $10 boolean paused | null (null: as it is), $11 timestamptz next tick, $12 text concurrency key | null
UPDATE schedules
SET cron = $2, timezone = $3, strategy_id = $4, params = $5::jsonb, priority = $6, requires = $7::jsonb,
    max_retries = $8, timeout_seconds = $9, concurrency_key = $12, paused = coalesce($10::boolean, paused),
    next_tick_at = CASE WHEN coalesce($10::boolean, paused) THEN NULL ELSE $11::timestamptz END,
    last_error = NULL,
    updated_at = now()
WHERE name = $1
RETURNING *
