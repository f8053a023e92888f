-- list_builds: builds newest first (by sequence number), optionally of one status and/or one strategy,
-- keyset-paginated: the next page starts below the last sequence number of this one.
-- $1 text:    status, or null for any
-- $2 text:    strategy id, or null for any
-- $3 bigint:  only sequence numbers below this (null: from the newest)
-- $4 integer: at most this many
SELECT * FROM builds
WHERE ($1::text IS NULL OR status = $1::text)
  AND ($2::text IS NULL OR strategy_id = $2::text)
  AND ($3::bigint IS NULL OR seq < $3::bigint)
ORDER BY seq DESC
LIMIT $4
