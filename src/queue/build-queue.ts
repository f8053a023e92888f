/**
 * The BuildQueue: the library's one entry point. PostgreSQL is the record (every call that changes
 * something returns after its commit); Redis, when configured and healthy, is the fast dispatch index.
 * When Redis is unreachable or erroring, every operation runs on PostgreSQL instead, with no
 * caller-visible error; when it returns, the reconciler makes the index equal to PostgreSQL before the
 * fast path resumes. The current mode is `queue.mode`, announced by a "mode" event and a log line.
 */
import { EventEmitter } from "node:events";
import type { RedisOptions } from "ioredis";
import {
  BUILD_STATUSES,
  type Build,
  type BuildProgress,
  type BuildStatus,
  type ClaimedBuild,
  checkedString,
  MAX_REASON_CHARS,
  type ProgressInput,
  parseActor,
  parseBuildId,
  parseLease,
  parseOptionalText,
  parseProgress,
  parseResult,
  parseSubmit,
  parseSubmitMany,
  parseWorkerId,
  type SubmitInput,
  storableText,
} from "../core/build.js";
import {
  type ConcurrencyLimit,
  parseConcurrencyKey,
  parseConcurrencyLimit,
  type WaitingOn,
} from "../core/concurrency.js";
import { type Config, configInput, loadConfig, postgresSettingsOf, redactUrl } from "../core/config.js";
import { BuildNotFoundError, InvalidStateError, StaleLeaseError, ValidationError } from "../core/errors.js";
import type { StreamItem, SubscribeOptions } from "../core/events.js";
import { type Logger, silentLogger } from "../core/logger.js";
import { LABEL_KEY_PATTERN, satisfies } from "../core/pools.js";
import { encodeScore } from "../core/score.js";
import { type Admission, ConcurrencyStore, keysOf } from "../postgres/concurrency-store.js";
import { type Db, openPglite, openPostgres } from "../postgres/db.js";
import { EventStore } from "../postgres/event-store.js";
import { listFinished } from "../postgres/finished-store.js";
import { type LogChunkInput, type LogState, LogStore, type StoredLogChunk } from "../postgres/log-store.js";
import { migrate } from "../postgres/migrate.js";
import { ReconcileStore } from "../postgres/reconcile-store.js";
import { ScheduleStore } from "../postgres/schedule-store.js";
import {
  type BackoffPolicy,
  BuildStore,
  type CompletedBuild,
  type CompletionInput,
  type FailureInput,
  type InsertedBuild,
} from "../postgres/store.js";
import { WorkerStore } from "../postgres/worker-store.js";
import { connectRedis, RedisIndex } from "../redis/index-client.js";
import { Batcher } from "./batcher.js";
import { Claims } from "./claims.js";
import { DEFAULT_HUB_OPTIONS, EventHub, type EventHubOptions } from "./event-hub.js";
import { EventNotices } from "./event-notices.js";
import { type QueueMode, RedisFailover } from "./failover.js";
import { ProgressThrottle } from "./progress-throttle.js";
import type { ReconcileReport } from "./reconciler.js";
import { type PruneOptions, type PruneReport, prune } from "./retention.js";
import { type SchedulerOptions, Schedules, type TransactionalSubmit } from "./scheduler.js";
import { StopSignals } from "./stop-signals.js";
import { asStoreError } from "./store-errors.js";
import { WakeSignal } from "./wake.js";
import { DEFAULT_HEALTH, type HealthPolicy, WorkerRegistry, type WorkerView } from "./workers.js";

export type { QueueMode };

export interface BuildQueueOptions extends Partial<Config> {
  logger?: Logger;
  /** Retry backoff: min(maxDelayMs, baseDelayMs * 2^retryCount). Default 1 s, at most 5 min. */
  backoff?: BackoffPolicy;
  /** Apply migrations on open (default true). */
  migrate?: boolean;
  /** Extra ioredis options (Sentinel, TLS, timeouts). */
  redisOptions?: RedisOptions;
  /** PostgreSQL pool size (default 10). */
  poolSize?: number;
  /** Heartbeat interval and dead-worker timeout (default 2 s and 10 s). */
  health?: Partial<HealthPolicy>;
  /** At most one progress write per build run per this many ms (default 200). */
  progressIntervalMs?: number;
  /** Progress events kept per build (default 100); state-change events are all kept. */
  progressHistory?: number;
  /** The event hub's poll interval and limits (see event-hub.ts). */
  events?: Partial<EventHubOptions>;
  /** A build's whole log is kept up to this many bytes (default 10 MiB); then a marker line. */
  logMaxBytes?: number;
}

/** The default cap of one build's stored log. */
export const DEFAULT_LOG_MAX_BYTES = 10 * 1024 * 1024;

/** The build event stream (see BuildQueue.events). */
export interface EventStream {
  subscribe(options?: SubscribeOptions): AsyncGenerator<StreamItem>;
  /**
   * Throws ResumeTooOldError when resuming after `lastEventId` would replay more than `maxEvents`
   * events (the HTTP API's resume cap); see EventHub.checkResume.
   */
  checkResume(options: Omit<SubscribeOptions, "signal">, maxEvents: number): Promise<void>;
  /** The newest event id this process has read and dispatched (it stays put while nobody subscribes). */
  position(): number;
}

export interface ListOptions {
  /**
   * "submitted" (default): newest submitted first. "finished": finished builds only (completed,
   * failed, stopped), the latest finish first (a page may come back short: see list_finished.sql).
   */
  order?: "submitted" | "finished";
  status?: string;
  strategyId?: string;
  /** 1 to 1000 (default 50). */
  limit?: number;
  /** The `nextCursor` of the previous page. */
  cursor?: string;
}

export interface BuildPage {
  builds: Build[];
  /** Pass as `cursor` for the next page; null on the last page. */
  nextCursor: string | null;
}

export interface ClaimOptions {
  /** How long the claimed builds belong to this worker without a heartbeat (default: the dead-worker timeout). */
  leaseMs?: number;
  /**
   * The worker's labels: only builds whose `requires` they include are claimed (default {}: only
   * builds without requirements).
   */
  labels?: Record<string, string>;
}

/** A pool of builds with the same requirements (BuildQueue.pools). */
export interface PoolView {
  pool: string;
  requires: Record<string, string>;
  /** Queued builds (ready or waiting out a retry backoff). */
  queued: number;
  /** Live workers (active or stale) whose labels satisfy the pool's requirements. */
  workers: number;
  /** Their capacity (builds at once). */
  capacity: number;
  /** Their free slots now. */
  freeSlots: number;
  /** Builds wait here and no live worker can run them. */
  unrunnable: boolean;
}

export interface SubmitResult {
  build: Build;
  /** false when the idempotency key was seen before and this is the earlier build. */
  created: boolean;
  /** Builds this submit stopped (`supersede: true`): the still-queued builds of its strategy. */
  superseded?: string[];
}

