/**
 * A worker whose connections are cut for real (a TCP proxy in front of PostgreSQL and Redis):
 * - losing Redis only, it keeps heartbeating through PostgreSQL: its build is not reaped;
 * - losing both, it claims nothing, and the result of the build it was running is written when the
 *   stores return, not lost.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Worker } from "../../src/worker/worker.js";
import { type CutOffStores, openCutOffStores } from "../helpers/cut-off.js";
import { uniqueSchema } from "../helpers/postgres.js";
import { eventually } from "../helpers/queue.js";

const HEALTH = { heartbeatMs: 200, deadAfterMs: 3000 };

describe("a worker cut off from its stores", () => {
  const schema = uniqueSchema("worker_cut");
  const prefix = `cut${process.pid}`;
  let stores: CutOffStores;
  let worker: Worker;
  let release: (() => void) | undefined;
  /** Lets the running build finish (a function, so that TypeScript does not narrow `release`). */
  const finishBuild = () => release?.();

  beforeAll(async () => {
    // observer: the rest of the system, runs the reaper; workerQueue: the worker's process.
    stores = await openCutOffStores({ schema, prefix, health: HEALTH, cutPostgres: true });
    stores.observer.startReaper(100);
    worker = new Worker(stores.workerQueue, {
      handler: async (ctx) => {
        // Runs until the test lets it finish.
        await new Promise<void>((resolve) => {
          release = resolve;
        });
        return { finishedBy: ctx.lease };
      },
    });
    await worker.start();
  });

  afterAll(async () => {
    finishBuild();
    stores?.restore();
    await worker?.stop().catch(() => undefined);
    await stores?.close();
  });

  it("keeps its build through PostgreSQL heartbeats while Redis is cut", async () => {
    const { observer, workerQueue, redisProxy } = stores;
    const { build } = await observer.submit({ strategyId: "no-redis" });
    const running = await eventually(async () => {
      const b = await observer.get(build.id);
      return b.status === "running" && b;
    });
    redisProxy.cut();
    await eventually(async () => workerQueue.mode === "postgres");
    // Well past the dead-worker timeout: the lease is renewed through PostgreSQL, nothing is reaped.
    await new Promise((r) => setTimeout(r, HEALTH.deadAfterMs * 1.5));
    const still = await observer.get(build.id);
    expect(still).toMatchObject({ status: "running", lease: running.lease, retryCount: 0 });
    expect((await observer.workers.list()).find((w) => w.id === worker.id)?.status).toBe("active");
    redisProxy.restore();
    finishBuild();
    const done = await eventually(async () => {
      const b = await observer.get(build.id);
      return b.status === "completed" && b;
    });
    expect(done.result).toEqual({ finishedBy: running.lease });
  });

  it("claims nothing while both are cut, and records its result when they return", async () => {
    const { observer, pgProxy, redisProxy } = stores;
    release = undefined;
    const { build } = await observer.submit({ strategyId: "offline" });
    const running = await eventually(async () => {
      const b = await observer.get(build.id);
      return b.status === "running" && release !== undefined && b;
    });
    pgProxy?.cut();
    redisProxy.cut();
    // The build finishes while the worker can reach nothing; another build arrives meanwhile.
    finishBuild();
    const { build: waiting } = await observer.submit({ strategyId: "while-offline" });
    await new Promise((r) => setTimeout(r, 1000));
    expect((await observer.get(waiting.id)).status).toBe("queued");
    expect((await observer.get(build.id)).status).toBe("running");
    // Back before its lease runs out: the held result is written with the worker's lease.
    pgProxy?.restore();
    redisProxy.restore();
    const done = await eventually(async () => {
      const b = await observer.get(build.id);
      return b.status === "completed" && b;
    });
    expect(done).toMatchObject({
      lease: running.lease,
      result: { finishedBy: running.lease },
      retryCount: 0,
    });
    // And it claims again.
    await eventually(async () => (await observer.get(waiting.id)).status === "running");
    finishBuild();
  });
});
