/**
 * The PostgreSQL record: every build and every state change. One method per query file in
 * `queries/` (embedded at build time); rows are mapped to the build model here and nowhere else.
 */
import type { Build, BuildProgress, BuildStatus, SubmitRequest } from "../core/build.js";
import { DEFAULT_POOL, poolIdOf } from "../core/pools.js";
import { queries } from "../generated/assets.js";
import type { Db, Queryable } from "./db.js";

export interface BuildRow {
  id: string;
  strategy_id: string;
  params: Record<string, unknown>;
  priority: number;
  seq: number;
  status: BuildStatus;
  phase: string | null;
  retry_count: number;
  max_retries: number;
  lease: number;
  worker_id: string | null;
  idempotency_key: string | null;
  requires: Record<string, string> | null;
  pool: string | null;
  timeout_seconds: number | null;
  concurrency_key: string | null;
  held: boolean | null;
  last_error: string | null;
  result: unknown;
  created_at: Date;
  updated_at: Date;
  run_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
  lease_expires_at: Date | null;
  progress: BuildProgress | null;
  log_tail: string | null;
  stop_requested_at: Date | null;
  stopped_by: string | null;
  stop_reason: string | null;
}

export function toBuild(row: BuildRow): Build {
  return {
    id: row.id,
    strategyId: row.strategy_id,
    params: row.params,
    priority: row.priority,
    seq: Number(row.seq),
    status: row.status,
    phase: row.phase,
    retryCount: row.retry_count,
    maxRetries: row.max_retries,
    lease: Number(row.lease),
    workerId: row.worker_id,
    idempotencyKey: row.idempotency_key,
    requires: row.requires ?? {},
    pool: row.pool ?? DEFAULT_POOL,
    timeoutSeconds: row.timeout_seconds ?? null,
    concurrencyKey: row.concurrency_key ?? null,
    held: row.held ?? false,
    lastError: row.last_error,
    result: row.result ?? null,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    runAt: row.run_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    leaseExpiresAt: row.lease_expires_at ?? null,
    progress: row.progress ?? null,
    logTail: row.log_tail ?? null,
    stopRequestedAt: row.stop_requested_at ?? null,
    stoppedBy: row.stopped_by ?? null,
    stopReason: row.stop_reason ?? null,
  };
}

export interface InsertedBuild {
  build: Build;
  created: boolean;
  /** Milliseconds until a new build may run (its runAt), by PostgreSQL's clock (0: now). */
  delayMs?: number;
}

export interface CompletionInput {
  id: string;
  lease: number;
  result: unknown;
  logTail?: string;
}

/** A completion that was recorded; `build` when it was read back. */
export interface CompletedBuild {
  id: string;
  lease: number;
  concurrencyKey: string | null;
  build: Build | undefined;
}

export interface FailureInput {
  id: string;
  lease: number;
  error: string;
  retryable: boolean;
  logTail?: string;
}

/** A failed build as recorded: requeued (status queued, with its run time) or failed for good. */
export interface RecordedFailure {
  build: Build;
  /** Milliseconds until the build may run, by PostgreSQL's clock (0: now). */
  delayMs: number;
}

export interface IndexEntry {
  id: string;
  pool: string;
  priority: number;
  seq: number;
  /** Milliseconds until the build may run, by PostgreSQL's clock (0: now). */
  delayMs: number;
}

export interface BackoffPolicy {
  baseDelayMs: number;
  maxDelayMs: number;
}

/** Refresh statistics after this many inserted builds, at most once per ANALYZE_MIN_INTERVAL_MS. */
const ANALYZE_AFTER_INSERTS = 5_000;
const ANALYZE_MIN_INTERVAL_MS = 30_000;

export class BuildStore {
  private insertedSinceAnalyze = 0;
  private lastAnalyzeAt = 0;
  private analyzing = false;

  constructor(
    readonly db: Db,
    readonly wakeChannel: string,
    /** A claim of popped ids gives up after this long (see claimByIds); default 3 s. */
    private readonly claimTimeoutMs = 3000,
  ) {}

