/**
 * The worker runtime: registers itself, claims up to its free capacity, runs each build's handler
 * with a context (the build, its lease, an AbortSignal, progress and log), reports results with the
 * lease, and heartbeats so that its builds stay its own. It abandons a build the moment PostgreSQL
 * says the build was taken from it (requeued by the reaper after this worker was frozen or cut off,
 * or stopped): the handler's signal aborts, and nothing it reports is accepted any more.
 *
 * A build stays in the set the heartbeats name (and so keeps its lease) from its claim until its
 * result has settled (recorded, or refused for good): a slow result write cannot let the reaper take
 * back a build that has finished. The parts: heartbeats.ts (the heartbeat thread), result-reporter.ts
 * (results are retried until PostgreSQL takes or refuses them), fence.ts (a worker whose heartbeats
 * go unacknowledged stops its builds before their leases can lapse).
 */
import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { hostname } from "node:os";
import { type ClaimedBuild, type ProgressInput, parseResult } from "../core/build.js";
import { OculusError, StaleLeaseError, ValidationError } from "../core/errors.js";
import { type Logger, silentLogger } from "../core/logger.js";
import type { HeldStatus } from "../postgres/worker-store.js";
import { type BuildQueue, parseLabels } from "../queue/build-queue.js";
import { isTransientStoreError } from "../queue/store-errors.js";
import { runClaimLoop } from "./claim-loop.js";
import { fencePolicy, LeaseFence } from "./fence.js";
import { type BuildRef, type HeartbeatAnswer, Heartbeats } from "./heartbeats.js";
import { LogShipper } from "./log-shipper.js";
import { monotonicMs } from "./monotonic.js";
import { type ReportOutcome, reportUntilSettled } from "./result-reporter.js";

export interface BuildContext {
  build: ClaimedBuild;
  lease: number;
  /** Aborts when the build is stopped, taken from this worker, or the worker shuts down. */
  signal: AbortSignal;
  /**
   * Reports progress (fenced by the lease). Rejects when the lease is lost; a write PostgreSQL cannot
   * take right now (away, failing over, read-only) is dropped instead: progress is best-effort and
   * the next report supersedes it, so a failover does not fail the build.
   */
  progress(update: ProgressInput): Promise<void>;
  /**
   * A line of the build's output (without its newline): stored in the build's whole log, and kept in
   * the log tail that goes with the result. `stream` defaults to stdout.
   */
  log(line: string, stream?: "stdout" | "stderr"): void;
}

export type WorkerHandler = (ctx: BuildContext) => Promise<unknown>;

export interface WorkerOptions {
  handler: WorkerHandler;
  /** Default: hostname:pid:random. */
  id?: string;
  /** Builds run at once (default 1). */
  capacity?: number;
  /**
   * Builds claimed ahead of free slots (default 0; ClaimLoopOptions.prefetch): they wait here, leased
   * and named by the heartbeats, and start as slots free, in claim order. For builds much shorter than
   * a claim's round trip. A prefetched build that is stopped, taken away or fenced before it starts
   * never runs; those still waiting at shutdown are handed back at once. "auto": as many as the slots
   * finish during one claim's round trip, measured as the worker runs (none for builds of a second
   * or more; src/worker/auto-prefetch.ts).
   */
  prefetch?: number | "auto";
  /** This worker's labels: it claims only builds whose `requires` they include (default {}: builds without requirements). */
  labels?: Record<string, string>;
  version?: string;
  /** On shutdown, how long running builds may take to finish before they are stopped and handed back (default 30 s). */
  drainMs?: number;
  /**
   * On shutdown past drainMs: how long the stopped builds' handlers may take to end (a build command:
   * its grace period and the SIGKILL) before the worker gives up on them (default 15 s). A build is
   * handed back only once its handler has ended; one that has not is left to the reaper.
   */
  abortWaitMs?: number;
  /**
   * Default limit of a build's run, in seconds, for builds submitted without `timeoutSeconds`
   * (default: none). Past it the handler's signal aborts (a build command gets SIGTERM, then SIGKILL
   * after its grace period) and the build fails, saying it timed out (retried like any failure).
   */
  buildTimeoutSeconds?: number;
  /**
   * A handler that computes without yielding keeps the worker's event loop blocked, and so its
   * timeout from firing, while the heartbeat thread keeps its lease: the build would be held forever.
   * When the loop has stayed blocked past a build's timeout by `abortWaitMs` (at least three
   * heartbeat intervals), the heartbeat thread writes one fatal line to stderr and kills the process
   * (SIGKILL): its builds' leases lapse and the reaper takes them back, as after a kill -9, so nothing
   * runs twice. Default true; false keeps the process (the build keeps its lease until the loop frees,
   * then fails as timed out). Builds without a timeout never cause it. Needs the heartbeat thread (a
   * PostgreSQL server, not the embedded store).
   */
  exitWhenWedged?: boolean;
  logger?: Logger;
}

