/**
 * A reconcile that runs while a claim is between its Redis pop and its PostgreSQL commit must not put
 * the popped build back (a stale entry that would skew every position behind it); a build whose
 * claimer died after the pop must still come back once the protection window has passed.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLAIM_PROTECTION_MS } from "../../src/queue/reconciler.js";
import { connectRedis, RedisIndex } from "../../src/redis/index-client.js";
import { eventually, openTestQueue } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

let server: RedisServer;
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  server = await RedisServer.start({ appendonly: false });
});
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  await server?.destroy();
});

describe("reconcile during a claim", () => {
  it("leaves a build being claimed out of the index, and recovers it when its claimer died", async () => {
    const { queue, prefix, cleanup } = await openTestQueue("reconcile_race", {
      redisUrl: server.url,
      reconcileIntervalMs: 3_600_000,
    });
    cleanups.push(cleanup);
    const client = server.client();
    cleanups.push(async () => client.disconnect());
    const [first, second] = await queue.submitMany([{ strategyId: "a" }, { strategyId: "b" }]);
    if (!first || !second) throw new Error("submit failed");

    // A claimer popped `first` (as pop_for_claim does: out of the index, into build_claiming) and is
    // about to commit its claim in PostgreSQL.
    const [nowSec, nowMicro] = await client.time();
    const nowMs = Number(nowSec) * 1000 + Math.floor(Number(nowMicro) / 1000);
    await client.zrem(`${prefix}:build_queue`, first.build.id);
    await client.zadd(`${prefix}:build_claiming`, nowMs, first.build.id);

    const during = await queue.reconcile();
    expect(during).toMatchObject({ queued: 2, added: 0 });
    expect(await client.zrange(`${prefix}:build_queue`, 0, -1)).toEqual([second.build.id]);
    expect(await queue.position(second.build.id)).toBe(1);

    // The claimer died: its pop is older than the protection window. The next reconcile re-adds it.
    await client.zadd(`${prefix}:build_claiming`, nowMs - CLAIM_PROTECTION_MS - 1000, first.build.id);
    const after = await queue.reconcile();
    expect(after).toMatchObject({ queued: 2, added: 1 });
    expect(await client.zrange(`${prefix}:build_queue`, 0, -1)).toEqual([first.build.id, second.build.id]);
    expect(await client.zcard(`${prefix}:build_claiming`)).toBe(0);

    // A real claim clears its own note once committed.
    const claimed = await queue.claim("w1", 2);
    expect(claimed.map((b) => b.id)).toEqual([first.build.id, second.build.id]);
    // The note goes out with the next pop, or alone 100 ms later: wait for it, not for a time.
    await eventually(async () => (await client.zcard(`${prefix}:build_claiming`)) === 0).catch(
      () => undefined,
    );
    expect(await client.zcard(`${prefix}:build_claiming`)).toBe(0);
  });
});

describe("settled claims", () => {
  it("are taken out of build_claiming by the next pop, or alone when no pop follows", async () => {
    const { queue, prefix, cleanup } = await openTestQueue("settled_claims", {
      redisUrl: server.url,
      reconcileIntervalMs: 3_600_000,
    });
    cleanups.push(cleanup);
    const client = server.client();
    cleanups.push(async () => client.disconnect());
    const submitted = await queue.submitMany([{ strategyId: "a" }, { strategyId: "b" }, { strategyId: "c" }]);
    const index = new RedisIndex(connectRedis(server.url), prefix);
    cleanups.push(async () => index.redis.disconnect());
    await index.redis.connect();
    const { pools, size } = await index.poolRegistry();

    // A pop carries the ids of earlier pops whose claim has settled: they leave build_claiming in
    // the same call, and the ids it pops enter it.
    const first = await index.popForClaim(1, [...pools.keys()], size);
    if (first === "pools changed") throw new Error("pools changed");
    expect(await client.zrange(`${prefix}:build_claiming`, 0, -1)).toEqual([first[0]?.id]);
    const second = await index.popForClaim(
      1,
      [...pools.keys()],
      size,
      first.map((p) => p.id),
    );
    if (second === "pools changed") throw new Error("pools changed");
    expect(await client.zrange(`${prefix}:build_claiming`, 0, -1)).toEqual([second[0]?.id]);
    expect(second[0]?.id).toBe(submitted[1]?.build.id);

    // The queue's own claims: the last claim's note goes out alone when no pop follows.
    await client.zrem(`${prefix}:build_claiming`, second[0]?.id ?? "");
    const claimed = await queue.claim("w1", 5);
    expect(claimed.map((b) => b.id)).toEqual([submitted[2]?.build.id]);
    // The note goes out with the next pop, or alone 100 ms later: wait for it, not for a time.
    await eventually(async () => (await client.zcard(`${prefix}:build_claiming`)) === 0).catch(
      () => undefined,
    );
    expect(await client.zcard(`${prefix}:build_claiming`)).toBe(0);
  });
});
