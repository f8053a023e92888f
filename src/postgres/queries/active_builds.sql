-- active_builds: builds being run (running, or stopping until their worker lets go), oldest first.
-- $1 integer: at most this many
SELECT * FROM builds WHERE status IN ('running', 'stopping') ORDER BY started_at, seq LIMIT $1