/**
 * Why a running build's signal aborted. "fenced": no heartbeat was acknowledged for so long that its
 * lease could lapse soon (fence.ts); `graceMs` then bounds how long its processes may take to end.
 */
export class BuildAbandoned extends Error {
  constructor(
    readonly buildId: string,
    readonly why: "lease lost" | "worker shutdown" | "stopped" | "fenced" | "timed out",
    readonly graceMs?: number,
    detail?: string,
  ) {
    super(`build ${buildId}: ${why}${detail ? ` (${detail})` : ""}`);
    this.name = "BuildAbandoned";
  }
}

/** What a handler's run hands to the result report. */
interface HandlerOutcome {
  value: unknown;
  logTail: string | undefined;
}

/** A handler's failure, with the build's output to keep with it, and why it was aborted if it was. */
class HandlerFailure extends Error {
  constructor(
    message: string,
    readonly logTail: string | undefined,
    readonly abandoned: BuildAbandoned["why"] | undefined,
  ) {
    super(message);
  }
}

/**
 * How a build's run ended on this worker: its handler returned (completed) or threw (failed), or its
 * signal aborted because the build was stopped, or taken from this worker (lease lost, shutdown).
 */
export type RunOutcome = "completed" | "failed" | "stopped" | "abandoned";

/**
 * Emitted as "build-ended" after each run (metrics, logs): when the handler has ended and its log is
 * shipped, before its result is recorded (the build is not yet finished in the queue).
 */
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

/** Why the build's signal aborted, if it did. */
function abandonedFor(signal: AbortSignal): BuildAbandoned["why"] | undefined {
  if (!signal.aborted) return undefined;
  return signal.reason instanceof BuildAbandoned ? signal.reason.why : "worker shutdown";
}

function logText(entry: RunningBuild): string | undefined {
  return entry.logTail.length > 0 ? entry.logTail.join("\n") : undefined;
}

