-- list_builds_by_strategy: one strategy's builds newest first, optionally of one status,
-- keyset-paginated, along build_listing_strategy_idx (strategy_id, seq) (see list_builds.sql).
-- $1 text:    status, or null for any (a filter on rows already found by key: no plan depends on it)
-- $2 text:    strategy id
-- $3 bigint:  only sequence numbers below this (the first page: above every sequence number)
-- $4 integer: at most this many
SELECT b.* FROM build_listing l JOIN builds b ON b.id = l.build_id
WHERE l.strategy_id = $2::text AND l.seq < $3::bigint AND ($1::text IS NULL OR b.status = $1::text)
ORDER BY l.seq DESC
LIMIT $4
