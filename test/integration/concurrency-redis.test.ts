/**
 * Concurrency keys and the Redis index: held builds are never in it; lowering a limit takes the
 * held-back builds out; a stale entry of a held build (left by a race with that removal) is refused
 * by PostgreSQL and dropped, not put back (no claim-and-hand-back loop); a reconcile rebuilds only
 * the admitted builds.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeScore } from "../../src/core/score.js";
import type { BuildQueue } from "../../src/index.js";
import { openTestQueue } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

describe("concurrency keys and the Redis index", () => {
  let server: RedisServer;
  let queue: BuildQueue;
  let cleanup: () => Promise<void>;
  let prefix: string;
  let client: Redis;

  beforeAll(async () => {
    server = await RedisServer.start({ appendonly: false });
    ({ queue, cleanup, prefix } = await openTestQueue("concurrency_redis", {
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

  it("keeps held builds out of the index, and drops a stale entry of one instead of re-adding it", async () => {
    expect(queue.mode).toBe("redis");
    const ready = `${prefix}:build_queue`;
    const delayed = `${prefix}:build_delayed`;
    await queue.setLimit("idx", 2);
    const [a, b, c] = await queue.submitMany([
      { strategyId: "idx", concurrencyKey: "idx" },
      { strategyId: "idx", concurrencyKey: "idx" },
      { strategyId: "idx", concurrencyKey: "idx" },
    ]);
    const inIndex = async () => (await client.zrange(ready, 0, -1)).sort();
    expect(await inIndex()).toEqual([a?.build.id, b?.build.id].sort());

    await queue.setLimit("idx", 1); // b is held back again, and leaves the index
    expect(await inIndex()).toEqual([a?.build.id]);
    const held = await queue.get(b?.build.id ?? "");
    expect(held.held).toBe(true);

    // A stale entry of the held build, as a pop racing with that removal would leave.
    await client.zadd(ready, encodeScore(held.priority, held.seq), held.id);
    const claimed = await queue.claim("w1", 10);
    expect(claimed.map((x) => x.id)).toEqual([a?.build.id]);
    await sleep(300);
    expect(await client.zscore(ready, held.id)).toBeNull();
    expect(await client.zscore(delayed, held.id)).toBeNull();

    // A reconcile rebuilds the admitted builds only (none now: a runs, b and c wait).
    await client.zadd(ready, encodeScore(held.priority, held.seq), held.id);
    const report = await queue.reconcile();
    expect(report.removed).toBeGreaterThanOrEqual(1);
    expect(await inIndex()).toEqual([]);
    await queue.complete(claimed[0]?.id ?? "", claimed[0]?.lease ?? 0);
    expect(await inIndex()).toEqual([b?.build.id]);
    expect((await queue.get(c?.build.id ?? "")).held).toBe(true);
  });
});
