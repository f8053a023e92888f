/**
 * The Redis dispatch index: a typed wrapper per Lua script (no call site builds a KEYS array) plus
 * the few plain commands the queue needs. Every method may throw on a Redis fault; the queue's
 * failover decides what that means.
 */
import { Redis, type RedisOptions } from "ioredis";
import { lua } from "../generated/assets.js";
import { type RedisKeys, redisKeys } from "./keys.js";

export interface IndexEntry {
  id: string;
  score: number;
  /** Milliseconds until the build may run (0: now), measured by PostgreSQL's clock. */
  delayMs: number;
}

/** How many delayed builds one claim promotes at most (bounds the script's run time). */
const PROMOTE_LIMIT = 1000;

interface ScriptCommands {
  oculusEnqueue(
    k1: string,
    k2: string,
    k3: string,
    k4: string,
    ...argv: (string | number)[]
  ): Promise<number>;
  oculusPopForClaim(
    k1: string,
    k2: string,
    k3: string,
    k4: string,
    k5: string,
    count: number,
    promoteLimit: number,
  ): Promise<string[]>;
  oculusRemove(k1: string, k2: string, k3: string, ...ids: string[]): Promise<number>;
  oculusWorkerHeartbeat(k1: string, workerId: string): Promise<number>;
  oculusWorkerAges(k1: string, ...workerIds: string[]): Promise<number[]>;
  oculusQueuePosition(k1: string, k2: string, id: string): Promise<[number | null, number]>;
}

export type ScriptedRedis = Redis & ScriptCommands;

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

export function connectRedis(url: string, extra: RedisOptions = {}): ScriptedRedis {
  const redis = new Redis(url, redisOptions(extra)) as ScriptedRedis;
  redis.defineCommand("oculusEnqueue", { numberOfKeys: 4, lua: lua.enqueue });
  redis.defineCommand("oculusPopForClaim", { numberOfKeys: 5, lua: lua.pop_for_claim });
  redis.defineCommand("oculusRemove", { numberOfKeys: 3, lua: lua.remove });
  redis.defineCommand("oculusQueuePosition", { numberOfKeys: 2, lua: lua.queue_position });
  redis.defineCommand("oculusWorkerHeartbeat", { numberOfKeys: 1, lua: lua.worker_heartbeat });
  redis.defineCommand("oculusWorkerAges", { numberOfKeys: 1, lua: lua.worker_ages });
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

  /**
   * Adds builds (ready or delayed); returns how many were new. Publishes a wake-up for ready ones.
   * `protectClaimsMs` > 0 (the reconciler) skips builds popped for a claim less than that long ago.
   */
  async enqueue(entries: IndexEntry[], protectClaimsMs = 0): Promise<number> {
    if (entries.length === 0) return 0;
    const argv: (string | number)[] = [this.keys.wakeChannel, protectClaimsMs];
    for (const e of entries) argv.push(e.id, e.score, Math.max(0, Math.ceil(e.delayMs)));
    const { buildQueue, delayedQueue, delayedScores, claiming } = this.keys;
    return this.redis.oculusEnqueue(buildQueue, delayedQueue, delayedScores, claiming, ...argv);
  }

  /**
   * Pops up to `count` ids in dispatch order (after promoting due delayed builds) and notes them as
   * being claimed; call finishClaim once the PostgreSQL claim has committed or failed.
   */
  async popForClaim(count: number): Promise<{ id: string; score: number }[]> {
    const { buildQueue, delayedQueue, delayedScores, claiming, indexMarker } = this.keys;
    const flat = await this.redis.oculusPopForClaim(
      buildQueue,
      delayedQueue,
      delayedScores,
      claiming,
      indexMarker,
      count,
      PROMOTE_LIMIT,
    );
    const out: { id: string; score: number }[] = [];
    for (let i = 0; i + 1 < flat.length; i += 2)
      out.push({ id: flat[i] as string, score: Number(flat[i + 1]) });
    return out;
  }

  /** The claim of these popped ids is settled (committed, or refused and handled). */
  async finishClaim(ids: string[]): Promise<void> {
    if (ids.length > 0) await this.redis.zrem(this.keys.claiming, ...ids);
  }

  /** Forgets claims older than `olderThanMs` (their ids were re-added or are no longer queued). */
  async forgetStaleClaims(olderThanMs: number): Promise<void> {
    const time = await this.redis.time();
    const nowMs = Number(time[0]) * 1000 + Math.floor(Number(time[1]) / 1000);
    await this.redis.zremrangebyscore(this.keys.claiming, "-inf", `(${nowMs - olderThanMs}`);
  }

  async remove(ids: string[]): Promise<number> {
    if (ids.length === 0) return 0;
    const { buildQueue, delayedQueue, delayedScores } = this.keys;
    return this.redis.oculusRemove(buildQueue, delayedQueue, delayedScores, ...ids);
  }

  /** 1-based position (null when not in the ready index) and the index length, O(log n). */
  async position(id: string): Promise<{ position: number | null; length: number }> {
    const [position, length] = await this.redis.oculusQueuePosition(
      this.keys.buildQueue,
      this.keys.indexMarker,
      id,
    );
    return { position: position === null ? null : Number(position), length: Number(length) };
  }

  async length(): Promise<{ ready: number; delayed: number }> {
    const [ready, delayed] = await Promise.all([
      this.redis.zcard(this.keys.buildQueue),
      this.redis.zcard(this.keys.delayedQueue),
    ]);
    return { ready, delayed };
  }

  /** Walks every id in both sets in pages (ZSCAN), for the reconciler. */
  async *scanIds(pageSize: number): AsyncGenerator<string[]> {
    for (const key of [this.keys.buildQueue, this.keys.delayedQueue]) {
      let cursor = "0";
      do {
        const [next, flat] = await this.redis.zscan(key, cursor, "COUNT", pageSize);
        cursor = next;
        const ids: string[] = [];
        for (let i = 0; i < flat.length; i += 2) ids.push(flat[i] as string);
        if (ids.length > 0) yield ids;
      } while (cursor !== "0");
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

  async setMarker(value: string): Promise<void> {
    await this.redis.set(this.keys.indexMarker, value);
  }

  async ping(): Promise<void> {
    await this.redis.ping();
  }
}
