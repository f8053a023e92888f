-- read_log_chunks: the chunks of a build's log that hold bytes at or after a byte offset, in order.
-- $1 uuid:    build id
-- $2 bigint:  byte offset
-- $3 integer: at most this many chunks
SELECT seq, stream, at, start_offset, text FROM build_log_chunks
WHERE build_id = $1
  AND start_offset >= coalesce(
    (SELECT max(start_offset) FROM build_log_chunks WHERE build_id = $1 AND start_offset <= $2), 0)
ORDER BY start_offset
LIMIT $3
