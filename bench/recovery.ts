/**
 * Worker recovery: the time from `kill -9` of a worker PROCESS that is running a build to that build's
 * handler starting on ANOTHER worker process, for our queue and for BullMQ.
 *
 * Each setting runs with two idle worker processes (bench/recovery-worker.ts, from the compiled
 * dist/) on the benchmark's private redis-server. One try:
 *   1. an idle pause, uniform over one period of the timers that detect the loss (ours:
 *      max(heartbeat, reaper interval); BullMQ: max(lock renewal, stalled interval)). Without it the
 *      tries lock onto the phase of the reaper or of the stalled-job checker: each try would start a
 *      fixed time after the previous recovery, which happens on one of their ticks;
 *   2. submit one build (BullMQ: add one job); one of the two workers starts it, its handler waits;
 *   3. after 200 ms plus a random part of one lease-renewal period (ours: the heartbeat; BullMQ: the
 *      lock renewal, half the lock duration), so that the kill falls anywhere between two renewals,
 *      the parent SIGKILLs that process;
 *   4. the clock runs from just before the kill to the surviving process's handler start (its own
 *      timestamp, same machine clock: performance.timeOrigin + performance.now()). Then the
 * survivor is told to finish the build, the benchmark waits until it is recorded as completed, and a
 * fresh worker process replaces the killed one before the next try, so every try starts from two idle
 * workers. Every start of every build is counted, to catch a build running twice.
 *
 * Ours: each worker process opens a BuildQueue in Redis mode (its own schema for the setting, migrated
 * by the parent) and runs the product's Worker (capacity 1, heartbeats in their thread). The reaper
 * runs in the parent only, in its own BuildQueue with the same health settings, at the product's
 * default interval (queue.startReaper(), every 1 s, as `oculus up` / `oculus worker` run it); the
 * workers run none. BullMQ: its Worker (concurrency 1) in each process; its stalled-job checker runs
 * inside the workers, as BullMQ does it.
 */
