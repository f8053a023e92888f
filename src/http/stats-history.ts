/**
 * The last hour of the queue, minute by minute, for the dashboard's charts (GET /v1/stats/history),
 * sampled in memory by this API process (docs/architecture.md, "Dashboard statistics", says why):
 *
 * - submitted, completed and failed builds per minute: counted from the event stream (the process's
 *   event hub reads every event of the fleet, in id order), by the minute of the event's time;
 * - queue depth: `queue.counts()` (ready + delayed) every `sampleMs`, the last and the largest sample
 *   of each minute;
 * - dispatch latency: from when a build became claimable (its submit or requeue event, or the end of a
 *   retry's backoff) to its claim (its `running` event), for builds whose becoming claimable this
 *   process saw while sampling.
 *
 * The mode history (ModeHistory) is this process's: when its queue switched between the Redis fast
 * path and PostgreSQL, and why.
 */
import type { BuildEvent } from "../core/events.js";
import type { Logger } from "../core/logger.js";
import type { BuildQueue } from "../queue/build-queue.js";
import type { QueueMode } from "../queue/failover.js";

export const HISTORY_MINUTES = 60;
export const DEFAULT_SAMPLE_MS = 5000;
/** Builds whose claimable time is remembered at most (a queue deeper than this loses the oldest). */
const MAX_TRACKED_BUILDS = 200_000;
const MAX_MODE_CHANGES = 100;
const MINUTE_MS = 60_000;

export interface MinuteStats {
  /** Start of the minute (ISO time). */
  at: string;
  submitted: number;
  completed: number;
  failed: number;
  /** The last queue depth sampled in the minute (ready + delayed); null when none was. */
  queueDepth: number | null;
  queueDepthMax: number | null;
  /** Claims whose latency is known, with their mean and largest latency (null: none). */
  dispatches: number;
  dispatchLatencyMsAvg: number | null;
  dispatchLatencyMsMax: number | null;
}

interface Bucket {
  minute: number;
  submitted: number;
  completed: number;
  failed: number;
  depth: number | null;
  depthMax: number | null;
  dispatches: number;
  latencySum: number;
  latencyMax: number | null;
}

export interface ModeChange {
  mode: QueueMode;
  at: string;
  /** Why: "at start", or the Redis fault that switched it to PostgreSQL. */
  reason: string;
}

/** This process's queue mode over time: the mode when it was first seen, then each change. */
export class ModeHistory {
  private readonly changes: ModeChange[] = [];
  private readonly onMode = (mode: QueueMode, cause?: Error) =>
    this.push(mode, cause ? cause.message : mode === "redis" ? "Redis available again" : "switched");

  constructor(private readonly queue: BuildQueue) {
    this.push(queue.mode, "at start");
    queue.on("mode", this.onMode);
  }

  private push(mode: QueueMode, reason: string): void {
    this.changes.push({ mode, at: new Date().toISOString(), reason: reason.slice(0, 500) });
    if (this.changes.length > MAX_MODE_CHANGES) this.changes.shift();
  }

  /** Oldest first. */
  list(): ModeChange[] {
    return [...this.changes];
  }

  close(): void {
    this.queue.off("mode", this.onMode);
  }
}

export class StatsHistory {
  private readonly buckets = new Map<number, Bucket>();
  /** Build id → when it became claimable (epoch ms, PostgreSQL's clock), insertion ordered. */
  private readonly claimableSince = new Map<string, number>();
  private readonly abort = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private lastEventId: string | undefined;
  private sampling: Promise<void> | undefined;
  /** When sampling began; null until the event stream delivered its snapshot. */
  since: Date | null = null;

  constructor(
    private readonly queue: BuildQueue,
    private readonly logger: Logger,
    readonly sampleMs: number = DEFAULT_SAMPLE_MS,
    private readonly now: () => number = Date.now,
  ) {}

  start(): void {
    void this.follow();
    void this.sampleDepth();
    this.timer = setInterval(() => void this.sampleDepth(), this.sampleMs);
    this.timer.unref();
  }

  close(): void {
    clearInterval(this.timer);
    this.abort.abort();
  }

  /** The last `minutes` minutes, oldest first, the current (incomplete) minute last. */
  history(minutes: number = HISTORY_MINUTES): MinuteStats[] {
    const current = minuteOf(this.now());
    const out: MinuteStats[] = [];
    for (let m = current - (minutes - 1) * MINUTE_MS; m <= current; m += MINUTE_MS) {
      out.push(toMinuteStats(m, this.buckets.get(m)));
    }
    return out;
  }

