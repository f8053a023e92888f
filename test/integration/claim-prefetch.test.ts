/**
 * The claim loop's prefetch on a real queue: builds claimed ahead of free slots run in dispatch
 * order, at most `concurrency` at once; those still waiting when the loop stops are released (queued
 * again at once, not left to the reaper), and every build runs exactly once across loops.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ClaimedBuild } from "../../src/core/build.js";
import { type BuildQueue, runClaimLoop } from "../../src/index.js";
import { backends } from "../helpers/backends.js";
import { eventually } from "../helpers/queue.js";

function startLoop(
  queue: BuildQueue,
  workerId: string,
  handler: (build: ClaimedBuild) => Promise<unknown>,
  options: { concurrency: number; prefetch: number },
) {
  const controller = new AbortController();
  const released: string[] = [];
  const errors: unknown[] = [];
  const done = runClaimLoop(
    {
      claim: (count) => queue.claim(workerId, count),
      wait: (ms, signal) => queue.waitForWork(ms, signal),
      complete: (build, result) => queue.complete(build.id, build.lease, result, { readBack: false }),
      fail: (build, error) => queue.fail(build.id, build.lease, error.message),
      release: async (builds) => {
        released.push(...builds.map((b) => b.id));
        await queue.workers.release(
          workerId,
          builds.map((b) => ({ id: b.id, lease: b.lease })),
        );
      },
      onError: (err) => errors.push(err),
    },
    handler,
    { ...options, idleWaitMs: 50, signal: controller.signal },
  );
  return { stop: () => controller.abort(), done, released, errors };
}

describe.each(backends())("claim loop with prefetch on $name", (backend) => {
  let queue: BuildQueue;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    ({ queue, cleanup } = await backend.open(`prefetch_${backend.name}`));
  });
  afterAll(async () => {
    await cleanup?.();
    await backend.teardown();
  });

  it("releases the builds it holds unstarted on stop, and every build runs once", async () => {
    const submitted = await queue.submitMany(Array.from({ length: 30 }, (_, i) => ({ strategyId: `p${i}` })));
    const ids = submitted.map((r) => r.build.id);
    const runs = new Map<string, number>();
    const order: string[] = [];
    let active = 0;
    let maxActive = 0;
    let gate: () => void = () => undefined;
    const blocked = new Promise<void>((r) => {
      gate = r;
    });
    const count = (build: ClaimedBuild) => {
      runs.set(build.id, (runs.get(build.id) ?? 0) + 1);
      order.push(build.id);
    };

    // First loop: 2 slots, 5 prefetched; its handlers block, so it holds 7 builds when stopped.
    const first = startLoop(
      queue,
      "prefetcher",
      async (build) => {
        count(build);
        active++;
        maxActive = Math.max(maxActive, active);
        await blocked;
        active--;
        return null;
      },
      { concurrency: 2, prefetch: 5 },
    );
    await eventually(async () => order.length === 2);
    const held = await queue.store.db.query<{ n: number }>(
      "SELECT count(*)::integer AS n FROM builds WHERE status = 'running' AND worker_id = 'prefetcher'",
    );
    expect(held.rows[0]?.n).toBe(7);
    first.stop();
    gate();
    await first.done;
    expect(maxActive).toBe(2);
    expect(first.released).toEqual(ids.slice(2, 7));
    for (const id of first.released) expect((await queue.get(id)).status).toBe("queued");

    // A second loop takes the rest, the released builds first (they keep their place).
    const second = startLoop(queue, "second", async (build) => count(build), { concurrency: 3, prefetch: 4 });
    await eventually(async () => order.length === 30, 20_000);
    second.stop();
    await second.done;
    expect(first.errors).toEqual([]);
    expect(second.errors).toEqual([]);
    expect(order.slice(2, 7)).toEqual(ids.slice(2, 7));
    expect([...runs.values()].every((n) => n === 1)).toBe(true);
    for (const id of ids) expect((await queue.get(id)).status).toBe("completed");
  });
});
