/**
 * A worker's results reach the record, once (PostgreSQL path, real PostgreSQL):
 * - a build keeps its lease until its result has committed: with the queue's two completion batches
 *   blocked on row locks for longer than the lease, a finished build's result waits in line, and is
 *   accepted when the locks go; the build ran once;
 * - output PostgreSQL cannot store (NUL bytes, lone surrogates) is cleaned from the log tail, error
 *   and progress; a `::result` that cannot be stored fails the build once, saying why.
 */
import { readFileSync, writeFileSync } from "node:fs";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Build, BuildQueue } from "../../src/index.js";
import { commandHandler } from "../../src/worker/command-handler.js";
import { Worker, type WorkerHandler } from "../../src/worker/worker.js";
import { sql, TEST_DATABASE_URL } from "../helpers/postgres.js";
import { eventually, openTestQueue } from "../helpers/queue.js";
import { RunLog } from "../helpers/run-log.js";

const HEALTH = { heartbeatMs: 100, deadAfterMs: 1000 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("worker results", () => {
  let queue: BuildQueue;
  let schema: string;
  let cleanup: () => Promise<void>;
  const workers: Worker[] = [];
  const scratch = new RunLog();

  beforeAll(async () => {
    ({ queue, schema, cleanup } = await openTestQueue("worker_results", { health: HEALTH }));
    queue.startReaper(100);
  });
  afterAll(async () => {
    await Promise.all(workers.map((w) => w.stop()));
    await cleanup?.();
    scratch.remove();
  });

  async function startWorker(handler: WorkerHandler) {
    const worker = new Worker(queue, { handler, drainMs: 5000 });
    workers.push(worker);
    await worker.start();
    return worker;
  }

  const settled = (id: string) =>
    eventually(async () => {
      const b = await queue.get(id);
      return ["completed", "failed"].includes(b.status) && b;
    }, 30_000);

  const eventTypes = async (id: string) =>
    (
      await sql<{ type: string }>(schema, "SELECT type FROM build_events WHERE build_id = $1 ORDER BY id", [
        id,
      ])
    ).map((e) => e.type);

  it("keeps a finished build's lease until its result commits, however long that takes", async () => {
    // Two builds claimed by hand (long leases) whose completions the test blocks with row locks:
    // they fill the queue's two in-flight batches of completions not read back (the worker's).
    const blockers = await queue.submitMany([{ strategyId: "blocker" }, { strategyId: "blocker" }]);
    const claimed = await queue.claim("blocker-worker", 2, { leaseMs: 60_000 });
    expect(claimed.map((b) => b.id).sort()).toEqual(blockers.map((r) => r.build.id).sort());
    const lock = new pg.Client({ connectionString: TEST_DATABASE_URL, options: `-c search_path=${schema}` });
    await lock.connect();
    const blocked: Promise<unknown>[] = [];
    let worker: Worker | undefined;
    try {
      await lock.query("BEGIN");
      await lock.query("SELECT id FROM builds WHERE id = ANY($1::uuid[]) FOR UPDATE", [
        claimed.map((b) => b.id),
      ]);
      // One at a time: calls in the same turn would share one batch.
      for (const b of claimed) {
        blocked.push(queue.complete(b.id, b.lease, { blocker: true }, { readBack: false }));
        await sleep(100);
      }

      const runs = new Map<string, number>();
      worker = await startWorker(async (ctx) => {
        runs.set(ctx.build.id, (runs.get(ctx.build.id) ?? 0) + 1);
        return { lease: ctx.lease };
      });
      const { build } = await queue.submit({ strategyId: "slow-commit" });
      await eventually(async () => runs.get(build.id) === 1);
      // Three leases long: without renewals the reaper would have requeued it, and it would run again.
      await sleep(3 * HEALTH.deadAfterMs);
      expect(await queue.get(build.id)).toMatchObject({ status: "running", retryCount: 0 });
      await lock.query("ROLLBACK");

      const done = await settled(build.id);
      expect(done).toMatchObject({ status: "completed", retryCount: 0, result: { lease: done.lease } });
      expect(runs.get(build.id)).toBe(1);
      expect(await eventTypes(build.id)).toEqual(["submitted", "claimed", "completed"]);
    } finally {
      await lock.query("ROLLBACK").catch(() => undefined);
      await lock.end();
      await Promise.allSettled(blocked);
      await worker?.stop();
    }
  });

  describe("output PostgreSQL cannot store, through the command runner", () => {
    const countRuns = (id: string) => {
      try {
        return readFileSync(`${scratch.dir}/runs-${id}`, "utf8").split("\n").filter(Boolean).length;
      } catch {
        return 0;
      }
    };
    let stopWorker: () => Promise<void>;

    beforeAll(async () => {
      // Each build runs the script named by its strategy id; every run is counted in a file.
      const dir = scratch.dir;
      const worker = await startWorker(
        commandHandler(`echo run >> "${dir}/runs-$OCULUS_BUILD_ID"; . "${dir}/$OCULUS_STRATEGY_ID.sh"`),
      );
      stopWorker = () => worker.stop();
    });
    afterAll(async () => stopWorker?.());

    let scripts = 0;
    const runScript = async (script: string, maxRetries = 2): Promise<Build> => {
      scripts += 1;
      const name = `script${scripts}`;
      writeFileSync(`${scratch.dir}/${name}.sh`, `${script}\n`);
      const { build } = await queue.submit({ strategyId: name, maxRetries });
      const done = await settled(build.id);
      expect(countRuns(build.id)).toBe(1);
      return done;
    };

    it("drops NUL bytes and lone surrogates from the log tail and progress; the result is recorded", async () => {
      const done = await runScript(
        String.raw`printf 'before\000after\n'; printf '%s\n' '::progress {"phase":"tra\u0000ining","message":"half \ud800 way"}'; sleep 0.3; printf '%s\n' '::result {"ok":true}'`,
      );
      expect(done).toMatchObject({ status: "completed", result: { ok: true } });
      expect(done.logTail).toContain("beforeafter");
      expect(done.progress).toMatchObject({ phase: "training", message: "half \uFFFD way" });
    });

    it("fails a build whose command fails, its output cleaned into the error", async () => {
      const done = await runScript(String.raw`printf 'bad\000output\n'; exit 3`, 0);
      expect(done.status).toBe("failed");
      expect(done.lastError).toContain("exit code 3");
      expect(done.lastError).toContain("badoutput");
    });

    it.each([
      [
        "a NUL in a string",
        String.raw`printf '%s\n' '::result {"text":"a\u0000b"}'`,
        "result.text",
        "NUL character",
      ],
      ["a NUL in a key", String.raw`printf '%s\n' '::result {"a\u0000":1}'`, "result key", "NUL character"],
      [
        "a lone surrogate",
        String.raw`printf '%s\n' '::result {"s":["\udc00"]}'`,
        "result.s[0]",
        "lone surrogate",
      ],
    ])("fails the build once, not retried, for a ::result with %s", async (_what, script, where, why) => {
      const done = await runScript(script);
      expect(done).toMatchObject({ status: "failed", retryCount: 0 });
      expect(done.lastError).toContain("the build's result cannot be stored");
      expect(done.lastError).toContain(where);
      expect(done.lastError).toContain(why);
      expect(await eventTypes(done.id)).toEqual(["submitted", "claimed", "failed"]);
    });
  });
});
