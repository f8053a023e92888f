-- schedule_insert: creates a schedule; no row when the name is taken (the caller says 409).
-- $1 text name, $2 text cron, $3 text timezone, $4 text strategy id, $5 jsonb params,
-- $6 integer priority, $7 jsonb requires, $8 integer max retries | null, $9 integer timeout | null,
-- $10 boolean paused, $11 timestamptz first tick (null when paused), $12 text concurrency key | null
INSERT INTO schedules (name, cron, timezone, strategy_id, params, priority, requires, max_retries,
                       timeout_seconds, paused, next_tick_at, concurrency_key)
VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7::jsonb, $8, $9, $10, $11, $12)
ON CONFLICT (name) DO NOTHING
RETURNING *