  /**
   * Inserts builds (one statement). Returns, in input order, each new or already-submitted build
   * (idempotency key). Inputs whose key raced with another submit are read back by key. `q`: a
   * transaction to insert in (the scheduler's, which advances the schedule in the same commit).
   */
  async insert(
    requests: (Omit<SubmitRequest, "requires" | "supersede"> & { requires?: Record<string, string> })[],
    actor: string,
    q: Queryable = this.db,
  ): Promise<InsertedBuild[]> {
    const payload = requests.map((r) => ({
      strategyId: r.strategyId,
      priority: r.priority,
      params: r.params,
      maxRetries: r.maxRetries,
      idempotencyKey: r.idempotencyKey ?? null,
      requires: r.requires ?? {},
      pool: poolIdOf(r.requires ?? {}),
      timeoutSeconds: r.timeoutSeconds ?? null,
      runAt: r.runAt ?? null,
      concurrencyKey: r.concurrencyKey ?? null,
    }));
    const res = await q.query<BuildRow & { ord: number; created: boolean; delay_ms: number }>(
      queries.insert_builds,
      [JSON.stringify(payload), actor],
    );
    const out: (InsertedBuild | undefined)[] = new Array(requests.length);
    for (const row of res.rows) {
      out[Number(row.ord) - 1] ??= {
        build: toBuild(row),
        created: row.created,
        delayMs: Number(row.delay_ms ?? 0),
      };
    }
    const missing = requests.filter((_, i) => out[i] === undefined);
    if (missing.length > 0) {
      const byKey = await this.selectByIdempotencyKeys(
        missing.map((r) => r.idempotencyKey ?? ""),
        q,
      );
      requests.forEach((r, i) => {
        if (out[i]) return;
        const build = byKey.get(r.idempotencyKey ?? "");
        if (!build) throw new Error(`build for idempotency key ${r.idempotencyKey} vanished during submit`);
        out[i] = { build, created: false };
      });
    }
    this.noteInserted(requests.length);
    return out as InsertedBuild[];
  }

  /** Starts a background ANALYZE after a burst of submits (see analyze_builds.sql). Never throws. */
  private noteInserted(count: number): void {
    this.insertedSinceAnalyze += count;
    const now = Date.now();
    if (this.analyzing || this.insertedSinceAnalyze < ANALYZE_AFTER_INSERTS) return;
    if (now - this.lastAnalyzeAt < ANALYZE_MIN_INTERVAL_MS) return;
    this.analyzing = true;
    this.insertedSinceAnalyze = 0;
    this.lastAnalyzeAt = now;
    this.db
      .query(queries.analyze_builds)
      .catch(() => undefined)
      .finally(() => {
        this.analyzing = false;
      });
  }

  /**
   * "Latest wins": stops the queued builds of the strategies of `ids` submitted before the newest of
   * them (supersede_builds.sql), in the caller's transaction (the submit's). Returns them.
   */
  async supersede(ids: string[], actor: string, q: Queryable): Promise<(Build & { supersededBy: string })[]> {
    if (ids.length === 0) return [];
    const res = await q.query<BuildRow & { superseded_by: string }>(queries.supersede_builds, [ids, actor]);
    return res.rows.map((row) => ({ ...toBuild(row), supersededBy: row.superseded_by }));
  }

  private async selectByIdempotencyKeys(keys: string[], q: Queryable): Promise<Map<string, Build>> {
    const res = await q.query<BuildRow>(queries.select_by_idempotency_keys, [JSON.stringify(keys)]);
    return new Map(res.rows.map((row) => [row.idempotency_key ?? "", toBuild(row)]));
  }

  async get(id: string, q: Queryable = this.db): Promise<Build | undefined> {
    const res = await q.query<BuildRow>(queries.select_build, [id]);
    return res.rows[0] ? toBuild(res.rows[0]) : undefined;
  }

  async getMany(ids: string[]): Promise<Map<string, Build>> {
    if (ids.length === 0) return new Map();
    const res = await this.db.query<BuildRow>(queries.select_builds, [JSON.stringify(ids)]);
    return new Map(res.rows.map((row) => [row.id, toBuild(row)]));
  }

