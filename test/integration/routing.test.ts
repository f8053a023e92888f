/**
 * Routing (issue 14): a build with `requires` is claimed only by workers whose labels include all of
 * them; exact priority + FIFO order holds among the builds a worker can run; positions are per pool;
 * the reconciler rebuilds every pool. Run on every backend (Redis, PostgreSQL, PGlite).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { poolIdOf } from "../../src/core/pools.js";
import { type BuildQueue, ValidationError } from "../../src/index.js";
import { backends } from "../helpers/backends.js";

const GPU = { gpu: "true" };
const GPU_ARM = { gpu: "true", arch: "arm64" };

async function drainAll(queue: BuildQueue): Promise<void> {
  const everyLabelSet: Record<string, string>[] = [
    {},
    GPU_ARM,
    { docker: "true" },
    { gpu: "true", arch: "arm64", docker: "true" },
  ];
  for (const labels of everyLabelSet) {
    for (;;) {
      const claimed = await queue.claim("drainer", 500, { labels });
      if (claimed.length === 0) break;
      await Promise.all(claimed.map((b) => queue.complete(b.id, b.lease)));
    }
  }
}

describe.each(backends())("routing on $name", (backend) => {
  let queue: BuildQueue;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    ({ queue, cleanup } = await backend.open(`routing_${backend.name}`));
  });
  afterAll(async () => {
    await cleanup?.();
    await backend.teardown();
  });

  it("names pools canonically: key order does not matter, no requirements is the default pool", () => {
    expect(poolIdOf({})).toBe("default");
    expect(poolIdOf({ a: "1", b: "2" })).toBe(poolIdOf({ b: "2", a: "1" }));
    expect(poolIdOf({ a: "1" })).not.toBe(poolIdOf({ a: "2" }));
    expect(poolIdOf({ a: "1" })).toMatch(/^p[0-9a-f]{16}$/);
  });

  it("refuses bad requirements with a 400 naming the field, and writes nothing", async () => {
    await drainAll(queue);
    const bad: [unknown, string][] = [
      [{ gpu: true }, "requires.gpu"],
      [{ gpu: "" }, "requires.gpu"],
      ["gpu", "requires"],
      [Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, "v"])), "requires"],
    ];
    for (const [requires, field] of bad) {
      const err = await queue.submit({ strategyId: "s", requires } as never).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, JSON.stringify(requires)).toBeInstanceOf(ValidationError);
      expect((err as ValidationError).message).toContain(field);
    }
    const badKey = await queue.submit({ strategyId: "s", requires: { "bad key": "1" } }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(badKey).toBeInstanceOf(ValidationError);
    expect((badKey as ValidationError).message).toContain("requires");
    expect(await queue.counts()).toEqual({ ready: 0, delayed: 0 });
  });

  it("a worker never claims a build its labels do not satisfy", async () => {
    await drainAll(queue);
    const gpu = await queue.submit({ strategyId: "gpu", requires: GPU_ARM });
    expect(gpu.build).toMatchObject({ requires: GPU_ARM, pool: poolIdOf(GPU_ARM) });
    expect(gpu.position).toBe(1);
    // No labels, or only some of them: nothing to claim.
    expect(await queue.claim("cpu", 10)).toEqual([]);
    expect(await queue.claim("gpu-x86", 10, { labels: { gpu: "true", arch: "x86_64" } })).toEqual([]);
    expect(await queue.claim("gpu-only", 10, { labels: GPU })).toEqual([]);
    expect((await queue.get(gpu.build.id)).status).toBe("queued");
    // A superset of the requirements runs it.
    const [claimed] = await queue.claim("gpu-arm", 10, { labels: { ...GPU_ARM, docker: "true" } });
    expect(claimed?.id).toBe(gpu.build.id);
    await queue.complete(gpu.build.id, claimed?.lease ?? 0);
  });

  it("keeps exact priority + FIFO order among the builds a worker can run, across pools", async () => {
    await drainAll(queue);
    const inputs = [
      { strategyId: "a", priority: 0 },
      { strategyId: "b", priority: 0, requires: GPU },
      { strategyId: "c", priority: 5, requires: GPU_ARM },
      { strategyId: "d", priority: 0 },
      { strategyId: "e", priority: 5 },
      { strategyId: "f", priority: 0, requires: { docker: "true" } },
      { strategyId: "g", priority: 0, requires: GPU },
    ];
    for (const input of inputs) await queue.submit(input);
    // A GPU+arm64 worker can run the default pool, GPU and GPU_ARM: not docker.
    const order: string[] = [];
    for (;;) {
      const [b] = await queue.claim("gpu-arm", 1, { labels: GPU_ARM });
      if (!b) break;
      order.push(b.strategyId);
      await queue.complete(b.id, b.lease);
    }
    expect(order).toEqual(["c", "e", "a", "b", "d", "g"]);
    const [docker] = await queue.claim("docker", 5, { labels: { docker: "true" } });
    expect(docker?.strategyId).toBe("f");
    await queue.complete(docker?.id ?? "", docker?.lease ?? 0);
  });

  it("claims a batch across pools in dispatch order", async () => {
    await drainAll(queue);
    const submitted = await queue.submitMany([
      { strategyId: "1", requires: GPU },
      { strategyId: "2" },
      { strategyId: "3", requires: GPU },
      { strategyId: "4", priority: 1 },
    ]);
    expect(submitted.map((s) => s.build.pool)).toEqual([poolIdOf(GPU), "default", poolIdOf(GPU), "default"]);
    const claimed = await queue.claim("gpu", 10, { labels: GPU });
    expect(claimed.map((b) => b.strategyId)).toEqual(["4", "1", "2", "3"]);
    await Promise.all(claimed.map((b) => queue.complete(b.id, b.lease)));
  });

  it("reports positions per pool", async () => {
    await drainAll(queue);
    const a = await queue.submit({ strategyId: "a" });
    const b = await queue.submit({ strategyId: "b", requires: GPU });
    const c = await queue.submit({ strategyId: "c" });
    const d = await queue.submit({ strategyId: "d", requires: GPU });
    expect([a.position, b.position, c.position, d.position]).toEqual([1, 1, 2, 2]);
    expect(await queue.position(d.build.id)).toBe(2);
    await drainAll(queue);
  });

  it("a retried build of a pool goes back to its pool, delayed, and runs only there", async () => {
    await drainAll(queue);
    const { build } = await queue.submit({ strategyId: "r", requires: GPU, maxRetries: 1 });
    const [first] = await queue.claim("gpu", 1, { labels: GPU });
    expect(first?.id).toBe(build.id);
    await queue.fail(build.id, first?.lease ?? 0, "boom");
    // Backoff is 50-200 ms in tests: a default worker still never gets it.
    const deadline = Date.now() + 10_000;
    let again: Awaited<ReturnType<typeof queue.claim>> = [];
    while (again.length === 0 && Date.now() < deadline) {
      expect(await queue.claim("cpu", 5)).toEqual([]);
      again = await queue.claim("gpu", 1, { labels: GPU });
      if (again.length === 0) await new Promise((r) => setTimeout(r, 50));
    }
    expect(again[0]?.id).toBe(build.id);
    await queue.complete(build.id, again[0]?.lease ?? 0);
  });

  it("removes a queued build of a pool from its pool", async () => {
    await drainAll(queue);
    const { build } = await queue.submit({ strategyId: "x", requires: GPU });
    await queue.remove(build.id);
    expect(await queue.counts()).toEqual({ ready: 0, delayed: 0 });
    expect(await queue.claim("gpu", 5, { labels: GPU })).toEqual([]);
  });

  it("refuses bad worker labels", async () => {
    await expect(queue.claim("w", 1, { labels: { gpu: 1 } as never })).rejects.toThrow(/labels.gpu/);
  });
});
