/**
 * The one place a Redis client is made (src/core/redis-url.ts parses the URL). Every client of the
 * queue, the workers' heartbeat threads, the pub/sub subscribers (stop, wake, events) and the
 * operations commands comes from `createRedisClient`, so all of them follow a Sentinel failover
 * (ioredis asks the sentinels for the master on every reconnect, and hears +switch-master) or a
 * Cluster's MOVED/ASK redirections and node failovers.
 */
import { Cluster, type ClusterOptions, Redis, type RedisOptions } from "ioredis";
import { parseRedisUrl, type RedisNode, type RedisTarget } from "../core/redis-url.js";

/** A client of any topology (ioredis's Redis and Cluster share the commands the queue uses). */
export type RedisClient = Redis | Cluster;

/**
 * An error reply that a demoted or restarting node gives (a master turned replica after a failover:
 * READONLY; a node loading its data set: LOADING; a cluster without a quorum or mid-resharding:
 * CLUSTERDOWN, TRYAGAIN, MASTERDOWN). These pass by themselves: a client reconnects (Sentinel: to the
 * master the sentinels now name) and the queue serves from PostgreSQL meanwhile.
 */
export function isRedisFailoverError(err: unknown): boolean {
  const message = err instanceof Error ? err.message : String(err);
  return /^(READONLY|LOADING|CLUSTERDOWN|TRYAGAIN|MASTERDOWN)\b/.test(message);
}

/**
 * Sentinel mode: reconnect (which asks the sentinels for the master again) when a node says it is no
 * longer the master, at most once a second (sentinels that still name the demoted node would make
 * it a loop). On one server a reconnection cannot help: the failover's probes with backoff wait.
 */
function reconnectOnFailoverError(): (err: Error) => 1 | false {
  let last = 0;
  return (err) => {
    if (!/^(READONLY|LOADING)\b/.test(err.message) || Date.now() - last < 1000) return false;
    last = Date.now();
    return 1;
  };
}

/**
 * A Sentinel client that never gives up by itself. ioredis 5 ends a Sentinel client for good (status
 * "end", no more reconnections) when a disconnection reaches it while a reconnection is asking the
 * sentinels for the master: the previous connection's failover detector hearing +switch-master at
 * that moment does it, in about one master kill of eight under load. The queue would then stay on
 * PostgreSQL and its subscribers deaf until a restart. This client connects again after such an end;
 * only its owner's disconnect() ends it.
 */
class SentinelRedis extends Redis {
  private closedByOwner = false;

  constructor(options: RedisOptions) {
    super(options);
    this.on("end", () => {
      if (this.closedByOwner) return;
      // ioredis re-subscribes on the next "ready" (the channels are kept from the lost connection).
      setTimeout(() => {
        if (!this.closedByOwner && this.status === "end") this.connect().catch(() => undefined);
      }, ENDED_RECONNECT_DELAY_MS).unref();
    });
  }

  override disconnect(reconnect = false): void {
    if (!reconnect) this.closedByOwner = true;
    super.disconnect(reconnect);
  }

  /** A second client like this one (ioredis's duplicate() would make a plain Redis). */
  duplicateWith(overrides: RedisOptions): SentinelRedis {
    return new SentinelRedis({ ...this.options, ...overrides });
  }
}

/** How soon a Sentinel client that ioredis ended connects again. */
const ENDED_RECONNECT_DELAY_MS = 200;

/**
 * A client for `url` with `options` (ioredis options; a few are set here per topology). Throws a
 * RedisUrlError on a malformed URL.
 */
export function createRedisClient(url: string, options: RedisOptions = {}): RedisClient {
  const target = parseRedisUrl(url);
  if (target.topology === "cluster") return createCluster(target, options);
  const auth: RedisOptions = {
    ...(target.username ? { username: target.username } : {}),
    ...(target.password ? { password: target.password } : {}),
    db: target.db,
    ...(target.tls ? { tls: {} } : {}),
  };
  if (target.topology === "standalone") {
    const node = target.nodes[0] as RedisNode;
    return new Redis({ host: node.host, port: node.port, ...auth, ...options });
  }
  return new SentinelRedis({
    ...auth,
    sentinels: target.nodes,
    name: target.masterName as string,
    role: "master",
    reconnectOnError: reconnectOnFailoverError(),
    ...(target.sentinelUsername ? { sentinelUsername: target.sentinelUsername } : {}),
    ...(target.sentinelPassword ? { sentinelPassword: target.sentinelPassword } : {}),
    ...(target.tls ? { enableTLSForSentinelMode: true, sentinelTLS: {} } : {}),
    // Learn about a failover from the sentinels' +switch-master at once, not at the next error.
    failoverDetector: true,
    // Keep asking the sentinels while none answers (the queue runs on PostgreSQL meanwhile).
    sentinelRetryStrategy: (attempt: number) => Math.min(100 * attempt, 1000),
    ...options,
  });
}

