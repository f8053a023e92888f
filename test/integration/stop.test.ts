/**
 * Stopping builds: queued (removed at once), running in this process (the handler's signal aborts),
 * running as a build command in another process (SIGTERM to its group), with Redis and without, and
 * a stop whose message is missed (the heartbeat's flag still delivers it).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type BuildQueue, InvalidStateError } from "../../src/index.js";
import { BuildAbandoned, Worker } from "../../src/worker/worker.js";
import { backends } from "../helpers/backends.js";
import { eventually } from "../helpers/queue.js";

const HEALTH = { heartbeatMs: 200, deadAfterMs: 3000 };

describe.each(backends().filter((b) => b.name !== "pglite"))("stop on $name", (backend) => {
  let queue: BuildQueue;
  let cleanup: () => Promise<void>;
  let worker: Worker;
  const aborts = new Map<string, unknown>();

  /** A worker whose builds run until their signal aborts; it notes why. */
  async function startWaitingWorker(): Promise<Worker> {
    const started = new Worker(queue, {
      capacity: 2,
      handler: async (ctx) => {
        await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve()));
        aborts.set(ctx.build.id, ctx.signal.reason);
        throw new Error("stopped by request");
      },
    });
    await started.start();
    return started;
  }

  beforeAll(async () => {
    ({ queue, cleanup } = await backend.open(`stop_${backend.name}`, { health: HEALTH }));
    worker = await startWaitingWorker();
  });
  afterAll(async () => {
    await worker?.stop();
    await cleanup?.();
    await backend.teardown();
  });

  it("stops a queued build at once", async () => {
    await worker.stop(); // nothing claims while we look at a queued build
    const { build } = await queue.submit({ strategyId: "never-runs" });
    const stopped = await queue.stop(build.id, { actor: "alice", reason: "wrong parameters" });
    expect(stopped).toMatchObject({ status: "stopped", stoppedBy: "alice", stopReason: "wrong parameters" });
    expect(await queue.position(build.id)).toBeNull();
    await expect(queue.stop(build.id)).rejects.toBeInstanceOf(InvalidStateError);
    worker = await startWaitingWorker();
  });

  it("stops a running build: the handler's signal aborts and the build ends stopped", async () => {
    const { build } = await queue.submit({ strategyId: "long" });
    await eventually(async () => (await queue.get(build.id)).status === "running");
    const stopping = await queue.stop(build.id, { actor: "bob", reason: "superseded" });
    expect(stopping.status).toBe("stopping");
    const stopped = await eventually(async () => {
      const b = await queue.get(build.id);
      return b.status === "stopped" && b;
    });
    expect(stopped).toMatchObject({ stoppedBy: "bob", stopReason: "superseded", retryCount: 0 });
    expect(aborts.get(build.id)).toBeInstanceOf(BuildAbandoned);
    expect((aborts.get(build.id) as BuildAbandoned).why).toBe("stopped");
    const events = await queue.store.db.query<{ type: string; actor: string }>(
      "SELECT type, actor FROM build_events WHERE build_id = $1 ORDER BY id",
      [build.id],
    );
    expect(events.rows.map((e) => e.type)).toEqual(["submitted", "claimed", "stop_requested", "stopped"]);
    expect(events.rows[2]?.actor).toBe("bob");
    await expect(queue.stop(build.id)).rejects.toMatchObject({ code: "invalid_state", httpStatus: 409 });
  });

  it("honours a stop whose message was missed, through the heartbeat's flag", async () => {
    const { build } = await queue.submit({ strategyId: "missed" });
    const running = await eventually(async () => {
      const b = await queue.get(build.id);
      return b.status === "running" && b;
    });
    // Mark it stopping without any message, as if the pub/sub message and the NOTIFY were lost.
    await queue.store.requestStop(build.id, "carol", "message lost");
    const stopped = await eventually(async () => {
      const b = await queue.get(build.id);
      return b.status === "stopped" && b;
    });
    expect(stopped.lease).toBe(running.lease);
  });
});
