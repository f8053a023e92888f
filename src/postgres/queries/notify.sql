-- notify: wake idle claimers listening on the channel (delivered when the transaction commits).
-- $1 text: channel
-- $2 text: payload
SELECT pg_notify($1, $2)
