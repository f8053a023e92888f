/**
 * The reconciler rebuilds every pool's dispatch set from PostgreSQL (issue 14): after Redis lost the
 * pools (a FLUSHALL), and after stale ids were left in a pool's set, one reconcile makes each pool's
 * set equal to its queued builds, registers the pools again, and claims go on in exact order.
 */
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { poolIdOf } from "../../src/core/pools.js";
import { type BuildQueue, checkQueueIndex } from "../../src/index.js";
import { openTestQueue } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

const GPU = { gpu: "true" };

describe("reconciling pools", () => {
  let server: RedisServer;
  let queue: BuildQueue;
  let prefix: string;
  let cleanup: () => Promise<void>;
  let client: Redis;

  beforeAll(async () => {
    server = await RedisServer.start({ appendonly: false });
    ({ queue, cleanup, prefix } = await openTestQueue("routing_reconcile", {
      redisUrl: server.url,
      reconcileIntervalMs: 3_600_000,
    }));
    client = new Redis(server.url);
  });
  afterAll(async () => {
    client?.disconnect();
    await cleanup?.();
    await server?.destroy();
  });

  it("puts every pool back after a FLUSHALL, and drops stale ids from a pool's set", async () => {
    expect(queue.mode).toBe("redis");
    const submitted = await queue.submitMany([
      { strategyId: "gpu-1", requires: GPU },
      { strategyId: "cpu-1" },
      { strategyId: "gpu-2", requires: GPU, priority: 1 },
    ]);
    const gpuKey = `${prefix}:build_queue:${poolIdOf(GPU)}`;
    expect(await client.zcard(gpuKey)).toBe(2);
    expect(await client.zcard(`${prefix}:build_queue`)).toBe(1);

    await client.flushall();
    await client.zadd(gpuKey, 1, "00000000-0000-4000-8000-000000000000");
    const report = await queue.reconcile();
    expect(report).toMatchObject({ queued: 3, lostData: true, removed: 1 });
    expect(await client.zrange(gpuKey, 0, -1)).toEqual([submitted[2], submitted[0]].map((s) => s?.build.id));
    expect(await client.zrange(`${prefix}:build_queue`, 0, -1)).toEqual([submitted[1]?.build.id]);
    expect(JSON.parse((await client.hget(`${prefix}:pools`, poolIdOf(GPU))) ?? "null")).toEqual(GPU);
    // `oculus doctor` counts every pool's sets against the queued rows.
    const checks = await checkQueueIndex(client, prefix, 3);
    expect(checks.find((c) => c.name === "index_size")).toMatchObject({ status: "pass" });

    const claimed = await queue.claim("gpu", 10, { labels: GPU });
    expect(claimed.map((b) => b.strategyId)).toEqual(["gpu-2", "gpu-1", "cpu-1"]);
    expect(queue.mode).toBe("redis");
  });
});
