/**
 * A fleet of worker PROCESSES with capacities 1, 2 and 3 on 60 short builds of random length: no
 * worker ever runs more builds at once than its capacity (each handler reports how many run in its
 * process when it starts, and the order of starts and ends says the same), and every build is run
 * and completed exactly once. In Redis mode and in PostgreSQL-only mode.
 */
import { describe, expect, it } from "vitest";
import { useFileFixture } from "../helpers/file-fixture.js";
import { sql } from "../helpers/postgres.js";
import { eventually } from "../helpers/queue.js";
import { killAllWorkers, openFleetQueue } from "../helpers/worker-fleet.js";

const HEALTH = { heartbeatMs: 200, deadAfterMs: 3000 };
const CAPACITIES = [1, 2, 3];
const BUILDS = 60;

const fixture = useFileFixture({}, killAllWorkers);

/** A small deterministic generator (the same build lengths on every run). */
function lengths(seed: number, n: number): number[] {
  let x = seed;
  return Array.from({ length: n }, () => {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    return 1 + (x % 5);
  });
}

describe.each(["redis", "postgres"] as const)("workers with capacities 1, 2, 3 (%s mode)", (mode) => {
  it("never run more than their capacity at once; every build completes exactly once", async () => {
    const { queue, schema, start } = await openFleetQueue(fixture, `worker_capacity_${mode}`, mode, HEALTH);
    const fleet = await Promise.all(
      CAPACITIES.map((capacity) => start(`cap-${mode}-${capacity}`, { capacity })),
    );
    const capacityOf = new Map(fleet.map((w, i) => [w, CAPACITIES[i] as number]));

    const steps = lengths(mode === "redis" ? 7 : 11, BUILDS);
    const submittedAt = Date.now();
    const results = await queue.submitMany(
      steps.map((n, i) => ({ strategyId: "capacity", priority: i % 3, params: { steps: n, stepMs: 40 } })),
    );
    const ids = results.map((r) => r.build.id);

    // Meanwhile: how many builds PostgreSQL counts as running per worker (leased, possibly finished
    // and not yet reported), for the log.
    const leasedMax = new Map<string, number>();
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const rows = await sql<{ worker_id: string; n: number }>(
          schema,
          "SELECT worker_id, count(*)::int AS n FROM builds WHERE status = 'running' GROUP BY worker_id",
        );
        for (const r of rows) leasedMax.set(r.worker_id, Math.max(leasedMax.get(r.worker_id) ?? 0, r.n));
        await new Promise((r) => setTimeout(r, 25));
      }
    })();

    await eventually(async () => {
      const [row] = await sql<{ n: number }>(
        schema,
        "SELECT count(*)::int AS n FROM builds WHERE status = 'completed'",
      );
      return row?.n === BUILDS;
    }, 45_000);
    sampling = false;
    await sampler;
    const elapsed = Date.now() - submittedAt;

    // Handler side: the count each handler saw when it started, and the replay of starts and ends.
    const startedBy = new Map<string, string[]>();
    for (const worker of fleet) {
      const capacity = capacityOf.get(worker) as number;
      let running = 0;
      let peak = 0;
      for (const e of worker.events) {
        if (e.event === "started") {
          running += 1;
          peak = Math.max(peak, running);
          expect(e.running).toBeLessThanOrEqual(capacity);
          startedBy.set(e.id as string, [...(startedBy.get(e.id as string) ?? []), worker.workerId]);
        }
        if (e.event === "finished" || e.event === "abandoned") running -= 1;
      }
      expect(peak).toBeLessThanOrEqual(capacity);
      expect(worker.eventsOf("abandoned")).toEqual([]);
      console.log(
        `[worker-capacity ${mode}] ${worker.workerId}: ${worker.eventsOf("started").length} builds, ` +
          `at most ${peak} at once (capacity ${capacity}); at most ${leasedMax.get(worker.workerId) ?? 0} ` +
          "leased (running in PostgreSQL) at once",
      );
    }
    console.log(`[worker-capacity ${mode}] ${BUILDS} builds done in ${elapsed} ms`);

    // Every build: started once, by one worker, completed once by that worker with that lease.
    const rows = await sql<{
      id: string;
      status: string;
      worker_id: string;
      result: { worker: string };
      claimed: number;
      completed: number;
      other: number;
      iteration: number;
    }>(
      schema,
      `SELECT b.id, b.status, b.worker_id, b.result, (b.progress ->> 'iteration')::int AS iteration,
              count(e.id) FILTER (WHERE e.type = 'claimed')::int AS claimed,
              count(e.id) FILTER (WHERE e.type = 'completed')::int AS completed,
              count(e.id) FILTER (WHERE e.type NOT IN ('submitted', 'claimed', 'completed', 'progress'))::int AS other
       FROM builds b LEFT JOIN build_events e ON e.build_id = b.id GROUP BY b.id`,
    );
    expect(rows).toHaveLength(BUILDS);
    for (const [i, id] of ids.entries()) {
      const row = rows.find((r) => r.id === id);
      expect(row).toMatchObject({
        status: "completed",
        claimed: 1,
        completed: 1,
        other: 0,
        iteration: steps[i],
      });
      expect(startedBy.get(id)).toEqual([row?.worker_id]);
      expect(row?.result.worker).toBe(row?.worker_id);
    }

    for (const worker of fleet) expect(await worker.terminate()).toEqual({ code: 0, signal: null });
  });
});
