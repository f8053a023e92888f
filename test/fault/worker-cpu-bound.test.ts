/**
 * A handler that computes without yielding for longer than the dead-worker timeout does not get its
 * build reaped: the worker's heartbeats run in their own thread. The reaper runs in another process
 * (this one's event loop is blocked on purpose).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BuildQueue } from "../../src/index.js";
import { Worker } from "../../src/worker/worker.js";
import { eventually, openTestQueue } from "../helpers/queue.js";

// A lease a loaded machine keeps (the heartbeat thread's statements wait on a busy PostgreSQL too:
// at 1.5 s a CI run under load lost it once); the handler blocks for twice as long, so a worker
// without its heartbeat thread would lose the build.
const HEALTH = { heartbeatMs: 300, deadAfterMs: 4000 };

describe("a CPU-bound handler", () => {
  let queue: BuildQueue;
  let schema: string;
  let prefix: string;
  let cleanup: () => Promise<void>;
  let reaper: ChildProcess;
  let worker: Worker;

  beforeAll(async () => {
    ({ queue, schema, prefix, cleanup } = await openTestQueue("cpu_bound", { health: HEALTH }));
    reaper = spawn(
      "node",
      [
        "--import",
        "tsx",
        "test/helpers/reaper-process.ts",
        schema,
        prefix,
        String(HEALTH.heartbeatMs),
        String(HEALTH.deadAfterMs),
      ],
      { stdio: ["ignore", "pipe", "inherit"], env: process.env },
    );
    await new Promise<void>((resolve, reject) => {
      reaper.stdout?.on("data", (d: Buffer) => d.toString().includes("ready") && resolve());
      reaper.once("exit", (code) => reject(new Error(`reaper process exited with ${code}`)));
    });
  });
  afterAll(async () => {
    await worker?.stop();
    reaper?.kill("SIGTERM");
    await cleanup?.();
  });

  it("keeps its build: heartbeats continue while the event loop is blocked", async () => {
    worker = new Worker(queue, {
      handler: async () => {
        await new Promise((r) => setTimeout(r, 50)); // let the claim's bookkeeping settle
        const until = Date.now() + HEALTH.deadAfterMs * 2;
        let x = 0;
        while (Date.now() < until) x += Math.sqrt(x + 1); // no await: the event loop is stuck here
        return { x: x > 0 };
      },
    });
    await worker.start();
    const { build } = await queue.submit({ strategyId: "cpu" });
    const done = await eventually(async () => {
      const b = await queue.get(build.id);
      return b.status === "completed" && b;
    }, 60_000);
    const events = await queue.store.db.query<{ type: string; actor: string; data: unknown }>(
      "SELECT type, actor, data FROM build_events WHERE build_id = $1 AND type <> 'progress' ORDER BY id",
      [build.id],
    );
    expect(
      events.rows.map((e) => e.type),
      JSON.stringify(events.rows),
    ).toEqual(["submitted", "claimed", "completed"]);
    expect(done.retryCount).toBe(0);
  });
});