  /**
   * Claims those of `ids` that are still queued (the Redis path's arbitration), within
   * `claimTimeoutMs`: a claim that has not committed by then (a link that silently drops packets, a
   * locked row) is abandoned, so that the caller puts the popped ids back into the index and another
   * worker claims them, instead of the builds waiting for this link to heal. The claim is only a
   * proposal until it commits. If it did commit on the server and only the answer was lost, the build
   * is leased to a worker that does not know it: nobody heartbeats that lease, another claimer's
   * conditional update refuses the build (it is no longer queued), and the reaper requeues it once
   * the lease expires; the lease (a fencing token) keeps any late write of this worker out.
   */
  async claimByIds(ids: string[], workerId: string, leaseMs: number): Promise<Build[]> {
    if (ids.length === 0) return [];
    const res = await this.db.query<BuildRow>(queries.claim_by_ids, [ids, workerId, leaseMs], {
      timeoutMs: this.claimTimeoutMs,
    });
    return res.rows.map(toBuild);
  }

  /**
   * Claims the next `count` ready builds in dispatch order (the PostgreSQL path), among the pools
   * whose requirements `labels` include.
   */
  async claimNext(
    count: number,
    workerId: string,
    leaseMs: number,
    labels: Record<string, string> = {},
  ): Promise<Build[]> {
    const res = await this.db.query<BuildRow>(queries.claim_next, [
      count,
      workerId,
      leaseMs,
      JSON.stringify(labels),
    ]);
    return res.rows.map(toBuild);
  }

  /**
   * Records results; returns the builds that changed (the others had a stale lease or a wrong state),
   * each read back whole when `readBack`, else only its id, lease and concurrency key.
   */
  async complete(inputs: CompletionInput[], readBack = true): Promise<CompletedBuild[]> {
    const payload = inputs.map((c) => ({
      id: c.id,
      lease: c.lease,
      result: c.result ?? null,
      logTail: c.logTail ?? null,
    }));
    const res = await this.db.query<
      BuildRow & { done_id: string; done_lease: number; done_key: string | null }
    >(queries.complete_builds, [JSON.stringify(payload), readBack]);
    return res.rows.map((row) => ({
      id: row.done_id,
      lease: Number(row.done_lease),
      concurrencyKey: row.done_key,
      build: readBack ? toBuild(row) : undefined,
    }));
  }

  async fail(inputs: FailureInput[], backoff: BackoffPolicy): Promise<RecordedFailure[]> {
    const res = await this.db.query<BuildRow & { delay_ms: number }>(queries.fail_builds, [
      JSON.stringify(inputs),
      backoff.baseDelayMs,
      backoff.maxDelayMs,
    ]);
    return res.rows.map((row) => ({ build: toBuild(row), delayMs: Number(row.delay_ms) }));
  }

  async removeQueued(id: string, actor: string, reason: string | null): Promise<Build | undefined> {
    const res = await this.db.query<BuildRow>(queries.remove_queued, [id, actor, reason]);
    return res.rows[0] ? toBuild(res.rows[0]) : undefined;
  }

  /** 1-based position of a ready build within its pool. */
  async position(priority: number, seq: number, pool: string = DEFAULT_POOL): Promise<number> {
    const res = await this.db.query<{ position: number }>(queries.queue_position, [priority, seq, pool]);
    return Number(res.rows[0]?.position ?? 1);
  }

  async length(): Promise<{ ready: number; delayed: number }> {
    const res = await this.db.query<{ ready: number; delayed: number }>(queries.queue_length);
    return { ready: Number(res.rows[0]?.ready ?? 0), delayed: Number(res.rows[0]?.delayed ?? 0) };
  }

  async countQueued(): Promise<number> {
    const res = await this.db.query<{ n: number }>(queries.count_queued);
    return Number(res.rows[0]?.n ?? 0);
  }

  async listQueued(limit: number, offset: number): Promise<Build[]> {
    const res = await this.db.query<BuildRow>(queries.list_queued, [limit, offset]);
    return res.rows.map(toBuild);
  }

