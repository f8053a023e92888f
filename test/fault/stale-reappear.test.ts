/**
 * Stale index entries and stale leases. An id that was popped and claimed can come back into the
 * Redis index (an AOF replay after a crash replays the ZADD but not the pop): it must not be claimed
 * again. A worker whose lease is stale (its build was requeued, then claimed by another worker) can
 * neither complete nor fail the build: StaleLeaseError, and nothing changes in PostgreSQL.
 */
import { describe, expect, it } from "vitest";
import {
  type Build,
  type BuildQueueOptions,
  encodeScore,
  InvalidStateError,
  StaleLeaseError,
} from "../../src/index.js";
import { useFileFixture } from "../helpers/file-fixture.js";
import { claimedEventCount } from "../helpers/index-state.js";
import { sql } from "../helpers/postgres.js";
import { eventually, openTestQueue } from "../helpers/queue.js";

const fixture = useFileFixture();

async function open(label: string, options: BuildQueueOptions = {}) {
  // No periodic drift check: a stale entry must stay in the index until a claim pops it.
  const opened = await openTestQueue(label, {
    redisUrl: fixture.server.url,
    reconcileIntervalMs: 3_600_000,
    ...options,
  });
  fixture.defer(opened.cleanup);
  const client = fixture.server.client();
  fixture.defer(async () => client.disconnect());
  expect(opened.queue.mode).toBe("redis");
  const reappear = async (...builds: Build[]) => {
    for (const b of builds) {
      await client.zadd(`${opened.prefix}:build_queue`, encodeScore(b.priority, b.seq), b.id);
    }
  };
  return { ...opened, client, reappear };
}

/** The row and its event count: what "nothing changed" compares. */
async function snapshot(schema: string, id: string) {
  const [row] = await sql(schema, "SELECT * FROM builds WHERE id = $1", [id]);
  const [events] = await sql<{ n: number }>(
    schema,
    "SELECT count(*)::int AS n FROM build_events WHERE build_id = $1",
    [id],
  );
  return { row, events: events?.n };
}

async function expectStale(promise: Promise<unknown>, currentLease: number, status: string) {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(StaleLeaseError);
  expect(err).toMatchObject({ code: "stale_lease", httpStatus: 409, details: { currentLease, status } });
}

