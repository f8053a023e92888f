-- try_reconcile_lock: one reconcile walk at a time per queue (schema). True when this transaction now
-- holds the reconciler's advisory lock; it is held until the transaction ends, which the caller keeps
-- open (idle) for the whole walk. The transaction may sit idle at most $2 ms: a walker frozen mid-walk
-- (SIGSTOP, a paused VM) loses its session and the lock instead of blocking every other reconcile.
-- $1 text: lock name (per schema)
-- $2 text: idle-in-transaction timeout, ms
SELECT set_config('idle_in_transaction_session_timeout', $2, true) AS idle_timeout,
       pg_try_advisory_xact_lock(hashtext($1)) AS leader
