/**
 * A worker PROCESS frozen (SIGSTOP) past deadAfterMs in the middle of a build, then resumed (SIGCONT).
 * Meanwhile the reaper (of another process) requeued the build and another worker started it. Once
 * resumed, the frozen worker can change nothing: its lease fence (src/worker/fence.ts) stops the build
 * at once (or its late progress or heartbeat tells it the build was taken), its late result is
 * refused, and the new run completes, the only completion in the record.
 *
 * A process frozen inside a reaper pass would hold the reaper's advisory lock (a transaction lock)
 * for as long as it stays frozen, and no reaper anywhere could take a pass: the tests freeze a worker
 * outside a pass (they look at pg_locks and freeze again if need be) and say so when it happened.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import type { BuildQueue } from "../../src/index.js";
import { useFileFixture } from "../helpers/file-fixture.js";
import { eventually } from "../helpers/queue.js";
import {
  buildEvents,
  buildRecord,
  completedBy,
  firstStart,
  killAllWorkers,
  openFleetQueue,
  progressAtLeast,
  reaperLockHolder,
  requeuedWithin,
  type WorkerEvent,
  type WorkerProcess,
} from "../helpers/worker-fleet.js";

// A dead-after that a busy machine cannot reach by a slow heartbeat round trip alone: the survivor's
// fence (80 % of it) must not stop its run while the PostgreSQL heartbeat waits for CPU.
const HEALTH = { heartbeatMs: 200, deadAfterMs: 4000 };

const fixture = useFileFixture({}, killAllWorkers);

const setup = (label: string, mode: "redis" | "postgres") => openFleetQueue(fixture, label, mode, HEALTH);

/** SIGSTOP, outside a reaper pass of the worker (see the header). */
async function freezeOutsideReaperPass(worker: WorkerProcess, schema: string): Promise<void> {
  for (;;) {
    worker.freeze();
    await sleep(100);
    if ((await reaperLockHolder(schema)) !== worker.workerId) return;
    console.log(
      `[worker-freeze] ${worker.workerId} was frozen inside a reaper pass: it holds the reaper lock, ` +
        "no reaper can run; resuming it and freezing it again",
    );
    worker.thaw();
    await sleep(50);
  }
}

async function statusOf(queue: BuildQueue, workerId: string) {
  return (await queue.workers.list()).find((w) => w.id === workerId)?.status;
}

const isRefusal = (id: string) => (e: WorkerEvent) =>
  e.event === "log" && e.buildId === id && e.msg === "result refused: the build was taken from this worker";