export interface SubmitOneResult extends SubmitResult {
  /** 1-based position in its pool, null once the build is no longer waiting. */
  position: number | null;
  /** Estimated seconds until it starts (see etaSeconds); null when unknown or no worker can run it. */
  etaSeconds: number | null;
}

export interface ActorOptions {
  /** Who asks (recorded in the build's events). */
  actor?: string;
}

export interface ResultOptions {
  /** The last part of the build's output, kept with the build (at most 64 KiB are kept). */
  logTail?: string;
}

export interface CompleteOptions extends ResultOptions {
  /**
   * false: resolve to undefined once the completion has committed, without reading the build back
   * (a worker that only needs to know it was recorded; about a fifth of its CPU per build with no-op
   * builds). Default true: resolve to the completed build.
   */
  readBack?: boolean;
}

export interface FailOptions extends ResultOptions {
  /** false: fail for good even if retries remain (a permanent error). Default true. */
  retryable?: boolean;
}

const MAX_LOG_TAIL_CHARS = 64 * 1024;
/** The end of a log tail, as PostgreSQL can store it (build output may hold NULs: storableText). */
const keepTail = (text: string | undefined) =>
  text === undefined ? undefined : storableText(text.slice(-MAX_LOG_TAIL_CHARS));

/**
 * The housekeeping turn expires after this share of the interval: before the holder's next pass, so
 * it takes that one too (passes stay regular), yet soon enough that another process goes on at once
 * when the holder is gone.
 */
const HOUSEKEEPING_TURN_SHARE = 0.8;

/** Run-time averages for ETAs are read again after this long (pools: a tenth of it). */
const ETA_CACHE_MS = 10_000;
/** A strategy needs this many recent completed runs for its own average; else all builds' is used. */
const ETA_MIN_RUNS = 3;

const MAX_TIMER_MS = 2 ** 31 - 100;

/** The admission sweep looks at most at this many keys a pass. */
const ADMISSION_SWEEP_KEYS = 500;

const DEFAULT_BACKOFF: BackoffPolicy = { baseDelayMs: 1000, maxDelayMs: 300_000 };
const MAX_CLAIM = 1000;

export class BuildQueue extends EventEmitter {
  private readonly failover: RedisFailover;
  private readonly claims: Claims;
  private readonly stops: StopSignals;
  private readonly completions: Batcher<CompletionInput, Build | undefined>;
  /** Completions not read back (CompleteOptions.readBack false): true when recorded. */
  private readonly acknowledgements: Batcher<CompletionInput, boolean>;
  private readonly failures: Batcher<FailureInput, Build | undefined>;
  private readonly wake: WakeSignal;
  private readonly eventStore: EventStore;
  private readonly logStore: LogStore;
  private readonly hub: EventHub;
  private readonly notices: EventNotices;
  private readonly progressThrottle: ProgressThrottle;
  private closed = false;
  private readonly workerStore: WorkerStore;
  private readonly concurrency: ConcurrencyStore;
  private stopReaper: (() => void) | undefined;
  private stopScheduler: (() => Promise<void>) | undefined;
  /**
   * Recurring schedules: add, update, get, list, pause, resume, remove, and `runDue()` (one scheduler
   * pass). Builds are submitted only where the scheduler runs: startScheduler() (`oculus up` does).
   */
  readonly schedules: Schedules;
  /** Worker registration, heartbeats, the fleet's status and the reaper. */
  readonly workers: WorkerRegistry;

  private constructor(
    readonly store: BuildStore,
    index: RedisIndex | undefined,
    private readonly logger: Logger,
    private readonly backoff: BackoffPolicy,
    /** The validated settings this queue was opened with (workers start their heartbeat thread from them). */
    readonly config: Config,
    health: HealthPolicy,
    private readonly streamOptions: {
      progressIntervalMs: number;
      progressHistory: number;
      hub: EventHubOptions;
      logMaxBytes: number;
    },
  ) {
    super();
    this.workerStore = new WorkerStore(store.db);
    this.eventStore = new EventStore(store.db);
    this.logStore = new LogStore(store.db);
    this.concurrency = new ConcurrencyStore(store.db);
    this.workers = new WorkerRegistry(
      this.workerStore,
      (op) => this.failover.tryRedis(op),
      (builds) => this.indexBuilds(builds.map((build) => ({ build, delayMs: 0 }))),
      logger,
      health,
      (ids) => this.notices.announce(ids),
      (builds) => this.admitAfter(builds),
    );
    const eventsPgChannel = `oculus_events_${config.schema}`;
    const eventsRedisChannel = index?.keys.eventsChannel ?? "";
    this.hub = new EventHub(
      this.eventStore,
      store.db,
      eventsPgChannel,
      index?.redis,
      eventsRedisChannel,
      logger,
      streamOptions.hub,
    );
    this.notices = new EventNotices({
      publishRedis: async (payload) =>
        (await this.failover.tryRedis((i) => i.redis.publish(eventsRedisChannel, payload))).ok,
      notifyPostgres: (payload) => this.eventStore.notify(eventsPgChannel, payload),
      wakeLocal: () => this.hub.wake(),
    });
    this.progressThrottle = new ProgressThrottle(streamOptions.progressIntervalMs);
    this.stops = new StopSignals(
      store.db,
      `oculus_stop_${config.schema}`,
      index?.redis,
      index?.keys.stopChannel ?? "",
      logger,
    );
    this.failover = new RedisFailover(
      store,
      new ReconcileStore(store.db),
      index,
      logger,
      config.reconcileIntervalMs,
      {
        modeChanged: (mode, cause) => {
          this.emit("mode", mode, cause);
          this.wake.wakeAll(); // idle claimers retry at once, on the other path
        },
        reconciled: (report) => this.emit("reconciled", report),
      },
    );
    this.claims = new Claims(store, this.failover, logger, (builds) => this.indexBuilds(builds));
    this.completions = new Batcher(async (items) =>
      (await this.flushCompletions(items, true)).map((done) => done?.build),
    );
    this.acknowledgements = new Batcher(async (items) =>
      (await this.flushCompletions(items, false)).map((done) => done !== undefined),
    );
    this.failures = new Batcher((items) => this.flushFailures(items));
    this.wake = new WakeSignal(logger);
    this.schedules = new Schedules(
      new ScheduleStore(store.db),
      this.submitInTransaction,
      logger,
      `oculus_schedules_${config.schema}`,
    );
  }

