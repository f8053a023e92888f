/**
 * Every Redis key and channel name, in one place. With the default prefix the dispatch index is
 * `oculus:build_queue`, the name the platform already uses. On Redis Cluster give a hash-tag prefix
 * (`{oculus}`) so that all keys of one queue share a slot and every script can touch them together.
 */
export interface RedisKeys {
  /** Sorted set: ready queued build ids, scored by encodeScore(priority, seq). */
  buildQueue: string;
  /** Sorted set: queued build ids waiting out a retry backoff, scored by run time (epoch ms). */
  delayedQueue: string;
  /** Hash: build id -> dispatch score, for the builds in delayedQueue (restored on promotion). */
  delayedScores: string;
  /** Sorted set: ids popped for a claim whose PostgreSQL commit is in flight, scored by pop time. */
  claiming: string;
  /** String: set by the reconciler after it made the index equal to PostgreSQL. Its absence means
   * this Redis never had, or lost, its data. */
  indexMarker: string;
  /** Hash: reconcile walk token -> start (ISO time). Written when a walk starts; the marker is set at
   * its end only if its token is still there, i.e. Redis lost no data during the walk. */
  reconcileWalks: string;
  /** String (with a short expiry): the failover's write probe. A Redis that takes this SET takes writes. */
  writeProbe: string;
  /** String (expiry ~1 s): set by the claimer that, after an empty pop, also claims on PostgreSQL, so
   * that the fleet as a whole looks there about once a second (lost ids found, idle cost bounded). */
  claimFallbackGate: string;
  /** String (expiry just under the reaper interval): set by the process making this interval's
   * housekeeping pass (reaper, admission sweep), so that the fleet makes one, not one per process. */
  housekeepingGate: string;
  /** Sorted set: worker id -> last heartbeat (epoch ms, Redis clock). */
  workerHeartbeats: string;
  /** Hash: pool id -> its requirements (JSON): every pool that has had a build in the index. Claimers
   * read it to find the pools their labels satisfy; the reconciler walks every pool in it. */
  pools: string;
  /** Pub/sub channel: a build id, asked to stop. */
  stopChannel: string;
  /** Pub/sub channel: "there is work", published when builds enter the index. */
  wakeChannel: string;
  /** Pub/sub channel: `{"v":1,"builds":[ids]|null}`, published after events were committed. */
  eventsChannel: string;
  /** Key prefix: + a client's key (`token:NAME`, `ip:ADDRESS`) is the String counting its requests
   * in the current rate limit window (expires with it), shared by every API process. */
  rateLimit: string;
}

export function redisKeys(prefix: string): RedisKeys {
  return {
    buildQueue: `${prefix}:build_queue`,
    delayedQueue: `${prefix}:build_delayed`,
    delayedScores: `${prefix}:build_delayed_scores`,
    claiming: `${prefix}:build_claiming`,
    indexMarker: `${prefix}:index_marker`,
    reconcileWalks: `${prefix}:reconcile_walks`,
    writeProbe: `${prefix}:write_probe`,
    claimFallbackGate: `${prefix}:claim_fallback_gate`,
    housekeepingGate: `${prefix}:housekeeping_gate`,
    workerHeartbeats: `${prefix}:worker_heartbeats`,
    pools: `${prefix}:pools`,
    stopChannel: `${prefix}:stop`,
    wakeChannel: `${prefix}:wake`,
    eventsChannel: `${prefix}:events`,
    rateLimit: `${prefix}:rate_limit:`,
  };
}

/** The dispatch set and the delayed set of one pool (src/core/pools.ts). */
export interface PoolKeys {
  /** Sorted set: the pool's ready queued build ids, scored by encodeScore(priority, seq). */
  queue: string;
  /** Sorted set: the pool's queued build ids waiting out a retry backoff, scored by run time. */
  delayed: string;
}

/**
 * The default pool (no requirements) keeps the platform's key `oculus:build_queue`; every other pool
 * has its own pair, `oculus:build_queue:<pool id>` and `oculus:build_delayed:<pool id>` (same prefix,
 * so on Redis Cluster a hash-tag prefix keeps them in the queue's slot).
 */
export function poolKeys(keys: RedisKeys, pool: string): PoolKeys {
  if (pool === "default") return { queue: keys.buildQueue, delayed: keys.delayedQueue };
  return { queue: `${keys.buildQueue}:${pool}`, delayed: `${keys.delayedQueue}:${pool}` };
}
