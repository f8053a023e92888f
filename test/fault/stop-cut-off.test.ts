/**
 * A stop asked while the owning worker's Redis connection is cut for real (a TCP proxy) is still
 * honoured: the worker hears it through PostgreSQL (NOTIFY, or the status its heartbeats read).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Worker } from "../../src/worker/worker.js";
import { type CutOffStores, openCutOffStores } from "../helpers/cut-off.js";
import { uniqueSchema } from "../helpers/postgres.js";
import { eventually } from "../helpers/queue.js";

const HEALTH = { heartbeatMs: 200, deadAfterMs: 5000 };

describe("a stop while the worker's Redis connection is cut", () => {
  const schema = uniqueSchema("stop_cut");
  const prefix = `stopcut${process.pid}`;
  let stores: CutOffStores;
  let worker: Worker;
  const aborted = new Set<string>();

  beforeAll(async () => {
    stores = await openCutOffStores({ schema, prefix, health: HEALTH });
    worker = new Worker(stores.workerQueue, {
      handler: async (ctx) => {
        await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve()));
        aborted.add(ctx.build.id);
        throw new Error("stopped");
      },
    });
    await worker.start();
  });

  afterAll(async () => {
    stores?.restore();
    await worker?.stop().catch(() => undefined);
    await stores?.close();
  });

  it("reaches the worker through PostgreSQL, and the build ends stopped", async () => {
    const { observer, redisProxy } = stores;
    const { build } = await observer.submit({ strategyId: "cut" });
    await eventually(async () => (await observer.get(build.id)).status === "running");
    redisProxy.cut();
    const stopping = await observer.stop(build.id, { actor: "erin", reason: "cut test" });
    expect(stopping.status).toBe("stopping");
    expect(observer.mode).toBe("redis"); // the observer published on Redis: nobody heard it there
    const stopped = await eventually(async () => {
      const b = await observer.get(build.id);
      return b.status === "stopped" && b;
    });
    expect(stopped).toMatchObject({ stoppedBy: "erin", retryCount: 0 });
    expect(aborted.has(build.id)).toBe(true);
  });
});