describe("a popped id that reappears in Redis", () => {
  it("is not claimed again: the claim returns other builds, or nothing", async () => {
    const { queue, schema, prefix, client, reappear } = await open("stale_reappear");
    const [a, b, c] = (
      await queue.submitMany([
        { strategyId: "s", priority: 2 },
        { strategyId: "s", priority: 1 },
        { strategyId: "s", priority: 0 },
      ])
    ).map((r) => r.build);
    if (!a || !b || !c) throw new Error("submit returned too few builds");

    const [claimedA] = await queue.claim("w1", 1);
    expect(claimedA).toMatchObject({ id: a.id, lease: 1, workerId: "w1" });

    // A is back at the front of the index: the claim drops it (PostgreSQL refuses) and takes B.
    await reappear(a);
    expect(await client.zrank(`${prefix}:build_queue`, a.id)).toBe(0);
    const second = await queue.claim("w2", 1);
    expect(second.map((x) => x.id)).toEqual([b.id]);

    // A and B back, asking for more than there is: only C.
    await reappear(a, b);
    const third = await queue.claim("w3", 5);
    expect(third.map((x) => x.id)).toEqual([c.id]);

    // Nothing but stale ids: nothing.
    await reappear(a, b, c);
    expect(await queue.claim("w4", 3)).toEqual([]);
    expect(await client.zcard(`${prefix}:build_queue`)).toBe(0);

    // Many stale ids ahead of one real build: claims return nothing or the build, once.
    const [d] = (await queue.submitMany([{ strategyId: "s", priority: -5 }])).map((r) => r.build);
    if (!d) throw new Error("submit returned no build");
    await reappear(a, b, c);
    for (let i = 0; i < 5; i++) await reappear(a, b, c); // idempotent: still three entries
    const gotD: string[] = [];
    for (let i = 0; i < 10; i++) gotD.push(...(await queue.claim("w5", 1)).map((x) => x.id));
    expect(gotD).toEqual([d.id]);

    for (const build of [a, b, c, d]) expect(await claimedEventCount(schema, build.id)).toBe(1);
    // The refused pops did not touch the claims: each build still has its first lease and worker.
    const rows = await sql<{ id: string; status: string; lease: number; worker_id: string }>(
      schema,
      "SELECT id, status, lease::int AS lease, worker_id FROM builds ORDER BY seq",
    );
    expect(rows).toEqual([
      { id: a.id, status: "running", lease: 1, worker_id: "w1" },
      { id: b.id, status: "running", lease: 1, worker_id: "w2" },
      { id: c.id, status: "running", lease: 1, worker_id: "w3" },
      { id: d.id, status: "running", lease: 1, worker_id: "w5" },
    ]);
    // And the first claimer can still finish its build.
    expect((await queue.complete(a.id, 1)).status).toBe("completed");
  });

  it("is not claimed again after the build completed", async () => {
    const { queue, schema, reappear } = await open("stale_reappear_done");
    const [x] = (await queue.submitMany([{ strategyId: "s" }])).map((r) => r.build);
    if (!x) throw new Error("submit returned no build");
    const [claimed] = await queue.claim("w1", 1);
    if (!claimed) throw new Error("nothing claimed");
    await queue.complete(claimed.id, claimed.lease, { n: 1 });
    const before = await snapshot(schema, x.id);

    await reappear(x);
    expect(await queue.claim("w2", 10)).toEqual([]);
    expect(await snapshot(schema, x.id)).toEqual(before);
    expect(await claimedEventCount(schema, x.id)).toBe(1);
  });

  it("of a build waiting out its retry backoff does not dispatch it before its time", async () => {
    // A long backoff, so the build is surely still waiting when the stale id is popped.
    const { queue, schema, prefix, client, reappear } = await open("stale_reappear_delayed", {
      backoff: { baseDelayMs: 60_000, maxDelayMs: 60_000 },
    });
    const [x] = (await queue.submitMany([{ strategyId: "s", maxRetries: 3 }])).map((r) => r.build);
    if (!x) throw new Error("submit returned no build");
    const [claimed] = await queue.claim("w1", 1);
    if (!claimed) throw new Error("nothing claimed");
    const requeued = await queue.fail(claimed.id, claimed.lease, "boom");
    expect(requeued).toMatchObject({ status: "queued", lease: 2, retryCount: 1 });
    expect(requeued.runAt.getTime()).toBeGreaterThan(Date.now() + 30_000);
    expect(await client.zscore(`${prefix}:build_delayed`, x.id)).not.toBeNull();
    const before = await snapshot(schema, x.id);

    await reappear(x);
    expect(await queue.claim("w2", 1)).toEqual([]);
    expect(await snapshot(schema, x.id)).toEqual(before);
    expect(await claimedEventCount(schema, x.id)).toBe(1);
    // Still waiting in the delayed set, to be dispatched when its time comes.
    expect(await client.zscore(`${prefix}:build_delayed`, x.id)).not.toBeNull();
    expect(await queue.counts()).toEqual({ ready: 0, delayed: 1 });

    // The ready entry came back *instead of* the delayed one (a process on the PostgreSQL path failed
    // it, so the index never learnt of the retry): refused, and put back where it belongs.
    await client.zrem(`${prefix}:build_delayed`, x.id);
    await client.hdel(`${prefix}:build_delayed_scores`, x.id);
    await reappear(x);
    expect(await queue.claim("w3", 5)).toEqual([]);
    expect(await snapshot(schema, x.id)).toEqual(before);
    expect(await client.zscore(`${prefix}:build_queue`, x.id)).toBeNull();
    // Back with the rest of its backoff (a delay added to Redis's clock, so not to the millisecond).
    const delayedUntil = Number(await client.zscore(`${prefix}:build_delayed`, x.id));
    expect(Math.abs(delayedUntil - requeued.runAt.getTime())).toBeLessThan(5000);
    expect(await queue.counts()).toEqual({ ready: 0, delayed: 1 });
  });

  it("of a build waiting out its retry backoff dispatches it once, when its time comes", async () => {
    const { queue, schema, reappear } = await open("stale_reappear_due", {
      backoff: { baseDelayMs: 1500, maxDelayMs: 1500 },
    });
    const [x] = (await queue.submitMany([{ strategyId: "s", maxRetries: 3 }])).map((r) => r.build);
    if (!x) throw new Error("submit returned no build");
    await queue.claim("w1", 1);
    const requeued = await queue.fail(x.id, 1, "boom");
    await reappear(x);
    const early = await queue.claim("w2", 1);
    if (Date.now() < requeued.runAt.getTime()) expect(early).toEqual([]);
    const again = await eventually(async () => (await queue.claim("w2", 1))[0]);
    expect(Date.now()).toBeGreaterThanOrEqual(requeued.runAt.getTime());
    expect(again).toMatchObject({ id: x.id, lease: 3, retryCount: 1 });
    expect(await claimedEventCount(schema, x.id)).toBe(2);
    // Whatever entries remain are stale now: nothing more to claim.
    await reappear(x);
    expect(await queue.claim("w3", 5)).toEqual([]);
    expect(await claimedEventCount(schema, x.id)).toBe(2);
  });
});

