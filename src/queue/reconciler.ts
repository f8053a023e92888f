/**
 * Makes the Redis dispatch index equal to the queued rows in PostgreSQL (the record). A walk:
 *   1. notes a walk token in Redis (reconcile_walks);
 *   2. puts every queued row into its pool's dispatch set (or delayed set), idempotently, page by page
 *      (every pool is rebuilt, and registered in the pool registry);
 *   3. unless the index then holds exactly as many ids as there are queued rows, checks every id of
 *      every pool's sets in Redis against PostgreSQL and drops those that are not queued, each page in one step: the check
 *      locks the rows it finds not queued until the removal is done (removable_index_ids.sql), so a
 *      build requeued meanwhile is re-added after its removal, never before;
 *   4. sets the index marker only if the walk's token survived (certify_index.lua) and the connection
 *      was not re-established during the walk: the marker then certifies that Redis kept every write
 *      of the walk. Otherwise the walk certifies nothing and runs again.
 * One walk at a time per queue: the walker holds a PostgreSQL advisory lock (ReconcileStore), and the
 * others skip (the periodic drift check) or wait and use its result (recovery, `oculus reconcile`).
 * The argument is written down in docs/architecture.md ("The reconciler").
 */
import { randomUUID } from "node:crypto";
import { encodeScore } from "../core/score.js";
import type { ReconcileStore } from "../postgres/reconcile-store.js";
import type { BuildStore } from "../postgres/store.js";
import { type RedisIndex, redisStep } from "../redis/index-client.js";

export interface ReconcileReport {
  /** Queued builds in PostgreSQL when the walk ran. */
  queued: number;
  /** Builds that were missing from Redis and were added. */
  added: number;
  /** Ids that were in Redis but are not queued, and were dropped. */
  removed: number;
  /** The index marker was missing: this Redis was new or had lost its data. */
  lostData: boolean;
  /** Walks this call ran: 0 when another process's walk (started after the call) was used instead;
   * more than 1 when Redis lost data during a walk, which then certified nothing. */
  walks: number;
  durationMs: number;
}

/** Test hooks: called between the steps of a walk, to stage the races the design must survive. */
export interface ReconcileHooks {
  /** After a page of queued rows went into Redis. */
  afterAddPage?(): Promise<void>;
  /** After a page of Redis ids was read, before PostgreSQL is asked about them. */
  beforeCheck?(ids: string[]): Promise<void>;
  /** With the removable ids' rows locked, before they are removed from Redis. */
  beforeRemove?(ids: string[]): Promise<void>;
}

export interface ReconcileOptions {
  /**
   * When another process is walking: "skip" returns undefined at once; "wait" waits (up to
   * `waitMs`) and returns a report with `walks: 0` when a walk that started after this call
   * certified the index, and walks itself otherwise (without the lock after `waitMs`).
   */
  whenBusy: "skip" | "wait";
  waitMs?: number;
  /** Counts (re)connections to Redis: a walk during which it changed certifies nothing. */
  connectionEpoch?: () => number;
  hooks?: ReconcileHooks;
}

/** Walks per call at most: each further one means Redis lost data during the previous one. */
const MAX_WALKS = 3;
const PAGE_SIZE = 5000;
const DEFAULT_WAIT_MS = 15_000;
const WAIT_POLL_MS = 200;
/**
 * A build popped for a claim less than this long ago is not put back: its claim is committing.
 * Longer than any claim statement takes; a claimer that died after its pop is recovered after it.
 */
export const CLAIM_PROTECTION_MS = 15_000;

/** The walk could not certify the index: Redis lost data during every attempt. */
export class ReconcileUncertifiedError extends Error {
  constructor(walks: number) {
    super(`the Redis index could not be certified: Redis lost data during each of ${walks} walks`);
    this.name = "ReconcileUncertifiedError";
  }
}

interface MarkerValue {
  /** When the certifying walk started, by the Redis clock (epoch ms). */
  walkStartedMs: number;
  certifiedAt: string;
}

function parseMarker(value: string | undefined): MarkerValue | undefined {
  try {
    const parsed = JSON.parse(value ?? "") as Partial<MarkerValue>;
    return typeof parsed.walkStartedMs === "number" ? (parsed as MarkerValue) : undefined;
  } catch {
    return undefined; // absent, or written by an older version: certifies no walk we wait for
  }
}

