/**
 * The few administrative Redis calls the operations commands make (INFO, CONFIG GET/SET), with the
 * two situations an operator meets in practice told apart: Redis is unreachable (an error), and
 * CONFIG is disabled or renamed, as managed Redis services do (not an error: the caller degrades).
 */
import { type Cluster, Redis, type RedisOptions } from "ioredis";
import { redactUrl } from "../core/config.js";
import { parseRedisUrl } from "../core/redis-url.js";
import { createRedisClient } from "../redis/connection.js";
import { redisKeys } from "../redis/keys.js";

/** `INFO` text as a map of field -> value (section headers and blank lines dropped). */
export function parseInfo(text: string): Map<string, string> {
  const fields = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    if (line === "" || line.startsWith("#")) continue;
    const colon = line.indexOf(":");
    if (colon > 0) fields.set(line.slice(0, colon), line.slice(colon + 1));
  }
  return fields;
}

/** Every default INFO section (server, memory, persistence, replication, keyspace, ...) in one call. */
export async function readInfo(redis: Redis): Promise<Map<string, string>> {
  return parseInfo(await redis.info());
}

export type ConfigRead = { ok: true; values: Map<string, string> } | { ok: false; reason: string };

/**
 * CONFIG GET of each name, one call per name (Redis before 7.0 takes one pattern per call). When the
 * command is refused (renamed, disabled, or not allowed to this user) the answer says why instead of
 * throwing; any other error (connection lost) is thrown.
 */
export async function readConfig(redis: Redis, names: readonly string[]): Promise<ConfigRead> {
  try {
    const replies = await Promise.all(names.map((name) => redis.config("GET", name) as Promise<string[]>));
    const values = new Map<string, string>();
    for (const reply of replies) {
      for (let i = 0; i + 1 < reply.length; i += 2) values.set(reply[i] as string, reply[i + 1] as string);
    }
    return { ok: true, values };
  } catch (err) {
    if (isCommandRefused(err)) return { ok: false, reason: (err as Error).message };
    throw err;
  }
}

/** An error reply that means "this command is not available here", as opposed to a fault. */
export function isCommandRefused(err: unknown): boolean {
  const message = err instanceof Error ? err.message : String(err);
  return /unknown command|unknown subcommand|NOPERM|no permissions|not allowed/i.test(message);
}

/**
 * A client for one-off administrative work on the server that holds the queue's keys: the server of
 * a redis:// URL, the master the sentinels name for a redis-sentinel:// URL, the master owning the
 * prefix's slot for a redis-cluster:// URL. Connects now (so that an unreachable Redis is reported
 * here, with the URL, and not as a timeout later), never queues commands while disconnected, and
 * does not reconnect on its own.
 */
export async function connectAdminRedis(url: string, timeoutMs = 5000, prefix = "oculus"): Promise<Redis> {
  const target = parseRedisUrl(url);
  if (target.topology === "cluster") return connectSlotMaster(url, timeoutMs, prefix);
  const redis = createRedisClient(url, adminOptions(timeoutMs)) as Redis;
  return connectNow(redis, url);
}

function adminOptions(timeoutMs: number): RedisOptions {
  return {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: timeoutMs,
    commandTimeout: 30_000,
    retryStrategy: () => null,
    // Sentinel mode: one round over the sentinels, then fail (do not wait for a master forever).
    sentinelRetryStrategy: () => null,
  };
}

async function connectNow(redis: Redis, url: string): Promise<Redis> {
  // ioredis rejects connect() with "Connection is closed."; the cause (ECONNREFUSED, ...) comes as an event.
  let cause: Error | undefined;
  redis.on("error", (err: Error) => {
    cause ??= err;
  });
  try {
    await redis.connect();
    await redis.ping();
    return redis;
  } catch (err) {
    redis.disconnect();
    throw new Error(`cannot reach Redis at ${redactUrl(url)}: ${(cause ?? (err as Error)).message}`);
  }
}

/** On a Cluster: a plain connection to the master that owns the slot of the prefix's keys. */
async function connectSlotMaster(url: string, timeoutMs: number, prefix: string): Promise<Redis> {
  const cluster = createRedisClient(url, adminOptions(timeoutMs)) as Cluster;
  cluster.on("error", () => undefined);
  try {
    await cluster.connect();
    const node = await slotMaster(cluster, redisKeys(prefix).buildQueue);
    const options = cluster.options.redisOptions ?? {};
    return await connectNow(
      new Redis({ ...options, ...adminOptions(timeoutMs), host: node.host, port: node.port }),
      url,
    );
  } catch (err) {
    throw new Error(`cannot reach Redis at ${redactUrl(url)}: ${(err as Error).message}`);
  } finally {
    cluster.disconnect();
  }
}

/** The master (host, port) that owns `key`'s slot, by the cluster's slot table. */
export async function slotMaster(cluster: Cluster, key: string): Promise<{ host: string; port: number }> {
  const slot = Number(await cluster.call("CLUSTER", "KEYSLOT", key));
  const master = cluster.slots[slot]?.[0];
  if (!master) throw new Error(`no master owns slot ${slot} (cluster_state not ok?)`);
  const colon = master.lastIndexOf(":");
  return { host: master.slice(0, colon), port: Number(master.slice(colon + 1)) };
}

/** Seconds since the epoch by the Redis server's clock (so that no two machines' clocks are compared). */
export function serverNowSec(info: Map<string, string>): number | undefined {
  const usec = Number(info.get("server_time_usec"));
  return Number.isFinite(usec) && usec > 0 ? usec / 1e6 : undefined;
}

/** Polls INFO until `done` says so; throws after `timeoutMs` with `what` in the message. */
export async function waitForInfo(
  redis: Redis,
  done: (info: Map<string, string>) => boolean,
  what: string,
  timeoutMs: number,
  pollMs = 100,
): Promise<Map<string, string>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const info = await readInfo(redis);
    if (done(info)) return info;
    if (Date.now() > deadline) throw new Error(`timed out after ${Math.round(timeoutMs / 1000)} s ${what}`);
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}
