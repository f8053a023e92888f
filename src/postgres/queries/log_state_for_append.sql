-- log_state_for_append: the log counters of a build a worker appends to, locking its row for the
-- rest of the transaction (the lease cannot change under the append). Fenced: no row when the lease
-- is stale or the build is not running or stopping.
-- $1 uuid:   build id
-- $2 bigint: lease
SELECT log_bytes, log_chunks, log_truncated FROM builds
WHERE id = $1 AND lease = $2 AND status IN ('running', 'stopping')
FOR NO KEY UPDATE