  /**
   * One page of queued builds for the reconciler, after sequence number `afterSeq`. Sorting is
   * disabled for the page's statement: right after a burst of submits the planner's statistics count
   * few queued rows and it preferred reading every queued row and sorting them to walking
   * builds_queued_seq_idx, for every page (a rebuild of 10^6 builds took 90 s instead of 3 s).
   */
  async queuedIndexPage(afterSeq: number, pageSize: number): Promise<IndexEntry[]> {
    type Row = { id: string; pool: string; priority: number; seq: number; delay_ms: number };
    const res = await this.db.transaction(async (tx) => {
      await tx.query("SET LOCAL enable_sort = off");
      return tx.query<Row>(queries.queued_index_page, [afterSeq, pageSize]);
    });
    return res.rows.map((r) => ({
      id: r.id,
      pool: r.pool,
      priority: r.priority,
      seq: Number(r.seq),
      delayMs: Number(r.delay_ms),
    }));
  }

  /** The requirements of these pools (from build_pools), each pool once. */
  async poolRequirements(pools: string[]): Promise<Map<string, Record<string, string>>> {
    const distinct = [...new Set(pools)];
    const out = new Map<string, Record<string, string>>();
    if (distinct.length === 1 && distinct[0] === DEFAULT_POOL) return out.set(DEFAULT_POOL, {});
    const res = await this.db.query<{ id: string; requires: Record<string, string> }>(
      queries.pool_requirements,
      [distinct],
    );
    for (const row of res.rows) out.set(row.id, row.requires);
    return out;
  }

  /** Every known pool with its ready queued builds (the unrunnable check and per-pool capacity). */
  async poolBacklog(): Promise<{ pool: string; requires: Record<string, string>; ready: number }[]> {
    const res = await this.db.query<{ id: string; requires: Record<string, string>; ready: number }>(
      queries.pool_backlog,
    );
    return res.rows.map((r) => ({ pool: r.id, requires: r.requires, ready: Number(r.ready) }));
  }

  /** Average run time (seconds) of the recent completed builds of a strategy (null: of any), and how many. */
  async recentRuns(strategyId: string | null): Promise<{ avgSeconds: number; runs: number }> {
    const res =
      strategyId === null
        ? await this.db.query<{ avg_seconds: number; runs: number }>(queries.recent_runs_all)
        : await this.db.query<{ avg_seconds: number; runs: number }>(queries.recent_runs_strategy, [
            strategyId,
          ]);
    return { avgSeconds: Number(res.rows[0]?.avg_seconds ?? 0), runs: Number(res.rows[0]?.runs ?? 0) };
  }

  async queuedAmong(ids: string[]): Promise<Set<string>> {
    if (ids.length === 0) return new Set();
    const res = await this.db.query<{ id: string }>(queries.queued_among, [ids]);
    return new Set(res.rows.map((r) => r.id));
  }

  /** Marks a running build 'stopping'; undefined when it is not running. */
  async requestStop(id: string, actor: string, reason: string | null): Promise<Build | undefined> {
    const res = await this.db.query<BuildRow>(queries.request_stop, [id, actor, reason]);
    return res.rows[0] ? toBuild(res.rows[0]) : undefined;
  }

  /** Tells the workers listening on PostgreSQL that a build was asked to stop. */
  async notifyStop(channel: string, id: string): Promise<void> {
    await this.db.query(queries.notify, [channel, id]);
  }

  /** Wakes idle claimers on the PostgreSQL path (LISTEN/NOTIFY). */
  async notifyWork(): Promise<void> {
    await this.db.query(queries.notify, [this.wakeChannel, ""]);
  }

  /** Builds newest first; see list_builds.sql and list_builds_by_strategy.sql. */
  async list(filter: {
    status: BuildStatus | null;
    strategyId: string | null;
    beforeSeq: number | null;
    limit: number;
  }): Promise<Build[]> {
    const below = filter.beforeSeq ?? Number.MAX_SAFE_INTEGER;
    const res =
      filter.strategyId === null
        ? await this.db.query<BuildRow>(queries.list_builds, [filter.status, below, filter.limit])
        : await this.db.query<BuildRow>(queries.list_builds_by_strategy, [
            filter.status,
            filter.strategyId,
            below,
            filter.limit,
          ]);
    return res.rows.map(toBuild);
  }

  /** A failed or stopped build back to 'queued'; undefined when it is in another status. */
  async retry(id: string, actor: string): Promise<Build | undefined> {
    const res = await this.db.query<BuildRow>(queries.retry_build, [id, actor]);
    return res.rows[0] ? toBuild(res.rows[0]) : undefined;
  }
}
