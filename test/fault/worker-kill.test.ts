/**
 * kill -9 of a worker PROCESS in the middle of a build, with a fleet of real worker processes (each
 * running the reaper): the build runs again on another worker with retryCount 1 and completes, the
 * record shows it (2 claims, 1 requeue by the reaper, 1 completion); without retries left it ends
 * failed, naming the lost worker; and the fleet listing shows the killed worker as dead, the others
 * as active. In Redis mode and in PostgreSQL-only mode.
 *
 * (A real build command would run in its own process group and would have to be killed with it; the
 * builds here run inside the worker process.)
 *
 * The kill-to-restart time is logged, not asserted: the machine may be loaded.
 */
import { describe, expect, it } from "vitest";
import type { BuildQueue } from "../../src/index.js";
import { useFileFixture } from "../helpers/file-fixture.js";
import { eventually } from "../helpers/queue.js";
import {
  buildEvents,
  buildRecord,
  completedBy,
  firstStart,
  KILL_TEST_HEALTH,
  killAllWorkers,
  LONG_BUILD,
  openFleetQueue,
  progressAtLeast,
  requeuedWithin,
  type WorkerProcess,
} from "../helpers/worker-fleet.js";

const HEALTH = KILL_TEST_HEALTH;
const LONG = LONG_BUILD;

const fixture = useFileFixture({}, killAllWorkers);

async function statusOf(queue: BuildQueue, workerId: string) {
  const view = (await queue.workers.list()).find((w) => w.id === workerId);
  if (!view) throw new Error(`worker ${workerId} is not listed`);
  return view;
}

