--[[
  enqueue: put queued builds into the dispatch index (or the delayed set while they wait out a retry
  backoff), then publish one wake-up if any became ready. Idempotent: re-adding a build with the same
  score changes nothing, so the reconciler and retries may call it freely.

  KEYS[1] build_queue       sorted set, score = dispatch score
  KEYS[2] build_delayed     sorted set, score = run time (epoch ms)
  KEYS[3] delayed_scores    hash, id -> dispatch score
  ARGV[1] wake channel
  ARGV[2..] triples: build id, dispatch score, run time (epoch ms; 0 = ready now)

  Returns the number of builds newly added to either set.
]]
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local added = 0
local ready = 0
for i = 2, #ARGV, 3 do
  local id, score, run_at = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  if run_at > now_ms then
    added = added + redis.call('ZADD', KEYS[2], run_at, id)
    redis.call('HSET', KEYS[3], id, score)
    redis.call('ZREM', KEYS[1], id)
  else
    added = added + redis.call('ZADD', KEYS[1], score, id)
    if redis.call('ZREM', KEYS[2], id) == 1 then redis.call('HDEL', KEYS[3], id) end
    ready = ready + 1
  end
end
if ready > 0 then redis.call('PUBLISH', ARGV[1], ready) end
return added
