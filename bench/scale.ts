/**
 * Scale: the queue grown to each size in turn (10k, 100k, 1M queued builds, submitMany in chunks of
 * 10,000), and at each size: position() and claim(1) times in Redis mode (and, for comparison, on the
 * PostgreSQL fallback path), then the time to rebuild the Redis index from PostgreSQL after FLUSHALL.
 */
import type { BuildQueue } from "../src/index.js";
import { inputs, openQueue } from "./ours.js";
import { dropSchema, newSchema } from "./postgres.js";
import type { PrivateRedis } from "./redis-server.js";
import { type Distribution, distribution } from "./stats.js";

export interface ScaleOptions {
  sizes: number[];
  chunk: number;
  positionSamples: number;
  claimSamples: number;
  /** Samples on the PostgreSQL fallback path (0: skip). */
  fallbackSamples: number;
  log: (line: string) => void;
}

export interface ScaleStep {
  size: number;
  /** Builds inserted to reach this size, and how long that took. */
  inserted: number;
  insertMs: number;
  insertPerSec: number;
  positionMs: Distribution;
  claimMs: Distribution;
  fallbackPositionMs: Distribution | null;
  fallbackClaimMs: Distribution | null;
  rebuild: { durationMs: number; queued: number; added: number };
}

const WORKER = "bench-scale";

/** Ids in submit order; `claimed` marks those taken (always the oldest: one priority). */
class Ids {
  readonly all: string[] = [];
  claimed = 0;

  randomQueued(): string {
    const i = this.claimed + Math.floor(Math.random() * (this.all.length - this.claimed));
    return this.all[i] as string;
  }

  get queued(): number {
    return this.all.length - this.claimed;
  }
}

async function timePositions(queue: BuildQueue, ids: Ids, n: number): Promise<Distribution> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const id = ids.randomQueued();
    const t0 = performance.now();
    const position = await queue.position(id);
    times.push(performance.now() - t0);
    if (position === null) throw new Error(`queued build ${id} has no position`);
  }
  return distribution(times);
}

async function timeClaims(queue: BuildQueue, ids: Ids, n: number): Promise<Distribution> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const [build] = await queue.claim(WORKER, 1);
    times.push(performance.now() - t0);
    if (!build) throw new Error("claim returned nothing from a non-empty queue");
    if (build.id !== ids.all[ids.claimed]) throw new Error("claim did not return the oldest build");
    ids.claimed += 1;
    await queue.complete(build.id, build.lease, null);
  }
  return distribution(times);
}

export async function runScale(redis: PrivateRedis, options: ScaleOptions): Promise<ScaleStep[]> {
  const schema = newSchema("scale");
  const steps: ScaleStep[] = [];
  try {
    await redis.flushAll();
    const queue = await openQueue("redis", schema, redis.url);
    const fallback = options.fallbackSamples > 0 ? await openQueue("postgres", schema, redis.url) : undefined;
    try {
      const ids = new Ids();
      const chunk = inputs(options.chunk);
      for (const size of options.sizes) {
        const toInsert = size - ids.queued;
        const t0 = performance.now();
        for (let left = toInsert; left > 0; left -= options.chunk) {
          const results = await queue.submitMany(chunk.slice(0, Math.min(options.chunk, left)));
          for (const r of results) ids.all.push(r.build.id);
        }
        const insertMs = performance.now() - t0;
        options.log(
          `  ${size.toLocaleString("en-US")} queued (${toInsert} inserted in ${Math.round(insertMs)} ms)`,
        );
        const positionMs = await timePositions(queue, ids, options.positionSamples);
        const claimMs = await timeClaims(queue, ids, options.claimSamples);
        let fallbackPositionMs: Distribution | null = null;
        let fallbackClaimMs: Distribution | null = null;
        if (fallback) {
          fallbackPositionMs = await timePositions(fallback, ids, options.fallbackSamples);
          fallbackClaimMs = await timeClaims(fallback, ids, options.fallbackSamples);
        }
        // The fallback claims left their ids in Redis: the rebuild below makes the index exact again.
        await redis.flushAll();
        const report = await queue.reconcile();
        const { ready } = await queue.counts();
        if (report.queued !== ids.queued || ready !== ids.queued) {
          throw new Error(`rebuild: ${report.queued} queued, ${ready} indexed, expected ${ids.queued}`);
        }
        steps.push({
          size,
          inserted: toInsert,
          insertMs,
          insertPerSec: (toInsert / insertMs) * 1000,
          positionMs,
          claimMs,
          fallbackPositionMs,
          fallbackClaimMs,
          rebuild: { durationMs: report.durationMs, queued: report.queued, added: report.added },
        });
        options.log(`  rebuilt the index of ${report.queued} builds in ${Math.round(report.durationMs)} ms`);
      }
      return steps;
    } finally {
      await fallback?.close();
      await queue.close();
    }
  } finally {
    await dropSchema(schema);
  }
}
