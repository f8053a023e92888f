/**
 * The reconciler's races (issue 10, item 5), staged deterministically through its test hooks:
 *   - a build claimed, failed and requeued between the reconciler's check and its removal stays in
 *     the index (the check locks the row until the removal is done);
 *   - Redis losing its data in the middle of a walk (FLUSHALL) leaves no marker from that walk: the
 *     walk runs again, and the marker is set only by a walk Redis kept whole;
 *   - two processes reconciling at once: one walks, the other skips;
 *   - a build whose id was popped by a claimer that died is claimed at the next poll (an empty pop
 *     claims on PostgreSQL), not after the 15 s protection window and a reconcile.
 */
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BuildQueue } from "../../src/index.js";
import { ReconcileStore } from "../../src/postgres/reconcile-store.js";
import {
  type ReconcileOptions,
  ReconcileUncertifiedError,
  reconcileIndex,
} from "../../src/queue/reconciler.js";
import { connectRedis, RedisIndex } from "../../src/redis/index-client.js";
import { indexDiff, readIndex } from "../helpers/index-state.js";
import { openTestQueue } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

let server: RedisServer;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  server = await RedisServer.start({ appendonly: false });
});
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  await server?.destroy();
});

/** A queue on the Redis path whose own periodic check never runs during the test. */
async function open(label: string, options: { schema?: string; prefix?: string } = {}) {
  const opened = await openTestQueue(label, {
    redisUrl: server.url,
    reconcileIntervalMs: 3_600_000,
    ...options,
  });
  cleanups.push(opened.cleanup);
  expect(opened.queue.mode).toBe("redis");
  const redis = connectRedis(server.url);
  await redis.connect();
  cleanups.push(async () => redis.disconnect());
  const index = new RedisIndex(redis, opened.prefix);
  const client = server.client();
  cleanups.push(async () => client.disconnect());
  return { ...opened, index, client };
}

