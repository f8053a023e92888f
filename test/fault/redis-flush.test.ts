/**
 * FLUSHALL while builds are queued (Redis lost its data but stayed up, so the connection never
 * dropped): the index is rebuilt from PostgreSQL, by the periodic check (the index marker is gone)
 * and by an on-demand reconcile whose report says lostData, and every build is then claimed in exact
 * dispatch order (priority, then submit order).
 */
import { afterAll, describe, expect, it } from "vitest";
import type { Build, BuildQueue, ReconcileReport } from "../../src/index.js";
import { indexDiff } from "../helpers/index-state.js";
import { eventually, openTestQueue } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

const cleanups: (() => Promise<void>)[] = [];

afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

const byDispatch = (a: Build, b: Build) => b.priority - a.priority || a.seq - b.seq;

/** Deterministic pseudo-random priorities, so that priority and submit order interleave. */
function inputs(count: number, salt: number) {
  return Array.from({ length: count }, (_, i) => ({
    strategyId: "flush",
    priority: ((i * 7919 + salt * 104729) % 9) - 4,
    params: { i, salt },
  }));
}

async function submitAll(queue: BuildQueue, count: number, salt: number): Promise<Build[]> {
  const out: Build[] = [];
  for (let start = 0; start < count; start += 50) {
    const results = await queue.submitMany(inputs(Math.min(50, count - start), salt + start));
    out.push(...results.map((r) => r.build));
  }
  return out;
}

/** Claims everything in batches of varying size; returns the ids in the order they were handed out. */
async function claimAll(queue: BuildQueue): Promise<string[]> {
  const ids: string[] = [];
  for (let round = 0; ; round++) {
    const batch = await queue.claim("w", 1 + (round % 13));
    if (batch.length === 0) break;
    for (const b of batch) {
      ids.push(b.id);
      await queue.complete(b.id, b.lease);
    }
  }
  return ids;
}

async function setup(label: string, reconcileIntervalMs?: number) {
  const server = await RedisServer.start();
  cleanups.push(() => server.destroy());
  const opened = await openTestQueue(label, {
    redisUrl: server.url,
    ...(reconcileIntervalMs ? { reconcileIntervalMs } : {}),
  });
  cleanups.push(opened.cleanup);
  const client = server.client();
  cleanups.push(async () => client.disconnect());
  const reports: ReconcileReport[] = [];
  opened.queue.on("reconciled", (report: ReconcileReport) => reports.push(report));
  expect(opened.queue.mode).toBe("redis");
  return { ...opened, server, client, reports };
}

describe("Redis FLUSHALL while builds are queued", () => {
  it("the periodic check rebuilds the index, and builds are claimed in exact priority/FIFO order", async () => {
    const { queue, schema, prefix, client, reports } = await setup("redis_flush_periodic");
    const builds = await submitAll(queue, 300, 1);
    expect(await indexDiff(client, prefix, schema)).toEqual([]);

    await client.flushall();
    const reportsBefore = reports.length;
    // Submits after the flush reach the new, empty index before the rebuild.
    builds.push(...(await submitAll(queue, 40, 2)));

    await eventually(async () => reports.slice(reportsBefore).some((r) => r.lostData), 15_000);
    expect(queue.mode).toBe("redis");
    await eventually(async () => (await indexDiff(client, prefix, schema)).length === 0);
    expect(await queue.length()).toBe(340);
    expect(await client.exists(`${prefix}:index_marker`)).toBe(1);

    expect(await claimAll(queue)).toEqual([...builds].sort(byDispatch).map((b) => b.id));
    expect(await queue.length()).toBe(0);
  });

  it("queue.reconcile() on demand rebuilds it and reports lostData", async () => {
    // No periodic check during the test: only the on-demand reconcile can rebuild the index.
    const { queue, schema, prefix, client } = await setup("redis_flush_demand", 3_600_000);
    const builds = await submitAll(queue, 250, 3);

    await client.flushall();
    expect(queue.mode).toBe("redis");
    expect(await client.zcard(`${prefix}:build_queue`)).toBe(0);

    const report = await queue.reconcile();
    expect(report).toMatchObject({ lostData: true, queued: 250, added: 250, removed: 0 });
    expect(await indexDiff(client, prefix, schema)).toEqual([]);
    expect(await queue.length()).toBe(250);

    // A second reconcile finds nothing to do.
    expect(await queue.reconcile()).toMatchObject({ lostData: false, queued: 250, added: 0, removed: 0 });

    expect(await claimAll(queue)).toEqual([...builds].sort(byDispatch).map((b) => b.id));
  });
});

describe("the first claim or position after a FLUSHALL", () => {
  it("sees the lost index at once: serves from PostgreSQL in order, and the index is rebuilt", async () => {
    const server = await RedisServer.start({ appendonly: false });
    cleanups.push(() => server.destroy());
    // No periodic check: only the claim itself can notice the loss.
    const { queue, prefix, cleanup } = await openTestQueue("flush_first_claim", {
      redisUrl: server.url,
      reconcileIntervalMs: 3_600_000,
    });
    cleanups.push(cleanup);
    const client = server.client();
    cleanups.push(async () => client.disconnect());
    const builds = await submitAll(queue, 30, 3);
    const expected = [...builds].sort(byDispatch).map((b) => b.id);

    await client.flushall();
    expect(await queue.position(expected[1] as string)).toBe(2);
    const first = await queue.claim("after-flush", 3);
    expect(first.map((b) => b.id)).toEqual(expected.slice(0, 3));
    await eventually(
      async () => queue.mode === "redis" && (await client.zcard(`${prefix}:build_queue`)) === 27,
    );
    const rest: string[] = [];
    for (
      let batch = await queue.claim("after-flush", 5);
      batch.length > 0;
      batch = await queue.claim("after-flush", 5)
    ) {
      rest.push(...batch.map((b) => b.id));
    }
    expect(rest).toEqual(expected.slice(3));
  });
});
