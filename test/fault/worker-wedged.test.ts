/**
 * A worker PROCESS whose event loop a handler blocks for good (a computation that never yields)
 * while its build has a timeout. The heartbeat thread keeps the lease, so without a watchdog the
 * build would be held forever. Past the timeout and the grace (abortWaitMs), the thread kills the
 * process after one fatal line on stderr: the reaper takes the build back, it runs once elsewhere and
 * completes. With exitWhenWedged false the process is kept, and the build, once the loop frees, fails
 * as timed out, never taken back meanwhile.
 *
 * Durations are logged, not asserted: the machine may be loaded.
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
  openFleetQueue,
} from "../helpers/worker-fleet.js";

const HEALTH = KILL_TEST_HEALTH;
const GRACE_MS = 1000;

const fixture = useFileFixture({}, killAllWorkers);

describe("a worker whose event loop is wedged past a build's timeout", () => {
  it("is killed by its heartbeat thread; the build runs once elsewhere and completes", async () => {
    const { queue, schema, start } = await openFleetQueue(fixture, "worker_wedged", "redis", HEALTH);
    const victim = await start("wedged-w1", { abortWaitMs: GRACE_MS });
    const { build } = await queue.submit({
      strategyId: "wedge",
      params: { steps: 3, stepMs: 50, wedgeMs: -1 },
      timeoutSeconds: 1,
      maxRetries: 1,
    });
    const wedging = await victim.waitFor(
      (e) => e.event === "wedging" && e.id === build.id,
      30_000,
      "wedging",
    );
    const killedAt = victim.exited.then(() => Date.now());
    const survivor = await start("wedged-w2", { abortWaitMs: GRACE_MS });

    const exit = await Promise.race([
      victim.exited,
      new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 30_000)),
    ]);
    expect(exit, victim.describe()).toEqual({ code: null, signal: "SIGKILL" });
    console.log(
      `[worker-wedged] wedged to killed: ${(await killedAt) - wedging.at} ms (timeout 1 s, grace ${GRACE_MS} ms)`,
    );
    const fatal = victim.stderr.find((line) => line.includes("worker wedged"));
    expect(fatal, victim.describe()).toBeDefined();
    expect(JSON.parse(fatal as string)).toMatchObject({
      level: 60,
      workerId: "wedged-w1",
      buildId: build.id,
    });

    const done = await completedBy(survivor, schema, build.id);
    expect(done).toMatchObject({ retry_count: 1, worker_id: "wedged-w2" });
    expect(survivor.eventsOf("started", build.id)).toHaveLength(1);
    const events = await buildEvents(schema, build.id);
    expect(events.map((e) => [e.type, e.actor])).toEqual([
      ["submitted", "api"],
      ["claimed", "wedged-w1"],
      ["requeued", "reaper"],
      ["claimed", "wedged-w2"],
      ["completed", "wedged-w2"],
    ]);
  });

  it("with exitWhenWedged false, is kept: the build keeps its lease and fails as timed out once the loop frees", async () => {
    const { queue, schema, start } = await openFleetQueue(fixture, "worker_wedged_kept", "redis", HEALTH);
    const kept = await start("kept-w1", { abortWaitMs: GRACE_MS, keepWhenWedged: true });
    // Blocked past the timeout, the grace and the lease (deadAfterMs): only the heartbeat thread keeps it.
    const wedgeMs = 1000 + GRACE_MS + HEALTH.deadAfterMs + 1000;
    const { build } = await queue.submit({
      strategyId: "wedge",
      params: { steps: 3, stepMs: 50, wedgeMs },
      timeoutSeconds: 1,
      maxRetries: 0,
    });
    await kept.waitFor((e) => e.event === "unwedged" && e.id === build.id, 30_000, "unwedged");
    const failed = await eventually(async () => {
      const record = await buildRecord(schema, build.id);
      return record.status === "failed" && record;
    }, 30_000);
    expect(failed.last_error).toContain("timeout of 1 s");
    expect(kept.running).toBe(true);
    expect(kept.stderr.filter((line) => line.includes("worker wedged"))).toEqual([]);
    const events = await buildEvents(schema, build.id);
    expect(events.map((e) => [e.type, e.actor])).toEqual([
      ["submitted", "api"],
      ["claimed", "kept-w1"],
      ["failed", "kept-w1"],
    ]);
  });
});
