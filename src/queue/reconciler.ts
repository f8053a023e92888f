/**
 * Makes the Redis dispatch index equal to the queued rows in PostgreSQL (the record):
 *   1. every queued row is put into the index (or the delayed set), idempotently, page by page;
 *   2. unless the index then holds exactly as many ids as there are queued rows, every id in Redis is
 *      checked against PostgreSQL and those that are not queued (claimed, finished, removed, or
 *      reappeared after an AOF replay) are dropped;
 *   3. the index marker is set, so that a Redis that loses its data later is recognised.
 * Safe to run concurrently with submits and claims, and from several processes at once: every step
 * is idempotent, and a build claimed between steps costs at most one wasted pop (PostgreSQL refuses
 * the second claim).
 */
import { encodeScore } from "../core/score.js";
import type { BuildStore } from "../postgres/store.js";
import type { RedisIndex } from "../redis/index-client.js";

export interface ReconcileReport {
  /** Queued builds in PostgreSQL when the walk ran. */
  queued: number;
  /** Builds that were missing from Redis and were added. */
  added: number;
  /** Ids that were in Redis but are not queued, and were dropped. */
  removed: number;
  /** The index marker was missing: this Redis was new or had lost its data. */
  lostData: boolean;
  durationMs: number;
}

const PAGE_SIZE = 5000;
/**
 * A build popped for a claim less than this long ago is not put back: its claim is committing.
 * Longer than any claim statement takes; a claimer that died after its pop is recovered after it.
 */
export const CLAIM_PROTECTION_MS = 15_000;

export async function reconcileIndex(store: BuildStore, index: RedisIndex): Promise<ReconcileReport> {
  const started = performance.now();
  const lostData = !(await index.hasMarker());

  let queued = 0;
  let added = 0;
  let afterSeq = 0;
  for (;;) {
    const entries = await store.queuedIndexPage(afterSeq, PAGE_SIZE);
    if (entries.length === 0) break;
    queued += entries.length;
    added += await index.enqueue(
      entries.map((e) => ({ id: e.id, score: encodeScore(e.priority, e.seq), delayMs: e.delayMs })),
      CLAIM_PROTECTION_MS,
    );
    afterSeq = entries[entries.length - 1]?.seq ?? afterSeq;
    if (entries.length < PAGE_SIZE) break;
  }

  let removed = 0;
  const { ready, delayed } = await index.length();
  if (ready + delayed !== queued) {
    for await (const ids of index.scanIds(PAGE_SIZE)) {
      const stillQueued = await store.queuedAmong(ids);
      const extra = ids.filter((id) => !stillQueued.has(id));
      removed += await index.remove(extra);
    }
  }

  await index.forgetStaleClaims(CLAIM_PROTECTION_MS);
  await index.setMarker(new Date().toISOString());
  return { queued, added, removed, lostData, durationMs: performance.now() - started };
}