/** Emits "build-ended" (BuildEndedEvent) after each run. */
export class Worker extends EventEmitter {
  readonly id: string;
  private readonly capacity: number;
  private readonly logger: Logger;
  /** Builds whose handler runs now (what capacity counts). */
  private readonly running = new Map<string, RunningBuild>();
  /** Builds the heartbeats name, so that they keep their leases: from the claim until the result settled. */
  private readonly held = new Map<string, BuildRef>();
  private readonly loopController = new AbortController();
  private loop: Promise<void> | undefined;
  private heartbeats: Heartbeats | undefined;
  private fence: LeaseFence | undefined;
  private unsubscribeStops: (() => void) | undefined;
  private stopping = false;
  /** Builds handed back during shutdown (for the log). */
  private readonly released: string[] = [];
  /**
   * Why a held build that has not started (a prefetched one) must not run: stopped, taken away or
   * fenced while it waited. run() reports it like a build abandoned for that reason at once.
   */
  private readonly beforeStart = new Map<string, { why: BuildAbandoned["why"]; detail: string }>();

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
    const prefetch = options.prefetch ?? 0;
    if (prefetch !== "auto" && (!Number.isInteger(prefetch) || prefetch < 0)) {
      throw new OculusError("invalid_input", 400, 'prefetch: must be an integer >= 0 or "auto"');
    }
    parseLabels(options.labels ?? {});
    const timeout = options.buildTimeoutSeconds;
    if (timeout !== undefined && (!Number.isInteger(timeout) || timeout < 1)) {
      throw new OculusError("invalid_input", 400, "buildTimeoutSeconds: must be a positive integer");
    }
  }

  /** Builds whose handler runs now (a finished build whose result is still being written is not counted). */
  get activeBuilds(): number {
    return this.running.size;
  }

  /** Builds run at once at most. */
  get slots(): number {
    return this.capacity;
  }

  /** Since the last heartbeat PostgreSQL acknowledged was sent, in ms (undefined before the first). */
  heartbeatAgeMs(): number | undefined {
    return this.heartbeats?.ageMs();
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
      else this.notBeforeStart(buildId, "stopped", "stopped before it started");
    });
    const heartbeats = new Heartbeats(
      this.queue,
      this.id,
      this.logger,
      () => [...this.held.values()],
      (answer) => this.answered(answer),
      this.options.exitWhenWedged === false ? undefined : (this.options.abortWaitMs ?? 15_000),
    );
    this.fence = new LeaseFence(fencePolicy(this.queue.workers.health.deadAfterMs), {
      takePendingAnswers: () => heartbeats.takePendingAnswers(),
      fence: (buildId, graceMs, silentMs) => this.fenceBuild(buildId, graceMs, silentMs),
    });
    this.heartbeats = heartbeats;
    // Claims wait for the first heartbeat: a thread still loading must not let a new build's lease lapse.
    await heartbeats.start();
    this.loop = runClaimLoop(
      {
        claim: (count) => this.claim(count),
        wait: (ms, signal) => this.queue.waitForWork(ms, signal),
        complete: (build, outcome) =>
          this.settle(build, this.reportCompletion(build, outcome as HandlerOutcome)),
        fail: (build, err) => this.settle(build, this.reportFailure(build, err)),
        release: (builds) => this.releaseUnstarted(builds),
        onError: (err) =>
          this.logger.warn(
            { err: (err as Error).message },
            "claim or result report failed; the loop goes on",
          ),
      },
      (build) => this.run(build),
      {
        concurrency: this.capacity,
        prefetch: this.options.prefetch ?? 0,
        signal: this.loopController.signal,
      },
    );
    this.logger.info({ capacity: this.capacity }, "worker started");
  }

  /** Claims builds; each is held (named by the heartbeats, watched by the fence) from now on. */
  private async claim(count: number): Promise<ClaimedBuild[]> {
    const sentAt = monotonicMs();
    const builds = await this.queue.claim(this.id, count, { labels: this.options.labels ?? {} });
    for (const build of builds) {
      this.held.set(build.id, { id: build.id, lease: build.lease });
      this.fence?.claimed(build, sentAt);
    }
    if (builds.length > 0) this.heartbeats?.buildsChanged();
    return builds;
  }

  /** A held build that has not started must not run (stopped, taken away, fenced while it waited). */
  private notBeforeStart(buildId: string, why: BuildAbandoned["why"], detail: string): void {
    if (this.held.has(buildId) && !this.running.has(buildId) && !this.beforeStart.has(buildId)) {
      this.beforeStart.set(buildId, { why, detail });
    }
  }

  /** Prefetched builds that never started (the loop stopped): back to the queue at once. */
  private async releaseUnstarted(builds: ClaimedBuild[]): Promise<void> {
    const refs = builds.map((b) => ({ id: b.id, lease: b.lease }));
    try {
      const released = await this.queue.workers.release(this.id, refs);
      this.released.push(...released.map((b) => b.id));
    } catch (err) {
      this.logger.warn(
        { buildIds: refs.map((r) => r.id), err: (err as Error).message },
        "could not hand back builds that never started; their leases run out and the reaper requeues them",
      );
    } finally {
      for (const ref of refs) this.forget(ref);
    }
  }

  private async run(build: ClaimedBuild): Promise<HandlerOutcome> {
    const verdict = this.beforeStart.get(build.id);
    if (verdict) {
      this.beforeStart.delete(build.id);
      throw new HandlerFailure(`${verdict.detail}: not run`, "", verdict.why);
    }
    const controller = new AbortController();
    const entry: RunningBuild = { build, controller, logTail: [], logChars: 0 };
    this.running.set(build.id, entry);
    const shipper = new LogShipper(this.queue, build.id, build.lease, (err) =>
      this.logger.warn(
        { buildId: build.id, err: (err as Error).message },
        "build log write failed; retrying",
      ),
    );
    shipper.start(build.retryCount + 1, this.id);
    const started = performance.now();
    let outcome: RunOutcome = "failed";
    const timeoutSeconds = build.timeoutSeconds ?? this.options.buildTimeoutSeconds;
    const timer =
      timeoutSeconds === undefined
        ? undefined
        : setTimeout(() => this.timedOut(entry, timeoutSeconds), timeoutSeconds * 1000);
    if (timeoutSeconds !== undefined)
      this.heartbeats?.deadline(build.id, monotonicMs() + timeoutSeconds * 1000);
    try {
      const value = await this.options.handler({
        build,
        lease: build.lease,
        signal: controller.signal,
        progress: (update) => this.progress(entry, update),
        log: (line, stream = "stdout") => {
          appendLog(entry, line);
          shipper.line(line, stream);
        },
      });
      outcome = "completed";
      return { value, logTail: logText(entry) };
    } catch (err) {
      const abandoned = abandonedFor(controller.signal);
      outcome =
        abandoned === undefined || abandoned === "timed out"
          ? "failed"
          : abandoned === "stopped"
            ? "stopped"
            : "abandoned";
      const message = err instanceof Error ? err.message : String(err);
      const lastLines = entry.logTail.slice(-ERROR_TAIL_LINES);
      const tail = lastLines.length > 0 ? `\n--- last output ---\n${lastLines.join("\n")}` : "";
      const reason =
        controller.signal.reason instanceof BuildAbandoned ? controller.signal.reason : undefined;
      const cause = reason?.why === "fenced" || reason?.why === "timed out" ? `${reason.message}; ` : "";
      throw new HandlerFailure(`${cause}${message}${tail}`, logText(entry), abandoned);
    } finally {
      clearTimeout(timer);
      if (timeoutSeconds !== undefined) this.heartbeats?.deadline(build.id, undefined);
      // The log is complete before the result is reported (a log reader that sees the build end
      // has all of its output). A run that lost its build cannot write: no wait for it.
      const lost = abandonedFor(controller.signal);
      await shipper.close(lost === "lease lost" || lost === "fenced" ? 0 : undefined);
      if (this.running.get(build.id) === entry) this.running.delete(build.id);
      this.emit("build-ended", {
        build,
        outcome,
        durationMs: performance.now() - started,
      } satisfies BuildEndedEvent);
    }
  }

  private async progress(entry: RunningBuild, update: ProgressInput): Promise<void> {
    try {
      await this.queue.reportProgress(entry.build.id, entry.build.lease, update);
    } catch (err) {
      if (err instanceof StaleLeaseError) this.abandon(entry, "lease lost");
      else if (isTransientStoreError(err)) {
        this.logger.debug({ buildId: entry.build.id, err: (err as Error).message }, "progress not recorded");
        return;
      }
      throw err;
    }
  }

  /** Once a build's report has settled, the worker holds it no more (its lease is left alone). */
  private async settle(build: ClaimedBuild, report: Promise<ReportOutcome>): Promise<ReportOutcome> {
    try {
      return await report;
    } finally {
      this.forget(build);
    }
  }

  private forget(build: BuildRef): void {
    this.beforeStart.delete(build.id);
    if (this.held.get(build.id)?.lease === build.lease) {
      this.held.delete(build.id);
      this.fence?.forget(build.id);
      this.heartbeats?.buildsChanged();
    }
  }

  /**
   * The handler returned: its value is the result. A value PostgreSQL cannot store as jsonb (a NUL or
   * a lone surrogate in a string, a non-JSON value) can never be recorded: the build fails, once and
   * for good, saying why.
   */
  private async reportCompletion(build: ClaimedBuild, outcome: HandlerOutcome): Promise<ReportOutcome> {
    let result: unknown;
    try {
      result = parseResult(outcome.value);
    } catch (err) {
      if (!(err instanceof ValidationError)) throw err;
      return this.reportUnstorable(build, err.message, outcome.logTail);
    }
    let refusal = "";
    const recorded = await this.untilSettled(build, "completion", () =>
      this.queue
        .complete(build.id, build.lease, result, { logTail: outcome.logTail, readBack: false })
        .catch((err) => {
          refusal = (err as Error).message;
          throw err;
        }),
    );
    // What the checks above let through and PostgreSQL still refused (a data exception).
    return recorded === "unstorable" ? this.reportUnstorable(build, refusal, outcome.logTail) : recorded;
  }

  private reportUnstorable(build: ClaimedBuild, why: string, logTail: string | undefined) {
    const error = `the build's result cannot be stored: ${why}`;
    return this.untilSettled(build, "failure", () =>
      this.queue.fail(build.id, build.lease, error, { logTail, retryable: false }),
    );
  }

  /** The handler threw. Stopped for a shutdown: the build is handed back (its handler has ended). */
  private reportFailure(build: ClaimedBuild, err: Error): Promise<ReportOutcome> {
    const failure = err instanceof HandlerFailure ? err : undefined;
    if (failure?.abandoned === "worker shutdown") {
      return this.untilSettled(build, "hand-back", async () => {
        const released = await this.queue.workers.release(this.id, [{ id: build.id, lease: build.lease }]);
        if (released.length > 0) this.released.push(build.id);
      });
    }
    return this.untilSettled(build, "failure", () =>
      this.queue.fail(build.id, build.lease, err.message, { logTail: failure?.logTail }),
    );
  }

  private untilSettled(
    build: ClaimedBuild,
    what: string,
    write: () => Promise<unknown>,
  ): Promise<ReportOutcome> {
    return reportUntilSettled(write, { buildId: build.id, what, logger: this.logger });
  }

  private answered(answer: HeartbeatAnswer): void {
    this.fence?.answered(answer);
    this.checkHeld(answer.asked, answer.held);
  }

  /** Abandons the running builds the heartbeat named that PostgreSQL no longer lets this worker hold. */
  private checkHeld(asked: BuildRef[], held: HeldStatus[]): void {
    const kept = new Map(held.map((h) => [`${h.id}:${h.lease}`, h]));
    for (const { id, lease } of asked) {
      const status = kept.get(`${id}:${lease}`);
      const entry = this.running.get(id);
      if (!entry) {
        if (this.held.get(id)?.lease !== lease) continue;
        if (!status) this.notBeforeStart(id, "lease lost", "taken from this worker before it started");
        else if (status.stopRequested) this.notBeforeStart(id, "stopped", "stopped before it started");
        continue;
      }
      if (entry.build.lease !== lease) continue;
      if (!status) this.abandon(entry, "lease lost");
      else if (status.stopRequested) this.abandon(entry, "stopped");
    }
  }

  /** The build ran past its timeout: its signal aborts (a command gets SIGTERM, then SIGKILL), and it fails. */
  private timedOut(entry: RunningBuild, seconds: number): void {
    if (entry.controller.signal.aborted) return;
    const detail = `ran longer than its timeout of ${seconds} s`;
    this.logger.warn({ buildId: entry.build.id, timeoutSeconds: seconds }, "build timed out");
    entry.controller.abort(new BuildAbandoned(entry.build.id, "timed out", undefined, detail));
  }

  /** The fence fired: no heartbeat acknowledged for too long; the build stops before its lease can lapse. */
  private fenceBuild(buildId: string, graceMs: number, silentMs: number): void {
    const entry = this.running.get(buildId);
    if (!entry) {
      const detail = `no heartbeat acknowledged for ${silentMs} ms: its lease may lapse`;
      this.notBeforeStart(buildId, "fenced", detail);
      return;
    }
    if (entry.controller.signal.aborted) return;
    this.logger.warn(
      { buildId, silentMs, graceMs },
      "no heartbeat acknowledged by PostgreSQL for too long: stopping the build before its lease can lapse",
    );
    const detail = `no heartbeat acknowledged for ${silentMs} ms: stopped before its lease could lapse`;
    this.abandon(entry, "fenced", graceMs, detail);
  }

  private abandon(entry: RunningBuild, why: BuildAbandoned["why"], graceMs?: number, detail?: string): void {
    if (entry.controller.signal.aborted) return;
    this.logger.warn({ buildId: entry.build.id, why }, "abandoning build");
    entry.controller.abort(new BuildAbandoned(entry.build.id, why, graceMs, detail));
  }

  /**
   * Graceful shutdown: stop claiming and let running builds finish for up to `drainMs`. Then stop
   * the rest (a build command gets SIGTERM, then SIGKILL after its grace period) and hand each back
   * to the queue (no retry counted) once its handler has ended, i.e. once its processes are gone:
   * the build cannot run here and elsewhere at once. Heartbeats go on until then, so the builds keep
   * their leases. A handler still running after `abortWaitMs` is not handed back: its lease runs out
   * and the reaper requeues it.
   */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.loopController.abort();
    const drainMs = this.options.drainMs ?? 30_000;
    const drained = await settledWithin(this.loop, drainMs);
    if (!drained) {
      const left = [...this.running.values()];
      if (left.length > 0) {
        this.logger.warn(
          { buildIds: left.map((e) => e.build.id) },
          "drain timeout: stopping the builds still running; each goes back to the queue once it has ended",
        );
      }
      for (const entry of left) this.abandon(entry, "worker shutdown");
      const ended = await settledWithin(this.loop, this.options.abortWaitMs ?? 15_000);
      if (this.released.length > 0) {
        this.logger.warn({ released: this.released }, "drain timeout: builds handed back to the queue");
      }
      if (!ended && this.running.size > 0) {
        this.logger.warn(
          { buildIds: [...this.running.keys()] },
          "builds still running after their stop: not handed back; their leases run out and the reaper requeues them",
        );
      }
    }
    this.fence?.stop();
    await this.heartbeats?.stop();
    this.unsubscribeStops?.();
    await this.queue.workers.markStopped(this.id).catch(() => undefined);
    this.logger.info("worker stopped");
  }
}

/** True when `work` settled within `ms`. */
async function settledWithin(work: Promise<unknown> | undefined, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
    timer.unref();
  });
  try {
    return await Promise.race([Promise.resolve(work).then(() => true), timedOut]);
  } finally {
    clearTimeout(timer);
  }
}
