/**
 * The worker runtime in-process, on the Redis path and the PostgreSQL path: handler context,
 * progress, failures and retries, capacity, the reaper, worker status, graceful shutdown.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type BuildQueue, StaleLeaseError } from "../../src/index.js";
import { BuildAbandoned, Worker, type WorkerHandler } from "../../src/worker/worker.js";
import { backends } from "../helpers/backends.js";
import { eventually } from "../helpers/queue.js";

const HEALTH = { heartbeatMs: 100, deadAfterMs: 800 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.each(backends().filter((b) => b.name !== "pglite"))("worker on $name", (backend) => {
  let queue: BuildQueue;
  let cleanup: () => Promise<void>;
  const workers: Worker[] = [];

  beforeAll(async () => {
    ({ queue, cleanup } = await backend.open(`worker_${backend.name}`, { health: HEALTH }));
    queue.startReaper(100);
  });
  afterAll(async () => {
    await Promise.all(workers.map((w) => w.stop()));
    await cleanup?.();
    await backend.teardown();
  });

  function startWorker(handler: WorkerHandler, options: { capacity?: number; drainMs?: number } = {}) {
    const worker = new Worker(queue, { handler, ...options });
    workers.push(worker);
    return worker.start().then(() => worker);
  }

  it("runs builds with a context, records progress and results", async () => {
    const seen: { lease: number; aborted: boolean }[] = [];
    const worker = await startWorker(async (ctx) => {
      seen.push({ lease: ctx.lease, aborted: ctx.signal.aborted });
      await ctx.progress({ phase: "training", percent: 50, iteration: 5, maxIterations: 10 });
      ctx.log("epoch 5 done");
      return { image: `oculus/${ctx.build.strategyId}:1` };
    });
    const { build } = await queue.submit({ strategyId: "ctx" });
    const done = await eventually(async () => {
      const b = await queue.get(build.id);
      return b.status === "completed" && b;
    });
    expect(done.result).toEqual({ image: "oculus/ctx:1" });
    expect(done.phase).toBe("training");
    expect(done.progress).toMatchObject({ phase: "training", percent: 50, iteration: 5, maxIterations: 10 });
    expect(seen).toEqual([{ lease: build.lease + 1, aborted: false }]);
    await worker.stop();
    const listed = (await queue.workers.list()).find((w) => w.id === worker.id);
    expect(listed?.status).toBe("stopped");
  });

  it("fails a build whose handler throws (retry policy applies) and keeps running", async () => {
    let calls = 0;
    const worker = await startWorker(async (ctx) => {
      calls++;
      ctx.log("loading data");
      if (ctx.build.retryCount === 0) throw new Error("CUDA out of memory");
      return "ok";
    });
    const { build } = await queue.submit({ strategyId: "flaky", maxRetries: 2 });
    const done = await eventually(async () => {
      const b = await queue.get(build.id);
      return b.status === "completed" && b;
    });
    expect(done.retryCount).toBe(1);
    expect(calls).toBe(2);
    const events = await queue.store.db.query<{ type: string; data: { error?: string } }>(
      "SELECT type, data FROM build_events WHERE build_id = $1 ORDER BY id",
      [build.id],
    );
    expect(events.rows.map((e) => e.type)).toEqual([
      "submitted",
      "claimed",
      "retry_scheduled",
      "claimed",
      "completed",
    ]);
    expect(events.rows[2]?.data.error).toContain("CUDA out of memory");
    expect(events.rows[2]?.data.error).toContain("loading data");
    await worker.stop();
  });

  it("never runs more builds at once than its capacity", async () => {
    let active = 0;
    let maxActive = 0;
    const handler: WorkerHandler = async () => {
      active++;
      maxActive = Math.max(maxActive, active);
      await sleep(5 + Math.random() * 20);
      active--;
      return null;
    };
    const a = await startWorker(handler, { capacity: 3 });
    const builds = await queue.submitMany(Array.from({ length: 40 }, (_, i) => ({ strategyId: `cap${i}` })));
    await eventually(async () => {
      const rows = await queue.store.db.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM builds WHERE id = ANY($1::uuid[]) AND status = 'completed'",
        [builds.map((b) => b.build.id)],
      );
      return rows.rows[0]?.n === 40;
    });
    expect(maxActive).toBeLessThanOrEqual(3);
    expect(maxActive).toBeGreaterThan(1);
    await a.stop();
  });

  it("reaps the builds of a worker that vanished: requeued with a retry, its lease refused", async () => {
    const { build } = await queue.submit({ strategyId: "orphan", maxRetries: 1 });
    await queue.workers.register({
      id: "ghost",
      hostname: "h",
      pid: 1,
      capacity: 1,
      labels: {},
      version: "t",
    });
    const [claimed] = await queue.claim("ghost", 1);
    if (!claimed) throw new Error("nothing claimed");
    // The ghost never heartbeats: its lease expires and the reaper requeues the build.
    const requeued = await eventually(async () => {
      const b = await queue.get(build.id);
      return b.status === "queued" && b;
    });
    expect(requeued.retryCount).toBe(1);
    expect(requeued.lease).toBe(claimed.lease + 1);
    expect(requeued.lastError).toMatch(/worker lost.*ghost/);
    await expect(queue.complete(build.id, claimed.lease)).rejects.toBeInstanceOf(StaleLeaseError);
    await expect(queue.reportProgress(build.id, claimed.lease, { percent: 1 })).rejects.toBeInstanceOf(
      StaleLeaseError,
    );
    expect((await queue.workers.list()).find((w) => w.id === "ghost")?.status).toBe("dead");

    // Claimed and lost again: no retries left, so it fails with the reason.
    const [again] = await queue.claim("ghost", 1);
    expect(again?.id).toBe(build.id);
    const failed = await eventually(async () => {
      const b = await queue.get(build.id);
      return b.status === "failed" && b;
    });
    expect(failed.lastError).toMatch(/no retries left/);
  });

  it("abandons a build taken from it: the handler's signal aborts", async () => {
    let abortReason: unknown;
    const worker = await startWorker(async (ctx) => {
      await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve()));
      abortReason = ctx.signal.reason;
      throw new Error("stopped");
    });
    const { build } = await queue.submit({ strategyId: "taken" });
    const running = await eventually(async () => {
      const b = await queue.get(build.id);
      return b.status === "running" && b;
    });
    // Another party takes the build (as the reaper or a stop does): fail it for good with its current
    // lease from outside the worker. The next heartbeat finds it no longer held.
    await queue.fail(build.id, running.lease, "taken away", { retryable: false });
    await eventually(async () => abortReason !== undefined);
    expect(abortReason).toBeInstanceOf(BuildAbandoned);
    await worker.stop();
  });

  it("on shutdown hands back what it cannot finish within the drain time", async () => {
    const worker = await startWorker(
      async (ctx) => {
        await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve()));
        throw new Error("aborted");
      },
      { drainMs: 200 },
    );
    const { build } = await queue.submit({ strategyId: "long" });
    await eventually(async () => (await queue.get(build.id)).status === "running");
    await worker.stop();
    const back = await queue.get(build.id);
    expect(back).toMatchObject({ status: "queued", retryCount: 0, workerId: null });
    const events = await queue.store.db.query<{ type: string }>(
      "SELECT type FROM build_events WHERE build_id = $1 ORDER BY id",
      [build.id],
    );
    expect(events.rows.map((e) => e.type)).toContain("released");
    await queue.remove(build.id);
  });
});
