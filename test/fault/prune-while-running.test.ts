/**
 * Retention while the queue works: another process prunes everything finished (cutoff 0) over and
 * over while builds are submitted, claimed, report progress and complete. Nothing queued or running
 * may be deleted (every build runs exactly once and completes), and no event or listing row may outlive its build
 * (build_events has no foreign key: the statements are the guarantee). A prune cut off from
 * PostgreSQL fails with a clear error and deletes nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BuildNotFoundError, type BuildQueue, StoreUnavailableError } from "../../src/index.js";
import type { BuildEndedEvent } from "../../src/worker/worker.js";
import { Worker } from "../../src/worker/worker.js";
import { captureLogs } from "../helpers/api.js";
import { TEST_DATABASE_URL } from "../helpers/postgres.js";
import { eventually, openTestQueue } from "../helpers/queue.js";
import { TcpProxy } from "../helpers/tcp-proxy.js";

const BUILDS = 300;

describe("pruning while builds run", () => {
  let queue: BuildQueue;
  let pruner: BuildQueue;
  let worker: Worker;
  const cleanups: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    const a = await openTestQueue("prune_running", { progressIntervalMs: 5 });
    queue = a.queue;
    cleanups.push(a.cleanup);
    const b = await openTestQueue("prune_running_b", { schema: a.schema, prefix: a.prefix });
    pruner = b.queue;
    cleanups.unshift(() => b.queue.close());
  });
  afterAll(async () => {
    await worker?.stop();
    for (const cleanup of cleanups) await cleanup();
  });

  it("deletes only finished builds, each after it ran once; no event outlives its build", async () => {
    const runs = new Map<string, number>();
    const outcomes: string[] = [];
    // A running build deleted under its worker shows here: its progress or result is refused.
    const { lines, logger } = captureLogs();
    worker = new Worker(queue, {
      logger,
      capacity: 4,
      handler: async ({ build, progress }) => {
        runs.set(build.id, (runs.get(build.id) ?? 0) + 1);
        await progress({ phase: "training", percent: 50 });
        await progress({ phase: "training", percent: 100 });
        return { ok: true };
      },
    });
    worker.on("build-ended", (e: BuildEndedEvent) => outcomes.push(e.outcome));
    await worker.start();

    let pruned = 0;
    let pruning = true;
    const prunes = (async () => {
      while (pruning) {
        pruned += (await pruner.prune({ olderThanMs: 0, batchSize: 7 })).builds;
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    const ids: string[] = [];
    for (let i = 0; i < BUILDS; i += 30) {
      const batch = await queue.submitMany(
        Array.from({ length: 30 }, (_, j) => ({ strategyId: `p${i + j}` })),
      );
      ids.push(...batch.map((r) => r.build.id));
    }
    await eventually(async () => outcomes.length === BUILDS, 60_000);
    // "build-ended" fires when the handler returns, before the worker's result commits: the last
    // prune must wait for every build to be finished in the record, or it misses the last ones.
    await eventually(async () => {
      const open = await queue.store.db.query<{ n: number }>(
        "SELECT count(*)::integer AS n FROM builds WHERE status IN ('queued', 'running', 'stopping')",
      );
      return Number(open.rows[0]?.n) === 0;
    }, 30_000);
    pruning = false;
    await prunes;
    pruned += (await pruner.prune({ olderThanMs: 0 })).builds;

    expect(outcomes.every((o) => o === "completed")).toBe(true);
    expect(lines.filter((line) => /refused|abandoning/.test(line))).toEqual([]);
    expect(ids.every((id) => runs.get(id) === 1)).toBe(true);
    expect(pruned).toBe(BUILDS);
    for (const id of ids.slice(0, 20)) {
      await expect(queue.get(id)).rejects.toBeInstanceOf(BuildNotFoundError);
    }
    const orphans = await queue.store.db.query<{ n: number }>(
      "SELECT count(*)::integer AS n FROM build_events e WHERE NOT EXISTS (SELECT 1 FROM builds b WHERE b.id = e.build_id)",
    );
    expect(Number(orphans.rows[0]?.n)).toBe(0);
    const unlisted = await queue.store.db.query<{ n: number }>(
      `SELECT (SELECT count(*) FROM build_listing l WHERE NOT EXISTS (SELECT 1 FROM builds b WHERE b.id = l.build_id))
            + (SELECT count(*) FROM builds b WHERE NOT EXISTS (SELECT 1 FROM build_listing l WHERE l.build_id = b.id)) AS n`,
    );
    expect(Number(unlisted.rows[0]?.n)).toBe(0);
  });
});

describe("pruning cut off from PostgreSQL", () => {
  it("fails with store_unavailable and deletes nothing", async () => {
    const pgUrl = new URL(TEST_DATABASE_URL);
    const proxy = await TcpProxy.start(Number(pgUrl.port || 5432), pgUrl.hostname);
    pgUrl.host = `127.0.0.1:${proxy.port}`;
    const { queue, cleanup } = await openTestQueue("prune_cut", { databaseUrl: pgUrl.toString() });
    try {
      const { build } = await queue.submit({ strategyId: "keep-me" });
      await queue.stop(build.id, { actor: "test" });
      proxy.cut();
      await expect(queue.prune({ olderThanMs: 0 })).rejects.toBeInstanceOf(StoreUnavailableError);
      proxy.restore();
      await eventually(async () => (await queue.get(build.id).catch(() => undefined))?.status === "stopped");
    } finally {
      proxy.restore();
      await cleanup();
      await proxy.close();
    }
  });
});
