--[[
  queue_position: 1-based position of a build in the dispatch index and the index length, in one
  round trip, both O(log n).

  KEYS[1] build_queue
  KEYS[2] index_marker      (absent: this Redis lost its data, the index cannot be trusted)
  ARGV[1] build id

  Returns {position or false, length}; an OCULUS_INDEX_LOST error when the marker is missing.
]]
if redis.call('EXISTS', KEYS[2]) == 0 then
  return redis.error_reply('OCULUS_INDEX_LOST index marker missing: Redis lost its data')
end
local rank = redis.call('ZRANK', KEYS[1], ARGV[1])
local length = redis.call('ZCARD', KEYS[1])
if rank then return { rank + 1, length } end
return { false, length }
