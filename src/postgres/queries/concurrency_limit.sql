-- concurrency_limit: one key's limit and how its builds stand (as concurrency_limits.sql). No row
-- for a key never used nor set: the caller answers with the default limit (1) and zero counts.
-- $1 text: concurrency key
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
WHERE l.key = $1
