-- 0004: listing builds newest first (GET /v1/builds), optionally by strategy, keyset-paginated by
-- sequence number. A build keeps its sequence number for life (retries reuse it), so it is a stable
-- cursor. The event stream (build_events) needs nothing new: its bigserial id is the stream position.
CREATE INDEX builds_seq_all_idx ON builds (seq);
CREATE INDEX builds_strategy_seq_idx ON builds (strategy_id, seq);
