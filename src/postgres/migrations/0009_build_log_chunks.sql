-- 0009: the whole output of a build (stdout, stderr and the worker's own marker lines), in chunks.
-- A worker appends chunks in batches through the queue (append_build_log.sql), fenced by the lease
-- like progress. The log is the concatenation of the chunks' text in seq order; start_offset is the
-- byte offset (UTF-8) of a chunk's first byte in it, so a reader pages by byte offset
-- (GET /v1/builds/:id/logs with Range, the SSE log stream's Last-Event-ID) without reading what
-- comes before. No foreign key, like build_events (0005): prune deletes a build's chunks with it.
CREATE TABLE build_log_chunks (
  build_id      uuid        NOT NULL,
  seq           integer     NOT NULL,
  -- 'stdout', 'stderr', or 'system' (the worker's lines: the run separator, the truncation marker)
  stream        text        NOT NULL CHECK (stream IN ('stdout', 'stderr', 'system')),
  -- when the chunk's first line was read from the command
  at            timestamptz NOT NULL,
  start_offset  bigint      NOT NULL,
  text          text        NOT NULL,
  PRIMARY KEY (build_id, seq)
);
CREATE INDEX build_log_chunks_offset_idx ON build_log_chunks (build_id, start_offset);

-- Per build with a log: its size so far (bytes stored, the truncation marker included), its number of
-- chunks, and whether the per-build cap cut it. A table of its own rather than columns of builds:
-- `builds.*` keeps its row type, so processes of the previous version running during an upgrade keep
-- their prepared statements (RETURNING b.*) valid.
CREATE TABLE build_logs (
  build_id   uuid    PRIMARY KEY,
  bytes      bigint  NOT NULL,
  chunks     integer NOT NULL,
  truncated  boolean NOT NULL
);