function reconcile(queue: BuildQueue, index: RedisIndex, options: ReconcileOptions) {
  return reconcileIndex(queue.store, new ReconcileStore(queue.store.db), index, options);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("the reconciler", () => {
  it("keeps a build that was claimed, failed and requeued between its check and its removal", async () => {
    const { queue, index, client, prefix, schema } = await open("recon_requeue");
    const [x] = await queue.submitMany([{ strategyId: "x", maxRetries: 3 }, { strategyId: "y" }]);
    if (!x) throw new Error("submit failed");
    // A stale id (no build at all) makes the counts differ, so the walk checks every id in Redis.
    const stale = randomUUID();
    await client.zadd(`${prefix}:build_delayed`, 9e15, stale);

    let requeue: Promise<unknown> | undefined;
    let requeuedBeforeRemoval = false;
    const report = await reconcile(queue, index, {
      whenBusy: "skip",
      hooks: {
        // The walk has read x from Redis; now a worker claims it (pop + commit).
        async beforeCheck(ids) {
          if (!ids.includes(x.build.id)) return;
          const [claimed] = await queue.claim("w1", 1);
          expect(claimed?.id).toBe(x.build.id);
        },
        // PostgreSQL said x is not queued; before the removal, the worker fails it and it is requeued
        // (re-added to the index). The requeue must wait until the removal is done.
        async beforeRemove(ids) {
          if (!ids.includes(x.build.id) || requeue) return;
          const { lease } = await queue.get(x.build.id);
          requeue = queue.fail(x.build.id, lease, "boom").then(() => {
            requeuedBeforeRemoval = true;
          });
          await Promise.race([requeue, sleep(1000)]);
        },
      },
    });
    await requeue;
    expect(requeuedBeforeRemoval).toBe(true);
    expect(report).toMatchObject({ walks: 1, removed: 1 }); // the stale id (x had left with its pop)
    expect((await queue.get(x.build.id)).status).toBe("queued");
    const contents = await readIndex(client, prefix);
    expect(contents.ready.has(x.build.id) || contents.delayed.has(x.build.id)).toBe(true);
    expect(contents.delayed.has(stale)).toBe(false);
    expect(await indexDiff(client, prefix, schema)).toEqual([]);
  });

  it("sets the marker only after a walk during which Redis lost nothing (FLUSHALL mid-walk)", async () => {
    const { queue, index, client, prefix, schema } = await open("recon_flush");
    for (let i = 0; i < 6; i++) {
      await queue.submitMany(
        Array.from({ length: 1000 }, (_, j) => ({ strategyId: "f", priority: (i + j) % 5 })),
      );
    }
    let pages = 0;
    const report = await reconcile(queue, index, {
      whenBusy: "skip",
      hooks: {
        async afterAddPage() {
          pages += 1;
          // Between the first page (5,000 builds) and the second, Redis loses everything.
          if (pages === 1) await client.flushall();
        },
      },
    });
    expect(report?.walks).toBe(2);
    expect(report?.queued).toBe(6000);
    expect(await client.exists(`${prefix}:index_marker`)).toBe(1);
    expect(await client.zcard(`${prefix}:build_queue`)).toBe(6000);
    expect(await indexDiff(client, prefix, schema)).toEqual([]);

    // A Redis that loses its data during every walk never gets a marker.
    await expect(
      reconcile(queue, index, {
        whenBusy: "skip",
        hooks: { afterAddPage: async () => void (await client.flushall()) },
      }),
    ).rejects.toBeInstanceOf(ReconcileUncertifiedError);
    expect(await client.exists(`${prefix}:index_marker`)).toBe(0);
  }, 120_000);

  it("walks in one process at a time: a second process reconciling meanwhile skips", async () => {
    const first = await open("recon_two");
    const second = await open("recon_two_b", { schema: first.schema, prefix: first.prefix });
    await first.queue.submitMany(Array.from({ length: 10 }, () => ({ strategyId: "two" })));
    let walks = 0;
    let walking: () => void = () => undefined;
    const started = new Promise<void>((resolve) => {
      walking = resolve;
    });
    let release: () => void = () => undefined;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    const slow = reconcile(first.queue, first.index, {
      whenBusy: "skip",
      hooks: {
        async afterAddPage() {
          walks += 1;
          walking();
          await released;
        },
      },
    });
    await started;
    const other = await reconcile(second.queue, second.index, {
      whenBusy: "skip",
      hooks: {
        async afterAddPage() {
          walks += 1;
        },
      },
    });
    expect(other).toBeUndefined();
    release();
    expect((await slow)?.walks).toBe(1);
    expect(walks).toBe(1);
    // Once the walk is over, the other process may walk.
    expect((await reconcile(second.queue, second.index, { whenBusy: "skip" }))?.walks).toBe(1);
  });

  it("claims a build whose id a dead claimer popped at the next poll, from PostgreSQL", async () => {
    const { queue, client, prefix } = await open("recon_lost");
    const [lost] = await queue.submitMany([{ strategyId: "lost" }]);
    if (!lost) throw new Error("submit failed");
    // A claimer popped it (out of the index, into build_claiming) and died before its commit.
    await client.zrem(`${prefix}:build_queue`, lost.build.id);
    await client.zadd(`${prefix}:build_claiming`, Date.now(), lost.build.id);
    // Other claimers' empty pops look on PostgreSQL about once a second (fleet-wide).
    const deadline = Date.now() + 10_000;
    let claimed: string | undefined;
    while (!claimed && Date.now() < deadline) {
      claimed = (await queue.claim("w2", 1))[0]?.id;
      if (!claimed) await sleep(100);
    }
    expect(claimed).toBe(lost.build.id);
    expect(queue.mode).toBe("redis");
  });

  it("walks on the embedded PGlite too (no lock to take; check and removal in one transaction)", async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), "oculus-pglite-"));
    cleanups.push(async () => rmSync(dataDir, { recursive: true, force: true }));
    const prefix = `pglite${process.pid}`;
    const queue = await BuildQueue.open({
      dataDir,
      redisUrl: server.url,
      prefix,
      reconcileIntervalMs: 3_600_000,
    });
    cleanups.push(() => queue.close());
    expect(queue.mode).toBe("redis");
    const [kept] = await queue.submitMany([{ strategyId: "pglite" }]);
    const client = server.client();
    cleanups.push(async () => client.disconnect());
    const stale = randomUUID();
    await client.zadd(`${prefix}:build_queue`, 1, stale);
    expect(await queue.reconcile()).toMatchObject({ queued: 1, removed: 1, walks: 1 });
    expect(await client.zrange(`${prefix}:build_queue`, 0, -1)).toEqual([kept?.build.id]);
  });
});