import type { ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { Queue } from "bullmq";
import { BuildQueue } from "../src/index.js";
import { spawnBenchScript } from "./child.js";
import { DATABASE_URL, dropSchema, newSchema } from "./postgres.js";
import type { PrivateRedis } from "./redis-server.js";
import { median, sleep, within } from "./stats.js";

export type RecoverySystem = "ours" | "bullmq";

export interface RecoverySetting {
  system: RecoverySystem;
  /** "defaults" or "equal". */
  label: string;
  /** Ours: heartbeatMs, deadAfterMs. BullMQ: lockDuration, stalledInterval (and the lock renewal, half the lock). */
  settings: Record<string, number>;
  tries: number;
}

export interface RecoveryTry {
  /** Kill -> the other process's handler start (its own timestamp). */
  recoveryMs: number;
  /** Kill -> the parent read the "started" line (adds the pipe; for comparison). */
  observedMs: number;
  /** Handler start on the victim -> kill. */
  killDelayMs: number;
  /** The idle pause before the submit. */
  pauseMs: number;
  /** At the second start: our retryCount, BullMQ's stalledCounter. */
  attempt: number;
}

export interface RecoveryResult extends RecoverySetting {
  runs: RecoveryTry[];
  ms: { median: number; max: number; min: number; mean: number };
  /** Ours only: the target, max <= deadAfterMs + 1000. */
  limitMs: number | null;
  /** Builds that did not start exactly twice, first on the killed process, then on another one. */
  anomalies: string[];
  durationSec: number;
}

export interface RecoveryPart {
  note: string;
  reaperIntervalMs: number;
  /** Per setting: the idle pause before each submit is uniform in [0, pause). */
  pauseRangeMs: Record<string, number>;
  /** Per setting: the kill comes 200 ms + uniform [0, kill) after the handler started. */
  killDelayRangeMs: Record<string, number>;
  results: RecoveryResult[];
}

/** Our defaults (src/queue/workers.ts DEFAULT_HEALTH) and BullMQ's (Worker options). */
export const OUR_DEFAULTS = { heartbeatMs: 2000, deadAfterMs: 10_000 };
export const BULLMQ_DEFAULTS = { lockDuration: 30_000, stalledInterval: 30_000 };
/** Equal settings: our dead-after and BullMQ's lock and stalled interval all 2 s. */
export const OURS_EQUAL = { heartbeatMs: 400, deadAfterMs: 2000 };
export const BULLMQ_EQUAL = { lockDuration: 2000, stalledInterval: 2000 };

const REAPER_INTERVAL_MS = 1000;
/** The kill comes at least this long after the victim's handler started. */
const KILL_DELAY_MIN_MS = 200;

// ------------------------------------------------------------------ worker processes

const children = new Set<WorkerProcess>();
function killAllSync(): void {
  for (const child of children) child.killNow();
}
process.once("exit", killAllSync);

interface Started {
  id: string;
  attempt: number;
  at: number;
  receivedAt: number;
  pid: number;
}

class WorkerProcess {
  readonly exited: Promise<void>;
  private readonly child: ChildProcess;
  private listeners = new Set<(line: string) => void>();
  private stderrTail: string[] = [];

  constructor(
    args: string[],
    private readonly onStarted: (s: Started) => void,
    private readonly log: (line: string) => void,
  ) {
    this.child = spawnBenchScript("recovery-worker", args);
    this.child.on("error", (err) => this.log(`    worker process error: ${err.message}`));
    children.add(this);
    this.exited = new Promise((resolve) => this.child.once("exit", () => resolve()));
    void this.exited.then(() => children.delete(this));
    this.child.stdin?.on("error", () => undefined);
    createInterface({ input: this.child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
      const receivedAt = performance.timeOrigin + performance.now();
      const [word, id, attempt, at] = line.split(" ");
      if (word === "started" && id) {
        this.onStarted({ id, attempt: Number(attempt), at: Number(at), receivedAt, pid: this.pid });
      }
      for (const listener of this.listeners) listener(line);
    });
    createInterface({ input: this.child.stderr as NodeJS.ReadableStream }).on("line", (line) => {
      this.stderrTail = [...this.stderrTail.slice(-19), line];
      this.log(`    [worker ${this.pid}] ${line}`);
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Resolves on the first stdout line that `match` accepts. */
  waitForLine(match: (line: string) => boolean, ms: number, what: string): Promise<string> {
    let listener: ((line: string) => void) | undefined;
    const found = new Promise<string>((resolve, reject) => {
      listener = (line) => {
        if (match(line)) resolve(line);
      };
      this.listeners.add(listener);
      void this.exited.then(() =>
        reject(new Error(`worker ${this.pid} exited during ${what}: ${this.stderrTail.join(" | ")}`)),
      );
    });
    return within(found, ms, what).finally(() => {
      if (listener) this.listeners.delete(listener);
    });
  }

  send(line: string): void {
    this.child.stdin?.write(`${line}\n`);
  }

  /** kill -9 of the worker process (node itself, no shell in between). */
  killNow(): void {
    if (this.alive) this.child.kill("SIGKILL");
  }

  async kill(): Promise<void> {
    this.killNow();
    await within(this.exited, 10_000, `exit of worker ${this.pid}`);
  }
}

/** Kills every worker process still running (the benchmark's cleanup, also on errors). */
export async function stopRecoveryWorkers(): Promise<void> {
  const all = [...children];
  for (const child of all) child.killNow();
  await Promise.all(all.map((c) => within(c.exited, 10_000, "worker exit").catch(() => undefined)));
}

// ------------------------------------------------------------------ the systems

/** What a setting needs from its system: spawn arguments, submit, and "recorded as completed". */
interface Harness {
  workerArgs: string[];
  submit(): Promise<string>;
  completed(id: string): Promise<boolean>;
  /** The build's or job's state, for error messages. */
  describe(id: string): Promise<string>;
  close(): Promise<void>;
}

async function oursHarness(redis: PrivateRedis, s: Record<string, number>): Promise<Harness> {
  const schema = newSchema("recovery");
  const health = { heartbeatMs: s.heartbeatMs ?? 0, deadAfterMs: s.deadAfterMs ?? 0 };
  const queue = await BuildQueue.open({
    databaseUrl: DATABASE_URL,
    redisUrl: redis.url,
    schema,
    prefix: schema,
    reconcileIntervalMs: 3_600_000,
    health,
  });
  try {
    if (queue.mode !== "redis") throw new Error(`queue opened in ${queue.mode} mode, expected redis`);
    queue.startReaper(REAPER_INTERVAL_MS);
  } catch (err) {
    await queue.close();
    throw err;
  }
  return {
    workerArgs: [
      ...["--system", "ours", "--redis-port", String(redis.port), "--database-url", DATABASE_URL],
      ...["--schema", schema, "--prefix", schema],
      ...["--heartbeat-ms", String(health.heartbeatMs), "--dead-after-ms", String(health.deadAfterMs)],
    ],
    async submit() {
      const { build } = await queue.submit({ strategyId: "bench-recovery", params: {} });
      return build.id;
    },
    async completed(id) {
      const build = await queue.get(id);
      if (build.status === "completed") return true;
      if (build.status === "failed" || build.status === "stopped") {
        throw new Error(`build ${id} ended ${build.status}: ${build.lastError}`);
      }
      return false;
    },
    async describe(id) {
      const b = await queue.get(id);
      return `status ${b.status}, worker ${b.workerId}, retryCount ${b.retryCount}, lease ${b.lease}, mode ${queue.mode}`;
    },
    async close() {
      await queue.close();
      await dropSchema(schema);
    },
  };
}

let bullmqCounter = 0;

async function bullmqHarness(redis: PrivateRedis, s: Record<string, number>): Promise<Harness> {
  bullmqCounter += 1;
  const name = `bench-recovery-${process.pid}-${bullmqCounter}`;
  const queue = new Queue(name, {
    connection: { host: "127.0.0.1", port: redis.port, maxRetriesPerRequest: null },
  });
  await queue.waitUntilReady();
  return {
    workerArgs: [
      ...["--system", "bullmq", "--redis-port", String(redis.port), "--queue", name],
      ...["--lock-duration", String(s.lockDuration), "--stalled-interval", String(s.stalledInterval)],
    ],
    async submit() {
      const job = await queue.add("build", { strategyId: "bench-recovery", params: {} });
      return String(job.id);
    },
    async completed(id) {
      const state = await queue.getJobState(id);
      if (state === "failed") throw new Error(`BullMQ job ${id} failed`);
      return state === "completed";
    },
    async describe(id) {
      return `state ${await queue.getJobState(id)}`;
    },
    async close() {
      await queue.obliterate({ force: true }).catch(() => undefined);
      await queue.close();
    },
  };
}

/** One period of the timers that decide a recovery: the idle pause before a submit is uniform over it. */
export function timerPeriodMs(setting: RecoverySetting): number {
  const s = setting.settings;
  return setting.system === "ours"
    ? Math.max(s.heartbeatMs ?? 0, REAPER_INTERVAL_MS)
    : Math.max((s.lockDuration ?? 0) / 2, s.stalledInterval ?? 0);
}

/** One lease-renewal period: the kill comes 200 ms + uniform [0, this) after the handler started. */
export function renewalPeriodMs(setting: RecoverySetting): number {
  const s = setting.settings;
  return setting.system === "ours" ? (s.heartbeatMs ?? 0) : (s.lockDuration ?? 0) / 2;
}

/** The longest a recovery may take before the try counts as hung. */
function recoveryTimeoutMs(setting: RecoverySetting): number {
  const s = setting.settings;
  return setting.system === "ours"
    ? (s.deadAfterMs ?? 0) + 2 * REAPER_INTERVAL_MS + 15_000
    : (s.lockDuration ?? 0) + 2 * (s.stalledInterval ?? 0) + 15_000;
}

// ------------------------------------------------------------------ one setting

export async function runRecoverySetting(
  redis: PrivateRedis,
  setting: RecoverySetting,
  log: (line: string) => void,
): Promise<RecoveryResult> {
  const started = performance.now();
  await redis.flushAll();
  const harness =
    setting.system === "ours"
      ? await oursHarness(redis, setting.settings)
      : await bullmqHarness(redis, setting.settings);
  /** Every handler start, per build id (a start may be reported before submit() has returned its id). */
  const starts = new Map<string, Started[]>();
  let onStart: (() => void) | undefined;
  const noteStart = (s: Started) => {
    starts.set(s.id, [...(starts.get(s.id) ?? []), s]);
    onStart?.();
  };
  /** The first start of `id` that `pred` accepts, whether it was already reported or comes later. */
  const startOf = (id: string, pred: (s: Started) => boolean, ms: number, what: string) => {
    const found = new Promise<Started>((resolve) => {
      const check = () => {
        const hit = (starts.get(id) ?? []).find(pred);
        if (hit) resolve(hit);
        return hit;
      };
      if (!check()) onStart = check;
    });
    return within(found, ms, what).finally(() => {
      onStart = undefined;
    });
  };
  const workers: WorkerProcess[] = [];
  const spawnWorker = async () => {
    const w = new WorkerProcess(harness.workerArgs, noteStart, log);
    await w.waitForLine((l) => l.startsWith("ready "), 30_000, `start of a ${setting.system} worker`);
    return w;
  };
  /** Build id -> the pid killed while running it. */
  const victimOf = new Map<string, number>();
  const runs: RecoveryTry[] = [];
  try {
    workers.push(...(await Promise.all([spawnWorker(), spawnWorker()])));
    for (let t = 1; t <= setting.tries; t++) {
      const pauseMs = Math.random() * timerPeriodMs(setting);
      await sleep(pauseMs);
      const id = await harness.submit();
      const first = await startOf(id, () => true, 30_000, `first start of ${id}`).catch(
        async (err: Error) => {
          const alive = workers.map((w) => `${w.pid}${w.alive ? "" : " (exited)"}`).join(", ");
          throw new Error(
            `${err.message} (${await harness.describe(id).catch(() => "?")}; workers ${alive})`,
          );
        },
      );
      const victim = workers.find((w) => w.pid === first.pid);
      if (!victim) throw new Error(`build ${id} started on an unknown process ${first.pid}`);
      await sleep(KILL_DELAY_MIN_MS + Math.random() * renewalPeriodMs(setting));
      const killAt = performance.timeOrigin + performance.now();
      victim.killNow();
      victimOf.set(id, victim.pid);
      const second = await startOf(
        id,
        (s) => s.pid !== victim.pid,
        recoveryTimeoutMs(setting),
        `${setting.system} recovery of ${id}`,
      );
      await victim.kill();
      workers.splice(workers.indexOf(victim), 1);
      runs.push({
        recoveryMs: second.at - killAt,
        observedMs: second.receivedAt - killAt,
        killDelayMs: killAt - first.at,
        pauseMs,
        attempt: second.attempt,
      });
      log(
        `  ${setting.system} ${setting.label} try ${t}/${setting.tries}: ${(second.at - killAt).toFixed(0)} ms (attempt ${second.attempt})`,
      );

      // Let the survivor finish the build, and bring the pair back to two idle workers.
      const survivor = workers.find((w) => w.pid === second.pid);
      survivor?.send(`finish ${id}`);
      const [replacement] = await Promise.all([
        spawnWorker(),
        (async () => {
          const deadline = Date.now() + 15_000;
          while (!(await harness.completed(id))) {
            if (Date.now() > deadline) throw new Error(`${id} was not recorded as completed within 15 s`);
            await sleep(20);
          }
        })(),
      ]);
      workers.push(replacement);
    }
    // A late duplicate start would show up here.
    await sleep(500);
  } finally {
    onStart = undefined;
    await Promise.all(workers.map((w) => w.kill().catch(() => undefined)));
    await harness
      .close()
      .catch((err: Error) => log(`  could not close the ${setting.system} queue: ${err.message}`));
  }

  // Each build must have started exactly twice: on the process that was killed, then on another one.
  const anomalies: string[] = [];
  for (const [id, list] of starts) {
    const victim = victimOf.get(id);
    const ok = list.length === 2 && list[0]?.pid === victim && list[1]?.pid !== victim;
    if (!ok) {
      anomalies.push(
        `${id}: ${list.length} starts (attempts ${list.map((s) => s.attempt).join(", ")}; processes ${list.map((s) => (s.pid === victim ? "killed" : s.pid)).join(", ")})`,
      );
    }
  }
  const values = runs.map((r) => r.recoveryMs);
  const deadAfter = setting.settings.deadAfterMs;
  return {
    ...setting,
    runs,
    ms: {
      median: median(values),
      max: Math.max(...values),
      min: Math.min(...values),
      mean: values.reduce((a, b) => a + b, 0) / values.length,
    },
    limitMs: setting.system === "ours" && deadAfter !== undefined ? deadAfter + 1000 : null,
    anomalies,
    durationSec: (performance.now() - started) / 1000,
  };
}

export interface RecoveryOptions {
  /** Kills per system with equal settings. */
  tries: number;
  /** Kills with our default settings (about 12 s each). */
  oursDefaultTries: number;
  /** Kills with BullMQ's default settings (30 to 90 s each, plus a pause of up to 30 s and up to 15 s before the kill). */
  bullmqDefaultTries: number;
  log: (line: string) => void;
}

export async function runRecovery(redis: PrivateRedis, options: RecoveryOptions): Promise<RecoveryPart> {
  const { tries, log } = options;
  const settings: RecoverySetting[] = [
    { system: "ours", label: "defaults", settings: OUR_DEFAULTS, tries: options.oursDefaultTries },
    { system: "bullmq", label: "defaults", settings: BULLMQ_DEFAULTS, tries: options.bullmqDefaultTries },
    { system: "ours", label: "equal", settings: OURS_EQUAL, tries },
    { system: "bullmq", label: "equal", settings: BULLMQ_EQUAL, tries },
  ];
  const results: RecoveryResult[] = [];
  for (const setting of settings) {
    log(
      `recovery: ${setting.system}, ${setting.label} settings (${Object.entries(setting.settings)
        .map(([k, v]) => `${k} ${v}`)
        .join(", ")}), ${setting.tries} tries`,
    );
    const result = await runRecoverySetting(redis, setting, log);
    const lag = result.runs.map((r) => r.observedMs - r.recoveryMs);
    log(
      `  pipe lag (handler start -> parent read the line): ${Math.min(...lag).toFixed(1)} to ${Math.max(...lag).toFixed(1)} ms`,
    );
    log(
      `  median ${result.ms.median.toFixed(0)} ms, max ${result.ms.max.toFixed(0)} ms (${result.durationSec.toFixed(0)} s)${result.anomalies.length ? `; ANOMALIES: ${result.anomalies.join("; ")}` : ""}`,
    );
    results.push(result);
  }
  return {
    note:
      "kill -9 of the worker process running the build -> its handler starting on another worker process; " +
      "two idle worker processes per try; a random idle pause (one detection-timer period) before each " +
      "submit; the kill 200 ms + a random part of one lease-renewal period after the handler started; " +
      "our reaper in the parent every 1 s",
    reaperIntervalMs: REAPER_INTERVAL_MS,
    pauseRangeMs: Object.fromEntries(settings.map((x) => [`${x.system} ${x.label}`, timerPeriodMs(x)])),
    killDelayRangeMs: Object.fromEntries(settings.map((x) => [`${x.system} ${x.label}`, renewalPeriodMs(x)])),
    results,
  };
}
