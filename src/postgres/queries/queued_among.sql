-- queued_among: which of these ids are queued builds in the dispatch index (not held back by a
-- concurrency key's limit) (the reconciler drops the others from Redis).
-- `= ANY(uuid[])` and `status || ''` keep it a primary-key lookup (see claim_by_ids.sql).
-- $1 uuid[]: build ids
SELECT id FROM builds
WHERE id = ANY ($1::uuid[]) AND status || '' = 'queued' AND NOT held
