/**
 * Shutdown past the drain time: the worker stops its build's command and hands the build back only
 * once the command's process group has exited. The command takes 2 s to exit after SIGTERM; a second
 * worker is waiting for work the whole time: the two runs never overlap (each run records its start
 * and end in a file), and the build completes once, with no retry counted.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BuildQueue } from "../../src/index.js";
import { commandHandler } from "../../src/worker/command-handler.js";
import { Worker } from "../../src/worker/worker.js";
import { sql } from "../helpers/postgres.js";
import { eventually, openTestQueue } from "../helpers/queue.js";
import { RunLog } from "../helpers/run-log.js";

const HEALTH = { heartbeatMs: 200, deadAfterMs: 5000 };

describe("worker shutdown past its drain time", () => {
  const runs = new RunLog(2);
  let queue: BuildQueue;
  let schema: string;
  let cleanup: () => Promise<void>;
  const workers: Worker[] = [];

  beforeAll(async () => {
    ({ queue, schema, cleanup } = await openTestQueue("worker_shutdown_order", { health: HEALTH }));
  });
  afterAll(async () => {
    await Promise.all(workers.map((w) => w.stop().catch(() => undefined)));
    await cleanup?.();
    runs.remove();
  });

  const startWorker = async (id: string) => {
    const worker = new Worker(queue, {
      id,
      drainMs: 200,
      handler: commandHandler(runs.command, { env: runs.env, graceMs: 10_000 }),
    });
    workers.push(worker);
    await worker.start();
    return worker;
  };

  it("hands the build back only after its command exited; the next run starts after", async () => {
    const first = await startWorker("order-w1");
    const { build } = await queue.submit({ strategyId: "shutdown-order" });
    await eventually(async () => runs.starts().length === 1);
    await startWorker("order-w2");

    await first.stop();
    const done = await eventually(async () => {
      const b = await queue.get(build.id);
      return b.status === "completed" && b;
    }, 30_000);

    const records = runs.records();
    expect(records.filter((r) => r.kind === "overlap")).toEqual([]);
    const [start1, end1, start2, end2] = records;
    expect([start1?.kind, end1?.kind, start2?.kind, end2?.kind]).toEqual(["start", "end", "start", "end"]);
    expect(end1?.lease).toBe(start1?.lease);
    // The first run took its 2 s to exit after SIGTERM; the second started after it had.
    expect((end1?.atNs ?? 0n) < (start2?.atNs ?? 0n)).toBe(true);
    expect(done).toMatchObject({ retryCount: 0, workerId: "order-w2", result: { run: 2 } });
    const events = await sql<{ type: string; actor: string }>(
      schema,
      "SELECT type, actor FROM build_events WHERE build_id = $1 ORDER BY id",
      [build.id],
    );
    expect(events.map((e) => [e.type, e.actor])).toEqual([
      ["submitted", "api"],
      ["claimed", "order-w1"],
      ["released", "order-w1"],
      ["claimed", "order-w2"],
      ["completed", "order-w2"],
    ]);
  });
});
