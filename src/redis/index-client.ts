/**
 * The Redis dispatch index: a typed wrapper per Lua script (no call site builds a KEYS array) plus
 * the few plain commands the queue needs. Every method may throw on a Redis fault; the queue's
 * failover decides what that means.
 */
import type { RedisOptions } from "ioredis";
import { DEFAULT_POOL } from "../core/pools.js";
import { lua } from "../generated/assets.js";
import { createRedisClient, type RedisClient } from "./connection.js";
import { type PoolKeys, poolKeys, type RedisKeys, redisKeys } from "./keys.js";

export interface IndexEntry {
  id: string;
  /** The build's pool (src/core/pools.ts). */
  pool: string;
  /** The pool's requirements (registered in the pool registry with its first build). */
  requires: Record<string, string>;
  score: number;
  /** Milliseconds until the build may run (0: now), measured by PostgreSQL's clock. */
  delayMs: number;
}

/** How many delayed builds one claim promotes at most (bounds the script's run time). */
const PROMOTE_LIMIT = 1000;

/** The pool registry: pool id -> requirements (the default pool always there), and its raw size. */
export interface PoolRegistry {
  pools: Map<string, Record<string, string>>;
  size: number;
}

/** An id popped for a claim, with its dispatch score and its pool. */
export interface PoppedEntry {
  id: string;
  score: number;
  pool: string;
}

interface ScriptCommands {
  oculusEnqueue(
    k1: string,
    k2: string,
    k3: string,
    k4: string,
    k5: string,
    ...argv: (string | number)[]
  ): Promise<number>;
  oculusPopForClaim(numberOfKeys: number, ...keysAndArgs: (string | number)[]): Promise<string[]>;
  oculusRemove(k1: string, k2: string, k3: string, ...ids: string[]): Promise<number>;
  oculusWorkerHeartbeat(k1: string, workerId: string): Promise<number>;
  oculusWorkerAges(k1: string, ...workerIds: string[]): Promise<number[]>;
  oculusQueuePosition(k1: string, k2: string, id: string): Promise<[number | null, number]>;
  oculusCertifyIndex(k1: string, k2: string, token: string, marker: string): Promise<number>;
  oculusIndexCounts(numberOfKeys: number, ...keysAndArgs: (string | number)[]): Promise<number[]>;
}

export type ScriptedRedis = RedisClient & ScriptCommands;

/**
 * Connection options that make a dead Redis fail fast instead of queueing commands forever: the
 * queue then serves from PostgreSQL, and ioredis keeps reconnecting in the background.
 */
export function redisOptions(extra: RedisOptions = {}): RedisOptions {
  return {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: 2000,
    commandTimeout: 2000,
    lazyConnect: true,
    retryStrategy: (attempt) => Math.min(100 * attempt, 1000),
    ...extra,
  };
}

/** A client of REDIS_URL's topology (one server, Sentinel or Cluster) with the queue's scripts. */
export function connectRedis(url: string, extra: RedisOptions = {}): ScriptedRedis {
  const redis = createRedisClient(url, redisOptions(extra)) as ScriptedRedis;
  redis.defineCommand("oculusEnqueue", { numberOfKeys: 5, lua: lua.enqueue });
  // Variable key counts (one pair per pool): the caller passes the number of keys first.
  redis.defineCommand("oculusPopForClaim", { lua: lua.pop_for_claim });
  redis.defineCommand("oculusRemove", { numberOfKeys: 3, lua: lua.remove });
  redis.defineCommand("oculusQueuePosition", { numberOfKeys: 2, lua: lua.queue_position });
  redis.defineCommand("oculusWorkerHeartbeat", { numberOfKeys: 1, lua: lua.worker_heartbeat });
  redis.defineCommand("oculusWorkerAges", { numberOfKeys: 1, lua: lua.worker_ages });
  redis.defineCommand("oculusCertifyIndex", { numberOfKeys: 2, lua: lua.certify_index });
  redis.defineCommand("oculusIndexCounts", { lua: lua.index_counts });
  return redis;
}

