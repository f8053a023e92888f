-- removable_index_ids: which of these ids (read from the Redis index) the reconciler may drop: builds
-- that are not queued, and ids with no build at all (pruned). The not-queued rows are locked FOR SHARE
-- until the caller's transaction ends, and the caller removes the ids from Redis before it commits:
-- a concurrent requeue (running -> queued, an UPDATE of the row) waits for that commit, so its re-add
-- to the index comes after the removal, never before. A row that became queued before the lock was
-- taken is re-checked after the wait (status <> 'queued' is evaluated on the newest version) and kept.
-- Builds held back by their concurrency key's limit (migration 0011) are removable too.
-- $1 uuid[]: build ids
WITH not_queued AS (
  SELECT id FROM builds WHERE id = ANY ($1::uuid[]) AND (status <> 'queued' OR held)
  FOR SHARE
)
SELECT id::text AS id FROM not_queued
UNION ALL
SELECT x.id::text AS id FROM unnest($1::uuid[]) AS x(id)
WHERE NOT EXISTS (SELECT 1 FROM builds b WHERE b.id = x.id)