  /**
   * Opens the queue: PostgreSQL (DATABASE_URL, else the embedded PGlite store under dataDir), the
   * migrations, and Redis when configured (REDIS_URL). Starts in PostgreSQL mode and switches to Redis
   * after the first reconcile, so the index is right before it serves a claim.
   */
  static async open(options: BuildQueueOptions = {}): Promise<BuildQueue> {
    // The library takes its settings from `options` only (the CLI reads the environment).
    const config = loadConfig(configInput(options), {});
    const logger = options.logger ?? silentLogger();
    const db: Db = config.databaseUrl
      ? await openPostgres(config.databaseUrl, config.schema, logger, {
          ...postgresSettingsOf(config),
          poolSize: options.poolSize,
        })
      : await openPglite(config.dataDir, config.schema);
    try {
      if (options.migrate !== false) await migrate(db);
    } catch (err) {
      await db.close();
      throw asStoreError(err);
    }
    const store = new BuildStore(db, `oculus_wake_${config.schema}`, config.pgClaimTimeoutMs);
    const redis = config.redisUrl ? connectRedis(config.redisUrl, options.redisOptions) : undefined;
    const index = redis ? new RedisIndex(redis, config.prefix) : undefined;
    const streamOptions = {
      progressIntervalMs: nonNegative("progressIntervalMs", options.progressIntervalMs ?? 200),
      progressHistory: nonNegative("progressHistory", options.progressHistory ?? 100),
      hub: { ...DEFAULT_HUB_OPTIONS, ...options.events },
      logMaxBytes: nonNegative("logMaxBytes", options.logMaxBytes ?? DEFAULT_LOG_MAX_BYTES),
    };
    const queue = new BuildQueue(
      store,
      index,
      logger,
      options.backoff ?? DEFAULT_BACKOFF,
      config,
      { ...DEFAULT_HEALTH, ...options.health },
      streamOptions,
    );
    logger.info(
      {
        postgres: config.databaseUrl ? redactUrl(config.databaseUrl) : `embedded PGlite at ${config.dataDir}`,
        redis: config.redisUrl ? redactUrl(config.redisUrl) : "none",
        schema: config.schema,
        prefix: config.prefix,
      },
      "build queue opening",
    );
    try {
      await queue.start();
    } catch (err) {
      // PostgreSQL went away between the migration and LISTEN: nothing may stay open (callers retry).
      await queue.close().catch(() => undefined);
      throw asStoreError(err);
    }
    return queue;
  }

  /** "redis": the Redis index dispatches. "postgres": PostgreSQL does everything. */
  get mode(): QueueMode {
    return this.failover.mode;
  }

  /** True when Redis is configured (whether or not it is reachable now). */
  get hasRedis(): boolean {
    return this.failover.index !== undefined;
  }

  private async start(): Promise<void> {
    await this.wake.start(
      this.store.db,
      this.store.wakeChannel,
      this.failover.index?.redis,
      this.failover.index?.keys.wakeChannel ?? "",
    );
    await this.failover.start();
  }

  // ---------------------------------------------------------------- submit and read

  /** Submits one build. Returns after the commit, with the build and its queue position. */
  async submit(input: SubmitInput, options: ActorOptions = {}): Promise<SubmitOneResult> {
    const request = parseSubmit(input);
    const [result] = await this.insertAndIndex([request], actorOf(options));
    if (!result) throw new Error("submit returned no build");
    const position = result.build.status === "queued" ? await this.positionOf(result.build) : null;
    const etaSeconds = await this.etaSeconds(result.build, position).catch(() => null);
    return { ...result, position, etaSeconds };
  }

  /** Submits many builds in one statement (all validated first: one bad input writes nothing). */
  async submitMany(inputs: SubmitInput[], options: ActorOptions = {}): Promise<SubmitResult[]> {
    return this.insertAndIndex(parseSubmitMany(inputs), actorOf(options));
  }

  private async insertAndIndex(
    requests: ReturnType<typeof parseSubmit>[],
    actor: string,
  ): Promise<SubmitResult[]> {
    const controlled = requests.some((r) => r.concurrencyKey !== undefined || r.supersede);
    const { results, superseded, admission } = await (controlled
      ? this.insertControlled(requests, actor)
      : this.store
          .insert(requests, actor)
          .then((results) => ({ results, superseded: [], admission: undefined }))
    ).catch((err) => {
      throw asStoreError(err);
    });
    await this.afterInsert(results, superseded, admission);
    return results.map(({ build, created }) => {
      const stopped = superseded.filter((s) => s.supersededBy === build.id).map((s) => s.id);
      return stopped.length > 0 ? { build, created, superseded: stopped } : { build, created };
    });
  }

  /**
   * A scheduled tick's submit (src/queue/scheduler.ts): the same insert, inside the scheduler's
   * transaction (which advances the schedule in the same commit); `afterCommit` does what a submit
   * does after its commit.
   */
  private readonly submitInTransaction: TransactionalSubmit = async (tx, request, actor) => {
    const [inserted] = await this.store.insert([request], actor, tx);
    if (!inserted) throw new Error("scheduled submit returned no build");
    // A schedule with a concurrency key: the tick's build is admitted (or held) in the same commit.
    const admission =
      inserted.created && inserted.build.concurrencyKey !== null
        ? await this.concurrency.admit(keysOf([inserted.build]), tx)
        : undefined;
    const admitted = admission?.admitted.find((b) => b.id === inserted.build.id);
    const result = admitted ? { ...inserted, build: admitted, delayMs: 0 } : inserted;
    return {
      build: result.build,
      created: result.created,
      afterCommit: () => this.afterInsert([result], [], admission),
    };
  };

  /**
   * After a submit's commit: index the new builds that may run (those with a concurrency key once
   * admitted), take the superseded ones out, wake claimers when they are due, announce them all.
   */
  private async afterInsert(
    results: InsertedBuild[],
    superseded: Build[] = [],
    admission?: Admission,
  ): Promise<void> {
    const fresh = results.filter((r) => r.created);
    const created = fresh.map((r) => r.build);
    // A new build may run now, or at its runAt (then it waits in the delayed set, like a backoff). A
    // build with a concurrency key is indexed only once admitted (applyAdmission, below).
    const ready = fresh.filter((r) => !r.build.held && r.build.concurrencyKey === null);
    if (ready.length > 0) {
      await this.indexBuilds(ready.map((r) => ({ build: r.build, delayMs: r.delayMs ?? 0 })));
      this.wakeWhenDue(ready.map((r) => r.delayMs ?? 0));
    }
    if (superseded.length > 0) await this.unindex(superseded);
    if (admission) await this.applyAdmission(admission);
    this.announce([...created, ...superseded]);
  }

  /**
   * A submit with concurrency keys or `supersede`, in one transaction: the insert, the supersede of
   * the strategies' older queued builds (supersede_builds.sql), and the admission of the keys' builds
   * (the new ones, and the next ones of keys whose superseded builds held a slot). The returned
   * builds carry their state after the admission.
   */
  private async insertControlled(requests: ReturnType<typeof parseSubmit>[], actor: string) {
    return this.store.db.transaction(async (tx) => {
      const inserted = await this.store.insert(requests, actor, tx);
      const superseding = inserted
        .filter((r, i) => r.created && requests[i]?.supersede)
        .map((r) => r.build.id);
      const superseded = await this.store.supersede(superseding, actor, tx);
      const fresh = inserted.filter((r) => r.created).map((r) => r.build);
      const admission = await this.concurrency.admit(keysOf([...fresh, ...superseded]), tx);
      const admitted = new Map(admission.admitted.map((b) => [b.id, b]));
      const results = inserted.map((r) => {
        const now = admitted.get(r.build.id);
        return now ? { ...r, build: now, delayMs: 0 } : r;
      });
      return { results, superseded, admission };
    });
  }

