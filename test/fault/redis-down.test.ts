/**
 * Redis down: the queue serves everything from PostgreSQL with no caller-visible error (mode
 * 'postgres', announced by a 'mode' event), and a queue opened while Redis is unreachable starts on
 * PostgreSQL and switches to Redis once it starts, with an index equal to the queued rows.
 */
import { afterAll, describe, expect, it } from "vitest";
import { type Build, InvalidStateError } from "../../src/index.js";
import { indexDiff } from "../helpers/index-state.js";
import { sql } from "../helpers/postgres.js";
import { eventually, openTestQueue } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

const cleanups: (() => Promise<void>)[] = [];

afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

async function startServer(): Promise<RedisServer> {
  const server = await RedisServer.start();
  cleanups.push(() => server.destroy());
  return server;
}

/** Dispatch order: priority first (high to low), then submit order. */
const byDispatch = (a: Build, b: Build) => b.priority - a.priority || a.seq - b.seq;

describe("Redis stopped for good", () => {
  it("serves submit, position, length, listQueued, claim, complete, fail/retry and remove from PostgreSQL", async () => {
    const server = await startServer();
    const { queue, schema, cleanup } = await openTestQueue("redis_down", { redisUrl: server.url });
    cleanups.push(cleanup);
    const modeEvents: string[] = [];
    queue.on("mode", (mode: string) => modeEvents.push(mode));
    expect(queue.mode).toBe("redis");

    // Some builds go in while Redis is up (they are in the index that is about to vanish).
    const before = await queue.submitMany([
      { strategyId: "up", priority: 1 },
      { strategyId: "up", priority: 5 },
    ]);
    await server.stop();

    // No waiting for the queue to notice: the very next calls must work.
    const after: Build[] = [];
    for (const priority of [0, 5, 3, 5, -2, 0]) {
      const r = await queue.submit({ strategyId: "down", priority, maxRetries: 1 });
      expect(r.created).toBe(true);
      expect(r.position).not.toBeNull();
      after.push(r.build);
    }
    expect(queue.mode).toBe("postgres");
    expect(modeEvents).toEqual(["postgres"]);

    let queued = [...before.map((r) => r.build), ...after].sort(byDispatch);
    const checkQueue = async () => {
      expect(await queue.length()).toBe(queued.length);
      expect(await queue.counts()).toEqual({ ready: queued.length, delayed: 0 });
      expect((await queue.listQueued({ limit: 100 })).map((b) => b.id)).toEqual(queued.map((b) => b.id));
      for (const [i, b] of queued.entries()) expect(await queue.position(b.id)).toBe(i + 1);
    };
    await checkQueue();

    // remove: the build leaves the queue for good.
    const removedId = queued[3]?.id as string;
    const removed = await queue.remove(removedId, { reason: "not needed" });
    expect(removed.status).toBe("stopped");
    await expect(queue.remove(removedId)).rejects.toBeInstanceOf(InvalidStateError);
    expect(await queue.position(removedId)).toBeNull();
    queued = queued.filter((b) => b.id !== removedId);
    await checkQueue();

    // claim: in dispatch order, with a lease.
    const [a, b] = await queue.claim("w1", 2);
    expect([a?.id, b?.id]).toEqual([queued[0]?.id, queued[1]?.id]);
    if (!a || !b) throw new Error("claim returned too few builds");
    expect(a.lease).toBe(1);
    expect(await queue.position(a.id)).toBeNull();
    queued = queued.slice(2);
    await checkQueue();

    // complete.
    const done = await queue.complete(a.id, a.lease, { ok: true });
    expect(done.status).toBe("completed");
    expect(done.result).toEqual({ ok: true });

    // fail with a retry left: requeued after the backoff, same sequence number, new lease.
    const requeued = await queue.fail(b.id, b.lease, "flaky");
    expect(requeued).toMatchObject({ status: "queued", retryCount: 1, lease: b.lease + 1, seq: b.seq });
    // After the backoff it is claimable again, at the front of its priority.
    await eventually(async () => (await queue.position(b.id)) === 1);
    const [again] = await queue.claim("w2", 1);
    if (!again) throw new Error("the requeued build was not claimed");
    expect(again.id).toBe(b.id);
    expect(again.lease).toBe(b.lease + 2);
    // No retry left: failed for good.
    const failed = await queue.fail(again.id, again.lease, "broken again");
    expect(failed).toMatchObject({ status: "failed", retryCount: 1, lastError: "broken again" });

    // The rest, in order.
    const rest: string[] = [];
    for (;;) {
      const claimed = await queue.claim("w3", 2);
      if (claimed.length === 0) break;
      for (const c of claimed) {
        rest.push(c.id);
        await queue.complete(c.id, c.lease);
      }
    }
    expect(rest).toEqual(queued.map((q) => q.id));
    expect(await queue.length()).toBe(0);

    expect(queue.mode).toBe("postgres");
    expect(modeEvents).toEqual(["postgres"]);
    const statuses = await sql<{ status: string; n: number }>(
      schema,
      "SELECT status, count(*)::int AS n FROM builds GROUP BY status ORDER BY status",
    );
    expect(statuses).toEqual([
      { status: "completed", n: 6 },
      { status: "failed", n: 1 },
      { status: "stopped", n: 1 },
    ]);
  });

  it("a queue opened while Redis is unreachable starts on PostgreSQL and switches to Redis when it starts", async () => {
    const server = await startServer();
    await server.stop(); // nothing listens on its port now
    const { queue, schema, prefix, cleanup } = await openTestQueue("redis_late", { redisUrl: server.url });
    cleanups.push(cleanup);
    const modeEvents: string[] = [];
    queue.on("mode", (mode: string) => modeEvents.push(mode));
    expect(queue.hasRedis).toBe(true);
    expect(queue.mode).toBe("postgres");

    const submitted = await queue.submitMany(
      Array.from({ length: 30 }, (_, i) => ({ strategyId: "late", priority: i % 4 })),
    );
    expect(await queue.length()).toBe(30);
    const [first] = await queue.claim("w1", 1);
    expect(first?.priority).toBe(3);
    if (!first) throw new Error("nothing claimed");
    await queue.complete(first.id, first.lease);
    expect(queue.mode).toBe("postgres");

    await server.restart();
    await eventually(async () => queue.mode === "redis", 20_000);
    expect(modeEvents).toEqual(["redis"]);

    const client = server.client();
    cleanups.push(async () => client.disconnect());
    expect(await indexDiff(client, prefix, schema)).toEqual([]);
    expect(await client.zcard(`${prefix}:build_queue`)).toBe(29);
    expect(await queue.length()).toBe(29);

    // And the Redis path dispatches in order.
    const expected = submitted
      .map((r) => r.build)
      .filter((b) => b.id !== first.id)
      .sort(byDispatch)
      .map((b) => b.id);
    const claimed: string[] = [];
    for (;;) {
      const batch = await queue.claim("w2", 7);
      if (batch.length === 0) break;
      claimed.push(...batch.map((b) => b.id));
    }
    expect(claimed).toEqual(expected);
    expect(queue.mode).toBe("redis");
    expect(await client.zcard(`${prefix}:build_queue`)).toBe(0);
  });
});