export class RedisIndex {
  readonly keys: RedisKeys;

  constructor(
    readonly redis: ScriptedRedis,
    prefix: string,
  ) {
    this.keys = redisKeys(prefix);
  }

  /** The dispatch set and delayed set of a pool. */
  poolKeys(pool: string): PoolKeys {
    return poolKeys(this.keys, pool);
  }

  /**
   * Adds builds (ready or delayed) to their pools' sets; returns how many were new. Publishes a
   * wake-up for ready ones. `protectClaimsMs` > 0 (the reconciler) skips builds popped for a claim
   * less than that long ago. One script call per pool (each call is atomic for its pool).
   */
  async enqueue(entries: IndexEntry[], protectClaimsMs = 0): Promise<number> {
    const byPool = new Map<string, IndexEntry[]>();
    for (const e of entries) {
      const list = byPool.get(e.pool);
      if (list) list.push(e);
      else byPool.set(e.pool, [e]);
    }
    let added = 0;
    for (const [pool, poolEntries] of byPool) {
      const argv: (string | number)[] = [
        this.keys.wakeChannel,
        protectClaimsMs,
        pool,
        JSON.stringify(poolEntries[0]?.requires ?? {}),
      ];
      for (const e of poolEntries) argv.push(e.id, e.score, Math.max(0, Math.ceil(e.delayMs)));
      const { queue, delayed } = this.poolKeys(pool);
      const { delayedScores, claiming, pools } = this.keys;
      added += await this.redis.oculusEnqueue(queue, delayed, delayedScores, claiming, pools, ...argv);
    }
    return added;
  }

  /** Every pool in the registry (pool id -> requirements), the default pool always among them. */
  async pools(): Promise<Map<string, Record<string, string>>> {
    return (await this.poolRegistry()).pools;
  }

  /** The pool registry, and how many entries it held (what popForClaim checks its copy against). */
  async poolRegistry(): Promise<PoolRegistry> {
    const raw = await this.redis.hgetall(this.keys.pools);
    const out = new Map<string, Record<string, string>>([[DEFAULT_POOL, {}]]);
    for (const [pool, requires] of Object.entries(raw)) {
      try {
        out.set(pool, JSON.parse(requires) as Record<string, string>);
      } catch {
        // written by hand: a pool nobody can be matched against
      }
    }
    return { pools: out, size: Object.keys(raw).length };
  }

  /**
   * Pops up to `count` ids in dispatch order across `pools` (after promoting due delayed builds) and
   * notes them as being claimed; call finishClaim once the PostgreSQL claim has committed or failed.
   * `registrySize` is the size of the registry `pools` were chosen from: "pools changed" (nothing
   * popped) when the registry has changed since, so that the caller chooses again. `settled`: ids
   * of earlier pops whose claim has settled, taken out of build_claiming by the same call (what
   * finishClaim does alone).
   */
  async popForClaim(
    count: number,
    pools: string[],
    registrySize: number,
    settled: string[] = [],
  ): Promise<PoppedEntry[] | "pools changed"> {
    const { delayedScores, claiming, indexMarker } = this.keys;
    const keys = [delayedScores, claiming, indexMarker, this.keys.pools];
    for (const pool of pools) {
      const k = this.poolKeys(pool);
      keys.push(k.queue, k.delayed);
    }
    const flat = await this.redis.oculusPopForClaim(
      keys.length,
      ...keys,
      count,
      PROMOTE_LIMIT,
      registrySize,
      ...settled,
    );
    if (flat.length === 1 && flat[0] === "OCULUS_POOLS_CHANGED") return "pools changed";
    const out: PoppedEntry[] = [];
    for (let i = 0; i + 2 < flat.length; i += 3) {
      const pool = pools[Number(flat[i + 2]) - 1] ?? DEFAULT_POOL;
      out.push({ id: flat[i] as string, score: Number(flat[i + 1]), pool });
    }
    return out;
  }

