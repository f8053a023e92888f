--[[
  worker_ages: how long ago each worker last beat, by the Redis server's clock (ages, not times, so
  that callers never compare two servers' clocks).

  KEYS[1] worker_heartbeats
  ARGV[1..] worker ids

  Returns one integer per id: milliseconds since its last heartbeat, or -1 if Redis has none.
]]
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 1, #ARGV do
  local at = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if at then out[i] = now_ms - tonumber(at) else out[i] = -1 end
end
return out
