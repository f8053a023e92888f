-- insert_log_chunks: append chunks to a build's log and set its counters (the caller holds the
-- build's row: log_state_for_append.sql, same transaction).
-- $1 uuid:          build id
-- $2 integer[]:     seq of each chunk
-- $3 text[]:        stream of each chunk
-- $4 timestamptz[]: time of each chunk
-- $5 bigint[]:      start_offset of each chunk
-- $6 text[]:        text of each chunk
-- $7 bigint:        the log's size after the append
-- $8 integer:       its number of chunks after the append
-- $9 boolean:       whether it is truncated now
WITH chunks AS (
  INSERT INTO build_log_chunks (build_id, seq, stream, at, start_offset, text)
  SELECT $1, c.seq, c.stream, c.at, c.start_offset, c.text
  FROM unnest($2::integer[], $3::text[], $4::timestamptz[], $5::bigint[], $6::text[])
    AS c(seq, stream, at, start_offset, text)
)
INSERT INTO build_logs (build_id, bytes, chunks, truncated) VALUES ($1, $7, $8, $9)
ON CONFLICT (build_id) DO UPDATE SET bytes = $7, chunks = $8, truncated = $9
