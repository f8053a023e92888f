/**
 * Concurrency limits under faults (issue 14): a fleet of real worker processes (capacity 2 each) runs
 * builds of two keys (limit 1 and limit 2) and builds without a key. A worker running a build of the
 * limit-1 key is killed with kill -9: the reaper requeues that build after its lease, and the next
 * builds of the key run only then. In Redis mode Redis is also killed with kill -9 while keyed builds
 * flow (the fleet falls back to PostgreSQL, admissions go on there) and restarted on its AOF. Checked
 * on the record: every build completes exactly once, and no key ever had more builds running (claimed
 * and not yet ended or requeued, in event order) than its limit.
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
  requeuedWithin,
  type WorkerProcess,
} from "../helpers/worker-fleet.js";

const HEALTH = { heartbeatMs: 200, deadAfterMs: 4000 };
const KEYED_BUILD = { steps: 5, stepMs: 100 };
const FREE_BUILD = { steps: 2, stepMs: 100 };

const fixture = useFileFixture({}, killAllWorkers);

/** The most builds of each key running at once, replaying the key's events in id order. */
async function maxRunningByKey(schema: string): Promise<Map<string, number>> {
  const rows = await sql<{ key: string; type: string }>(
    schema,
    `SELECT b.concurrency_key AS key, e.type FROM build_events e JOIN builds b ON b.id = e.build_id
     WHERE b.concurrency_key IS NOT NULL AND e.type <> 'progress' ORDER BY e.id`,
  );
  const running = new Map<string, number>();
  const max = new Map<string, number>();
  const ends = new Set(["completed", "failed", "requeued", "released", "retry_scheduled", "stopped"]);
  for (const { key, type } of rows) {
    const now = (running.get(key) ?? 0) + (type === "claimed" ? 1 : ends.has(type) ? -1 : 0);
    running.set(key, now);
    max.set(key, Math.max(max.get(key) ?? 0, now));
  }
  return max;
}

describe.each(["redis", "postgres"] as const)("concurrency limits under faults (%s mode)", (mode) => {
  it("no key exceeds its limit through a worker kill -9 and Redis loss; every build runs once", async () => {
    const { queue, schema, start } = await openFleetQueue(
      fixture,
      `concurrency_faults_${mode}`,
      mode,
      HEALTH,
    );
    const solo = `solo-${mode}`;
    const pair = `pair-${mode}`;
    await queue.setLimit(pair, 2);
    const fleet: WorkerProcess[] = await Promise.all(
      [1, 2, 3].map((n) => start(`${mode}-cc${n}`, { capacity: 2 })),
    );
    const keyed = (key: string, n: number, tag: string) =>
      Array.from({ length: n }, (_, i) => ({
        strategyId: `${key}-${tag}-${i}`,
        params: KEYED_BUILD,
        concurrencyKey: key,
      }));
    const first = await queue.submitMany([
      ...keyed(solo, 4, "a"),
      ...keyed(pair, 6, "a"),
      ...Array.from({ length: 4 }, (_, i) => ({ strategyId: `free-${i}`, params: FREE_BUILD })),
    ]);

    // The solo key's first build, mid-run, loses its worker.
    const firstSolo = first[0]?.build.id ?? "";
    const started = await firstStart(fleet, firstSolo, 30_000);
    await progressAtLeast(schema, firstSolo, 2);
    await started.worker.kill9();
    await requeuedWithin(schema, firstSolo, 30_000, () => "");
    // Until then no other build of the key started (the record says so below, for the whole run).

    let more: typeof first = [];
    if (mode === "redis") {
      await fixture.server.kill9();
      more = await queue.submitMany([...keyed(solo, 2, "late"), ...keyed(pair, 3, "late")]);
      expect(queue.mode).toBe("postgres");
      // Keyed builds run on PostgreSQL before Redis returns.
      await eventually(async () => {
        const rows = await sql<{ n: number }>(
          schema,
          "SELECT count(*)::int AS n FROM builds WHERE status = 'completed' AND strategy_id LIKE '%-late-%'",
        );
        return (rows[0]?.n ?? 0) >= 1;
      }, 90_000);
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
    }, 180_000);

    for (const build of all) {
      const completions = (await buildEvents(schema, build.id)).filter((e) => e.type === "completed");
      expect(completions, build.strategyId).toHaveLength(1);
    }
    const max = await maxRunningByKey(schema);
    expect(max.get(solo)).toBe(1);
    expect(max.get(pair)).toBeGreaterThanOrEqual(1);
    expect(max.get(pair)).toBeLessThanOrEqual(2);
    // The killed build ran again, after the reaper took it back.
    const runs = (await buildEvents(schema, firstSolo)).map((e) => e.type);
    expect(runs).toEqual(["submitted", "claimed", "requeued", "claimed", "completed"]);
    expect(await queue.countWaitingOnLimit()).toBe(0);
    expect((await queue.limit(solo)).running).toBe(0);
  }, 300_000);
});