export async function reconcileIndex(
  store: BuildStore,
  reconcileStore: ReconcileStore,
  index: RedisIndex,
  options: ReconcileOptions,
): Promise<ReconcileReport | undefined> {
  const started = performance.now();
  if (options.whenBusy === "skip") {
    const led = await reconcileStore.asReconciler(() =>
      walkUntilCertified(store, reconcileStore, index, options),
    );
    return led && { ...led.value, durationMs: performance.now() - started };
  }
  // A walk that starts after this moment (by the Redis clock) also covers everything this caller needs.
  const askedAt = await redisStep(index.timeMs());
  const deadline = Date.now() + (options.waitMs ?? DEFAULT_WAIT_MS);
  for (;;) {
    const led = await reconcileStore.asReconciler(async () =>
      (await certifiedSince(index, askedAt))
        ? undefined
        : walkUntilCertified(store, reconcileStore, index, options),
    );
    if (led?.value) return { ...led.value, durationMs: performance.now() - started };
    if (led || (await certifiedSince(index, askedAt))) {
      return {
        queued: 0,
        added: 0,
        removed: 0,
        lostData: false,
        walks: 0,
        durationMs: performance.now() - started,
      };
    }
    if (Date.now() > deadline) {
      // The lock's holder is slow or stuck: walk anyway (the lock only saves duplicate walks).
      const report = await walkUntilCertified(store, reconcileStore, index, options);
      return { ...report, durationMs: performance.now() - started };
    }
    await new Promise((r) => setTimeout(r, WAIT_POLL_MS));
  }
}

async function certifiedSince(index: RedisIndex, sinceMs: number): Promise<boolean> {
  const marker = parseMarker(await redisStep(index.marker()));
  return marker !== undefined && marker.walkStartedMs >= sinceMs;
}

async function walkUntilCertified(
  store: BuildStore,
  reconcileStore: ReconcileStore,
  index: RedisIndex,
  options: ReconcileOptions,
): Promise<ReconcileReport> {
  const total = { queued: 0, added: 0, removed: 0, lostData: false, walks: 0, durationMs: 0 };
  while (total.walks < MAX_WALKS) {
    const walk = await walkOnce(store, reconcileStore, index, options);
    total.walks += 1;
    total.queued = walk.queued;
    total.added += walk.added;
    total.removed += walk.removed;
    total.lostData ||= walk.lostData;
    if (walk.certified) return total;
  }
  throw new ReconcileUncertifiedError(total.walks);
}

async function walkOnce(
  store: BuildStore,
  reconcileStore: ReconcileStore,
  index: RedisIndex,
  options: ReconcileOptions,
) {
  const epoch = options.connectionEpoch ?? (() => 0);
  const hooks = options.hooks ?? {};
  const token = randomUUID();
  const startEpoch = epoch();
  const walkStartedMs = await redisStep(index.timeMs());
  const lostData = !(await redisStep(index.hasMarker()));
  await redisStep(index.startWalk(token));

  let queued = 0;
  let added = 0;
  let afterSeq = 0;
  for (;;) {
    const entries = await store.queuedIndexPage(afterSeq, PAGE_SIZE);
    if (entries.length === 0) break;
    queued += entries.length;
    const requires = await store.poolRequirements(entries.map((e) => e.pool));
    const page = entries.map((e) => ({
      id: e.id,
      pool: e.pool,
      requires: requires.get(e.pool) ?? {},
      score: encodeScore(e.priority, e.seq),
      delayMs: e.delayMs,
    }));
    added += await redisStep(index.enqueue(page, CLAIM_PROTECTION_MS));
    await hooks.afterAddPage?.();
    afterSeq = entries[entries.length - 1]?.seq ?? afterSeq;
    if (entries.length < PAGE_SIZE) break;
  }

  let removed = 0;
  const { ready, delayed } = await redisStep(index.length());
  if (ready + delayed !== queued) {
    const pages = index.scanIds(PAGE_SIZE);
    for (;;) {
      const next = await redisStep(pages.next());
      if (next.done) break;
      const { pool, ids: pageIds } = next.value;
      await hooks.beforeCheck?.(pageIds);
      removed += await reconcileStore.removeNotQueued(
        pageIds,
        (ids) => redisStep(index.remove(ids, pool)),
        hooks.beforeRemove,
      );
    }
  }

  await redisStep(index.forgetStaleClaims(CLAIM_PROTECTION_MS));
  const marker: MarkerValue = { walkStartedMs, certifiedAt: new Date().toISOString() };
  const certified =
    epoch() === startEpoch && (await redisStep(index.certifyWalk(token, JSON.stringify(marker))));
  return { queued, added, removed, lostData, certified };
}
