/**
 * The rate limit's counters, shared through Redis when Redis is there: several `oculus up` processes
 * behind one load balancer then give a token (or an address) one budget, not one per process. When
 * Redis is not connected, or a count fails or takes longer than REDIS_COUNT_TIMEOUT_MS, the count
 * falls back to this process's memory (and Redis is left alone for FALLBACK_MS): the limit then holds
 * per process, a little looser, rather than failing or slowing every request while Redis is away.
 */
import type { FastifyRateLimitStore, FastifyRateLimitStoreCtor } from "@fastify/rate-limit";
import { lua } from "../generated/assets.js";
import type { RedisClient } from "../redis/connection.js";

/** A count that Redis does not answer within this long is counted locally instead. */
const REDIS_COUNT_TIMEOUT_MS = 250;
/** After a failed count, counts stay local this long before Redis is tried again. */
const FALLBACK_MS = 1000;
/** Local windows kept at most (the oldest are dropped first). */
const LOCAL_MAX_KEYS = 10_000;

export interface SharedRateLimit {
  redis: RedisClient;
  /** Key prefix of the counters (redisKeys(prefix).rateLimit). */
  keyPrefix: string;
}

type Count = { current: number; ttl: number };
type Callback = (error: Error | null, result?: Count) => void;
type RateLimitRedis = RedisClient & {
  oculusRateLimit(key: string, windowMs: number): Promise<[number, number]>;
};

/** Fixed windows in this process's memory: the fallback, and the store when there is no Redis. */
class LocalWindows {
  private readonly windows = new Map<string, { count: number; endsAt: number }>();

  count(key: string, windowMs: number): Count {
    const now = Date.now();
    let window = this.windows.get(key);
    if (!window || window.endsAt <= now) {
      this.windows.delete(key);
      if (this.windows.size >= LOCAL_MAX_KEYS) {
        const oldest = this.windows.keys().next().value;
        if (oldest !== undefined) this.windows.delete(oldest);
      }
      window = { count: 0, endsAt: now + windowMs };
      this.windows.set(key, window);
    }
    window.count += 1;
    return { current: window.count, ttl: window.endsAt - now };
  }
}

class SharedCounter {
  private readonly local = new LocalWindows();
  private localUntil = 0;

  constructor(private readonly shared: SharedRateLimit) {
    const redis = shared.redis as Partial<RateLimitRedis> & RedisClient;
    if (!redis.oculusRateLimit)
      redis.defineCommand("oculusRateLimit", { numberOfKeys: 1, lua: lua.rate_limit });
  }

  async count(key: string, windowMs: number): Promise<Count> {
    const redis = this.shared.redis as RateLimitRedis;
    if (redis.status !== "ready" || Date.now() < this.localUntil) return this.local.count(key, windowMs);
    let timer: NodeJS.Timeout | undefined;
    try {
      const reply = redis.oculusRateLimit(`${this.shared.keyPrefix}${key}`, windowMs);
      reply.catch(() => undefined); // a late failure after the timeout is not unhandled
      const [current, ttl] = await Promise.race([
        reply,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error("rate limit count timed out")), REDIS_COUNT_TIMEOUT_MS);
        }),
      ]);
      return { current: Number(current), ttl: Number(ttl) };
    } catch {
      this.localUntil = Date.now() + FALLBACK_MS;
      return this.local.count(key, windowMs);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** A @fastify/rate-limit store class counting through `shared` (see the file's header). */
export function sharedRateLimitStore(shared: SharedRateLimit): FastifyRateLimitStoreCtor {
  const counter = new SharedCounter(shared);
  return class SharedStore implements FastifyRateLimitStore {
    /** The plugin passes its options; a route with a limit of its own gets a scope (child). */
    constructor(
      _options?: unknown,
      private readonly scope = "",
    ) {}

    incr(key: string, callback: Callback, timeWindow: number): void {
      counter.count(`${this.scope}${key}`, timeWindow).then(
        (count) => callback(null, count),
        (err: Error) => callback(err),
      );
    }

    child(routeOptions: { method: string | string[]; url: string }): FastifyRateLimitStore {
      return new SharedStore(undefined, `${this.scope}${String(routeOptions.method)}${routeOptions.url}:`);
    }
  };
}