  /** Follows the event stream for as long as the server runs; resumes after its last id on an error. */
  private async follow(): Promise<void> {
    while (!this.abort.signal.aborted) {
      try {
        const items = this.queue.events.subscribe({
          lastEventId: this.lastEventId,
          signal: this.abort.signal,
        });
        for await (const item of items) {
          this.lastEventId = item.id;
          if (item.kind === "snapshot") this.since ??= new Date(this.now());
          else this.record(item);
        }
      } catch (err) {
        if (this.abort.signal.aborted) return;
        this.logger.warn({ err: (err as Error).message }, "stats history: event stream ended, resuming");
      }
      await new Promise((resolve) => setTimeout(resolve, 1000).unref());
    }
  }

  /** Counts one event into the minute of its time. */
  record(event: BuildEvent): void {
    const at = Date.parse(event.at);
    const bucket = this.bucket(at);
    switch (event.type) {
      case "queued":
        if (bucket) bucket.submitted += 1;
        this.claimable(event.buildId, at);
        break;
      case "requeued": {
        // A retry after a failure carries the end of its backoff.
        const runAt = typeof event.data?.runAt === "string" ? Date.parse(event.data.runAt) : Number.NaN;
        this.claimable(event.buildId, Number.isNaN(runAt) ? at : Math.max(at, runAt));
        break;
      }
      case "running": {
        const since = this.claimableSince.get(event.buildId);
        this.claimableSince.delete(event.buildId);
        if (since === undefined || !bucket) break;
        const latency = Math.max(0, at - since);
        bucket.dispatches += 1;
        bucket.latencySum += latency;
        bucket.latencyMax = Math.max(bucket.latencyMax ?? 0, latency);
        break;
      }
      case "completed":
        if (bucket) bucket.completed += 1;
        break;
      case "failed":
        if (bucket) bucket.failed += 1;
        break;
      case "stopped":
        this.claimableSince.delete(event.buildId);
        break;
      default:
        break;
    }
  }

  private claimable(buildId: string, at: number): void {
    this.claimableSince.delete(buildId);
    this.claimableSince.set(buildId, at);
    if (this.claimableSince.size > MAX_TRACKED_BUILDS) {
      const oldest = this.claimableSince.keys().next().value;
      if (oldest !== undefined) this.claimableSince.delete(oldest);
    }
  }

  private async sampleDepth(): Promise<void> {
    if (this.sampling) return; // a slow count is not stacked up
    this.sampling = (async () => {
      try {
        const counts = await this.queue.counts();
        const depth = counts.ready + counts.delayed;
        const bucket = this.bucket(this.now());
        if (!bucket) return;
        bucket.depth = depth;
        bucket.depthMax = Math.max(bucket.depthMax ?? 0, depth);
      } catch (err) {
        this.logger.debug({ err: (err as Error).message }, "stats history: queue depth not sampled");
      } finally {
        this.sampling = undefined;
      }
    })();
    await this.sampling;
  }

  /** The bucket of the minute holding `at`, created on demand; undefined when older than the hour. */
  private bucket(at: number): Bucket | undefined {
    const minute = minuteOf(at);
    const oldest = minuteOf(this.now()) - (HISTORY_MINUTES - 1) * MINUTE_MS;
    if (Number.isNaN(minute) || minute < oldest) return undefined;
    let bucket = this.buckets.get(minute);
    if (!bucket) {
      bucket = emptyBucket(minute);
      this.buckets.set(minute, bucket);
      for (const key of this.buckets.keys()) if (key < oldest) this.buckets.delete(key);
    }
    return bucket;
  }
}

const minuteOf = (ms: number) => Math.floor(ms / MINUTE_MS) * MINUTE_MS;

function emptyBucket(minute: number): Bucket {
  return {
    minute,
    submitted: 0,
    completed: 0,
    failed: 0,
    depth: null,
    depthMax: null,
    dispatches: 0,
    latencySum: 0,
    latencyMax: null,
  };
}

function toMinuteStats(minute: number, bucket: Bucket | undefined): MinuteStats {
  const b = bucket ?? emptyBucket(minute);
  return {
    at: new Date(minute).toISOString(),
    submitted: b.submitted,
    completed: b.completed,
    failed: b.failed,
    queueDepth: b.depth,
    queueDepthMax: b.depthMax,
    dispatches: b.dispatches,
    dispatchLatencyMsAvg: b.dispatches > 0 ? Math.round(b.latencySum / b.dispatches) : null,
    dispatchLatencyMsMax: b.latencyMax,
  };
}
