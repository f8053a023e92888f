--[[
  certify_index: the end of a reconcile walk. Sets the index marker only if the walk's token, written
  when the walk started, is still in reconcile_walks: then Redis kept every write of the walk (a
  FLUSHALL, a restart that replayed an older AOF, or a failover to a replica that had not received
  the token would have taken it away, and with it an unknown part of what the walk added). The token
  is removed either way.

  KEYS[1] reconcile_walks   hash, walk token -> start time
  KEYS[2] index_marker      string
  ARGV[1] walk token
  ARGV[2] marker value

  Returns 1 when the marker was set, 0 when the token was gone (the walk certifies nothing).
]]
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
return 1