describe("a stale lease", () => {
  it("cannot complete or fail a build that was requeued and claimed again (nothing changes)", async () => {
    const { queue, schema } = await open("stale_lease");
    const [x] = (await queue.submitMany([{ strategyId: "s", maxRetries: 2 }])).map((r) => r.build);
    if (!x) throw new Error("submit returned no build");

    const [first] = await queue.claim("w1", 1);
    expect(first).toMatchObject({ id: x.id, lease: 1 });
    const requeued = await queue.fail(x.id, 1, "boom");
    expect(requeued).toMatchObject({ status: "queued", lease: 2, retryCount: 1, lastError: "boom" });

    // While it waits to be retried, the old lease is already dead.
    let before = await snapshot(schema, x.id);
    await expectStale(queue.complete(x.id, 1, { late: true }), 2, "queued");
    await expectStale(queue.fail(x.id, 1, "late failure"), 2, "queued");
    expect(await snapshot(schema, x.id)).toEqual(before);

    // Another worker claims it again (after the backoff): lease 3.
    const again = await eventually(async () => (await queue.claim("w2", 1))[0]);
    expect(again).toMatchObject({ id: x.id, lease: 3, workerId: "w2", retryCount: 1 });

    before = await snapshot(schema, x.id);
    await expectStale(queue.complete(x.id, 1, { late: true }), 3, "running");
    await expectStale(queue.fail(x.id, 1, "late failure"), 3, "running");
    await expectStale(queue.fail(x.id, 1, "late failure", { retryable: false }), 3, "running");
    // The requeue's own lease was never handed out: stale too.
    await expectStale(queue.complete(x.id, 2), 3, "running");
    // Stale calls in one group commit with the current one: only the current one counts.
    const [staleDone, currentDone] = await Promise.allSettled([
      queue.complete(x.id, 1, { from: "w1" }),
      queue.complete(x.id, 3, { from: "w2" }),
    ]);
    expect(staleDone).toMatchObject({ status: "rejected", reason: { code: "stale_lease" } });
    expect(currentDone).toMatchObject({ status: "fulfilled", value: { status: "completed", lease: 3 } });

    const after = await snapshot(schema, x.id);
    expect(after.row).toMatchObject({
      status: "completed",
      lease: 3,
      worker_id: "w2",
      retry_count: 1,
      last_error: "boom",
      result: { from: "w2" },
    });
    expect(after.events).toBe((before.events ?? 0) + 1);

    // After the end: the stale lease is still refused, the current one repeats its completion.
    await expectStale(queue.complete(x.id, 1), 3, "completed");
    expect((await queue.complete(x.id, 3, { from: "w2" })).status).toBe("completed");
    await expect(queue.fail(x.id, 3, "too late")).rejects.toBeInstanceOf(InvalidStateError);
    expect(await snapshot(schema, x.id)).toEqual(after);
    expect(await claimedEventCount(schema, x.id)).toBe(2);
  });

  it("cannot fail a build in the same group commit as its current lease", async () => {
    const { queue, schema } = await open("stale_lease_fail");
    const [x] = (await queue.submitMany([{ strategyId: "s", maxRetries: 10 }])).map((r) => r.build);
    if (!x) throw new Error("submit returned no build");
    await queue.claim("w1", 1);
    await queue.fail(x.id, 1, "first failure");
    const again = await eventually(async () => (await queue.claim("w2", 1))[0]);
    expect(again.lease).toBe(3);

    for (let round = 0; round < 5; round++) {
      // The zombie (lease 1) and the current worker fail together: only the current failure counts.
      const current = again.lease + 2 * round;
      const [stale, now] = await Promise.allSettled([
        queue.fail(x.id, 1, `stale failure ${round}`),
        queue.fail(x.id, current, `current failure ${round}`),
      ]);
      expect(stale).toMatchObject({ status: "rejected", reason: { code: "stale_lease" } });
      expect(now).toMatchObject({
        status: "fulfilled",
        value: { status: "queued", lease: current + 1, lastError: `current failure ${round}` },
      });
      const [row] = await sql<{ last_error: string; retry_count: number }>(
        schema,
        "SELECT last_error, retry_count FROM builds WHERE id = $1",
        [x.id],
      );
      expect(row).toEqual({ last_error: `current failure ${round}`, retry_count: round + 2 });
      const next = await eventually(async () => (await queue.claim("w2", 1))[0]);
      expect(next.lease).toBe(current + 2);
    }
  });
});
