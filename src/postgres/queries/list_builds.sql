-- list_builds: builds newest first (by sequence number), optionally of one status, keyset-paginated:
-- the next page starts below the last sequence number of this one. One strategy's builds:
-- list_builds_by_strategy.sql (a statement of its own, so that no plan depends on a parameter being
-- null: the queries run as prepared statements, planned generically after five runs).
-- $1 text:    status, or null for any (a filter on rows already found by key: no plan depends on it)
-- $2 bigint:  only sequence numbers below this (the first page: above every sequence number)
-- $3 integer: at most this many
-- The order comes from build_listing (migration 0007: its indexes cost nothing when a build's status
-- changes); each listed build is read by primary key.
SELECT b.* FROM build_listing l JOIN builds b ON b.id = l.build_id
WHERE l.seq < $2::bigint AND ($1::text IS NULL OR b.status = $1::text)
ORDER BY l.seq DESC
LIMIT $3
