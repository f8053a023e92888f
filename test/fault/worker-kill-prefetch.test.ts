/**
 * kill -9 of a worker process holding prefetched builds (`oculus worker --prefetch`), with real worker
 * processes (each running the reaper), in Redis mode and in PostgreSQL-only mode. Apart from
 * worker-kill.test.ts so that the two long files run side by side.
 */
import { describe, expect, it } from "vitest";
import { useFileFixture } from "../helpers/file-fixture.js";
import { eventually } from "../helpers/queue.js";
import {
  buildEvents,
  buildRecord,
  completedBy,
  KILL_TEST_HEALTH,
  killAllWorkers,
  LONG_BUILD,
  openFleetQueue,
  progressAtLeast,
} from "../helpers/worker-fleet.js";

const HEALTH = KILL_TEST_HEALTH;
const LONG = LONG_BUILD;

const fixture = useFileFixture({}, killAllWorkers);

describe("kill -9 of a worker holding prefetched builds (oculus worker --prefetch)", () => {
  // The running build and the three claimed ahead are all leased to the killed process: the reaper
  // takes each back, another worker runs each once, and none of the prefetched ones ever started
  // on the killed worker.
  it.each(["redis", "postgres"] as const)("every held build runs once elsewhere (%s)", async (mode) => {
    const { queue, schema, start } = await openFleetQueue(
      fixture,
      `worker_kill_prefetch_${mode}`,
      mode,
      HEALTH,
    );
    const holder = await start(`${mode}-holder`, { capacity: 1, prefetch: 3 });
    const submitted = await queue.submitMany(
      Array.from({ length: 4 }, (_, i) => ({ strategyId: `held-${i}`, params: LONG })),
    );
    const ids = submitted.map((r) => r.build.id);
    const heldByHolder = async () =>
      (await Promise.all(ids.map((id) => buildRecord(schema, id)))).every(
        (r) => r.status === "running" && r.worker_id === holder.workerId,
      );
    await eventually(heldByHolder, 20_000);
    // The claim commits before the worker process says the first build started: wait for its line.
    await eventually(async () => holder.eventsOf("started").length > 0, 20_000);
    expect(holder.eventsOf("started").map((e) => e.id)).toEqual([ids[0]]);
    await progressAtLeast(schema, ids[0] as string, 1);

    await holder.kill9();
    // Room for all four at once: they run side by side.
    const survivor = await start(`${mode}-survivor`, { capacity: 4 });
    for (const id of ids) await completedBy(survivor, schema, id);
    for (const id of ids) {
      expect(survivor.eventsOf("started", id), id).toHaveLength(1);
      expect((await buildEvents(schema, id)).filter((e) => e.type === "completed")).toHaveLength(1);
    }
    // Only the build that was running had started on the killed worker.
    expect(holder.eventsOf("started").map((e) => e.id)).toEqual([ids[0]]);
  });
});
