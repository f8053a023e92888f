-- log_state: a build's status and the size of its log (GET /v1/builds/:id/logs, the log stream).
-- $1 uuid: build id
SELECT status, log_bytes, log_truncated FROM builds WHERE id = $1
