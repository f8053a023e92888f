-- ensure_concurrency_keys: the first statement of an admission (admit_waiting.sql): creates the
-- keys' concurrency_limits rows if missing (default limit 1). A separate statement from the lock
-- (lock_concurrency_keys.sql): a row another transaction inserted concurrently is waited for here
-- (ON CONFLICT waits for the inserter to end), so the lock's later snapshot sees it and locks it.
-- $1 text[]: concurrency keys, sorted, without duplicates
INSERT INTO concurrency_limits (key) SELECT k FROM unnest($1::text[]) AS k
ON CONFLICT (key) DO NOTHING
