/**
 * Routing under faults (issue 14): a fleet of real worker processes, two with the label gpu=true and
 * one without. A worker running a GPU build is killed with kill -9 (its build is requeued by the
 * reaper); in Redis mode Redis is also killed with kill -9 mid-run (the fleet falls back to
 * PostgreSQL) and restarted later on its AOF. Through all of it every build completes exactly once
 * and is only ever started, and claimed, by a worker whose labels include its requirements.
 */
import { describe, expect, it } from "vitest";
import { useFileFixture } from "../helpers/file-fixture.js";
import { sql } from "../helpers/postgres.js";
import { eventually } from "../helpers/queue.js";
import {
  buildEvents,
  firstStart,
  killAllWorkers,
  openFleetQueue,
  progressAtLeast,
  type WorkerProcess,
} from "../helpers/worker-fleet.js";

const HEALTH = { heartbeatMs: 200, deadAfterMs: 1500 };
const GPU = { gpu: "true" };
const GPU_BUILD = { steps: 8, stepMs: 100 };
const CPU_BUILD = { steps: 3, stepMs: 100 };

const fixture = useFileFixture({}, killAllWorkers);

describe.each(["redis", "postgres"] as const)("routing under faults (%s mode)", (mode) => {
  it("builds run only on matching workers through a worker kill -9 and Redis loss", async () => {
    const { queue, schema, start } = await openFleetQueue(fixture, `routing_faults_${mode}`, mode, HEALTH);
    const gpuWorkers = await Promise.all([
      start(`${mode}-gpu1`, { labels: GPU }),
      start(`${mode}-gpu2`, { labels: GPU }),
    ]);
    const cpuWorker = await start(`${mode}-cpu`);
    const fleet: WorkerProcess[] = [...gpuWorkers, cpuWorker];

    const first = await queue.submitMany([
      ...Array.from({ length: 4 }, (_, i) => ({ strategyId: `gpu-${i}`, params: GPU_BUILD, requires: GPU })),
      ...Array.from({ length: 4 }, (_, i) => ({ strategyId: `cpu-${i}`, params: CPU_BUILD })),
    ]);
    const firstGpu = first[0]?.build.id ?? "";
    const started = await firstStart(fleet, firstGpu, 30_000);
    expect(gpuWorkers).toContain(started.worker);
    await progressAtLeast(schema, firstGpu, 2);
    await started.worker.kill9();

    let more: typeof first = [];
    if (mode === "redis") {
      await fixture.server.kill9();
      more = await queue.submitMany([
        ...Array.from({ length: 2 }, (_, i) => ({
          strategyId: `gpu-late-${i}`,
          params: GPU_BUILD,
          requires: GPU,
        })),
        ...Array.from({ length: 2 }, (_, i) => ({ strategyId: `cpu-late-${i}`, params: CPU_BUILD })),
      ]);
      expect(queue.mode).toBe("postgres");
      // Some of them run on PostgreSQL before Redis returns.
      await eventually(async () => {
        const rows = await sql<{ n: number }>(
          schema,
          "SELECT count(*)::int AS n FROM builds WHERE status = 'completed' AND strategy_id LIKE '%late%'",
        );
        return (rows[0]?.n ?? 0) >= 1;
      }, 60_000);
      await fixture.server.restart();
      await eventually(async () => queue.mode === "redis", 60_000);
    }

    const all = [...first, ...more].map((r) => r.build);
    await eventually(async () => {
      const rows = await sql<{ n: number }>(
        schema,
        "SELECT count(*)::int AS n FROM builds WHERE status = 'completed'",
      );
      return rows[0]?.n === all.length;
    }, 120_000);

    const gpuIds = new Set(gpuWorkers.map((w) => w.workerId));
    for (const build of all) {
      const claims = (await buildEvents(schema, build.id)).filter((e) => e.type === "claimed");
      const completions = (await buildEvents(schema, build.id)).filter((e) => e.type === "completed");
      expect(completions, build.strategyId).toHaveLength(1);
      for (const claim of claims) {
        if (build.pool === "default") continue; // any worker may run it
        expect(gpuIds.has(claim.actor), `${build.strategyId} claimed by ${claim.actor}`).toBe(true);
      }
    }
    // The worker without labels started no GPU build (its own events say so too).
    const gpuBuildIds = new Set(all.filter((b) => b.pool !== "default").map((b) => b.id));
    expect(cpuWorker.eventsOf("started").filter((e) => gpuBuildIds.has(e.id ?? ""))).toEqual([]);
    // The killed GPU build ran again, on the other GPU worker.
    const survivor = gpuWorkers.find((w) => w !== started.worker) as WorkerProcess;
    expect(survivor.eventsOf("started", firstGpu).length).toBeGreaterThanOrEqual(1);
  }, 240_000);
});
