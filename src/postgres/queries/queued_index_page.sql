-- queued_index_page: one page of what the Redis dispatch index must hold, for the reconciler,
-- walked by sequence number (keyset pagination on builds_queued_seq_idx).
-- $1 bigint:  last sequence number of the previous page (0 for the first)
-- $2 integer: page size
SELECT id, priority, seq,
       greatest(0, EXTRACT(EPOCH FROM (run_at - now())) * 1000)::float8 AS delay_ms
FROM builds
WHERE status = 'queued' AND seq > $1
ORDER BY seq
LIMIT $2
