/**
 * The lease fence (src/worker/fence.ts): a worker cut off from both stores (TCP proxies) stops its
 * build's command before the reaper can hand the build to another worker. The command ignores
 * SIGTERM for 30 s, so only the fence's SIGKILL, within its short grace, ends it in time. Each run
 * records its start (and whether an earlier run's process was still alive then) in a file: the two
 * runs never overlap, and the build completes exactly once, by the other worker.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { commandHandler } from "../../src/worker/command-handler.js";
import { Worker } from "../../src/worker/worker.js";
import { type CutOffStores, openCutOffStores } from "../helpers/cut-off.js";
import { sql, uniqueSchema } from "../helpers/postgres.js";
import { eventually } from "../helpers/queue.js";
import { RunLog } from "../helpers/run-log.js";

const HEALTH = { heartbeatMs: 200, deadAfterMs: 3000 };

describe("a worker cut off from both stores while its build runs", () => {
  const schema = uniqueSchema("worker_fence");
  const prefix = `fence${process.pid}`;
  const runs = new RunLog(30);
  let stores: CutOffStores;
  const workers: Worker[] = [];

  beforeAll(async () => {
    stores = await openCutOffStores({ schema, prefix, health: HEALTH, cutPostgres: true });
    stores.observer.startReaper(100);
  });

  afterAll(async () => {
    stores?.restore();
    await Promise.all(workers.map((w) => w.stop().catch(() => undefined)));
    await stores?.close();
    runs.remove();
  });

  const startWorker = async (queue: CutOffStores["observer"], id: string) => {
    const worker = new Worker(queue, {
      id,
      drainMs: 10_000,
      // A long grace: only the fence's own (shorter) grace can end the command in time.
      handler: commandHandler(runs.command, { env: runs.env, graceMs: 60_000 }),
    });
    workers.push(worker);
    await worker.start();
    return worker;
  };

  it("kills its command before the build starts elsewhere; the build completes once", async () => {
    const { observer, pgProxy, redisProxy } = stores;
    await startWorker(stores.workerQueue, "fence-cut");
    const { build } = await observer.submit({ strategyId: "fence" });
    await eventually(async () => runs.starts().length === 1);
    await startWorker(observer, "fence-other");

    pgProxy?.cut();
    redisProxy.cut();
    const cutAt = Date.now();
    const done = await eventually(async () => {
      const b = await observer.get(build.id);
      return b.status === "completed" && b;
    }, 60_000);
    console.log(`[worker-fence] cut-off to completion elsewhere: ${Date.now() - cutAt} ms`);

    const records = runs.records();
    const starts = records.filter((r) => r.kind === "start");
    expect(starts).toHaveLength(2);
    // When the second run started, no process of the first was alive.
    expect(records.filter((r) => r.kind === "overlap")).toEqual([]);
    // The first run ignored SIGTERM (its trap sleeps 30 s): it was SIGKILLed, so it never wrote its end.
    expect(records.filter((r) => r.kind === "end").map((r) => r.lease)).toEqual([starts[1]?.lease]);
    expect(done).toMatchObject({ retryCount: 1, workerId: "fence-other", result: { run: 2 } });

    // Back online, the cut worker's report of its stopped run is refused: still one completion.
    stores.restore();
    await eventually(async () => {
      const events = await sql<{ type: string }>(
        schema,
        "SELECT type FROM build_events WHERE build_id = $1 ORDER BY id",
        [build.id],
      );
      return events.some((e) => e.type === "completed") && events;
    });
    await workers[0]?.stop();
    const events = await sql<{ type: string; actor: string }>(
      schema,
      "SELECT type, actor FROM build_events WHERE build_id = $1 ORDER BY id",
      [build.id],
    );
    expect(events.map((e) => [e.type, e.actor])).toEqual([
      ["submitted", "api"],
      ["claimed", "fence-cut"],
      ["requeued", "reaper"],
      ["claimed", "fence-other"],
      ["completed", "fence-other"],
    ]);
  });
});
