-- log_state: a build's status and the size of its log (GET /v1/builds/:id/logs, the log stream).
-- $1 uuid: build id
SELECT b.status, coalesce(l.bytes, 0) AS log_bytes, coalesce(l.truncated, false) AS log_truncated
FROM builds b LEFT JOIN build_logs l ON l.build_id = b.id
WHERE b.id = $1