  /**
   * After a commit that admitted or held back builds of concurrency keys: the admitted ones go into
   * the index (or a NOTIFY wakes PostgreSQL-path claimers), the held-back ones leave it.
   */
  private async applyAdmission(admission: Admission): Promise<void> {
    if (admission.admitted.length > 0) {
      await this.indexBuilds(admission.admitted.map((build) => ({ build, delayMs: 0 })));
    }
    if (admission.heldBack.length > 0) await this.unindex(admission.heldBack);
  }

  /** Takes builds out of the Redis index (best effort: claim_by_ids.sql refuses them anyway). */
  private async unindex(builds: Build[]): Promise<void> {
    const byPool = new Map<string, string[]>();
    for (const b of builds) byPool.set(b.pool, [...(byPool.get(b.pool) ?? []), b.id]);
    for (const [pool, ids] of byPool) await this.failover.tryRedis((index) => index.remove(ids, pool), true);
  }

  /**
   * After builds left a slot of their concurrency key (completed, failed, stopped, removed, reaped)
   * or came back needing one (an operator's retry): admits the next waiting builds of those keys.
   * Never throws: the change itself has committed, and the admission sweep (startReaper) admits
   * what a failure here left waiting.
   */
  private async admitAfter(builds: Iterable<{ concurrencyKey: string | null }>): Promise<void> {
    const keys = keysOf(builds);
    if (keys.length === 0) return;
    try {
      const admission = await this.concurrency.admit(keys);
      await this.applyAdmission(admission);
      this.announce([...admission.admitted, ...admission.heldBack]);
    } catch (err) {
      this.logger.warn({ err: (err as Error).message, keys }, "admission after a build ended failed");
    }
  }

  /**
   * Admits waiting builds of keys with a free slot that no admission took (a build submitted with a
   * future runAt that is now due, or an admission lost with a process that died after its commit).
   */
  async admitWaiting(): Promise<number> {
    const keys = await this.concurrency.keysDue(ADMISSION_SWEEP_KEYS).catch((err) => {
      throw asStoreError(err);
    });
    if (keys.length === 0) return 0;
    const admission = await this.concurrency.admit(keys).catch((err) => {
      throw asStoreError(err);
    });
    await this.applyAdmission(admission);
    this.announce([...admission.admitted, ...admission.heldBack]);
    return admission.admitted.length;
  }

  // ---------------------------------------------------------------- concurrency limits

  /** A concurrency key's limit and how its builds stand (the default limit, 1, for a key never seen). */
  async limit(key: string): Promise<ConcurrencyLimit> {
    const checked = parseConcurrencyKey(key, "key");
    return this.concurrency.limit(checked).catch((err) => {
      throw asStoreError(err);
    });
  }

  /** Concurrency keys in key order (those used by a build or given a limit), after `after`. */
  async limits(options: { after?: string; limit?: number } = {}): Promise<ConcurrencyLimit[]> {
    const count = options.limit ?? 100;
    if (!Number.isInteger(count) || count < 1 || count > 1000) {
      throw new ValidationError("limit", "must be an integer from 1 to 1000");
    }
    const after = options.after === undefined ? "" : parseConcurrencyKey(options.after, "after");
    return this.concurrency.limits(after, count).catch((err) => {
      throw asStoreError(err);
    });
  }

  /**
   * Sets how many builds of `key` may run at once (1 to MAX_CONCURRENCY_LIMIT). Raising it admits
   * waiting builds at once; lowering it holds back builds admitted but not started (running builds
   * are never stopped: the key drains to the new limit as they end).
   */
  async setLimit(key: string, limit: number): Promise<ConcurrencyLimit> {
    const checkedKey = parseConcurrencyKey(key, "key");
    const checkedLimit = parseConcurrencyLimit(limit, "limit");
    const admission = await this.concurrency.setLimit(checkedKey, checkedLimit).catch((err) => {
      throw asStoreError(err);
    });
    await this.applyAdmission(admission);
    this.announce([...admission.admitted, ...admission.heldBack]);
    return this.limit(checkedKey);
  }

  /**
   * What a queued build waits on when its concurrency key's limit holds it back: the key, its running
   * builds and its limit; null for any other build.
   */
  async waitingOn(build: Build): Promise<WaitingOn | null> {
    if (build.status !== "queued" || !build.held || build.concurrencyKey === null) return null;
    const state = await this.limit(build.concurrencyKey);
    return { concurrencyKey: build.concurrencyKey, running: state.running, limit: state.limit };
  }

  /** Queued builds held back by their concurrency key's limit. */
  async countWaitingOnLimit(): Promise<number> {
    return this.concurrency.countHeld().catch((err) => {
      throw asStoreError(err);
    });
  }

  /**
   * After a commit: into the Redis index when Redis is up or recovering (the state is read after the
   * commit, so a build committed while Redis was down is covered by the recovery's reconcile), else a
   * PostgreSQL NOTIFY for idle claimers.
   */
  private async indexBuilds(builds: { build: Build; delayMs: number }[]): Promise<void> {
    const entries = builds.map(({ build, delayMs }) => ({
      id: build.id,
      pool: build.pool,
      requires: build.requires,
      score: encodeScore(build.priority, build.seq),
      delayMs,
    }));
    const indexed = await this.failover.tryRedis((index) => index.enqueue(entries), true);
    if (!indexed.ok) await this.store.notifyWork().catch(() => undefined);
  }

  async get(id: string): Promise<Build> {
    parseBuildId(id);
    const build = await this.store.get(id).catch((err) => {
      throw asStoreError(err);
    });
    if (!build) throw new BuildNotFoundError(id);
    return build;
  }

  /**
   * 1-based position among the ready queued builds of its pool (the builds that compete for the same
   * workers); null when the build is not waiting (running, finished, or waiting out a retry backoff).
   * O(log n) on Redis (ZRANK).
   */
  async position(id: string): Promise<number | null> {
    parseBuildId(id);
    return this.positionOf(await this.get(id));
  }

