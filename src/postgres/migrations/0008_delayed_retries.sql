-- 0008: builds waiting out a retry backoff leave the dispatch index.
-- A failed build requeued with a delay keeps its sequence number (the front of its priority), so in
-- builds_dispatch_idx (priority DESC, seq) it sat ahead of the ready builds, and every PostgreSQL-path
-- claim read past all of them (`run_at <= now()` was a filter: 50,000 delayed retries made a claim
-- read 50,000 index entries and heap rows). Now a queued build is either ready (`delayed = false`: in
-- the dispatch index) or delayed (`delayed = true`: in builds_delayed_idx by run_at). Every statement
-- that puts a build in 'queued' sets the flag; the claim (claim_next.sql) promotes due delayed builds
-- to ready in the same statement, and takes them in dispatch order with the ready ones.
-- Adding a column with a constant default rewrites nothing (PostgreSQL 11+).
ALTER TABLE builds ADD COLUMN delayed boolean NOT NULL DEFAULT false;
UPDATE builds SET delayed = true WHERE status = 'queued' AND run_at > now();
DROP INDEX builds_dispatch_idx;
CREATE INDEX builds_dispatch_idx ON builds (priority DESC, seq) WHERE status = 'queued' AND NOT delayed;
CREATE INDEX builds_delayed_idx ON builds (run_at) WHERE status = 'queued' AND delayed;
