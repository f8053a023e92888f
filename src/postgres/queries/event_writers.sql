-- event_writers: the transactions that may be inserting into build_events right now, for the event
-- hub's gap rule (src/queue/event-gaps.ts). A statement that inserts an event holds RowExclusiveLock
-- on the table from before it draws the id until its transaction ends; readers (AccessShareLock),
-- vacuum and analyze (ShareUpdateExclusiveLock) cannot hold a missing id and are left out. A waiting
-- (not granted) request has drawn nothing yet. The reader's own backend holds nothing it could still
-- commit. `IS DISTINCT FROM` keeps prepared transactions (no pid), which may still commit.
-- A virtual transaction id is unique while its transaction runs: the hub waits until none of those
-- it saw when a gap appeared is listed any more.
SELECT virtualtransaction AS vxid, pid
FROM pg_locks
WHERE locktype = 'relation' AND relation = 'build_events'::regclass
  AND mode = 'RowExclusiveLock' AND granted
  AND pid IS DISTINCT FROM pg_backend_pid()
