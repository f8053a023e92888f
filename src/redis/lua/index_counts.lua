--[[
  index_counts: the drift check's view of the index, read at one instant: ready ids and delayed ids
  over every pool, and ids popped for a claim less than `window` ms ago (their PostgreSQL claim is in
  flight, so PostgreSQL may still count them as queued). Older entries of build_claiming belong to
  claimers that died; they are not in flight, and not counted.

  KEYS[1] build_claiming
  KEYS[2..] pairs, one per pool: build_queue[:pool], build_delayed[:pool]
  ARGV[1] window, ms

  Returns {ready, delayed, claiming}.
]]
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local since = now_ms - tonumber(ARGV[1])
local ready, delayed = 0, 0
for i = 2, #KEYS, 2 do
  ready = ready + redis.call('ZCARD', KEYS[i])
  delayed = delayed + redis.call('ZCARD', KEYS[i + 1])
end
return { ready, delayed, redis.call('ZCOUNT', KEYS[1], since, '+inf') }
