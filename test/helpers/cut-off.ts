/**
 * The stores of a test that cuts a worker's connections for real: a private redis-server (no
 * persistence), an `observer` queue on direct connections (the rest of the system), and a
 * `workerQueue` that reaches Redis, and with `cutPostgres` PostgreSQL too, through TCP proxies.
 */
import { BuildQueue, type HealthPolicy } from "../../src/index.js";
import { dropSchema, TEST_DATABASE_URL } from "./postgres.js";
import { RedisServer } from "./redis-server.js";
import { TcpProxy } from "./tcp-proxy.js";

export interface CutOffStores {
  redis: RedisServer;
  redisProxy: TcpProxy;
  /** Only with `cutPostgres`. */
  pgProxy: TcpProxy | undefined;
  observer: BuildQueue;
  workerQueue: BuildQueue;
  /** Lets every connection through again (before stopping the worker, so that it can stop). */
  restore(): void;
  /** Closes the queues, the proxies and Redis, and drops the schema. */
  close(): Promise<void>;
}

export async function openCutOffStores(options: {
  schema: string;
  prefix: string;
  health: Partial<HealthPolicy>;
  cutPostgres?: boolean;
}): Promise<CutOffStores> {
  const { schema, prefix, health } = options;
  // Undone in reverse order; whatever was opened when a step fails is closed too.
  const cleanups: (() => Promise<unknown>)[] = [() => dropSchema(schema)];
  const close = async () => {
    for (const cleanup of [...cleanups].reverse()) await cleanup();
  };
  const open = async (databaseUrl: string, redisUrl: string) => {
    const queue = await BuildQueue.open({ databaseUrl, redisUrl, schema, prefix, health });
    cleanups.push(() => queue.close());
    return queue;
  };
  const proxy = async (port: number) => {
    const started = await TcpProxy.start(port);
    cleanups.push(() => started.close());
    return started;
  };
  try {
    const redis = await RedisServer.start({ appendonly: false });
    cleanups.push(() => redis.destroy());
    const redisProxy = await proxy(redis.port);
    const pgProxy = options.cutPostgres
      ? await proxy(Number(new URL(TEST_DATABASE_URL).port || 5432))
      : undefined;
    const observer = await open(TEST_DATABASE_URL, redis.url);
    const workerQueue = await open(
      pgProxy ? proxiedDatabaseUrl(pgProxy.port) : TEST_DATABASE_URL,
      `redis://127.0.0.1:${redisProxy.port}`,
    );
    const restore = () => {
      pgProxy?.restore();
      redisProxy.restore();
    };
    return { redis, redisProxy, pgProxy, observer, workerQueue, restore, close };
  } catch (err) {
    await close().catch(() => undefined);
    throw err;
  }
}

function proxiedDatabaseUrl(port: number): string {
  const proxied = new URL(TEST_DATABASE_URL);
  proxied.port = String(port);
  proxied.hostname = "127.0.0.1";
  return proxied.toString();
}
