-- queue_position: the PostgreSQL path's 1-based position of a ready queued build: the ready queued
-- builds ahead of it in dispatch order, plus one. (The Redis path answers with ZRANK in O(log n).)
-- Ready: in the dispatch index, or delayed and due but not yet promoted by a claim (migration 0008).
-- $1 integer: the build's priority
-- $2 bigint:  the build's sequence number
SELECT (SELECT count(*) FROM builds
        WHERE status = 'queued' AND NOT delayed
          AND (priority > $1 OR (priority = $1 AND seq < $2)))::integer
     + (SELECT count(*) FROM builds
        WHERE status = 'queued' AND delayed AND run_at <= now()
          AND (priority > $1 OR (priority = $1 AND seq < $2)))::integer
     + 1 AS position
