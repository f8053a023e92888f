-- 0010: routing. A build may require worker labels (`requires`, e.g. {"gpu": "true"}); builds with
-- the same requirement set form a pool, named by a canonical id (src/core/pools.ts: "default" for no
-- requirements, else a hash of the sorted k=v pairs). A worker claims only from the pools whose
-- requirements its labels include, so a build is never claimed by a worker that cannot run it.
-- build_pools is the registry of known pools: the claim (claim_next.sql) finds the pools a worker's
-- labels satisfy there (`requires <@ labels`), then reads each pool's head through
-- builds_pool_dispatch_idx: an index probe per pool, never a scan past other pools' builds.
-- timeout_seconds: how long a build's run may take (null: the worker's default, or no limit).
CREATE TABLE build_pools (
  id          text        PRIMARY KEY,
  requires    jsonb       NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO build_pools (id, requires) VALUES ('default', '{}'::jsonb);

-- Constant defaults: adding these columns rewrites nothing (PostgreSQL 11+).
ALTER TABLE builds ADD COLUMN pool text NOT NULL DEFAULT 'default';
ALTER TABLE builds ADD COLUMN requires jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE builds ADD COLUMN timeout_seconds integer CHECK (timeout_seconds > 0);

-- Dispatch order within a pool (the claim's probe per pool, and per-pool positions).
CREATE INDEX builds_pool_dispatch_idx ON builds (pool, priority DESC, seq)
  WHERE status = 'queued' AND NOT delayed;