  /** position() of a build the caller has just read (its pool is known; on the PostgreSQL path it is not read again). */
  async positionOf(build: Build): Promise<number | null> {
    if (build.held) return null; // waiting on its concurrency key's limit: in no dispatch set (waitingOn)
    const fromRedis = await this.failover.tryRedis((index) => index.position(build.id, build.pool));
    if (fromRedis.ok && fromRedis.value.position !== null) return fromRedis.value.position;
    if (build.status !== "queued") return null;
    if (fromRedis.ok) return null; // not in the pool's ready set: claimed meanwhile, or delayed
    if (build.runAt.getTime() > Date.now()) return null;
    return this.store.position(build.priority, build.seq, build.pool);
  }

  /** Ready queued builds (those with a position); O(1) on Redis (ZCARD). */
  async length(): Promise<number> {
    return (await this.counts()).ready;
  }

  /** Queued builds: ready to dispatch, and delayed (waiting out a retry backoff). */
  async counts(): Promise<{ ready: number; delayed: number }> {
    const fromRedis = await this.failover.tryRedis((index) => index.length());
    if (fromRedis.ok) return fromRedis.value;
    return this.store.length().catch((err) => {
      throw asStoreError(err);
    });
  }

  /**
   * Every known pool: its requirements, queued builds (ready or delayed), and the live workers
   * (active or stale) whose labels satisfy it with their capacity. A pool with queued builds and no
   * such worker is `unrunnable`: its builds wait until a matching worker starts.
   */
  async pools(fleet?: WorkerView[]): Promise<PoolView[]> {
    const [backlog, workers] = await Promise.all([
      this.store.poolBacklog().catch((err) => {
        throw asStoreError(err);
      }),
      fleet ?? this.workers.list(),
    ]);
    const live = workers.filter((w) => w.status === "active" || w.status === "stale");
    return backlog.map(({ pool, requires, ready: queued }) => {
      const able = live.filter((w) => satisfies(w.labels, requires));
      return {
        pool,
        requires,
        queued,
        workers: able.length,
        capacity: able.reduce((n, w) => n + w.capacity, 0),
        freeSlots: able.reduce((n, w) => n + w.freeSlots, 0),
        unrunnable: queued > 0 && able.length === 0,
      };
    });
  }

  /**
   * Estimated seconds until a queued build starts; null when it is not queued, no live worker can run
   * it, or no build has completed yet to learn run times from. From the average run time of the
   * strategy's recent completed builds (at least ETA_MIN_RUNS of them, else of all builds), the
   * build's position in its pool and the pool's live capacity: a slot frees about every
   * `average / capacity` seconds, and the builds ahead take the free slots first:
   * `max(0, position - freeSlots) * average / capacity`, and at least its retry backoff.
   */
  async etaSeconds(build: Build, position: number | null, pools?: PoolView[]): Promise<number | null> {
    if (build.status !== "queued" || build.held) return null;
    const pool = (pools ?? (await this.cachedPools())).find((p) => p.pool === build.pool);
    if (!pool || pool.capacity === 0) return null;
    const average = await this.averageRunSeconds(build.strategyId);
    if (average === null) return null;
    const backoffSeconds = Math.max(0, (build.runAt.getTime() - Date.now()) / 1000);
    const ahead = Math.max(0, (position ?? 1) - pool.freeSlots);
    return Math.round(Math.max(backoffSeconds, (ahead * average) / pool.capacity));
  }

  private poolsCache: { at: number; pools: Promise<PoolView[]> } | undefined;
  private readonly runStats = new Map<string, { at: number; average: Promise<number | null> }>();

  /** pools(), read at most once a second for ETAs. */
  private cachedPools(): Promise<PoolView[]> {
    if (!this.poolsCache || Date.now() - this.poolsCache.at > ETA_CACHE_MS / 10) {
      const pools = this.pools();
      pools.catch(() => {
        this.poolsCache = undefined;
      });
      this.poolsCache = { at: Date.now(), pools };
    }
    return this.poolsCache.pools;
  }

  /** Average recent run time of a strategy (or of all builds), cached for ETA_CACHE_MS. */
  private averageRunSeconds(strategyId: string): Promise<number | null> {
    const cached = this.runStats.get(strategyId);
    if (cached && Date.now() - cached.at < ETA_CACHE_MS) return cached.average;
    const average = (async () => {
      const own = await this.store.recentRuns(strategyId);
      if (own.runs >= ETA_MIN_RUNS) return own.avgSeconds;
      const all = await this.store.recentRuns(null);
      return all.runs > 0 ? all.avgSeconds : own.runs > 0 ? own.avgSeconds : null;
    })();
    average.catch(() => this.runStats.delete(strategyId));
    if (this.runStats.size > 10_000) this.runStats.clear();
    this.runStats.set(strategyId, { at: Date.now(), average });
    return average;
  }

