-- try_reaper_lock: one reaper at a time. True when this transaction holds the reaper's advisory lock
-- (until it commits); another process's reaper then skips its turn.
-- $1 text: lock name (per schema)
SELECT pg_try_advisory_xact_lock(hashtext($1)) AS leader
