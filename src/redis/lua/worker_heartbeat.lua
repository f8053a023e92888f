--[[
  worker_heartbeat: a worker is alive; its heartbeat time is the Redis server's clock.

  KEYS[1] worker_heartbeats   sorted set, worker id -> last heartbeat (epoch ms, Redis clock)
  ARGV[1] worker id

  Returns nothing useful (1).
]]
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now_ms, ARGV[1])
return 1
