--[[
  remove: take builds out of one pool's dispatch set and delayed set (stopped, or found not queued
  by the reconciler).

  KEYS[1] build_queue[:pool]
  KEYS[2] build_delayed[:pool]
  KEYS[3] delayed_scores
  ARGV[1..] build ids

  Returns the number of ids removed from either set.
]]
local removed = 0
for i = 1, #ARGV do
  removed = removed + redis.call('ZREM', KEYS[1], ARGV[i]) + redis.call('ZREM', KEYS[2], ARGV[i])
  redis.call('HDEL', KEYS[3], ARGV[i])
end
return removed
