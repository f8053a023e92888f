-- 0002: workers (registration and heartbeat snapshots) and build leases with an expiry.

CREATE TABLE workers (
  id                 text        PRIMARY KEY,
  hostname           text        NOT NULL,
  pid                integer     NOT NULL,
  capacity           integer     NOT NULL CHECK (capacity > 0),
  labels             jsonb       NOT NULL DEFAULT '{}'::jsonb,
  version            text        NOT NULL,
  started_at         timestamptz NOT NULL DEFAULT now(),
  last_heartbeat_at  timestamptz NOT NULL DEFAULT now(),
  -- Set when the worker shut down gracefully; a worker that vanished keeps it NULL.
  stopped_at         timestamptz
);

-- A running build belongs to its worker until this time; heartbeats push it forward, and the reaper
-- requeues builds whose lease expired (their worker is dead, frozen or cut off).
ALTER TABLE builds ADD COLUMN lease_expires_at timestamptz;
-- The latest progress a worker reported: {phase, percent, iteration, maxIterations, message, at}.
ALTER TABLE builds ADD COLUMN progress jsonb;
-- The last part of the build's output (a build command's stdout and stderr), kept with the result.
ALTER TABLE builds ADD COLUMN log_tail text;

CREATE INDEX builds_lease_expiry_idx ON builds (lease_expires_at) WHERE status IN ('running', 'stopping');
