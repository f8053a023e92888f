/**
 * The worker runtime: registers itself, claims up to its free capacity, runs each build's handler
 * with a context (the build, its lease, an AbortSignal, progress and log), reports results with the
 * lease, and heartbeats so that its builds stay its own. It abandons a build the moment PostgreSQL
 * says the build was taken from it (requeued by the reaper after this worker was frozen or cut off,
 * or stopped): the handler's signal aborts, and nothing it reports is accepted any more.
 *
 * Heartbeats run in a thread of their own (heartbeat-thread.ts) when the queue is on a PostgreSQL
 * server, so a handler that computes for seconds without yielding cannot make its worker look dead.
 * On the embedded store (one process, one connection) they run on the event loop.
 */
import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { hostname } from "node:os";
import { Worker as Thread } from "node:worker_threads";
import type { ClaimedBuild, ProgressInput } from "../core/build.js";
import { postgresSettingsOf } from "../core/config.js";
import { OculusError, StaleLeaseError, StoreUnavailableError } from "../core/errors.js";
import { type Logger, silentLogger } from "../core/logger.js";
import type { HeldStatus } from "../postgres/worker-store.js";
import type { BuildQueue } from "../queue/build-queue.js";
import { runClaimLoop } from "./claim-loop.js";
import type { HeartbeatCommand, HeartbeatMessage, HeartbeatThreadData } from "./heartbeat-thread.js";

export interface BuildContext {
  build: ClaimedBuild;
  lease: number;
  /** Aborts when the build is stopped, taken from this worker, or the worker shuts down. */
  signal: AbortSignal;
  /** Reports progress (fenced by the lease). */
  progress(update: ProgressInput): Promise<void>;
  /** A line of the build's log (kept in the log tail that goes with a failure). */
  log(line: string): void;
}

export type WorkerHandler = (ctx: BuildContext) => Promise<unknown>;

export interface WorkerOptions {
  handler: WorkerHandler;
  /** Default: hostname:pid:random. */
  id?: string;
  /** Builds run at once (default 1). */
  capacity?: number;
  labels?: Record<string, string>;
  version?: string;
  /** On shutdown, how long running builds may take to finish before they are handed back (default 30 s). */
  drainMs?: number;
  logger?: Logger;
}

/** Why a running build's signal aborted. */
export class BuildAbandoned extends Error {
  constructor(
    readonly buildId: string,
    readonly why: "lease lost" | "worker shutdown" | "stopped",
  ) {
    super(`build ${buildId}: ${why}`);
    this.name = "BuildAbandoned";
  }
}

/** What a handler's run hands to the result report. */
interface HandlerOutcome {
  value: unknown;
  logTail: string | undefined;
}

/** A handler's failure, with the build's output to keep with it. */
class HandlerFailure extends Error {
  constructor(
    message: string,
    readonly logTail: string | undefined,
  ) {
    super(message);
  }
}

/**
 * How a build's run ended on this worker: its handler returned (completed) or threw (failed), or its
 * signal aborted because the build was stopped, or taken from this worker (lease lost, shutdown).
 */
export type RunOutcome = "completed" | "failed" | "stopped" | "abandoned";

/** Emitted as "build-ended" after each run (metrics, logs). */
export interface BuildEndedEvent {
  build: ClaimedBuild;
  outcome: RunOutcome;
  durationMs: number;
}

interface RunningBuild {
  build: ClaimedBuild;
  controller: AbortController;
  /** The last lines of output, at most LOG_TAIL_CHARS characters. */
  logTail: string[];
  logChars: number;
}

/** The heartbeat thread's entry: the built .js next to this file, or the .ts source under tests. */
function threadEntry(): string {
  const ext = import.meta.url.endsWith(".ts") ? ".ts" : ".js";
  return new URL(`./heartbeat-thread${ext}`, import.meta.url).href;
}

/** Output kept with the build (the column keeps as much). */
const LOG_TAIL_CHARS = 64 * 1024;
/** Lines of output quoted in a failure's error message. */
const ERROR_TAIL_LINES = 20;

function appendLog(entry: RunningBuild, line: string): void {
  entry.logTail.push(line);
  entry.logChars += line.length + 1;
  while (entry.logChars > LOG_TAIL_CHARS && entry.logTail.length > 1) {
    entry.logChars -= (entry.logTail.shift() ?? "").length + 1;
  }
}

/** A handler that threw after its signal aborted ended because of the abort. */
function abortedOutcome(signal: AbortSignal): RunOutcome | undefined {
  if (!signal.aborted) return undefined;
  return signal.reason instanceof BuildAbandoned && signal.reason.why === "stopped" ? "stopped" : "abandoned";
}

function logText(entry: RunningBuild): string | undefined {
  return entry.logTail.length > 0 ? entry.logTail.join("\n") : undefined;
}
const REPORT_RETRY_MS = 500;

