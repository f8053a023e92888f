-- set_concurrency_limit: set a key's limit (at most this many of its builds run at once), creating
-- its row if needed. In a transaction followed by admit_waiting.sql (the row stays locked until the
-- commit): a raised limit admits waiting builds at once, a lowered one holds back admitted ones.
-- $1 text:    concurrency key
-- $2 integer: the limit, >= 1
INSERT INTO concurrency_limits (key, max_running) VALUES ($1, $2)
ON CONFLICT (key) DO UPDATE SET max_running = excluded.max_running, updated_at = now()
RETURNING key, max_running
