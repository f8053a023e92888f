/**
 * Retention: the record keeps every build until an operator says how long finished builds matter.
 * `prune` deletes finished builds (completed, failed, stopped) that finished before the cutoff, with
 * their events, a batch per statement (each batch is its own short transaction: the queue keeps
 * running meanwhile), and forgets workers unheard of since before it. Queued and running builds are
 * never touched, however old.
 */
import { ValidationError } from "../core/errors.js";
import type { Logger } from "../core/logger.js";
import type { Db } from "../postgres/db.js";
import { countPrunable, pruneBuildBatch, pruneWorkers } from "../postgres/retention-store.js";

export interface PruneOptions {
  /** Delete what finished (or, for workers, was last heard of) at least this many ms ago. */
  olderThanMs: number;
  /** Builds per statement (default 1000). */
  batchSize?: number;
  /** Count what would be deleted, delete nothing. */
  dryRun?: boolean;
  /** Stops between batches (what was deleted stays deleted). */
  signal?: AbortSignal;
}

export interface PruneReport {
  dryRun: boolean;
  olderThanMs: number;
  builds: number;
  events: number;
  /** Bytes of build logs deleted with the builds (would be, in a dry run). */
  logBytes: number;
  workers: number;
  durationMs: number;
}

const DEFAULT_BATCH = 1000;
const MAX_BATCH = 10_000;

function checkOptions(options: PruneOptions): { olderThanMs: number; batchSize: number } {
  const { olderThanMs, batchSize = DEFAULT_BATCH } = options;
  if (typeof olderThanMs !== "number" || !Number.isFinite(olderThanMs) || olderThanMs < 0) {
    throw new ValidationError("olderThanMs", "must be a number of milliseconds, 0 or more");
  }
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > MAX_BATCH) {
    throw new ValidationError("batchSize", `must be an integer from 1 to ${MAX_BATCH}`);
  }
  return { olderThanMs: Math.floor(olderThanMs), batchSize };
}

export async function prune(db: Db, options: PruneOptions): Promise<PruneReport> {
  const { olderThanMs, batchSize } = checkOptions(options);
  const started = performance.now();
  if (options.dryRun) {
    const counts = await countPrunable(db, olderThanMs);
    return { dryRun: true, olderThanMs, ...counts, durationMs: performance.now() - started };
  }
  let builds = 0;
  let events = 0;
  let logBytes = 0;
  for (;;) {
    const batch = await pruneBuildBatch(db, olderThanMs, batchSize);
    builds += batch.builds;
    events += batch.events;
    logBytes += batch.logBytes;
    if (batch.builds < batchSize || options.signal?.aborted) break;
  }
  const workers = await pruneWorkers(db, olderThanMs);
  return {
    dryRun: false,
    olderThanMs,
    builds,
    events,
    logBytes,
    workers,
    durationMs: performance.now() - started,
  };
}

export interface RetentionSchedule {
  olderThanMs: number;
  /** Between passes (default: an hour). The first pass runs at once. */
  intervalMs?: number;
  logger: Logger;
}

/**
 * Prunes now and then every `intervalMs` (`oculus up --retention-days`). Every process may run it:
 * batches skip rows another prune holds. Returns a function that stops it (a pass in progress
 * finishes its current batch).
 */
export function startRetention(db: Db, schedule: RetentionSchedule): () => void {
  const abort = new AbortController();
  let running = false;
  const pass = () => {
    if (running || abort.signal.aborted) return;
    running = true;
    prune(db, { olderThanMs: schedule.olderThanMs, signal: abort.signal })
      .then((report) => {
        if (report.builds > 0 || report.workers > 0) {
          schedule.logger.info({ ...report }, "retention: pruned finished builds and gone workers");
        }
      })
      .catch((err: Error) =>
        schedule.logger.warn({ err: err.message }, "retention pass failed; retrying later"),
      )
      .finally(() => {
        running = false;
      });
  };
  pass();
  const timer = setInterval(pass, schedule.intervalMs ?? 3_600_000);
  timer.unref();
  return () => {
    abort.abort();
    clearInterval(timer);
  };
}
