/**
 * SIGTERM to a worker PROCESS with a running build: the worker stops claiming, lets the build finish
 * within its drain time and exits 0, listed as "stopped"; with a drain time shorter than the build, it
 * hands the build back (status queued, no retry counted, a 'released' event), exits 0, and another
 * worker runs the build to completion.
 */
import { describe, expect, it } from "vitest";
import type { BuildQueue } from "../../src/index.js";
import { useFileFixture } from "../helpers/file-fixture.js";
import {
  buildEvents,
  buildRecord,
  completedBy,
  killAllWorkers,
  openFleetQueue,
  progressAtLeast,
} from "../helpers/worker-fleet.js";

const HEALTH = { heartbeatMs: 200, deadAfterMs: 1500 };

const fixture = useFileFixture({}, killAllWorkers);

// No periodic index check in this process: a released build must reach the index on its own.
const setup = (label: string, mode: "redis" | "postgres") =>
  openFleetQueue(fixture, label, mode, HEALTH, { reconcileIntervalMs: 3_600_000 });

async function statusOf(queue: BuildQueue, workerId: string) {
  return (await queue.workers.list()).find((w) => w.id === workerId)?.status;
}

describe("SIGTERM to a worker process", () => {
  it("lets the running build finish within the drain time, claims nothing more, exits 0 (redis)", async () => {
    const { queue, schema, start } = await setup("worker_shutdown_drain", "redis");
    const worker = await start("sd-w1", { drainMs: 30_000 });
    const { build } = await queue.submit({ strategyId: "drain", params: { steps: 10, stepMs: 100 } });
    const started = await worker.waitFor((e) => e.event === "started" && e.id === build.id);
    await progressAtLeast(schema, build.id, 2);

    const terminatedAt = Date.now();
    const exit = worker.terminate();
    await worker.waitFor((e) => e.event === "stopping");
    // Submitted while it drains: it must not take it.
    const { build: later } = await queue.submit({ strategyId: "drain", params: { steps: 1, stepMs: 10 } });
    expect(await exit).toEqual({ code: 0, signal: null });
    console.log(`[worker-shutdown] SIGTERM to exit, draining one build: ${Date.now() - terminatedAt} ms`);

    const kinds = worker.events.map((e) => e.event).filter((k) => k !== "log" && k !== "ready");
    expect(kinds).toEqual(["started", "stopping", "finished", "stopped"]);
    expect(await buildRecord(schema, build.id)).toMatchObject({
      status: "completed",
      worker_id: worker.workerId,
      lease: started.lease,
      retry_count: 0,
      result: { worker: worker.workerId },
    });
    expect((await buildEvents(schema, build.id)).map((e) => [e.type, e.actor])).toEqual([
      ["submitted", "api"],
      ["claimed", worker.workerId],
      ["completed", worker.workerId],
    ]);
    expect(await buildRecord(schema, later.id)).toMatchObject({ status: "queued", lease: 0 });
    expect(await statusOf(queue, worker.workerId)).toBe("stopped");
  });

  describe.each(["redis", "postgres"] as const)("with a drain time shorter than the build (%s)", (mode) => {
    it("hands the build back (no retry counted) and exits 0; another worker completes it", async () => {
      const { queue, schema, prefix, start } = await setup(`worker_shutdown_release_${mode}`, mode);
      const worker = await start(`sr-${mode}-w1`, { drainMs: 300 });
      const { build } = await queue.submit({ strategyId: "release", params: { steps: 40, stepMs: 100 } });
      const started = await worker.waitFor((e) => e.event === "started" && e.id === build.id);
      await progressAtLeast(schema, build.id, 1);

      expect(await worker.terminate()).toEqual({ code: 0, signal: null });
      // "worker shutdown"; or "lease lost" when a heartbeat answer (without the build, released a
      // moment before) reached the worker between the release and stop()'s own abort.
      const reason = worker.eventsOf("signal-aborted", build.id)[0]?.reason;
      expect(reason).toMatch(/: (worker shutdown|lease lost)$/);
      if (reason?.endsWith("lease lost")) console.log(`[worker-shutdown ${mode}] abort reason: ${reason}`);
      expect(worker.eventsOf("abandoned", build.id)).toHaveLength(1);
      expect(worker.eventsOf("finished", build.id)).toEqual([]);
      expect(worker.eventsOf("stopped")).toHaveLength(1);
      expect(
        worker.events.some(
          (e) => e.event === "log" && e.msg === "drain timeout: builds handed back to the queue",
        ),
      ).toBe(true);

      expect(await buildRecord(schema, build.id)).toMatchObject({
        status: "queued",
        retry_count: 0,
        worker_id: null,
        lease: (started.lease as number) + 1,
      });
      const released = (await buildEvents(schema, build.id)).filter((e) => e.type === "released");
      expect(released).toEqual([
        {
          type: "released",
          actor: worker.workerId,
          from_status: "running",
          to_status: "queued",
          data: { reason: "worker shutdown" },
        },
      ]);
      if (mode === "redis") {
        // The worker put it back into the dispatch index itself (this process does not reconcile).
        const client = fixture.server.client();
        try {
          expect(await client.zscore(`${prefix}:build_queue`, build.id)).not.toBeNull();
        } finally {
          client.disconnect();
        }
      }
      expect(await statusOf(queue, worker.workerId)).toBe("stopped");

      const next = await start(`sr-${mode}-w2`);
      const again = await next.waitFor((e) => e.event === "started" && e.id === build.id, 20_000);
      expect(again.retryCount).toBe(0);
      const done = await completedBy(next, schema, build.id);
      expect(done).toMatchObject({ retry_count: 0, worker_id: next.workerId, lease: again.lease });
      expect((await buildEvents(schema, build.id)).map((e) => [e.type, e.actor])).toEqual([
        ["submitted", "api"],
        ["claimed", worker.workerId],
        ["released", worker.workerId],
        ["claimed", next.workerId],
        ["completed", next.workerId],
      ]);
      expect(await next.terminate()).toEqual({ code: 0, signal: null });
    });
  });
});
