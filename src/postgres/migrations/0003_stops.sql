-- 0003: stop requests. Who asked a build to stop, when, and why.
ALTER TABLE builds ADD COLUMN stop_requested_at timestamptz;
ALTER TABLE builds ADD COLUMN stopped_by text;
ALTER TABLE builds ADD COLUMN stop_reason text;