  /** Queued builds in dispatch order (ready first, then delayed retries), from the record. */
  async listQueued(options: { limit?: number; offset?: number } = {}): Promise<Build[]> {
    const limit = options.limit ?? 100;
    const offset = options.offset ?? 0;
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
      throw new ValidationError("limit", "must be an integer from 1 to 1000");
    }
    if (!Number.isInteger(offset) || offset < 0)
      throw new ValidationError("offset", "must be an integer >= 0");
    return this.store.listQueued(limit, offset).catch((err) => {
      throw asStoreError(err);
    });
  }

  /**
   * Stops a build. Queued: removed from the queue at once (status stopped). Running: status stopping,
   * and the owning worker is told wherever it runs (Redis pub/sub and PostgreSQL NOTIFY, plus the
   * status its heartbeats read): its handler's signal aborts, a build command gets SIGTERM then
   * SIGKILL, and the build ends stopped. Stopping already: returns it. Finished: InvalidStateError.
   */
  async stop(id: string, options: ActorOptions & { reason?: string } = {}): Promise<Build> {
    parseBuildId(id);
    const actor = actorOf(options);
    const reason = parseOptionalText(options.reason, "reason", MAX_REASON_CHARS);
    for (;;) {
      const build = await this.get(id);
      if (build.status === "queued") {
        try {
          return await this.remove(id, { actor, reason: reason ?? undefined });
        } catch (err) {
          if (err instanceof InvalidStateError) continue; // claimed meanwhile: stop it running
          throw err;
        }
      }
      if (build.status === "stopping") return build;
      if (build.status !== "running")
        throw new InvalidStateError(id, build.status, "stop", ["queued", "running"]);
      const stopping = await this.store.requestStop(id, actor, reason).catch((err) => {
        throw asStoreError(err);
      });
      if (!stopping) continue; // it changed meanwhile: look again
      this.announce([stopping]);
      await this.announceStop(id);
      return stopping;
    }
  }

  private async announceStop(id: string): Promise<void> {
    // Both: the owning worker may be on either path. A worker gets it twice at most; once is enough.
    await this.failover.tryRedis((index) => index.redis.publish(this.stops.redisChannel, id));
    await this.store.notifyStop(this.stops.pgChannel, id).catch(() => undefined);
  }

  /** Calls `listener` with the id of each build asked to stop (workers use it). */
  onStopRequested(listener: (buildId: string) => void): Promise<() => void> {
    return this.stops.subscribe(listener);
  }

  /** Removes a queued build for good (status stopped). 404 if unknown, 409 if it is not queued. */
  async remove(id: string, options: ActorOptions & { reason?: string } = {}): Promise<Build> {
    parseBuildId(id);
    const reason = parseOptionalText(options.reason, "reason", MAX_REASON_CHARS);
    const removed = await this.store.removeQueued(id, actorOf(options), reason).catch((err) => {
      throw asStoreError(err);
    });
    if (!removed) {
      const build = await this.get(id);
      throw new InvalidStateError(id, build.status, "remove", ["queued"]);
    }
    await this.failover.tryRedis((index) => index.remove([id], removed.pool), true);
    this.announce([removed]);
    await this.admitAfter([removed]);
    return removed;
  }

  /**
   * Runs a failed or stopped build again (an operator's retry): queued with its sequence number (front
   * of its priority), a fresh set of retries, its outcome cleared. InvalidStateError in other states.
   */
  async retry(id: string, options: ActorOptions = {}): Promise<Build> {
    parseBuildId(id);
    const retried = await this.store.retry(id, actorOf(options)).catch((err) => {
      throw asStoreError(err);
    });
    if (!retried) {
      const build = await this.get(id);
      throw new InvalidStateError(id, build.status, "retry", ["failed", "stopped"]);
    }
    this.announce([retried]);
    // A build with a concurrency key comes back held (retry_build.sql) and runs once admitted.
    if (retried.concurrencyKey === null) {
      await this.indexBuilds([{ build: retried, delayMs: 0 }]);
      return retried;
    }
    await this.admitAfter([retried]);
    return this.get(id);
  }

  /** Builds newest first, optionally of one status and/or strategy, a page at a time. */
  async list(options: ListOptions = {}): Promise<BuildPage> {
    const filter = parseListOptions(options);
    if (options.order === "finished") return this.listFinished(filter, options.cursor);
    const builds = await this.store.list(filter).catch((err) => {
      throw asStoreError(err);
    });
    const last = builds.at(-1);
    return { builds, nextCursor: builds.length === filter.limit && last ? encodeCursor(last.seq) : null };
  }

  /** Finished builds, the latest finish first (finished-store.ts); cursors name an event id. */
  private async listFinished(
    filter: ReturnType<typeof parseListOptions>,
    cursor: string | undefined,
  ): Promise<BuildPage> {
    if (filter.status !== null && !FINISHED_STATUSES.includes(filter.status)) {
      throw new ValidationError(
        "status",
        `with order=finished, must be one of ${FINISHED_STATUSES.join(", ")}`,
      );
    }
    const page = await listFinished(this.store.db, {
      status: filter.status,
      strategyId: filter.strategyId,
      beforeEventId: cursor === undefined ? null : decodeFinishedCursor(cursor),
      limit: filter.limit,
    }).catch((err) => {
      throw asStoreError(err);
    });
    const next = page.nextBeforeEventId;
    return { builds: page.builds, nextCursor: next === null ? null : encodeFinishedCursor(next) };
  }

  /** How many builds are in each status (a full count: for monitoring). */
  async statusCounts(): Promise<Record<BuildStatus, number>> {
    return this.eventStore.statusCounts().catch((err) => {
      throw asStoreError(err);
    });
  }

  /**
   * Deletes finished builds (completed, failed, stopped) that finished at least `olderThanMs` ago,
   * with their events, and forgets workers unheard of for as long; `dryRun` only counts. Queued and
   * running builds are never deleted. See src/queue/retention.ts.
   */
  async prune(options: PruneOptions): Promise<PruneReport> {
    return prune(this.store.db, options).catch((err) => {
      throw asStoreError(err);
    });
  }

  // ---------------------------------------------------------------- the event stream

  /**
   * The build event stream as an async iterator: with `buildId`, one build's events (ending after
   * its final one), else every build's. It starts with a snapshot of the current state, or, given
   * `lastEventId`, with the events after it (what a reconnecting subscriber missed); then live events,
   * each once and in id order. Ends when `signal` aborts or the queue closes.
   */
  readonly events: EventStream = {
    subscribe: (options: SubscribeOptions = {}) => this.hub.subscribe(options),
    checkResume: (options, maxEvents) =>
      this.hub.checkResume(options, maxEvents).catch((err) => {
        throw asStoreError(err);
      }),
    position: () => this.hub.position,
  };

  /** Tells subscribers everywhere that these builds changed (after the commit; never awaited). */
  private announce(builds: Iterable<{ id: string }>): void {
    const ids = [...builds].map((b) => b.id);
    if (ids.length > 0) this.notices.announce(ids);
  }

  // ---------------------------------------------------------------- claim and results

  /**
   * Claims up to `count` builds for a worker, in dispatch order. Each claimed build carries its lease:
   * present it to complete() and fail(). Returns [] when nothing is ready.
   */
  async claim(workerId: string, count = 1, options: ClaimOptions = {}): Promise<ClaimedBuild[]> {
    parseWorkerId(workerId);
    if (!Number.isInteger(count) || count < 1 || count > MAX_CLAIM) {
      throw new ValidationError("count", `must be an integer from 1 to ${MAX_CLAIM}`);
    }
    const leaseMs = options.leaseMs ?? this.workers.health.deadAfterMs;
    if (!Number.isInteger(leaseMs) || leaseMs < 100) {
      throw new ValidationError("leaseMs", "must be an integer number of milliseconds, at least 100");
    }
    const started = performance.now();
    try {
      const claimed = await this.claims.next(workerId, count, leaseMs, parseLabels(options.labels ?? {}));
      this.announce(claimed);
      // For the HTTP API's claim and dispatch latency histograms (src/http/metrics.ts).
      if (claimed.length > 0)
        this.emit("claimed", { durationMs: performance.now() - started, builds: claimed });
      return claimed;
    } catch (err) {
      throw asStoreError(err);
    }
  }

  /**
   * Records a build's success. Fenced: a stale lease is refused with StaleLeaseError and changes
   * nothing. Repeating a completion that already committed returns the build. A result jsonb cannot
   * store (a NUL or lone surrogate in a string, a non-JSON value) is refused with ValidationError
   * naming where (core/build.ts parseResult); the log tail is cleaned (storableText).
   */
  complete(
    id: string,
    lease: number,
    result?: unknown,
    options?: CompleteOptions & { readBack?: true },
  ): Promise<Build>;
  complete(
    id: string,
    lease: number,
    result: unknown,
    options: CompleteOptions & { readBack: false },
  ): Promise<undefined>;
  complete(
    id: string,
    lease: number,
    result?: unknown,
    options?: CompleteOptions,
  ): Promise<Build | undefined>;
  async complete(
    id: string,
    lease: number,
    result: unknown = null,
    options: CompleteOptions = {},
  ): Promise<Build | undefined> {
    parseBuildId(id);
    parseLease(lease);
    const input = { id, lease, result: parseResult(result), logTail: keepTail(options.logTail) };
    await this.flushProgress(id, lease);
    if (options.readBack === false) {
      const recorded = await this.acknowledgements.run(input).catch((err) => {
        throw asStoreError(err);
      });
      // Not recorded: a repeat of a completion that committed is still an answer, the rest throw.
      if (!recorded) await this.explainRefusal(id, lease, "complete", "completed");
      return undefined;
    }
    const done = await this.completions.run(input).catch((err) => {
      throw asStoreError(err);
    });
    return done ?? this.explainRefusal(id, lease, "complete", "completed");
  }

  /**
   * Records a build's failure. While retries remain (and the error is retryable) the build is requeued
   * with its original sequence number after an exponential backoff and a new lease; otherwise it ends
   * failed. Fenced like complete().
   */
  async fail(id: string, lease: number, error: string, options: FailOptions = {}): Promise<Build> {
    parseBuildId(id);
    parseLease(lease);
    if (typeof error !== "string") throw new ValidationError("error", "must be a string");
    const input = {
      id,
      lease,
      error: storableText(error.slice(0, 10_000)),
      retryable: options.retryable ?? true,
      logTail: keepTail(options.logTail),
    };
    await this.flushProgress(id, lease);
    const failed = await this.failures.run(input).catch((err) => {
      throw asStoreError(err);
    });
    return failed ?? this.explainRefusal(id, lease, "fail", "failed");
  }

  // A batch may hold the same build twice (a stale lease next to the current one): a changed row
  // answers only the item whose lease changed it, so the stale caller gets StaleLeaseError.
  private async flushCompletions(
    items: CompletionInput[],
    readBack: boolean,
  ): Promise<(CompletedBuild | undefined)[]> {
    const done = new Map((await this.store.complete(items, readBack)).map((b) => [b.id, b]));
    this.announce(done.values());
    await this.admitAfter(done.values());
    return items.map((i) => {
      const completed = done.get(i.id);
      return completed?.lease === i.lease ? completed : undefined;
    });
  }

  private async flushFailures(items: FailureInput[]): Promise<(Build | undefined)[]> {
    const recorded = await this.store.fail(items, this.backoff);
    this.announce(recorded.map((r) => r.build));
    const requeued = recorded.filter((r) => r.build.status === "queued");
    if (requeued.length > 0) await this.indexBuilds(requeued);
    this.wakeWhenDue(requeued.map((r) => r.delayMs));
    // A requeued build keeps its slot; a failed or stopped one frees it.
    await this.admitAfter(recorded.filter((r) => r.build.status !== "queued").map((r) => r.build));
    const byId = new Map(recorded.map((r) => [r.build.id, r.build]));
    return items.map((i) => {
      const build = byId.get(i.id);
      // A requeue bumped the lease (fail_builds.sql); a final failure kept it.
      const lease = build?.status === "queued" ? i.lease + 1 : i.lease;
      return build?.lease === lease ? build : undefined;
    });
  }

  /**
   * Idle claimers of this process wake when a retry's backoff ends, instead of at their next poll
   * (other processes' claimers find it at their next poll, at most a second later).
   */
  private wakeWhenDue(delaysMs: number[]): void {
    const soonest = Math.min(...delaysMs.filter((d) => d > 0));
    // Past a timer's range (24.8 days: a far runAt) the claimers' poll finds it instead.
    if (Number.isFinite(soonest) && soonest < MAX_TIMER_MS)
      setTimeout(() => this.wake.wakeAll(), soonest + 5).unref();
  }

  /** Why a fenced write changed nothing; an already-recorded identical write returns the build. */
  private async explainRefusal(
    id: string,
    lease: number,
    operation: string,
    endStatus: string,
  ): Promise<Build> {
    const build = await this.get(id);
    if (build.lease !== lease) throw new StaleLeaseError(id, lease, build.lease, build.status);
    if (build.status === endStatus) return build;
    throw new InvalidStateError(id, build.status, operation, ["running", "stopping"]);
  }

  /**
   * A worker's progress for a build: stored as the build's latest progress (and its phase) and sent
   * on the event stream. Fenced: StaleLeaseError when the build was taken from this worker
   * (requeued, stopped), which must then abandon it. Throttled per run (progressIntervalMs): calls
   * in between are coalesced into the next write of the newest value, which they all wait for.
   */
  async reportProgress(id: string, lease: number, progress: ProgressInput): Promise<void> {
    parseBuildId(id);
    parseLease(lease);
    const update = { ...parseProgress(storableProgress(progress)), at: new Date().toISOString() };
    await this.progressThrottle.report(`${id}:${lease}`, () => this.writeProgress(id, lease, update));
  }

  private async writeProgress(id: string, lease: number, update: BuildProgress): Promise<void> {
    const keep = this.streamOptions.progressHistory;
    const eventId = await this.eventStore.recordProgress(id, lease, update, keep).catch((err) => {
      throw asStoreError(err);
    });
    if (eventId !== undefined) {
      this.notices.announce([id]);
      return;
    }
    const build = await this.get(id);
    if (build.lease !== lease) throw new StaleLeaseError(id, lease, build.lease, build.status);
    throw new InvalidStateError(id, build.status, "report progress for", ["running", "stopping"]);
  }

  /**
   * Appends output to a build's whole log (a worker does, in batches): fenced by the lease like
   * progress (StaleLeaseError when the build was taken from the caller), capped at logMaxBytes per
   * build (past it one marker line, then nothing). Text PostgreSQL cannot hold (NUL) is dropped.
   */
  async appendLog(id: string, lease: number, chunks: LogChunkInput[]): Promise<{ truncated: boolean }> {
    parseBuildId(id);
    parseLease(lease);
    const storable = chunks
      .filter((c) => c.text !== "")
      .map((c) => ({ stream: c.stream, at: c.at, text: storableText(c.text) }));
    if (storable.length === 0) return { truncated: false };
    const outcome = await this.logStore
      .append(id, lease, storable, this.streamOptions.logMaxBytes)
      .catch((err) => {
        throw asStoreError(err);
      });
    if (outcome !== "stale") return { truncated: outcome.truncated };
    const build = await this.get(id);
    if (build.lease !== lease) throw new StaleLeaseError(id, lease, build.lease, build.status);
    throw new InvalidStateError(id, build.status, "append to the log of", ["running", "stopping"]);
  }

  /** A build's status and log size (BuildNotFoundError when there is no such build). */
  async logState(id: string): Promise<LogState> {
    parseBuildId(id);
    const state = await this.logStore.state(id).catch((err) => {
      throw asStoreError(err);
    });
    if (!state) throw new BuildNotFoundError(id);
    return state;
  }

  /** Up to `limit` chunks of a build's log holding bytes at or after `offset`, in order. */
  async readLog(id: string, offset: number, limit = 256): Promise<StoredLogChunk[]> {
    parseBuildId(id);
    return this.logStore.read(id, offset, limit).catch((err) => {
      throw asStoreError(err);
    });
  }

  /** A run's pending progress goes out before its result (subscribers see the last step first). */
  private async flushProgress(id: string, lease: number): Promise<void> {
    await this.progressThrottle.flush(`${id}:${lease}`).catch(() => undefined);
  }

  /**
   * Runs the housekeeping pass (the reaper, then the admission sweep) every `intervalMs` (default
   * 1 s) until close(). Any number of processes may run it, and the fleet as a whole makes about one
   * pass per interval: with Redis up, a pass needs the fleet-wide turn (a SET NX that expires a little
   * before the interval ends, so the process that took it usually takes the next one too); without
   * Redis every process makes its own, and a PostgreSQL advisory lock keeps one reaper at a time.
   * An idle fleet of eleven processes made eleven passes a second, five statements each.
   */
  startReaper(intervalMs = 1000): void {
    this.stopReaper ??= this.startHousekeeping(intervalMs);
  }

  private startHousekeeping(intervalMs: number): () => void {
    let running = false;
    const timer = setInterval(() => {
      if (running) return;
      running = true;
      this.housekeepingPass(intervalMs).finally(() => {
        running = false;
      });
    }, intervalMs);
    timer.unref();
    return () => clearInterval(timer);
  }

  /** One pass if this process has the turn. Never throws: a failed step is logged and tried next pass. */
  private async housekeepingPass(intervalMs: number): Promise<void> {
    const turnMs = Math.max(1, Math.floor(intervalMs * HOUSEKEEPING_TURN_SHARE));
    const turn = await this.failover.tryRedis((index) => index.takeHousekeepingTurn(turnMs));
    if (turn.ok && !turn.value) return; // another process has this interval's pass
    await this.workers
      .reapOnce()
      .catch((err: Error) => this.logger.warn({ err: err.message }, "reaper pass failed"));
    await this.admitWaiting().catch((err: Error) =>
      this.logger.warn({ err: err.message }, "admission sweep failed"),
    );
  }

  /**
   * Runs the scheduler loop in this process until close(): each due tick of every schedule submits
   * one build (src/queue/scheduler.ts). Off unless called (`oculus up` calls it). Any number of
   * processes may run it: a tick is submitted once however many do.
   */
  startScheduler(options: SchedulerOptions = {}): void {
    this.stopScheduler ??= this.schedules.start(options);
  }

  /**
   * Resolves when work may be ready (a submit or requeue was announced on Redis or PostgreSQL), after
   * `timeoutMs`, or when `signal` aborts. Idle claimers call it between empty claims.
   */
  waitForWork(timeoutMs = 1000, signal?: AbortSignal): Promise<void> {
    return this.wake.wait(timeoutMs, signal);
  }

  /**
   * Makes the Redis index equal to the queued builds in PostgreSQL now (`oculus reconcile`); see
   * failover.ts and reconciler.ts.
   */
  reconcile(): Promise<ReconcileReport> {
    return this.failover.reconcile();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopReaper?.();
    await this.stopScheduler?.();
    await this.hub.close();
    await this.claims.flushSettled();
    await this.failover.close();
    await this.stops.stop();
    await this.wake.stop();
    await this.store.db.close();
  }
}

