--[[
  pop_for_claim: propose builds for a claim. Moves the delayed builds whose time has come into the
  dispatch index (by the Redis server's clock, one clock for every claimer), then pops the best
  `count`: highest priority, then lowest sequence number, and notes them in build_claiming until the
  claimer's PostgreSQL commit (claim_done), so that a concurrent reconcile does not put them back.
  The pop is only a proposal: PostgreSQL arbitrates the claim (claim_by_ids.sql), and a claimer that
  dies after the pop loses nothing (the rows are still queued, and the reconciler re-adds builds that
  stayed in build_claiming past its protection window).

  KEYS[1] build_queue
  KEYS[2] build_delayed
  KEYS[3] delayed_scores
  KEYS[4] build_claiming
  KEYS[5] index_marker      (absent: this Redis lost its data, the index cannot be trusted)
  ARGV[1] count (at most this many ids)
  ARGV[2] promotion limit (at most this many delayed builds moved per call)

  Returns a flat array: id1, score1, id2, score2, ... in dispatch order; an OCULUS_INDEX_LOST error
  when the marker is missing, so that the caller claims on PostgreSQL and rebuilds the index.
]]
if redis.call('EXISTS', KEYS[5]) == 0 then
  return redis.error_reply('OCULUS_INDEX_LOST index marker missing: Redis lost its data')
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(due) do
  local score = redis.call('HGET', KEYS[3], id)
  if score then redis.call('ZADD', KEYS[1], score, id) end
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
end
local popped = redis.call('ZPOPMIN', KEYS[1], tonumber(ARGV[1]))
for i = 1, #popped, 2 do
  redis.call('ZADD', KEYS[4], now_ms, popped[i])
end
return popped