/** Emits "build-ended" (BuildEndedEvent) after each run. */
export class Worker extends EventEmitter {
  readonly id: string;
  private readonly capacity: number;
  private readonly logger: Logger;
  private readonly running = new Map<string, RunningBuild>();
  private readonly loopController = new AbortController();
  private loop: Promise<void> | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private heartbeatThread: Thread | undefined;
  private unsubscribeStops: (() => void) | undefined;
  private stopping = false;
  private lastHeartbeatAt: number | undefined;

  constructor(
    private readonly queue: BuildQueue,
    private readonly options: WorkerOptions,
  ) {
    super();
    this.id = options.id ?? `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
    this.capacity = options.capacity ?? 1;
    this.logger = (options.logger ?? silentLogger()).child({ workerId: this.id });
    if (!Number.isInteger(this.capacity) || this.capacity < 1) {
      throw new OculusError("invalid_input", 400, "capacity: must be a positive integer");
    }
  }

  /** Builds running now. */
  get activeBuilds(): number {
    return this.running.size;
  }

  /** Builds run at once at most. */
  get slots(): number {
    return this.capacity;
  }

  /** Since the last heartbeat PostgreSQL answered, in ms (undefined before the first). */
  heartbeatAgeMs(): number | undefined {
    return this.lastHeartbeatAt === undefined ? undefined : Date.now() - this.lastHeartbeatAt;
  }

  async start(): Promise<void> {
    await this.queue.workers.register({
      id: this.id,
      hostname: hostname(),
      pid: process.pid,
      capacity: this.capacity,
      labels: this.options.labels ?? {},
      version: this.options.version ?? "0.1.0",
    });
    this.unsubscribeStops = await this.queue.onStopRequested((buildId) => {
      const entry = this.running.get(buildId);
      if (entry) this.abandon(entry, "stopped");
    });
    this.startHeartbeats();
    this.loop = runClaimLoop(
      {
        claim: (count) => this.queue.claim(this.id, count),
        wait: (ms, signal) => this.queue.waitForWork(ms, signal),
        complete: (build, outcome) => {
          const { value, logTail } = outcome as HandlerOutcome;
          return this.report(build, () => this.queue.complete(build.id, build.lease, value, { logTail }));
        },
        fail: (build, err) => {
          const logTail = err instanceof HandlerFailure ? err.logTail : undefined;
          return this.report(build, () => this.queue.fail(build.id, build.lease, err.message, { logTail }));
        },
        onError: (err) =>
          this.logger.warn(
            { err: (err as Error).message },
            "claim or result report failed; the loop goes on",
          ),
      },
      (build) => this.run(build),
      { concurrency: this.capacity, signal: this.loopController.signal },
    );
    this.logger.info({ capacity: this.capacity }, "worker started");
  }

  private async run(build: ClaimedBuild): Promise<HandlerOutcome> {
    const controller = new AbortController();
    const entry: RunningBuild = { build, controller, logTail: [], logChars: 0 };
    this.running.set(build.id, entry);
    this.runningChanged();
    const started = performance.now();
    let outcome: RunOutcome = "failed";
    try {
      const value = await this.options.handler({
        build,
        lease: build.lease,
        signal: controller.signal,
        progress: (update) => this.progress(entry, update),
        log: (line) => appendLog(entry, line),
      });
      outcome = "completed";
      return { value, logTail: logText(entry) };
    } catch (err) {
      outcome = abortedOutcome(controller.signal) ?? "failed";
      const message = err instanceof Error ? err.message : String(err);
      const lastLines = entry.logTail.slice(-ERROR_TAIL_LINES);
      const tail = lastLines.length > 0 ? `\n--- last output ---\n${lastLines.join("\n")}` : "";
      throw new HandlerFailure(`${message}${tail}`, logText(entry));
    } finally {
      if (this.running.get(build.id) === entry) this.running.delete(build.id);
      this.runningChanged();
      this.emit("build-ended", {
        build,
        outcome,
        durationMs: performance.now() - started,
      } satisfies BuildEndedEvent);
    }
  }

  /** The builds this worker runs, as heartbeats name them (only those keep their leases). */
  private runningBuilds(): { id: string; lease: number }[] {
    return [...this.running.values()].map((e) => ({ id: e.build.id, lease: e.build.lease }));
  }

  private runningChanged(): void {
    this.heartbeatThread?.postMessage({
      type: "running",
      builds: this.runningBuilds(),
    } satisfies HeartbeatCommand);
  }

  private async progress(entry: RunningBuild, update: ProgressInput): Promise<void> {
    try {
      await this.queue.reportProgress(entry.build.id, entry.build.lease, update);
    } catch (err) {
      if (err instanceof StaleLeaseError) this.abandon(entry, "lease lost");
      throw err;
    }
  }

  /**
   * Reports a result. While no store can take it (PostgreSQL unreachable), it keeps trying: a result
   * is never dropped. A stale lease means the build was taken from this worker: the result is
   * refused, and that is final.
   */
  private async report(build: ClaimedBuild, write: () => Promise<unknown>): Promise<void> {
    for (;;) {
      try {
        await write();
        return;
      } catch (err) {
        if (err instanceof StaleLeaseError) {
          this.logger.warn({ buildId: build.id }, "result refused: the build was taken from this worker");
          return;
        }
        if (!(err instanceof StoreUnavailableError)) throw err;
        this.logger.warn({ buildId: build.id, err: err.message }, "cannot record the result yet; retrying");
        await new Promise((r) => setTimeout(r, REPORT_RETRY_MS));
      }
    }
  }

  private startHeartbeats(): void {
    const { config } = this.queue;
    const health = this.queue.workers.health;
    if (!config.databaseUrl) {
      void this.heartbeat();
      this.heartbeatTimer = setInterval(() => void this.heartbeat(), health.heartbeatMs);
      return;
    }
    const file = threadEntry();
    const workerData: HeartbeatThreadData = {
      databaseUrl: config.databaseUrl,
      schema: config.schema,
      redisUrl: config.redisUrl,
      prefix: config.prefix,
      workerId: this.id,
      heartbeatMs: health.heartbeatMs,
      deadAfterMs: health.deadAfterMs,
      postgres: postgresSettingsOf(config),
    };
    const thread = file.endsWith(".ts")
      ? // From the sources (tests): register the TypeScript loader in the thread, then load the entry.
        new Thread(
          `import("tsx/esm/api").then((m) => { m.register(); return import(${JSON.stringify(file)}); })`,
          {
            eval: true,
            workerData,
          },
        )
      : new Thread(new URL(file), { workerData });
    thread.on("message", (message: HeartbeatMessage) => {
      if (message.type === "held") {
        this.lastHeartbeatAt = Date.now();
        this.checkHeld(message.asked, message.held);
      } else this.logger.warn({ err: message.message }, "heartbeat to PostgreSQL failed");
    });
    thread.on("error", (err) => {
      this.logger.warn({ err: err.message }, "heartbeat thread failed; heartbeating on the event loop");
      this.heartbeatThread = undefined;
      this.heartbeatTimer ??= setInterval(() => void this.heartbeat(), health.heartbeatMs);
    });
    this.heartbeatThread = thread;
  }

  private async stopHeartbeats(): Promise<void> {
    clearInterval(this.heartbeatTimer);
    const thread = this.heartbeatThread;
    this.heartbeatThread = undefined;
    if (!thread) return;
    thread.postMessage({ type: "stop" } satisfies HeartbeatCommand);
    await Promise.race([
      new Promise((resolve) => thread.once("exit", resolve)),
      new Promise((resolve) => setTimeout(resolve, 2000).unref()),
    ]);
    await thread.terminate();
  }

  /** Heartbeat on the event loop (embedded store); abandons builds taken from this worker. */
  private async heartbeat(): Promise<void> {
    const asked = this.runningBuilds();
    const held = await this.queue.workers.heartbeat(this.id, asked).catch(() => undefined);
    if (!held) return;
    this.lastHeartbeatAt = Date.now();
    this.checkHeld(asked, held);
  }

  /** Abandons the builds the heartbeat named that PostgreSQL no longer lets this worker hold. */
  private checkHeld(asked: { id: string; lease: number }[], held: HeldStatus[]): void {
    const kept = new Map(held.map((h) => [`${h.id}:${h.lease}`, h]));
    for (const { id, lease } of asked) {
      const entry = this.running.get(id);
      if (!entry || entry.build.lease !== lease) continue;
      const status = kept.get(`${id}:${lease}`);
      if (!status) this.abandon(entry, "lease lost");
      else if (status.stopRequested) this.abandon(entry, "stopped");
    }
  }

  private abandon(entry: RunningBuild, why: BuildAbandoned["why"]): void {
    if (entry.controller.signal.aborted) return;
    this.logger.warn({ buildId: entry.build.id, why }, "abandoning build");
    entry.controller.abort(new BuildAbandoned(entry.build.id, why));
  }

  /**
   * Graceful shutdown: stop claiming, let running builds finish for up to `drainMs`, then hand the
   * rest back to the queue (no retry counted) and abort their handlers.
   */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.loopController.abort();
    const drainMs = this.options.drainMs ?? 30_000;
    const drained = await Promise.race([
      this.loop?.then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), drainMs).unref()),
    ]);
    if (!drained && this.running.size > 0) {
      const left = [...this.running.values()];
      const released = await this.queue.workers
        .release(
          this.id,
          left.map((e) => ({ id: e.build.id, lease: e.build.lease })),
        )
        .catch((err: Error) => {
          this.logger.warn({ err: err.message }, "could not hand builds back; the reaper will");
          return [];
        });
      this.logger.warn(
        { released: released.map((b) => b.id) },
        "drain timeout: builds handed back to the queue",
      );
      for (const entry of left) this.abandon(entry, "worker shutdown");
      await Promise.race([this.loop, new Promise((r) => setTimeout(r, 5000).unref())]);
    }
    await this.stopHeartbeats();
    this.unsubscribeStops?.();
    await this.queue.workers.markStopped(this.id).catch(() => undefined);
    this.logger.info("worker stopped");
  }
}
