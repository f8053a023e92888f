-- list_builds: builds newest first (by sequence number), optionally of one status and/or one strategy,
-- keyset-paginated: the next page starts below the last sequence number of this one.
-- $1 text:    status, or null for any
-- $2 text:    strategy id, or null for any
-- $3 bigint:  only sequence numbers below this (null: from the newest)
-- $4 integer: at most this many
-- The order comes from build_listing (migration 0007: its indexes cost nothing when a build's status
-- changes); each listed build is read by primary key.
SELECT b.* FROM build_listing l JOIN builds b ON b.id = l.build_id
WHERE ($1::text IS NULL OR b.status = $1::text)
  AND ($2::text IS NULL OR l.strategy_id = $2::text)
  AND ($3::bigint IS NULL OR l.seq < $3::bigint)
ORDER BY l.seq DESC
LIMIT $4
