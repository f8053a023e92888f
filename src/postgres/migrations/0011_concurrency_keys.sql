-- 0011: concurrency per key. A build may carry a `concurrency_key`; at most `max_running` builds of
-- one key run at once (concurrency_limits, default 1 when the key has no row yet). The limit is kept by
-- admission: a keyed build is inserted `held` (queued, but out of every dispatch index and out of
-- Redis) and becomes claimable only when admitted. Admission (admit_waiting.sql) runs with the key's
-- concurrency_limits row locked (lock_concurrency_keys.sql, FOR UPDATE) and counts, in a statement
-- that starts after the lock was granted, the key's running, stopping and admitted queued builds; it
-- admits the first held builds of the key (priority, then submit order) into the free slots. So for
-- every key: running + stopping + admitted queued <= max_running, and a claim (which only turns an
-- admitted build into a running one) can never exceed the limit, on either path, without looking at
-- keys at all. See docs/architecture.md, "Concurrency keys".
CREATE TABLE concurrency_limits (
  key          text        PRIMARY KEY,
  max_running  integer     NOT NULL DEFAULT 1 CHECK (max_running > 0),
  updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Constant defaults: adding these columns rewrites nothing (PostgreSQL 11+).
ALTER TABLE builds ADD COLUMN concurrency_key text;
ALTER TABLE builds ADD COLUMN held boolean NOT NULL DEFAULT false;

-- Held builds leave the dispatch indexes (a claim never reads past them, however many wait).
DROP INDEX builds_dispatch_idx;
CREATE INDEX builds_dispatch_idx ON builds (priority DESC, seq)
  WHERE status = 'queued' AND NOT delayed AND NOT held;
DROP INDEX builds_pool_dispatch_idx;
CREATE INDEX builds_pool_dispatch_idx ON builds (pool, priority DESC, seq)
  WHERE status = 'queued' AND NOT delayed AND NOT held;

-- The builds that take a slot of their key (admission counts them under the key's lock).
CREATE INDEX builds_key_active_idx ON builds (concurrency_key)
  WHERE concurrency_key IS NOT NULL AND (status IN ('running', 'stopping') OR (status = 'queued' AND NOT held));
-- The builds waiting on their key's limit, in admission order (and the reaper's sweep of due ones).
CREATE INDEX builds_key_held_idx ON builds (concurrency_key, priority DESC, seq)
  WHERE status = 'queued' AND held;