/** Who asked (recorded with the build's events): "api" unless given; refused if PostgreSQL cannot store it. */
function actorOf(options: ActorOptions): string {
  return options.actor === undefined ? "api" : parseActor(options.actor);
}

/** Progress text as PostgreSQL can store it (storableText); anything else is left to parseProgress. */
function storableProgress(progress: ProgressInput): ProgressInput {
  if (typeof progress !== "object" || progress === null) return progress;
  const { phase, message } = progress;
  return {
    ...progress,
    ...(typeof phase === "string" ? { phase: storableText(phase) } : {}),
    ...(typeof message === "string" ? { message: storableText(message) } : {}),
  };
}

/** Worker labels: string values under the same key rules as a build's `requires`. */
export function parseLabels(labels: unknown, field = "labels"): Record<string, string> {
  if (typeof labels !== "object" || labels === null || Array.isArray(labels)) {
    throw new ValidationError(field, "must be an object of string labels");
  }
  for (const [key, value] of Object.entries(labels)) {
    if (!LABEL_KEY_PATTERN.test(key)) {
      throw new ValidationError(`${field}.${key}`, "keys must be 1-63 letters, digits, '.', '_', '/' or '-'");
    }
    if (typeof value !== "string") throw new ValidationError(`${field}.${key}`, "must be a string");
  }
  return labels as Record<string, string>;
}

