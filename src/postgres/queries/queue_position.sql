-- queue_position: the PostgreSQL path's 1-based position of a ready queued build within its pool
-- (migration 0010): the ready queued builds of the pool ahead of it in dispatch order, plus one.
-- (The Redis path answers with ZRANK on the pool's dispatch set in O(log n).)
-- Ready: in the dispatch index, or delayed and due but not yet promoted by a claim (migration 0008).
-- Builds held back by their concurrency key's limit (migration 0011) are not counted: they are not in
-- the dispatch set, as on Redis.
-- $1 integer: the build's priority
-- $2 bigint:  the build's sequence number
-- $3 text:    the build's pool
SELECT (SELECT count(*) FROM builds
        WHERE status = 'queued' AND NOT delayed AND NOT held AND pool = $3
          AND (priority > $1 OR (priority = $1 AND seq < $2)))::integer
     + (SELECT count(*) FROM builds
        WHERE status = 'queued' AND delayed AND NOT held AND run_at <= now() AND pool = $3
          AND (priority > $1 OR (priority = $1 AND seq < $2)))::integer
     + 1 AS position
