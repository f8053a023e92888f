-- insert_builds: submit many builds in one statement, with their "submitted" events.
-- $1 jsonb: array of {strategyId, priority, params, maxRetries, idempotencyKey|null, requires, pool,
--          timeoutSeconds|null, runAt|null, concurrencyKey|null}, in submit order (pool: the canonical id of requires,
--          core/pools.ts; runAt: an ISO time, a build that may not run before then)
-- $2 text:  actor
-- Returns one row per new build (created = true) plus, for an idempotency key seen before, the
-- existing build (created = false); "ord" is the 1-based index of the input. An input whose key was
-- inserted concurrently (or twice in this batch) returns no row: the caller reads it by key.
-- Sequence numbers are drawn in input order (the ordered subquery feeds nextval row by row), and the
-- CTE is materialized (referenced twice), so each input draws exactly one. A pool seen for the first
-- time is registered in build_pools (where claims look up the pools a worker's labels satisfy).
-- A build with a future runAt is queued delayed (migration 0008: out of the dispatch index until
-- due, like a retry's backoff); delay_ms says how long, by PostgreSQL's clock, for the Redis index.
-- A build with a concurrency key is inserted held (migration 0011: in no dispatch index, not delayed);
-- the caller admits it in the same transaction (admit_waiting.sql) when its key has a free slot.
WITH input AS (
  SELECT e.ord, r."strategyId", r.priority, r.params, r."maxRetries", r."idempotencyKey",
         r.requires, r.pool, r."timeoutSeconds", r."runAt", r."concurrencyKey"
  FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS e(doc, ord),
       jsonb_to_record(e.doc) AS r("strategyId" text, priority integer, params jsonb,
                                   "maxRetries" integer, "idempotencyKey" text, requires jsonb,
                                   pool text, "timeoutSeconds" integer, "runAt" timestamptz,
                                   "concurrencyKey" text)
  ORDER BY e.ord
),
numbered AS (
  SELECT input.*, nextval('build_seq') AS seq FROM input
),
pools AS (
  INSERT INTO build_pools (id, requires)
  SELECT DISTINCT pool, requires FROM input WHERE pool <> 'default'
  ON CONFLICT (id) DO NOTHING
),
inserted AS (
  INSERT INTO builds (strategy_id, params, priority, seq, status, max_retries, idempotency_key,
                      requires, pool, timeout_seconds, run_at, delayed,
                      concurrency_key, held)
  SELECT "strategyId", params, priority, seq, 'queued', "maxRetries", "idempotencyKey",
         requires, pool, "timeoutSeconds", greatest(coalesce("runAt", now()), now()),
         "concurrencyKey" IS NULL AND coalesce("runAt" > now(), false),
         "concurrencyKey", "concurrencyKey" IS NOT NULL
  FROM numbered ORDER BY ord
  ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
  RETURNING *
),
events AS (
  INSERT INTO build_events (build_id, type, to_status, actor, data)
  SELECT id, 'submitted', 'queued', $2, jsonb_build_object('priority', priority, 'seq', seq) FROM inserted
),
listed AS (
  -- The listing order (migration 0007): written once, here.
  INSERT INTO build_listing (seq, strategy_id, build_id) SELECT seq, strategy_id, id FROM inserted
)
SELECT n.ord, true AS created,
       greatest(0, EXTRACT(EPOCH FROM (i.run_at - now())) * 1000)::float8 AS delay_ms, i.*
FROM inserted i JOIN numbered n ON n.seq = i.seq
UNION ALL
SELECT input.ord, false AS created, 0::float8 AS delay_ms, b.*
FROM input JOIN builds b ON b.idempotency_key = input."idempotencyKey"
ORDER BY ord