function nonNegative(field: string, value: number): number {
  if (!Number.isInteger(value) || value < 0) throw new ValidationError(field, "must be an integer >= 0");
  return value;
}

const encodeCursor = (seq: number) => Buffer.from(`seq:${seq}`).toString("base64url");

function decodeCursor(cursor: string): number {
  const match = /^seq:(\d{1,16})$/.exec(Buffer.from(cursor, "base64url").toString());
  if (!match?.[1]) throw new ValidationError("cursor", "is not a cursor returned by a previous page");
  return Number(match[1]);
}

const FINISHED_STATUSES: readonly BuildStatus[] = ["completed", "failed", "stopped"];
const encodeFinishedCursor = (eventId: number) => Buffer.from(`fin:${eventId}`).toString("base64url");

function decodeFinishedCursor(cursor: string): number {
  const match = /^fin:(\d{1,16})$/.exec(Buffer.from(cursor, "base64url").toString());
  if (!match?.[1])
    throw new ValidationError("cursor", "is not a cursor returned by a previous page of this order");
  return Number(match[1]);
}

function parseListOptions(options: ListOptions) {
  const order = options.order ?? "submitted";
  if (order !== "submitted" && order !== "finished") {
    throw new ValidationError("order", "must be submitted or finished");
  }
  const limit = options.limit ?? 50;
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
    throw new ValidationError("limit", "must be an integer from 1 to 1000");
  }
  const status = options.status ?? null;
  if (status !== null && !(BUILD_STATUSES as readonly string[]).includes(status)) {
    throw new ValidationError("status", `must be one of ${BUILD_STATUSES.join(", ")}`);
  }
  const strategyId = options.strategyId ?? null;
  if (
    strategyId !== null &&
    (typeof strategyId !== "string" || strategyId.length === 0 || strategyId.length > 200)
  ) {
    throw new ValidationError("strategyId", "must be a non-empty string of at most 200 characters");
  }
  if (strategyId !== null) checkedString(strategyId, "strategyId");
  const beforeSeq =
    options.cursor === undefined || order === "finished" ? null : decodeCursor(options.cursor);
  return { status: status as BuildStatus | null, strategyId, beforeSeq, limit };
}
