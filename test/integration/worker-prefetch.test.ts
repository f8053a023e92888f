/**
 * A Worker with a prefetch (WorkerOptions.prefetch, `oculus worker --prefetch`): builds claimed ahead
 * of its slots wait leased, start in claim order as slots free, never run when they were stopped
 * while they waited, and are handed back at once on shutdown; every build runs at most once.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BuildQueue } from "../../src/index.js";
import { Worker, type WorkerHandler } from "../../src/worker/worker.js";
import { backends } from "../helpers/backends.js";
import { eventually } from "../helpers/queue.js";

const HEALTH = { heartbeatMs: 200, deadAfterMs: 5000 };

describe.each(backends().filter((b) => b.name !== "pglite"))("worker prefetch on $name", (backend) => {
  let queue: BuildQueue;
  let cleanup: () => Promise<void>;
  const workers: Worker[] = [];

  beforeAll(async () => {
    ({ queue, cleanup } = await backend.open(`prefetch_w_${backend.name}`, { health: HEALTH }));
  });
  afterAll(async () => {
    await Promise.all(workers.map((w) => w.stop()));
    await cleanup?.();
    await backend.teardown();
  });

  async function startWorker(handler: WorkerHandler, options: { drainMs?: number } = {}) {
    const worker = new Worker(queue, { handler, capacity: 1, prefetch: 3, ...options });
    workers.push(worker);
    await worker.start();
    return worker;
  }

  const heldBy = async (workerId: string) =>
    (
      await queue.store.db.query<{ id: string }>(
        "SELECT id FROM builds WHERE status IN ('running', 'stopping') AND worker_id = $1",
        [workerId],
      )
    ).rows.map((r) => r.id);

  it("runs prefetched builds in order; one stopped while it waited never runs and ends stopped", async () => {
    const submitted = await queue.submitMany(Array.from({ length: 4 }, (_, i) => ({ strategyId: `pf${i}` })));
    const ids = submitted.map((r) => r.build.id);
    const ran: string[] = [];
    let open: () => void = () => undefined;
    const gate = new Promise<void>((r) => {
      open = r;
    });
    const worker = await startWorker(async (ctx) => {
      ran.push(ctx.build.id);
      await gate;
      return null;
    });
    // One slot running, three prefetched: all four leased to this worker.
    await eventually(async () => (await heldBy(worker.id)).length === 4);
    expect(ran).toEqual([ids[0]]);
    const waiting = ids[2] as string;
    expect((await queue.stop(waiting, { actor: "test" })).status).toBe("stopping");
    // The stop reaches the worker (pub/sub or NOTIFY, else its next heartbeat's answer) before a slot
    // frees: the test waits for the worker's own note of it, not for a time.
    const notes = (worker as unknown as { beforeStart: Map<string, unknown> }).beforeStart;
    await eventually(async () => notes.has(waiting));
    open();
    await eventually(async () => {
      const builds = await Promise.all(ids.map((id) => queue.get(id)));
      return builds.every((b) => b.status === "completed" || b.status === "stopped");
    });
    expect(ran).toEqual([ids[0], ids[1], ids[3]]);
    expect((await queue.get(waiting)).status).toBe("stopped");
    await worker.stop();
  });

  it("hands back the builds it holds unstarted at shutdown at once, and they run elsewhere once", async () => {
    const submitted = await queue.submitMany(Array.from({ length: 4 }, (_, i) => ({ strategyId: `ps${i}` })));
    const ids = submitted.map((r) => r.build.id);
    const runs = new Map<string, number>();
    const count = (id: string) => runs.set(id, (runs.get(id) ?? 0) + 1);
    let open: () => void = () => undefined;
    const gate = new Promise<void>((r) => {
      open = r;
    });
    const first = await startWorker(
      async (ctx) => {
        count(ctx.build.id);
        await gate;
        return null;
      },
      { drainMs: 60_000 },
    );
    await eventually(async () => (await heldBy(first.id)).length === 4);
    const stopping = first.stop();
    // The three that never started are queued again while the running one still drains.
    await eventually(async () => {
      const statuses = await Promise.all(ids.slice(1).map(async (id) => (await queue.get(id)).status));
      return statuses.every((s) => s === "queued");
    });
    expect((await queue.get(ids[0] as string)).status).toBe("running");
    open();
    await stopping;
    expect((await queue.get(ids[0] as string)).status).toBe("completed");

    const second = await startWorker(async (ctx) => {
      count(ctx.build.id);
      return null;
    });
    await eventually(async () => {
      const builds = await Promise.all(ids.map((id) => queue.get(id)));
      return builds.every((b) => b.status === "completed");
    });
    expect(ids.map((id) => runs.get(id))).toEqual([1, 1, 1, 1]);
    await second.stop();
  });

  it('prefetch "auto": a stream of no-op builds runs in full, each build once', async () => {
    const submitted = await queue.submitMany(
      Array.from({ length: 300 }, (_, i) => ({ strategyId: `pa${i}` })),
    );
    const ids = new Set(submitted.map((r) => r.build.id));
    const runs = new Map<string, number>();
    const worker = new Worker(queue, {
      handler: async (ctx) => {
        runs.set(ctx.build.id, (runs.get(ctx.build.id) ?? 0) + 1);
        return null;
      },
      capacity: 4,
      prefetch: "auto",
    });
    workers.push(worker);
    await worker.start();
    await eventually(async () => {
      const res = await queue.store.db.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM builds WHERE id = ANY ($1::uuid[]) AND status = 'completed'",
        [[...ids]],
      );
      return Number(res.rows[0]?.n) === ids.size;
    }, 60_000); // a bound for a loaded machine, not a speed
    await worker.stop();
    expect([...ids].every((id) => runs.get(id) === 1)).toBe(true);
    expect(runs.size).toBe(ids.size);
  });

  it('refuses a prefetch that is not a whole number or "auto"', () => {
    expect(() => new Worker(queue, { handler: async () => null, prefetch: -1 })).toThrow(
      /prefetch: must be an integer >= 0 or "auto"/,
    );
    expect(
      () => new Worker(queue, { handler: async () => null, prefetch: "soon" as unknown as number }),
    ).toThrow(/prefetch: must be an integer >= 0 or "auto"/);
  });
});