describe("a worker frozen past deadAfterMs, then resumed", () => {
  it("abandons the build: its late progress and result are refused, the new run completes (redis)", async () => {
    const { queue, schema, start } = await setup("worker_freeze_coop", "redis");
    const fleet = await Promise.all([start("fz-w1"), start("fz-w2")]);
    const { build } = await queue.submit({ strategyId: "freeze", params: { steps: 40, stepMs: 100 } });
    const first = await firstStart(fleet, build.id);
    const frozen = first.worker;
    const other = fleet.find((w) => w !== frozen) as WorkerProcess;
    await progressAtLeast(schema, build.id, 2);

    const frozenAt = Date.now();
    await freezeOutsideReaperPass(frozen, schema);
    const second = await other.waitFor((e) => e.event === "started" && e.id === build.id, 30_000, "restart");
    console.log(`[worker-freeze] SIGSTOP to second start: ${second.at - frozenAt} ms`);
    expect(second.retryCount).toBe(1);
    expect(second.lease).toBeGreaterThan(first.event.lease as number);
    // While frozen, the fleet listing shows it dead.
    await eventually(async () => (await statusOf(queue, frozen.workerId)) === "dead");
    await eventually(async () => (await statusOf(queue, other.workerId)) === "active");

    frozen.thaw();
    // Its next heartbeat or progress tells it the build is no longer its own: it gives up.
    const gaveUp = await frozen.waitFor(
      (e) => e.id === build.id && (e.event === "abandoned" || e.event === "progress-refused"),
      20_000,
      "abandon",
    );
    const abandoned = await frozen.waitFor((e) => e.event === "abandoned" && e.id === build.id);
    // Resumed past its lease, its fence (fence.ts) stops the build at once, unless a heartbeat answer
    // or refused progress got there first.
    expect(abandoned.reason).toMatch(/lease lost|progress refused|: fenced \(/);
    // The handler's failure is reported with the stale lease: refused, so no retry is scheduled.
    await frozen.waitFor(isRefusal(build.id), 20_000, "result refusal");
    console.log(`[worker-freeze] after SIGCONT, first sign of the lost lease: ${gaveUp.event}`);
    expect(frozen.eventsOf("finished", build.id)).toEqual([]);
    // It is a live worker again.
    await eventually(async () => (await statusOf(queue, frozen.workerId)) === "active");

    const done = await completedBy(other, schema, build.id);
    expect(done).toMatchObject({
      worker_id: other.workerId,
      lease: second.lease,
      retry_count: 1,
      result: { worker: other.workerId, lease: second.lease },
      progress: { iteration: 40, maxIterations: 40 },
    });
    const events = await buildEvents(schema, build.id);
    expect(events.map((e) => [e.type, e.actor])).toEqual([
      ["submitted", "api"],
      ["claimed", frozen.workerId],
      ["requeued", "reaper"],
      ["claimed", other.workerId],
      ["completed", other.workerId],
    ]);
  });

  it("an uncooperative handler's late completion is refused while the new run goes on (postgres)", async () => {
    const { queue, schema, start } = await setup("worker_freeze_late", "postgres");
    const fleet = await Promise.all([start("fl-w1"), start("fl-w2")]);
    // The first run ignores its signal and refused progress, and returns a result anyway; the
    // second run is long, so that the first one's completion comes while it runs.
    const { build } = await queue.submit({
      strategyId: "freeze",
      params: { steps: 20, retrySteps: 50, stepMs: 100, ignoreAbort: "first-run" },
    });
    const first = await firstStart(fleet, build.id);
    const frozen = first.worker;
    const other = fleet.find((w) => w !== frozen) as WorkerProcess;
    await progressAtLeast(schema, build.id, 3);

    await freezeOutsideReaperPass(frozen, schema);
    const second = await other.waitFor((e) => e.event === "started" && e.id === build.id, 30_000, "restart");
    expect(second.retryCount).toBe(1);
    frozen.thaw();

    // The first run goes on to its end: each progress refused, then its result refused.
    const finished = await frozen.waitFor((e) => e.event === "finished" && e.id === build.id, 20_000);
    expect(finished.lease).toBe(first.event.lease);
    await frozen.waitFor(isRefusal(build.id), 20_000, "result refusal");
    expect(frozen.eventsOf("progress-refused", build.id).length).toBeGreaterThan(0);
    expect(frozen.eventsOf("signal-aborted", build.id)[0]?.reason).toMatch(/lease lost|: fenced \(/);
    expect(other.eventsOf("finished", build.id)).toEqual([]);
    // The late result changed nothing: the build is the second run's.
    expect(await buildRecord(schema, build.id)).toMatchObject({
      status: "running",
      worker_id: other.workerId,
      lease: second.lease,
      result: null,
    });

    const done = await completedBy(other, schema, build.id);
    expect(done).toMatchObject({
      worker_id: other.workerId,
      lease: second.lease,
      result: { worker: other.workerId, lease: second.lease },
    });
    const events = await buildEvents(schema, build.id);
    expect(events.filter((e) => e.type === "completed").map((e) => e.actor)).toEqual([other.workerId]);
    expect(events.filter((e) => e.type === "claimed")).toHaveLength(2);
    expect(events.filter((e) => e.type === "requeued")).toHaveLength(1);
  });

  it("a lone worker that gets its own build back still hands it back on shutdown (postgres)", async () => {
    // One worker with 2 slots; the reaper runs in this process. Frozen, its build is requeued; resumed,
    // it claims the build again while the old run (slow to stop) is still going. The old run's end
    // must not make the worker forget the new one.
    const { queue, schema, start } = await setup("worker_freeze_self", "postgres");
    queue.startReaper(200);
    const worker = await start("fs-w1", { capacity: 2, drainMs: 500 });
    const { build } = await queue.submit({
      strategyId: "freeze",
      params: { steps: 20, retrySteps: 200, stepMs: 100, ignoreAbort: "first-run" },
    });
    const first = await worker.waitFor((e) => e.event === "started" && e.id === build.id);
    await progressAtLeast(schema, build.id, 3);

    await freezeOutsideReaperPass(worker, schema);
    await eventually(async () => (await buildRecord(schema, build.id)).status === "queued", 20_000);
    worker.thaw();

    const second = await worker.waitFor(
      (e) => e.event === "started" && e.id === build.id && e.retryCount === 1,
      20_000,
      "restart",
    );
    const oldEnd = await worker.waitFor(
      (e) => e.event === "finished" && e.id === build.id && e.lease === first.lease,
      20_000,
      "end of the old run",
    );
    // The situation under test: the new run started before the old one ended.
    expect(second.at).toBeLessThan(oldEnd.at);
    await worker.waitFor(isRefusal(build.id));

    // Shutdown with a drain shorter than the new run: the build must be handed back.
    expect(await worker.terminate()).toEqual({ code: 0, signal: null });
    const events = await buildEvents(schema, build.id);
    expect(events.map((e) => [e.type, e.actor])).toEqual([
      ["submitted", "api"],
      ["claimed", worker.workerId],
      ["requeued", "reaper"],
      ["claimed", worker.workerId],
      ["released", worker.workerId],
    ]);
    expect(await buildRecord(schema, build.id)).toMatchObject({ status: "queued", retry_count: 1 });
  });
});

describe("a worker frozen inside a reaper pass", () => {
  // A reaper pass is a transaction holding the advisory lock
  // pg_try_advisory_xact_lock(hashtext('oculus:reaper:<schema>')) across several round trips
  // (WorkerStore.asReaper). A process frozen inside it (SIGSTOP, `docker pause`, a VM paused or
  // swapped out) would keep the lock for as long as it stays frozen; the pass sets
  // idle_in_transaction_session_timeout (the dead-worker timeout), so PostgreSQL ends that session and
  // the other processes' reapers take over.
  it("does not stop the other processes' reapers (postgres)", async (ctx) => {
    const { queue, schema, start } = await setup("worker_freeze_reaper", "postgres");
    // `stuck` reaps every 20 ms, so that a freeze lands inside one of its passes after a few tries.
    const [stuck, runner] = await Promise.all([start("fr-w1", { reaperMs: 20 }), start("fr-w2")]);
    let caught = false;
    for (let attempt = 1; attempt <= 300 && !caught; attempt++) {
      stuck.freeze();
      await sleep(20);
      caught = (await reaperLockHolder(schema)) === stuck.workerId;
      if (!caught) {
        stuck.thaw();
        await sleep((attempt % 7) * 10);
      } else console.log(`[worker-freeze] frozen inside a reaper pass after ${attempt} tries`);
    }
    if (!caught) ctx.skip();

    const { build } = await queue.submit({ strategyId: "freeze", params: { steps: 100, stepMs: 100 } });
    await runner.waitFor((e) => e.event === "started" && e.id === build.id);
    await runner.kill9();
    // The rest of the fleet: a live process whose reaper must get its turn despite the frozen one.
    queue.startReaper(100);
    try {
      await requeuedWithin(
        schema,
        build.id,
        4 * HEALTH.deadAfterMs + 2000,
        async () => `; reaper lock held by ${await reaperLockHolder(schema)}`,
      );
    } finally {
      stuck.thaw();
    }
  });
});