  /** The claim of these popped ids is settled (committed, or refused and handled). */
  async finishClaim(ids: string[]): Promise<void> {
    if (ids.length > 0) await this.redis.zrem(this.keys.claiming, ...ids);
  }

  /** Forgets claims older than `olderThanMs` (their ids were re-added or are no longer queued). */
  async forgetStaleClaims(olderThanMs: number): Promise<void> {
    const nowMs = await this.timeMs();
    await this.redis.zremrangebyscore(this.keys.claiming, "-inf", `(${nowMs - olderThanMs}`);
  }

  /** Removes builds of one pool from its sets. */
  async remove(ids: string[], pool: string = DEFAULT_POOL): Promise<number> {
    if (ids.length === 0) return 0;
    const { queue, delayed } = this.poolKeys(pool);
    return this.redis.oculusRemove(queue, delayed, this.keys.delayedScores, ...ids);
  }

  /** 1-based position in its pool (null when not in the pool's ready set) and the pool's length, O(log n). */
  async position(
    id: string,
    pool: string = DEFAULT_POOL,
  ): Promise<{ position: number | null; length: number }> {
    const [position, length] = await this.redis.oculusQueuePosition(
      this.poolKeys(pool).queue,
      this.keys.indexMarker,
      id,
    );
    return { position: position === null ? null : Number(position), length: Number(length) };
  }

  /** Ready and delayed ids over every pool. */
  async length(): Promise<{ ready: number; delayed: number }> {
    const { ready, delayed } = await this.counts(0);
    return { ready, delayed };
  }

  /** Ready and delayed ids of each pool in the registry. */
  async poolLengths(): Promise<Map<string, { ready: number; delayed: number }>> {
    const pools = [...(await this.pools()).keys()];
    const counts = await Promise.all(
      pools.map(async (pool) => {
        const { queue, delayed } = this.poolKeys(pool);
        const [r, d] = await Promise.all([this.redis.zcard(queue), this.redis.zcard(delayed)]);
        return [pool, { ready: r, delayed: d }] as const;
      }),
    );
    return new Map(counts);
  }

  /** Walks every id in every pool's sets in pages (ZSCAN), for the reconciler. */
  async *scanIds(pageSize: number): AsyncGenerator<{ pool: string; ids: string[] }> {
    for (const pool of (await this.pools()).keys()) {
      const { queue, delayed } = this.poolKeys(pool);
      for (const key of [queue, delayed]) {
        let cursor = "0";
        do {
          const [next, flat] = await this.redis.zscan(key, cursor, "COUNT", pageSize);
          cursor = next;
          const ids: string[] = [];
          for (let i = 0; i < flat.length; i += 2) ids.push(flat[i] as string);
          if (ids.length > 0) yield { pool, ids };
        } while (cursor !== "0");
      }
    }
  }

  async workerHeartbeat(workerId: string): Promise<void> {
    await this.redis.oculusWorkerHeartbeat(this.keys.workerHeartbeats, workerId);
  }

  /** Milliseconds since each worker's last Redis heartbeat (undefined: none in Redis). */
  async workerAges(workerIds: string[]): Promise<Map<string, number | undefined>> {
    if (workerIds.length === 0) return new Map();
    const ages = await this.redis.oculusWorkerAges(this.keys.workerHeartbeats, ...workerIds);
    return new Map(workerIds.map((id, i) => [id, (ages[i] ?? -1) < 0 ? undefined : Number(ages[i])]));
  }

  async hasMarker(): Promise<boolean> {
    return (await this.redis.exists(this.keys.indexMarker)) === 1;
  }

  /**
   * Proves that Redis answers and takes writes, within `timeoutMs`: a PING, then a SET (with a short
   * expiry) of the probe key. A Redis that answers reads but refuses writes (OOM under noeviction, a
   * READONLY replica, MISCONF) fails here with its error reply; a hung one with a timeout.
   */
  async probeWrites(timeoutMs: number, value: string): Promise<void> {
    await withTimeout(
      (async () => {
        await this.redis.ping();
        await this.redis.set(this.keys.writeProbe, value, "PX", 10_000);
      })(),
      timeoutMs,
      "Redis write probe",
    );
  }

