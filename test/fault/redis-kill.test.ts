/**
 * kill -9 of the Redis server (AOF everysec: up to a second of index writes is lost, and ids already
 * popped may come back) in the middle of submits and claims, then a restart on the same data directory.
 * Nothing a caller was told is lost: every build whose submit returned is in PostgreSQL and ends
 * completed exactly once; no caller sees an error; the queues go back to Redis after the restart, and
 * the index then equals the queued rows.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BuildQueue } from "../../src/index.js";
import { buildSummaries, indexDiff } from "../helpers/index-state.js";
import { Load } from "../helpers/load.js";
import { sql } from "../helpers/postgres.js";
import { eventually, openTestQueue } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("Redis kill -9 during submits and claims", () => {
  let server: RedisServer;
  const cleanups: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    server = await RedisServer.start({ appendfsync: "everysec" });
    cleanups.push(() => server.destroy());
  });

  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  });

  it("loses no submitted build, claims each exactly once, and returns to Redis mode", async () => {
    const first = await openTestQueue("redis_kill", { redisUrl: server.url });
    cleanups.push(first.cleanup);
    const second = await openTestQueue("redis_kill", {
      redisUrl: server.url,
      schema: first.schema,
      prefix: first.prefix,
    });
    cleanups.push(second.cleanup);
    const queues: BuildQueue[] = [first.queue, second.queue];
    const modes: string[][] = queues.map(() => []);
    for (const [i, q] of queues.entries()) q.on("mode", (mode: string) => modes[i]?.push(mode));
    expect(queues.map((q) => q.mode)).toEqual(["redis", "redis"]);

    const load = new Load();
    cleanups.push(() => load.stop());
    const until = (label: string, check: () => Promise<boolean>, timeoutMs = 20_000) =>
      eventually(check, timeoutMs).catch((err) => {
        const state = {
          modes: queues.map((q) => q.mode),
          submitted: load.submitted.size,
          claimed: load.claims.size,
          completed: load.completed.size,
          errors: load.errors.slice(0, 5),
        };
        throw new Error(`${label}: ${(err as Error).message} ${JSON.stringify(state)}`);
      });
    // A backlog in the index, so that the kill hits a large sorted set being popped.
    for (let i = 0; i < 3; i++) {
      const seeded = await first.queue.submitMany(
        Array.from({ length: 500 }, (_, j) => ({
          strategyId: "seed",
          priority: (i + j) % 4,
          params: { i, j },
        })),
      );
      for (const r of seeded) load.submitted.add(r.build.id);
    }
    load.startSubmits(first.queue);
    load.startClaims(first.queue, "a1");
    load.startClaims(second.queue, "b1");
    load.startClaims(second.queue, "b2");

    await until("claims before the kill", async () => load.completed.size >= 300);
    const beforeKill = load.submitted.size;
    await server.kill9();
    await until("postgres mode", async () => queues.every((q) => q.mode === "postgres"));

    // Keep going on PostgreSQL alone for a while.
    const atKill = load.completed.size;
    await until("claims on PostgreSQL", async () => load.completed.size >= atKill + 300);
    await sleep(300);

    await server.restart();
    await until("redis mode", async () => queues.every((q) => q.mode === "redis"));
    await sleep(300);
    load.stopSubmits();

    // With claims paused and submits stopped, the index must come to equal the queued rows.
    await load.pauseClaims();
    const client = server.client();
    cleanups.push(async () => client.disconnect());
    const extra = await first.queue.submitMany(
      Array.from({ length: 50 }, (_, i) => ({ strategyId: "after", priority: i % 3 })),
    );
    for (const r of extra) load.submitted.add(r.build.id);
    let lastDiff: string[] = [];
    await eventually(async () => {
      lastDiff = await indexDiff(client, first.prefix, first.schema);
      return lastDiff.length === 0;
    }, 15_000).catch((err) => {
      throw new Error(
        `index != queued rows: ${lastDiff.slice(0, 10).join(", ")} (${(err as Error).message})`,
      );
    });
    expect(await first.queue.length()).toBeGreaterThanOrEqual(50);

    load.resumeClaims();
    await eventually(async () => {
      const [row] = await sql<{ n: number }>(
        first.schema,
        "SELECT count(*)::int AS n FROM builds WHERE status <> 'completed'",
      );
      return row?.n === 0;
    }, 30_000).catch(async (err: Error) => {
      const left = await sql(
        first.schema,
        "SELECT status, count(*)::int AS n, min(updated_at) AS oldest FROM builds WHERE status <> 'completed' GROUP BY status",
      );
      throw new Error(
        `${err.message}: not completed: ${JSON.stringify(left)}; index: ${(await indexDiff(client, first.prefix, first.schema)).length} differences`,
      );
    });
    await load.stop();

    expect(load.errors).toEqual([]);
    expect(beforeKill).toBeGreaterThan(0);
    expect(load.duplicateClaims()).toEqual([]);
    // Each queue announced the switch to PostgreSQL, and ended back on Redis.
    for (const m of modes) {
      expect(m[0]).toBe("postgres");
      expect(m.at(-1)).toBe("redis");
    }

    const summaries = await buildSummaries(first.schema);
    const inRecord = new Set(summaries.map((s) => s.id));
    const missing = [...load.submitted].filter((id) => !inRecord.has(id));
    expect(missing).toEqual([]);
    // No submit failed, so every row in the record is one whose submit returned.
    expect(summaries.length).toBe(load.submitted.size);
    const wrong = summaries.filter(
      (s) =>
        s.status !== "completed" ||
        s.claimed_events !== 1 ||
        s.completed_events !== 1 ||
        s.lease !== 1 ||
        s.worker_id !== load.claims.get(s.id)?.[0]?.worker,
    );
    expect(wrong).toEqual([]);
    expect(new Set(load.claims.keys())).toEqual(load.submitted);

    // Everything is done: the index ends empty (ids the AOF replayed were dropped).
    await eventually(async () => (await indexDiff(client, first.prefix, first.schema)).length === 0);
    expect(await client.zcard(`${first.prefix}:build_queue`)).toBe(0);
  });
});
