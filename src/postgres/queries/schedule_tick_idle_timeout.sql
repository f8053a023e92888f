-- schedule_tick_idle_timeout: the tick's transaction may not sit idle longer than $1 ms. A process
-- frozen in the middle of a tick (SIGSTOP, a paused VM) holds the schedule's row lock; its session
-- is ended by the server after this long instead of the session default (60 s), and another
-- process's scheduler does the tick.
-- $1 text: milliseconds
SELECT set_config('idle_in_transaction_session_timeout', $1, true) AS idle_timeout
