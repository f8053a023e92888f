-- 0001: builds (the record) and build_events (every state change).
-- Append-only: never edit a migration that has shipped; add the next number.

-- Submit order. Bounded by what a Redis score can carry exactly (src/core/score.ts: 42 bits).
CREATE SEQUENCE build_seq AS bigint MINVALUE 1 MAXVALUE 4398046511103;

CREATE TABLE builds (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  strategy_id      text        NOT NULL,
  params           jsonb       NOT NULL DEFAULT '{}'::jsonb,
  priority         integer     NOT NULL CHECK (priority BETWEEN -1000 AND 1000),
  -- Unique by construction (build_seq); no unique index, which every status change would pay for.
  seq              bigint      NOT NULL,
  status           text        NOT NULL
                   CHECK (status IN ('queued', 'running', 'stopping', 'completed', 'failed', 'stopped')),
  phase            text,
  retry_count      integer     NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
  max_retries      integer     NOT NULL CHECK (max_retries >= 0),
  -- Fencing token: bumped by every claim and requeue; worker writes must present the current value.
  lease            bigint      NOT NULL DEFAULT 0,
  worker_id        text,
  idempotency_key  text,
  last_error       text,
  result           jsonb,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  run_at           timestamptz NOT NULL DEFAULT now(),
  started_at       timestamptz,
  finished_at      timestamptz
);

-- Dispatch order on the PostgreSQL path, and the queue listing: priority first, then submit order.
CREATE INDEX builds_dispatch_idx ON builds (priority DESC, seq) WHERE status = 'queued';
-- The reconciler walks the queued rows by sequence number (keyset pagination).
CREATE INDEX builds_queued_seq_idx ON builds (seq) WHERE status = 'queued';
-- Only builds submitted with a key are indexed (a status change of the others does not touch it).
CREATE UNIQUE INDEX builds_idempotency_key_idx ON builds (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX builds_worker_idx ON builds (worker_id) WHERE status IN ('running', 'stopping');

CREATE TABLE build_events (
  id           bigserial   PRIMARY KEY,
  build_id     uuid        NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
  -- submitted, claimed, completed, failed, retry_scheduled, removed, ...
  type         text        NOT NULL,
  from_status  text,
  to_status    text,
  -- Who caused it: a worker id, "api", "cli", "reaper", a user name.
  actor        text        NOT NULL,
  data         jsonb,
  at           timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX build_events_build_idx ON build_events (build_id, id);
