--[[
  index_counts: the drift check's view of the index, read at one instant: ready ids, delayed ids, and
  ids popped for a claim less than `window` ms ago (their PostgreSQL claim is in flight, so PostgreSQL
  may still count them as queued). Older entries of build_claiming belong to claimers that died; they
  are not in flight, and not counted.

  KEYS[1] build_queue
  KEYS[2] build_delayed
  KEYS[3] build_claiming
  ARGV[1] window, ms

  Returns {ready, delayed, claiming}.
]]
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local since = now_ms - tonumber(ARGV[1])
return {
  redis.call('ZCARD', KEYS[1]),
  redis.call('ZCARD', KEYS[2]),
  redis.call('ZCOUNT', KEYS[3], since, '+inf'),
}
