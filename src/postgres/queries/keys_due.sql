-- keys_due: concurrency keys that have a free slot and a held build whose run time has come, for the
-- admission sweep (a submit with a future runAt now due, or an admission lost with a process that
-- died after its commit). A candidate list read without locks: the admission (admit_waiting.sql,
-- under the keys' locks) decides. The distinct keys of held builds are read by a skip scan of
-- builds_key_held_idx (one probe per key, not one row per held build).
-- $1 integer: at most this many keys
WITH RECURSIVE held_keys AS (
  (SELECT concurrency_key AS key FROM builds
   WHERE status = 'queued' AND held ORDER BY concurrency_key LIMIT 1)
  UNION ALL
  SELECT (SELECT b.concurrency_key FROM builds b
          WHERE b.status = 'queued' AND b.held AND b.concurrency_key > h.key
          ORDER BY b.concurrency_key LIMIT 1)
  FROM held_keys h WHERE h.key IS NOT NULL
)
SELECT h.key FROM held_keys h
LEFT JOIN concurrency_limits l ON l.key = h.key
WHERE h.key IS NOT NULL
  AND EXISTS (SELECT 1 FROM builds b
              WHERE b.concurrency_key = h.key AND b.status = 'queued' AND b.held AND b.run_at <= now())
  AND coalesce(l.max_running, 1) > (
    SELECT count(*) FROM builds b
    WHERE b.concurrency_key = h.key AND b.concurrency_key IS NOT NULL
      AND (b.status IN ('running', 'stopping') OR (b.status = 'queued' AND NOT b.held)))
LIMIT $1