  /**
   * The fleet-wide turn to look for claimable builds on PostgreSQL after an empty pop: true for at
   * most one caller per `everyMs` (SET NX PX). A write: a Redis that refuses writes throws here.
   */
  async takeClaimFallbackTurn(everyMs: number): Promise<boolean> {
    return this.takeTurn(this.keys.claimFallbackGate, everyMs);
  }

  /**
   * The fleet-wide turn for a housekeeping pass (reaper, admission sweep): true for at most one
   * caller per `everyMs` (SET NX PX). A write: a Redis that refuses writes throws here.
   */
  async takeHousekeepingTurn(everyMs: number): Promise<boolean> {
    return this.takeTurn(this.keys.housekeepingGate, everyMs);
  }

  /** A fleet-wide turn: true for the one caller whose SET NX created `gate` (it expires after `ms`). */
  private async takeTurn(gate: string, ms: number): Promise<boolean> {
    return (await this.redis.set(gate, "1", "PX", ms, "NX")) === "OK";
  }

  /**
   * Ready ids, delayed ids, and ids popped for a claim less than `claimWindowMs` ago, read at one
   * instant (the drift check).
   */
  async counts(claimWindowMs: number): Promise<{ ready: number; delayed: number; claiming: number }> {
    const keys = [this.keys.claiming];
    for (const pool of (await this.pools()).keys()) {
      const k = this.poolKeys(pool);
      keys.push(k.queue, k.delayed);
    }
    const [ready, delayed, inFlight] = await this.redis.oculusIndexCounts(
      keys.length,
      ...keys,
      claimWindowMs,
    );
    return { ready: Number(ready), delayed: Number(delayed), claiming: Number(inFlight) };
  }

  /** Notes a reconcile walk's start (see certify_index.lua). */
  async startWalk(token: string): Promise<void> {
    await this.redis.hset(this.keys.reconcileWalks, token, new Date().toISOString());
    // Tokens of walkers that died go with the hash a day after the last walk started.
    await this.redis.pexpire(this.keys.reconcileWalks, 86_400_000);
  }

  /** The Redis server's clock, epoch ms (one clock for every process). */
  async timeMs(): Promise<number> {
    const [sec, micro] = await this.redis.time();
    return Number(sec) * 1000 + Math.floor(Number(micro) / 1000);
  }

  /** The index marker's value (undefined: no marker). */
  async marker(): Promise<string | undefined> {
    return (await this.redis.get(this.keys.indexMarker)) ?? undefined;
  }

  /** Sets the index marker if the walk's token survived; false when Redis lost data during the walk. */
  async certifyWalk(token: string, marker: string): Promise<boolean> {
    const { reconcileWalks, indexMarker } = this.keys;
    return (await this.redis.oculusCertifyIndex(reconcileWalks, indexMarker, token, marker)) === 1;
  }

  async ping(): Promise<void> {
    await this.redis.ping();
  }
}

/**
 * A Redis step failed (a lost connection, a timeout, or an error reply such as OOM or READONLY).
 * Lets a caller that mixes Redis and PostgreSQL steps (the reconciler) tell whose fault it was.
 */
export class RedisIndexFault extends Error {
  constructor(override readonly cause: Error) {
    super(cause.message);
    this.name = "RedisIndexFault";
  }
}

/** Runs a Redis step; its failure becomes a RedisIndexFault. */
export async function redisStep<T>(step: Promise<T>): Promise<T> {
  try {
    return await step;
  } catch (err) {
    throw err instanceof RedisIndexFault ? err : new RedisIndexFault(err as Error);
  }
}

/** `promise`, or a rejection after `ms` (the command itself still ends by ioredis's own timeout). */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  promise.catch(() => undefined); // a late failure after the timeout is not unhandled
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
