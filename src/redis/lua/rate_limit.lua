--[[
  rate_limit: counts one request against a fixed window shared by every API process (the HTTP rate
  limit, src/http/rate-limit-store.ts). The window starts with its first request and lasts ARGV[1] ms.

  KEYS[1] rate limit counter of one client (keys.ts: rateLimit + the client's key)
  ARGV[1] window, ms

  Returns { requests in the window so far, ms until the window ends }.
]]
local current = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if current == 1 or ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return { current, ttl }