function createCluster(target: RedisTarget, options: RedisOptions): Cluster {
  const {
    enableOfflineQueue,
    lazyConnect,
    retryStrategy: _perNodeRetry, // a Cluster has its own (clusterRetryStrategy)
    ...perNode
  } = options;
  const clusterOptions: ClusterOptions = {
    redisOptions: {
      ...(target.username ? { username: target.username } : {}),
      ...(target.password ? { password: target.password } : {}),
      ...(target.tls ? { tls: {} } : {}),
      ...perNode,
    },
    // Every key of the queue carries one hash tag: one slot, one master. Reads go to it too (a
    // replica may lag behind the writes the scripts depend on).
    scaleReads: "master",
    clusterRetryStrategy: (attempt: number) => Math.min(100 * attempt, 1000),
    // CLUSTERDOWN/TRYAGAIN are retried a few times by ioredis, then reach the failover (fallback).
    retryDelayOnClusterDown: 100,
    retryDelayOnTryAgain: 100,
    retryDelayOnFailover: 100,
    slotsRefreshTimeout: 2000,
    ...(enableOfflineQueue !== undefined ? { enableOfflineQueue } : {}),
    ...(lazyConnect !== undefined ? { lazyConnect } : {}),
  };
  return new Cluster(target.nodes, clusterOptions);
}

/**
 * A second connection like `client` (for SUBSCRIBE, which takes a connection over), with `overrides`.
 * ioredis re-subscribes it after every reconnection: to the new master after a Sentinel failover, to
 * another node when a Cluster node goes away.
 */
export function duplicateClient(client: RedisClient, overrides: RedisOptions = {}): RedisClient {
  if (client instanceof Cluster) {
    const { enableOfflineQueue, lazyConnect } = overrides;
    return client.duplicate(undefined, {
      ...(enableOfflineQueue !== undefined ? { enableOfflineQueue } : {}),
      ...(lazyConnect !== undefined ? { lazyConnect } : {}),
    });
  }
  if (client instanceof SentinelRedis) return client.duplicateWith({ autoResubscribe: true, ...overrides });
  return client.duplicate({ autoResubscribe: true, ...overrides });
}

/**
 * A second connection like `client`, subscribed to `channel`: `onMessage` gets each message. It
 * subscribes again after every reconnection (to the new master after a Sentinel failover).
 * ioredis 5 re-subscribes by itself (autoResubscribe) without handling the SUBSCRIBE's failure: when
 * the connection dropped again before the reply (Redis killed while clients reconnect), the rejection
 * went unhandled and ended the process (ioredis pull request 2187, fixed in ioredis 6.1). So this
 * connection re-subscribes on each "ready" itself, and a failed SUBSCRIBE only waits for the next
 * one. A Cluster subscriber keeps ioredis' own re-subscription (a node of its choosing).
 */
export function subscribedClient(
  client: RedisClient,
  channel: string,
  onMessage: (message: string) => void,
  onSubscribeFailed: (err: Error) => void,
): RedisClient {
  const own = !(client instanceof Cluster);
  const subscriber = duplicateClient(client, {
    enableOfflineQueue: true,
    lazyConnect: false,
    ...(own ? { autoResubscribe: false } : {}),
  });
  subscriber.on("error", () => undefined); // the main connection reports Redis faults
  subscriber.on("message", (_channel: string, message: string) => onMessage(message));
  const subscribe = () => {
    subscriber.subscribe(channel).catch(onSubscribeFailed);
  };
  if (own) subscriber.on("ready", subscribe);
  else subscribe();
  return subscriber;
}

/** True when the client talks to a Redis Cluster. */
export function isCluster(client: RedisClient): client is Cluster {
  return client instanceof Cluster;
}
