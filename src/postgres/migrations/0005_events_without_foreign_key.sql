-- 0005: build_events without its foreign key to builds.
-- Every event row is inserted by the statement that changes its build (a CTE over the UPDATE's or
-- INSERT's RETURNING), so the build exists by construction; the check repeated that for ~5 µs of
-- PostgreSQL CPU per event (a per-row trigger running a locking lookup), three or more events per
-- build. Builds are never deleted by the queue; whatever deletes builds (a retention job) deletes
-- their events first or in the same transaction.
ALTER TABLE build_events DROP CONSTRAINT IF EXISTS build_events_build_id_fkey;
