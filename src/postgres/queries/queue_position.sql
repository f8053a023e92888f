-- queue_position: the PostgreSQL path's 1-based position of a ready queued build: the ready queued
-- builds ahead of it in dispatch order, plus one. (The Redis path answers with ZRANK in O(log n).)
-- $1 integer: the build's priority
-- $2 bigint:  the build's sequence number
SELECT count(*)::integer + 1 AS position
FROM builds
WHERE status = 'queued' AND run_at <= now()
  AND (priority > $1 OR (priority = $1 AND seq < $2))
