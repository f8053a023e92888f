-- queued_among: which of these ids are queued builds (the reconciler drops the others from Redis).
-- `= ANY(uuid[])` keeps it a primary-key lookup (see claim_by_ids.sql).
-- $1 uuid[]: build ids
SELECT id FROM builds
WHERE id = ANY ($1::uuid[]) AND status = 'queued'
