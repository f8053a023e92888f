-- concurrency_limits: keys with their limit and how their builds stand: running (running or
-- stopping), admitted (queued, may be claimed now) and waiting (queued, held back by the limit), in
-- key order, after key $1 (keyset paging; '' for the first page). Each count is an index probe
-- (builds_key_active_idx, builds_key_held_idx).
-- $1 text:    list keys after this one
-- $2 integer: at most this many keys
SELECT l.key, l.max_running, l.updated_at,
       (SELECT count(*) FROM builds b
        WHERE b.concurrency_key = l.key AND b.concurrency_key IS NOT NULL
          AND (b.status IN ('running', 'stopping') OR (b.status = 'queued' AND NOT b.held))
          AND b.status <> 'queued')::integer AS running,
       (SELECT count(*) FROM builds b
        WHERE b.concurrency_key = l.key AND b.concurrency_key IS NOT NULL
          AND (b.status IN ('running', 'stopping') OR (b.status = 'queued' AND NOT b.held))
          AND b.status = 'queued')::integer AS admitted,
       (SELECT count(*) FROM builds b
        WHERE b.concurrency_key = l.key AND b.status = 'queued' AND b.held)::integer AS waiting
FROM concurrency_limits l
WHERE l.key > $1
ORDER BY l.key
LIMIT $2
