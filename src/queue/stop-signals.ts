/**
 * Stop requests, delivered to the workers that run the builds: published on Redis (`<prefix>:stop`)
 * and NOTIFYed on PostgreSQL (`oculus_stop_<schema>`), both carrying the build id. A worker listens on
 * both; and since a message can be missed (a cut connection), the build's status ('stopping') is also
 * returned by every heartbeat, so a missed message delays a stop by one heartbeat at most.
 */
import type { Logger } from "../core/logger.js";
import type { Db } from "../postgres/db.js";
import { type RedisClient, subscribedClient } from "../redis/connection.js";

export type StopListener = (buildId: string) => void;

export class StopSignals {
  private readonly listeners = new Set<StopListener>();
  private started: Promise<void> | undefined;
  private unlisten: (() => Promise<void>) | undefined;
  private subscriber: RedisClient | undefined;

  constructor(
    private readonly db: Db,
    readonly pgChannel: string,
    private readonly redis: RedisClient | undefined,
    readonly redisChannel: string,
    private readonly logger: Logger,
  ) {}

  /** Calls `listener` with the id of each build asked to stop; returns the unsubscribe function. */
  async subscribe(listener: StopListener): Promise<() => void> {
    this.listeners.add(listener);
    this.started ??= this.start();
    await this.started;
    return () => this.listeners.delete(listener);
  }

  private deliver(buildId: string): void {
    for (const listener of this.listeners) listener(buildId);
  }

  private async start(): Promise<void> {
    this.unlisten = await this.db.listen(this.pgChannel, (payload) => this.deliver(payload));
    if (!this.redis) return;
    this.subscriber = subscribedClient(
      this.redis,
      this.redisChannel,
      (message) => this.deliver(message),
      (err) => this.logger.debug({ err: err.message }, "stop subscription pending; again on reconnect"),
    );
  }

  async stop(): Promise<void> {
    this.listeners.clear();
    await this.unlisten?.().catch(() => undefined);
    this.subscriber?.disconnect();
  }
}
