/**
 * The queue's contract, run on every backend: Redis fast path, PostgreSQL only, embedded PGlite.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  BuildNotFoundError,
  type BuildQueue,
  InvalidStateError,
  PayloadTooLargeError,
  StaleLeaseError,
  ValidationError,
} from "../../src/index.js";
import { backends } from "../helpers/backends.js";
import { eventually } from "../helpers/queue.js";

async function drain(queue: BuildQueue): Promise<void> {
  for (;;) {
    const claimed = await queue.claim("drainer", 500);
    if (claimed.length === 0) return;
    await Promise.all(claimed.map((b) => queue.complete(b.id, b.lease)));
  }
}

async function countBuilds(queue: BuildQueue): Promise<number> {
  const res = await queue.store.db.query<{ n: number }>("SELECT count(*)::integer AS n FROM builds");
  return Number(res.rows[0]?.n);
}

describe.each(backends())("build queue on $name", (backend) => {
  let queue: BuildQueue;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    ({ queue, cleanup } = await backend.open(`behaviour_${backend.name}`));
  });
  afterAll(async () => {
    await cleanup?.();
    await backend.teardown();
  });

  it("runs in the expected mode", () => {
    expect(queue.mode).toBe(backend.expectedMode);
  });

  it("submits a build: committed, queued, with a position", async () => {
    await drain(queue);
    const { build, created, position } = await queue.submit({ strategyId: "s1", params: { lr: 0.1 } });
    expect(created).toBe(true);
    expect(build).toMatchObject({
      strategyId: "s1",
      status: "queued",
      priority: 0,
      retryCount: 0,
      maxRetries: 3,
    });
    expect(position).toBe(1);
    expect(await queue.get(build.id)).toMatchObject({ id: build.id, params: { lr: 0.1 } });
    expect(await queue.length()).toBe(1);
  });

  it("gives new builds time-ordered ids (UUID version 7, migration 0013) that carry their creation time", async () => {
    const first = (await queue.submit({ strategyId: "v7-a" })).build;
    await new Promise((resolve) => setTimeout(resolve, 5));
    const batch = (await queue.submitMany([{ strategyId: "v7-b" }, { strategyId: "v7-c" }])).map(
      (r) => r.build,
    );
    for (const build of [first, ...batch]) {
      // xxxxxxxx-xxxx-7xxx-[89ab]xxx-xxxxxxxxxxxx: version 7, RFC 9562 variant.
      expect(build.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      // The first 48 bits are the Unix time in ms, from the same server clock as created_at (the
      // statement's start; the id is drawn as the row is made, later by up to the statement's time,
      // which a loaded machine stretches: the margin is wide, an id of another era is far off).
      const idMs = Number.parseInt(build.id.replaceAll("-", "").slice(0, 12), 16);
      expect(Math.abs(idMs - build.createdAt.getTime())).toBeLessThan(10_000);
    }
    // Built 5 ms apart: the later builds' ids sort after the first's (what keeps index inserts local).
    for (const build of batch) expect(build.id > first.id).toBe(true);
    expect(new Set([first, ...batch].map((b) => b.id)).size).toBe(3);
    await drain(queue);
  });

  it("orders by priority, then submit order, even within one statement (one millisecond)", async () => {
    await drain(queue);
    const inputs = [0, 5, 0, -3, 5, 1000, 0, -1000, 5, 0].map((priority, i) => ({
      strategyId: `o${i}`,
      priority,
    }));
    const submitted = await queue.submitMany(inputs);
    const expected = submitted
      .map((r) => r.build)
      .sort((a, b) => b.priority - a.priority || a.seq - b.seq)
      .map((b) => b.strategyId);
    expect((await queue.listQueued()).map((b) => b.strategyId)).toEqual(expected);
    for (const [i, strategyId] of expected.entries()) {
      const build = submitted.find((r) => r.build.strategyId === strategyId)?.build;
      expect(await queue.position(build?.id ?? "")).toBe(i + 1);
    }
    const claimed: string[] = [];
    for (const n of [1, 3, 10]) {
      for (const b of await queue.claim("w-order", n)) claimed.push(b.strategyId);
    }
    expect(claimed).toEqual(expected);
  });

  it("claims with a lease that fences every result", async () => {
    await drain(queue);
    const { build } = await queue.submit({ strategyId: "fenced" });
    const [claimed] = await queue.claim("w1", 1);
    expect(claimed).toMatchObject({
      id: build.id,
      status: "running",
      workerId: "w1",
      lease: build.lease + 1,
    });
    if (!claimed) throw new Error("nothing claimed");
    expect(await queue.position(build.id)).toBeNull();

    await expect(queue.complete(build.id, claimed.lease + 7)).rejects.toBeInstanceOf(StaleLeaseError);
    expect((await queue.get(build.id)).status).toBe("running");

    const done = await queue.complete(build.id, claimed.lease, { image: "oculus/s:1" });
    expect(done).toMatchObject({ status: "completed", result: { image: "oculus/s:1" } });
    // A repeated completion (a retry after a lost reply) returns the recorded result.
    expect((await queue.complete(build.id, claimed.lease)).status).toBe("completed");
    await expect(queue.fail(build.id, claimed.lease, "late")).rejects.toBeInstanceOf(InvalidStateError);

    const events = await queue.store.db.query<{ type: string; actor: string }>(
      "SELECT type, actor FROM build_events WHERE build_id = $1 ORDER BY id",
      [build.id],
    );
    expect(events.rows.map((e) => e.type)).toEqual(["submitted", "claimed", "completed"]);
    expect(events.rows[1]?.actor).toBe("w1");
  });

  it("records a completion without reading the build back, fenced the same way", async () => {
    await drain(queue);
    await queue.setLimit("nrb", 1);
    const { build } = await queue.submit({ strategyId: "no-read-back", concurrencyKey: "nrb" });
    const { build: next } = await queue.submit({ strategyId: "no-read-back", concurrencyKey: "nrb" });
    expect(next.held).toBe(true);
    const [claimed] = await queue.claim("w1", 2);
    if (!claimed) throw new Error("nothing claimed");
    expect(claimed.id).toBe(build.id);

    await expect(
      queue.complete(build.id, claimed.lease + 1, null, { readBack: false }),
    ).rejects.toBeInstanceOf(StaleLeaseError);
    expect((await queue.get(build.id)).status).toBe("running");

    await expect(
      queue.complete(build.id, claimed.lease, { ok: 1 }, { readBack: false }),
    ).resolves.toBeUndefined();
    expect(await queue.get(build.id)).toMatchObject({ status: "completed", result: { ok: 1 } });
    // A repeat (a retry after a lost reply) is an answer too; a failure after it is refused.
    await expect(queue.complete(build.id, claimed.lease, null, { readBack: false })).resolves.toBeUndefined();
    await expect(queue.fail(build.id, claimed.lease, "late")).rejects.toBeInstanceOf(InvalidStateError);
    // The key's slot was given back: the next build of the key is admitted and claimable.
    await eventually(async () => !(await queue.get(next.id)).held);
    const [second] = await queue.claim("w1", 1);
    expect(second?.id).toBe(next.id);
    if (second) await queue.complete(second.id, second.lease, null, { readBack: false });
  });
  it("retries a failed build with backoff, a new lease and its original place", async () => {
    await drain(queue);
    const { build } = await queue.submit({ strategyId: "flaky", maxRetries: 1 });
    const [first] = await queue.claim("w1", 1);
    if (!first) throw new Error("nothing claimed");
    const requeued = await queue.fail(build.id, first.lease, "exit 1");
    expect(requeued).toMatchObject({
      status: "queued",
      retryCount: 1,
      lastError: "exit 1",
      lease: first.lease + 1,
    });
    expect(requeued.seq).toBe(build.seq);
    await expect(queue.complete(build.id, first.lease)).rejects.toBeInstanceOf(StaleLeaseError);

    // While it waits out the backoff (50 ms here) it has no position. On a busy machine the backoff
    // may be over before the question is answered: then there is nothing to check.
    const position = await queue.position(build.id);
    if (Date.now() < requeued.runAt.getTime()) expect(position).toBeNull();
    // Submitted after it, same priority: once due, the retried build goes first (original sequence).
    await queue.submit({ strategyId: "newer" });
    await new Promise((r) => setTimeout(r, Math.max(0, requeued.runAt.getTime() - Date.now()) + 20));
    const second = await eventually(async () => (await queue.claim("w2", 1))[0]);
    expect(second.id).toBe(build.id);
    expect(second.retryCount).toBe(1);

    const failed = await queue.fail(build.id, second.lease, "exit 2");
    expect(failed).toMatchObject({ status: "failed", retryCount: 1, lastError: "exit 2" });
    expect(failed.finishedAt).not.toBeNull();
  });

  it("fails for good at once when the error is not retryable", async () => {
    await drain(queue);
    const { build } = await queue.submit({ strategyId: "bad-params" });
    const [claimed] = await queue.claim("w1", 1);
    if (!claimed) throw new Error("nothing claimed");
    expect((await queue.fail(build.id, claimed.lease, "invalid", { retryable: false })).status).toBe(
      "failed",
    );
  });

  it("removes a queued build, refuses others with a clear error", async () => {
    await drain(queue);
    const [a, b] = await queue.submitMany([{ strategyId: "keep" }, { strategyId: "drop" }]);
    if (!a || !b) throw new Error("submit failed");
    const removed = await queue.remove(b.build.id, { actor: "alice", reason: "wrong strategy" });
    expect(removed).toMatchObject({ status: "stopped", lastError: "wrong strategy" });
    expect(await queue.position(b.build.id)).toBeNull();
    expect(await queue.length()).toBe(1);
    await expect(queue.remove(b.build.id)).rejects.toBeInstanceOf(InvalidStateError);
    await expect(queue.remove("0b6f5c3e-2a8e-436c-972f-c7a238876415")).rejects.toBeInstanceOf(
      BuildNotFoundError,
    );
    const claimed = await queue.claim("w1", 5);
    expect(claimed.map((c) => c.id)).toEqual([a.build.id]);
    await expect(queue.remove(a.build.id)).rejects.toMatchObject({ code: "invalid_state", httpStatus: 409 });
  });

  it("deduplicates by idempotency key, also under concurrent submits", async () => {
    const key = `key-${backend.name}-${Date.now()}`;
    const first = await queue.submit({ strategyId: "idem", idempotencyKey: key });
    const again = await queue.submit({ strategyId: "idem", idempotencyKey: key });
    expect(again.created).toBe(false);
    expect(again.build.id).toBe(first.build.id);

    const key2 = `${key}-race`;
    const racers = await Promise.all(
      Array.from({ length: 8 }, () => queue.submit({ strategyId: "idem", idempotencyKey: key2 })),
    );
    expect(new Set(racers.map((r) => r.build.id)).size).toBe(1);
    expect(racers.filter((r) => r.created)).toHaveLength(1);

    const batch = await queue.submitMany([
      { strategyId: "idem", idempotencyKey: `${key}-b` },
      { strategyId: "idem", idempotencyKey: `${key}-b` },
    ]);
    expect(batch[0]?.build.id).toBe(batch[1]?.build.id);
    expect(batch.map((r) => r.created)).toEqual([true, false]);
  });

  it("refuses bad input with the field and the reason, and writes nothing", async () => {
    const before = await countBuilds(queue);
    await expect(queue.submit({ strategyId: "s", priority: 1001 })).rejects.toMatchObject({
      code: "invalid_input",
      field: "priority",
    });
    await expect(queue.submit({ priority: 1 } as never)).rejects.toMatchObject({ field: "strategyId" });
    await expect(
      queue.submit({ strategyId: "s", params: { blob: "x".repeat(300_000) } }),
    ).rejects.toBeInstanceOf(PayloadTooLargeError);
    await expect(queue.submitMany([{ strategyId: "ok" }, { strategyId: "" }])).rejects.toMatchObject({
      field: "builds[1].strategyId",
    });
    await expect(queue.get("nope")).rejects.toBeInstanceOf(ValidationError);
    await expect(queue.get("0b6f5c3e-2a8e-436c-972f-c7a238876415")).rejects.toBeInstanceOf(
      BuildNotFoundError,
    );
    await expect(queue.claim("", 1)).rejects.toMatchObject({ field: "workerId" });
    await expect(queue.claim("w", 0)).rejects.toMatchObject({ field: "count" });
    await expect(queue.complete("0b6f5c3e-2a8e-436c-972f-c7a238876415", 1)).rejects.toBeInstanceOf(
      BuildNotFoundError,
    );
    await expect(queue.complete("0b6f5c3e-2a8e-436c-972f-c7a238876415", -1)).rejects.toMatchObject({
      field: "lease",
    });
    expect(await countBuilds(queue)).toBe(before);
  });

  it("wakes an idle claimer when a build is submitted", async () => {
    await drain(queue);
    const waited = queue.waitForWork(30_000).then(() => "woken");
    await new Promise((r) => setTimeout(r, 100));
    await queue.submit({ strategyId: "wake" });
    expect(await Promise.race([waited, new Promise((r) => setTimeout(() => r("timeout"), 20_000))])).toBe(
      "woken",
    );
  });
});
