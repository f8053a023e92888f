-- try_reaper_lock: one reaper at a time. True when this transaction holds the reaper's advisory lock
-- (until it commits); another process's reaper then skips its turn. The transaction may not sit idle
-- longer than $2 ms: a reaper process frozen in the middle of a pass (SIGSTOP, a paused VM) loses its
-- session, and with it the lock, instead of stopping every other reaper for as long as it is frozen.
-- $1 text: lock name (per schema)
-- $2 text: idle-in-transaction timeout, ms
SELECT set_config('idle_in_transaction_session_timeout', $2, true) AS idle_timeout,
       pg_try_advisory_xact_lock(hashtext($1)) AS leader
