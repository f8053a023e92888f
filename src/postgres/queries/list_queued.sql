-- list_queued: queued builds in dispatch order (ready ones; delayed retries come after, by run_at).
-- $1 integer: limit
-- $2 integer: offset
SELECT * FROM builds
WHERE status = 'queued'
ORDER BY (run_at > now()), priority DESC, seq
LIMIT $1 OFFSET $2
