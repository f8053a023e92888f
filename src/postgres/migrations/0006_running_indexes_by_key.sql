-- 0006: the two indexes over running builds serve only the statements they are for.
-- With the predicate `status IN ('running', 'stopping')` alone, any statement filtering on that status
-- could use them as a list of every running build. The planner did so whenever its statistics counted
-- (almost) no running builds, e.g. a fleet that started after the last ANALYZE: a completion, a
-- failure, a progress write or a lease renewal then read every running build (7 ms with 20,000
-- running) instead of looking up its rows by primary key (under 1 ms). With `<key> IS NOT NULL` in the
-- predicate, only a statement that constrains the key itself (`worker_id = $1`, `lease_expires_at <
-- now()`: strict operators imply it) can use the index.
DROP INDEX builds_worker_idx;
CREATE INDEX builds_worker_idx ON builds (worker_id)
  WHERE worker_id IS NOT NULL AND status IN ('running', 'stopping');
DROP INDEX builds_lease_expiry_idx;
CREATE INDEX builds_lease_expiry_idx ON builds (lease_expires_at)
  WHERE lease_expires_at IS NOT NULL AND status IN ('running', 'stopping');
