--[[
  queue_position: 1-based position of a build in the dispatch index and the index length, in one
  round trip, both O(log n).

  KEYS[1] build_queue
  ARGV[1] build id

  Returns {position or false, length}.
]]
local rank = redis.call('ZRANK', KEYS[1], ARGV[1])
local length = redis.call('ZCARD', KEYS[1])
if rank then return { rank + 1, length } end
return { false, length }
