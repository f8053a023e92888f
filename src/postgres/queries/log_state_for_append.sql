-- log_state_for_append: the log counters of a build a worker appends to, locking the build's row for
-- the rest of the transaction (the lease cannot change under the append, and appends to one build
-- are serialized). Fenced: no row when the lease is stale or the build is not running or stopping.
-- $1 uuid:   build id
-- $2 bigint: lease
SELECT coalesce(l.bytes, 0) AS log_bytes, coalesce(l.chunks, 0) AS log_chunks,
       coalesce(l.truncated, false) AS log_truncated
FROM builds b LEFT JOIN build_logs l ON l.build_id = b.id
WHERE b.id = $1 AND b.lease = $2 AND b.status IN ('running', 'stopping')
FOR NO KEY UPDATE OF b
