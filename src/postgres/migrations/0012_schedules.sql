-- 0012: recurring schedules (issue 14). A schedule submits one build per tick of its cron expression,
-- evaluated in its IANA time zone. Every `oculus up` process runs the scheduler loop
-- (src/queue/scheduler.ts): it takes due rows with FOR UPDATE SKIP LOCKED and, in the same
-- transaction, inserts the tick's build (idempotency key `schedule:<name>:<tick>`) and advances
-- next_tick_at, so a tick gets exactly one build however many processes race for it.
CREATE TABLE schedules (
  -- Printable, 1-100 characters (validated in src/core/schedule.ts).
  name             text        PRIMARY KEY,
  cron             text        NOT NULL,
  -- IANA name ("UTC", "Europe/Berlin"); the cron expression is read in it (DST included).
  timezone         text        NOT NULL,
  strategy_id      text        NOT NULL,
  params           jsonb       NOT NULL DEFAULT '{}'::jsonb,
  priority         integer     NOT NULL DEFAULT 0 CHECK (priority BETWEEN -1000 AND 1000),
  requires         jsonb       NOT NULL DEFAULT '{}'::jsonb,
  max_retries      integer     CHECK (max_retries >= 0),
  timeout_seconds  integer     CHECK (timeout_seconds > 0),
  -- Each tick's build gets this concurrency key (migration 0011): at most the key's limit of them run
  -- at once, so a tick whose previous build still runs waits for it (null: none).
  concurrency_key  text,
  paused           boolean     NOT NULL DEFAULT false,
  -- The first tick not submitted yet (null while paused).
  next_tick_at     timestamptz,
  last_tick_at     timestamptz,
  last_build_id    uuid,
  -- Ticks skipped at the last submit (the process was down over several ticks: only the most recent
  -- one gets a build).
  last_missed      integer     NOT NULL DEFAULT 0,
  -- Why the scheduler paused it (its tick's build could not be made); cleared by an update or resume.
  last_error       text,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now()
);

-- The scheduler's probe: the due, unpaused schedules in tick order.
CREATE INDEX schedules_due_idx ON schedules (next_tick_at) WHERE NOT paused;
