/**
 * A worker whose connections are cut for real (a TCP proxy in front of PostgreSQL and Redis):
 * - losing Redis only, it keeps heartbeating through PostgreSQL: its build is not reaped;
 * - losing both, it claims nothing, and the result of the build it was running is written when the
 *   stores return, not lost.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BuildQueue } from "../../src/index.js";
import { Worker } from "../../src/worker/worker.js";
import { dropSchema, TEST_DATABASE_URL, uniqueSchema } from "../helpers/postgres.js";
import { eventually } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";
import { TcpProxy } from "../helpers/tcp-proxy.js";

const HEALTH = { heartbeatMs: 200, deadAfterMs: 3000 };

describe("a worker cut off from its stores", () => {
  const schema = uniqueSchema("worker_cut");
  const prefix = `cut${process.pid}`;
  let redis: RedisServer;
  let pgProxy: TcpProxy;
  let redisProxy: TcpProxy;
  let observer: BuildQueue; // the rest of the system: direct connections, runs the reaper
  let workerQueue: BuildQueue; // the worker's process: everything through the proxies
  let worker: Worker;
  let release: (() => void) | undefined;
  /** Lets the running build finish (a function, so that TypeScript does not narrow `release`). */
  const finishBuild = () => release?.();

  beforeAll(async () => {
    redis = await RedisServer.start({ appendonly: false });
    pgProxy = await TcpProxy.start(Number(new URL(TEST_DATABASE_URL).port || 5432));
    redisProxy = await TcpProxy.start(redis.port);
    observer = await BuildQueue.open({
      databaseUrl: TEST_DATABASE_URL,
      redisUrl: redis.url,
      schema,
      prefix,
      health: HEALTH,
    });
    observer.startReaper(100);
    const proxied = new URL(TEST_DATABASE_URL);
    proxied.port = String(pgProxy.port);
    proxied.hostname = "127.0.0.1";
    workerQueue = await BuildQueue.open({
      databaseUrl: proxied.toString(),
      redisUrl: `redis://127.0.0.1:${redisProxy.port}`,
      schema,
      prefix,
      health: HEALTH,
    });
    worker = new Worker(workerQueue, {
      handler: async (ctx) => {
        // Runs until the test lets it finish.
        await new Promise<void>((resolve) => {
          release = resolve;
        });
        return { finishedBy: ctx.lease };
      },
    });
    await worker.start();
  });

  afterAll(async () => {
    finishBuild();
    pgProxy?.restore();
    redisProxy?.restore();
    await worker?.stop().catch(() => undefined);
    await workerQueue?.close();
    await observer?.close();
    await pgProxy?.close();
    await redisProxy?.close();
    await redis?.destroy();
    await dropSchema(schema);
  });

  it("keeps its build through PostgreSQL heartbeats while Redis is cut", async () => {
    const { build } = await observer.submit({ strategyId: "no-redis" });
    const running = await eventually(async () => {
      const b = await observer.get(build.id);
      return b.status === "running" && b;
    });
    redisProxy.cut();
    await eventually(async () => workerQueue.mode === "postgres");
    // Well past the dead-worker timeout: the lease is renewed through PostgreSQL, nothing is reaped.
    await new Promise((r) => setTimeout(r, HEALTH.deadAfterMs * 1.5));
    const still = await observer.get(build.id);
    expect(still).toMatchObject({ status: "running", lease: running.lease, retryCount: 0 });
    expect((await observer.workers.list()).find((w) => w.id === worker.id)?.status).toBe("active");
    redisProxy.restore();
    finishBuild();
    const done = await eventually(async () => {
      const b = await observer.get(build.id);
      return b.status === "completed" && b;
    });
    expect(done.result).toEqual({ finishedBy: running.lease });
  });

  it("claims nothing while both are cut, and records its result when they return", async () => {
    release = undefined;
    const { build } = await observer.submit({ strategyId: "offline" });
    const running = await eventually(async () => {
      const b = await observer.get(build.id);
      return b.status === "running" && release !== undefined && b;
    });
    pgProxy.cut();
    redisProxy.cut();
    // The build finishes while the worker can reach nothing; another build arrives meanwhile.
    finishBuild();
    const { build: waiting } = await observer.submit({ strategyId: "while-offline" });
    await new Promise((r) => setTimeout(r, 1000));
    expect((await observer.get(waiting.id)).status).toBe("queued");
    expect((await observer.get(build.id)).status).toBe("running");
    // Back before its lease runs out: the held result is written with the worker's lease.
    pgProxy.restore();
    redisProxy.restore();
    const done = await eventually(async () => {
      const b = await observer.get(build.id);
      return b.status === "completed" && b;
    });
    expect(done).toMatchObject({
      lease: running.lease,
      result: { finishedBy: running.lease },
      retryCount: 0,
    });
    // And it claims again.
    await eventually(async () => (await observer.get(waiting.id)).status === "running");
    finishBuild();
  });
});
