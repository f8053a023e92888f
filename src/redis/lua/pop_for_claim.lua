--[[
  pop_for_claim: propose builds for a claim from the pools a worker can run. Moves each pool's delayed
  builds whose time has come into its dispatch set (by the Redis server's clock, one clock for every
  claimer), then pops the best `count` across the pools: from one pool, with one ZPOPMIN; from
  several, one at a time, the lowest score among the pools' heads (highest priority, then lowest
  sequence number), so the order among the builds this worker can run is exact. Notes the popped ids
  in build_claiming until the claimer's PostgreSQL commit has settled (a later pop's ARGV[4..], or
  finishClaim), so that a concurrent reconcile does not put them back. The pop is only a proposal:
  PostgreSQL arbitrates the claim (claim_by_ids.sql), and a claimer that dies after the pop loses
  nothing (the rows are still queued, and the reconciler re-adds builds that stayed in build_claiming
  past its protection window).

  KEYS[1] delayed_scores
  KEYS[2] build_claiming
  KEYS[3] index_marker      (absent: this Redis lost its data, the index cannot be trusted)
  KEYS[4] pools             hash, the pool registry (pool id -> requirements)
  KEYS[5..] pairs, one per pool the worker can run: build_queue[:pool], build_delayed[:pool]
  ARGV[1] count (at most this many ids)
  ARGV[2] promotion limit (at most this many delayed builds moved per pool per call)
  ARGV[3] how many pools the caller's copy of the registry holds. Pools are never removed and a
          pool is registered by the same script call that adds its first build (enqueue.lua), so a
          different count means the caller may be missing a pool with builds it can run: nothing is
          popped, and it reads the registry again (the order stays exact across pools).
  ARGV[4..] ids whose claim has settled since this claimer's last pop (committed, or refused and
          handled): taken out of build_claiming first. Carrying them here spares a round trip of its
          own per claim (claims.ts sends them alone when no pop follows soon).

  Returns a flat array: id1, score1, pool1, id2, score2, pool2, ... in dispatch order, where pool is
  the 1-based number of the pair the id came from; an OCULUS_INDEX_LOST error when the marker is
  missing, so that the caller claims on PostgreSQL and rebuilds the index; {'OCULUS_POOLS_CHANGED'}
  when the registry's count differs from ARGV[3].
]]
for i = 4, #ARGV, 500 do
  redis.call('ZREM', KEYS[2], unpack(ARGV, i, math.min(i + 499, #ARGV)))
end
if redis.call('EXISTS', KEYS[3]) == 0 then
  return redis.error_reply('OCULUS_INDEX_LOST index marker missing: Redis lost its data')
end
if redis.call('HLEN', KEYS[4]) ~= tonumber(ARGV[3]) then
  return { 'OCULUS_POOLS_CHANGED' }
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local pools = math.floor((#KEYS - 4) / 2)
for p = 1, pools do
  local queue, delayed = KEYS[3 + 2 * p], KEYS[4 + 2 * p]
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[2]))
  for _, id in ipairs(due) do
    local score = redis.call('HGET', KEYS[1], id)
    if score then redis.call('ZADD', queue, score, id) end
    redis.call('ZREM', delayed, id)
    redis.call('HDEL', KEYS[1], id)
  end
end
-- Notes popped ids in build_claiming (one ZADD per call) and returns them with their pool.
local out = {}
local claiming = {}
local function take(id, score, p)
  out[#out + 1] = id
  out[#out + 1] = score
  out[#out + 1] = p
  claiming[#claiming + 1] = now_ms
  claiming[#claiming + 1] = id
end
local function note_claiming()
  for i = 1, #claiming, 1000 do
    redis.call('ZADD', KEYS[2], unpack(claiming, i, math.min(i + 999, #claiming)))
  end
  return out
end
-- One pool (the common case): its best `count` in one ZPOPMIN.
if pools == 1 then
  local popped = redis.call('ZPOPMIN', KEYS[5], tonumber(ARGV[1]))
  for i = 1, #popped, 2 do take(popped[i], popped[i + 1], 1) end
  return note_claiming()
end
-- Several: the head of each pool (id, score), refreshed only for the pool popped from.
local heads = {}
local function read_head(p)
  local head = redis.call('ZRANGE', KEYS[3 + 2 * p], 0, 0, 'WITHSCORES')
  if head[1] then heads[p] = { head[1], tonumber(head[2]) } else heads[p] = false end
end
for p = 1, pools do read_head(p) end
for _ = 1, tonumber(ARGV[1]) do
  local best = nil
  for p = 1, pools do
    if heads[p] and (best == nil or heads[p][2] < heads[best][2]) then best = p end
  end
  if best == nil then break end
  local popped = redis.call('ZPOPMIN', KEYS[3 + 2 * best], 1)
  take(popped[1], popped[2], best)
  read_head(best)
end
return note_claiming()
