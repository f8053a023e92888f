-- queued_index_page: one page of what the Redis dispatch index must hold, for the reconciler,
-- walked by sequence number (keyset pagination on builds_queued_seq_idx), with each build's pool.
-- The delay is measured from clock_timestamp(), not now(): the reconciler runs this in a transaction
-- that may have started before a build it sees was submitted, and now() (its start) would put that
-- fresh build in the delayed set for a few milliseconds.
-- Builds held back by their concurrency key's limit (migration 0011) are not in the index.
-- $1 bigint:  last sequence number of the previous page (0 for the first)
-- $2 integer: page size
SELECT id, pool, priority, seq,
       greatest(0, EXTRACT(EPOCH FROM (run_at - clock_timestamp())) * 1000)::float8 AS delay_ms
FROM builds
WHERE status = 'queued' AND NOT held AND seq > $1
ORDER BY seq
LIMIT $2
