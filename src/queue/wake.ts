/**
 * Wake-ups for idle claimers: a Redis pub/sub subscription (fast path) and a PostgreSQL LISTEN (the
 * PostgreSQL path), both feeding one waiter list. Claimers also wake on a timeout, so a lost
 * notification only costs latency.
 */
import type { Logger } from "../core/logger.js";
import type { Db } from "../postgres/db.js";
import { type RedisClient, subscribedClient } from "../redis/connection.js";

export class WakeSignal {
  private waiters = new Set<() => void>();
  /**
   * A wake-up that came while nobody waited (a claimer between its empty claim and its wait): the
   * next wait returns at once instead of sleeping through it. Costs at most one empty claim.
   */
  private missedWake = false;
  private unlisten: (() => Promise<void>) | undefined;
  private subscriber: RedisClient | undefined;

  constructor(private readonly logger: Logger) {}

  async start(
    db: Db,
    pgChannel: string,
    redis: RedisClient | undefined,
    redisChannel: string,
  ): Promise<void> {
    this.unlisten = await db.listen(pgChannel, () => this.wakeAll());
    if (!redis) return;
    this.subscriber = subscribedClient(
      redis,
      redisChannel,
      () => this.wakeAll(),
      (err) => this.logger.debug({ err: err.message }, "wake subscription pending; again on reconnect"),
    );
  }

  wakeAll(): void {
    if (this.waiters.size === 0) {
      this.missedWake = true;
      return;
    }
    const waiters = this.waiters;
    this.waiters = new Set();
    for (const wake of waiters) wake();
  }

  /** Resolves on the next wake-up, after `timeoutMs`, or when `signal` aborts, whichever is first. */
  wait(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.resolve();
    if (this.missedWake) {
      this.missedWake = false;
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        signal?.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.waiters.add(done);
      signal?.addEventListener("abort", done, { once: true });
    });
  }

  async stop(): Promise<void> {
    this.wakeAll();
    await this.unlisten?.().catch(() => undefined);
    this.subscriber?.disconnect();
  }
}