describe.each(["redis", "postgres"] as const)("kill -9 of a worker process (%s mode)", (mode) => {
  it("its build runs again elsewhere (retryCount 1) and completes; with no retries left it fails", async () => {
    const { queue, schema, start } = await openFleetQueue(fixture, `worker_kill_${mode}`, mode, HEALTH);

    const fleet = await Promise.all([start(`${mode}-w1`), start(`${mode}-w2`)]);
    for (const w of fleet) expect(w.eventsOf("ready")[0]?.mode).toBe(mode);
    // Active: a heartbeat under two intervals old (on a loaded machine, give it a moment).
    const isActive = async (w: WorkerProcess) =>
      eventually(async () => (await statusOf(queue, w.workerId)).status === "active", 10_000);
    for (const w of fleet) await isActive(w);

    // ---- a build with retries left
    const { build } = await queue.submit({ strategyId: "kill", params: LONG });
    const first = await firstStart(fleet, build.id);
    const victim = first.worker;
    const survivor = fleet.find((w) => w !== victim) as WorkerProcess;
    expect(first.event.retryCount).toBe(0);
    // Mid-run: some progress is recorded.
    await progressAtLeast(schema, build.id, 2);

    const killedAt = Date.now();
    await victim.kill9();
    const second = await survivor.waitFor(
      (e) => e.event === "started" && e.id === build.id,
      30_000,
      "second start",
    );
    console.log(
      `[worker-kill ${mode}] kill -9 to second start: ${second.at - killedAt} ms ` +
        `(deadAfterMs ${HEALTH.deadAfterMs}, heartbeatMs ${HEALTH.heartbeatMs}, reaper every 200 ms)`,
    );
    expect(second.retryCount).toBe(1);
    expect(second.lease).toBeGreaterThan(first.event.lease as number);

    const done = await completedBy(survivor, schema, build.id);
    expect(done).toMatchObject({
      retry_count: 1,
      worker_id: survivor.workerId,
      lease: second.lease,
      result: { worker: survivor.workerId, lease: second.lease },
    });
    const events = await buildEvents(schema, build.id);
    const claims = events.filter((e) => e.type === "claimed");
    expect(claims.map((e) => e.actor)).toEqual([victim.workerId, survivor.workerId]);
    const requeues = events.filter((e) => e.type === "requeued");
    expect(requeues).toHaveLength(1);
    expect(requeues[0]).toMatchObject({ actor: "reaper", from_status: "running", to_status: "queued" });
    expect(requeues[0]?.data?.worker).toBe(victim.workerId);
    expect(events.filter((e) => e.type === "completed")).toHaveLength(1);
    expect(events.map((e) => e.type)).toEqual(["submitted", "claimed", "requeued", "claimed", "completed"]);

    // ---- the fleet: the killed worker is dead (after deadAfterMs), the survivor active
    const dead = await eventually(async () => {
      const view = await statusOf(queue, victim.workerId);
      return view.status === "dead" && view;
    }, 20_000);
    expect(dead.heartbeatAgeMs).toBeGreaterThanOrEqual(HEALTH.deadAfterMs);
    expect(dead.stoppedAt).toBeNull();
    expect(dead.activeBuilds).toBe(0);
    await isActive(survivor);

    // ---- a build without retries: it fails, naming the lost worker
    const third = await start(`${mode}-w3`);
    const pair = [survivor, third];
    const { build: once } = await queue.submit({ strategyId: "kill", params: LONG, maxRetries: 0 });
    const runner = await firstStart(pair, once.id);
    const other = pair.find((w) => w !== runner.worker) as WorkerProcess;
    await progressAtLeast(schema, once.id, 1);
    const killed2At = Date.now();
    await runner.worker.kill9();
    const failed = await eventually(async () => {
      const record = await buildRecord(schema, once.id);
      return record.status === "failed" && record;
    }, 30_000);
    console.log(`[worker-kill ${mode}] kill -9 to failed (maxRetries 0): ${Date.now() - killed2At} ms`);
    expect(failed.retry_count).toBe(0);
    expect(failed.last_error).toContain(`worker ${runner.worker.workerId}`);
    expect(failed.last_error).toContain("no retries left");
    const onceEvents = await buildEvents(schema, once.id);
    expect(onceEvents.map((e) => [e.type, e.actor])).toEqual([
      ["submitted", "api"],
      ["claimed", runner.worker.workerId],
      ["failed", "reaper"],
    ]);
    expect(other.eventsOf("started", once.id)).toEqual([]);

    // The two killed workers end dead; the two live ones stay active.
    await eventually(async () => (await statusOf(queue, runner.worker.workerId)).status === "dead", 20_000);
    for (const w of [victim, runner.worker]) expect((await statusOf(queue, w.workerId)).status).toBe("dead");
    await isActive(other);

    expect(await other.terminate()).toEqual({ code: 0, signal: null });
    expect((await statusOf(queue, other.workerId)).status).toBe("stopped");
  });
});

describe("a worker restarted with the same id after kill -9 (oculus worker --id)", () => {
  // The restarted process registers with the same id and heartbeats, but a heartbeat extends only the
  // leases of the builds it names (heartbeat_worker.sql): the build the killed process was running
  // expires, and the reaper takes it back although a worker with that id is alive.
  it("its crashed run's build is taken back and runs again (redis)", async () => {
    const { queue, schema, start } = await openFleetQueue(fixture, "worker_kill_same_id", "redis", HEALTH);
    const fixed = await start("fixed-id");
    const { build } = await queue.submit({ strategyId: "kill", params: LONG });
    await fixed.waitFor((e) => e.event === "started" && e.id === build.id);
    await progressAtLeast(schema, build.id, 1);
    await fixed.kill9();
    // Restarted at once (systemd Restart=always), with the same id; a second worker is there too.
    const restarted = await start("fixed-id");
    const other = await start("other");

    // Expected: within a few deadAfterMs the build is requeued and started again.
    await requeuedWithin(
      schema,
      build.id,
      4 * HEALTH.deadAfterMs + 2000,
      (record) =>
        ` (lease ${record.lease}), restarted: ${restarted.eventsOf("started").length} starts, ` +
        `other: ${other.eventsOf("started").length}`,
    );
  });
});
