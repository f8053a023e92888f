--[[
  enqueue: put queued builds of one pool into its dispatch set (or its delayed set while they wait out
  a retry backoff), register the pool in the pool registry, then publish one wake-up if any became
  ready. Idempotent: re-adding a build with the same score changes nothing, so the reconciler and
  retries may call it freely.

  With a protection window (the reconciler's calls), a build that a claimer popped less than that
  long ago (it is in build_claiming) is skipped: its claim is being committed, and re-adding it would
  leave a stale entry that skews positions. A build popped longer ago than the window belongs to a
  claimer that died before its commit: it is re-added (and leaves build_claiming).

  KEYS[1] build_queue[:pool]    sorted set, the pool's dispatch set, score = dispatch score
  KEYS[2] build_delayed[:pool]  sorted set, the pool's delayed set, score = run time (epoch ms, Redis clock)
  KEYS[3] delayed_scores        hash, id -> dispatch score
  KEYS[4] build_claiming        sorted set, id -> time popped for a claim (epoch ms)
  KEYS[5] pools                 hash, pool id -> requirements (JSON): the registry of known pools
  ARGV[1] wake channel
  ARGV[2] protection window, ms (0: add every build, as submits and requeues do)
  ARGV[3] pool id
  ARGV[4] the pool's requirements, JSON
  ARGV[5..] triples: build id, dispatch score, delay in ms before it may run (0 = ready now).
            A delay, not a time: PostgreSQL computes it against its own clock, and Redis adds it
            to its own, so the two servers' clocks never need to agree.

  Returns the number of builds newly added to either set.
]]
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('HSETNX', KEYS[5], ARGV[3], ARGV[4])
local added = 0
local ready = 0
for i = 5, #ARGV, 3 do
  local id, score, delay = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local popped_at = redis.call('ZSCORE', KEYS[4], id)
  if window > 0 and popped_at and now_ms - tonumber(popped_at) < window then
    -- a claim of this build is in flight: leave it out
  else
    if popped_at then redis.call('ZREM', KEYS[4], id) end
    if delay > 0 then
      added = added + redis.call('ZADD', KEYS[2], now_ms + delay, id)
      redis.call('HSET', KEYS[3], id, score)
      redis.call('ZREM', KEYS[1], id)
    else
      added = added + redis.call('ZADD', KEYS[1], score, id)
      if redis.call('ZREM', KEYS[2], id) == 1 then redis.call('HDEL', KEYS[3], id) end
      ready = ready + 1
    end
  end
end
if ready > 0 then redis.call('PUBLISH', ARGV[1], ready) end
return added
