/**
 * Stop latency: the time from the `queue.stop(id)` call in this process to the AbortSignal firing in
 * the handler of a worker running the build in ANOTHER process (bench/stop-worker.ts, from the compiled
 * dist/). stop() commits the build's 'stopping' status in PostgreSQL before it announces the stop
 * (Redis pub/sub and PostgreSQL NOTIFY), so every measured stop is durably recorded.
 *
 * Per mode (Redis mode; PostgreSQL-only mode, no redisUrl in the parent nor in the child), in its own
 * schema, with one worker process (the product's Worker, capacity 1). One try:
 *   1. submit a build; wait for the child's "started <id>" line;
 *   2. wait a few ms (the handler is then waiting on its signal);
 *   3. t0 = timeOrigin + performance.now(); queue.stop(id);
 *   4. the child prints "aborted <id> <t1>" when ctx.signal fires (t1 taken the same way, same machine
 *      clock); latency = t1 - t0. The handler then throws, and the benchmark waits until the build is
 *      recorded 'stopped' before the next try.
 * The first tries of each mode are a warm-up and are not counted.
 */
import type { ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { BuildQueue } from "../src/index.js";
import { spawnBenchScript } from "./child.js";
import { DATABASE_URL, dropSchema, newSchema } from "./postgres.js";
import type { PrivateRedis } from "./redis-server.js";
import { type Distribution, distribution, sleep, within } from "./stats.js";

export type StopMode = "redis" | "postgres";
export const STOP_MODES: readonly StopMode[] = ["redis", "postgres"];

export interface StopModeResult {
  /** stop() call -> the child's handler signal fired. */
  ms: Distribution;
  /** Duration of the queue.stop() call itself (commit of 'stopping' + announcement). */
  stopCallMs: Distribution;
  /** Abort in the child -> the parent read the line (the pipe; not part of the figure). */
  pipeLagMs: Distribution;
  /** Tries whose build did not end as expected (abort why other than "stopped", status other than stopped). */
  anomalies: string[];
  durationSec: number;
}

export interface StopPart {
  tries: number;
  warmup: number;
  pauseMs: number;
  note: string;
  results: Record<StopMode, StopModeResult>;
}

export interface StopOptions {
  tries: number;
  warmup: number;
  /** Pause between the "started" line and the stop() call. */
  pauseMs: number;
  log: (line: string) => void;
}

const now = () => performance.timeOrigin + performance.now();

// ------------------------------------------------------------------ worker processes

const children = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

/** Kills every stop-benchmark worker process still running (the benchmark's cleanup, also on errors). */
export async function stopStopWorkers(): Promise<void> {
  const all = [...children];
  await Promise.all(
    all.map((child) => {
      const exited = new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) resolve();
        else child.once("exit", () => resolve());
      });
      child.kill("SIGKILL");
      return within(exited, 10_000, "stop worker exit").catch(() => undefined);
    }),
  );
}

interface Line {
  word: string;
  id: string;
  at: number;
  why: string;
  receivedAt: number;
}

class StopWorker {
  private readonly child: ChildProcess;
  /** Lines per "word id" key, kept until taken (a line may come before its waiter). */
  private readonly seen = new Map<string, Line>();
  private readonly waiters = new Map<string, (l: Line) => void>();
  private readonly exited: Promise<void>;
  private stderrTail: string[] = [];

  constructor(args: string[], log: (line: string) => void) {
    this.child = spawnBenchScript("stop-worker", args, { withoutRedisUrl: true });
    children.add(this.child);
    this.exited = new Promise((resolve) => this.child.once("exit", () => resolve()));
    void this.exited.then(() => children.delete(this.child));
    this.child.on("error", (err) => log(`    stop worker error: ${err.message}`));
    this.child.stdin?.on("error", () => undefined);
    createInterface({ input: this.child.stdout as NodeJS.ReadableStream }).on("line", (text) => {
      const receivedAt = now();
      const [word = "", id = "", at, why = ""] = text.split(" ");
      const line = { word, id, at: Number(at), why, receivedAt };
      const key = `${word} ${id}`;
      const waiter = this.waiters.get(key);
      if (waiter) {
        this.waiters.delete(key);
        waiter(line);
      } else this.seen.set(key, line);
    });
    createInterface({ input: this.child.stderr as NodeJS.ReadableStream }).on("line", (text) => {
      this.stderrTail = [...this.stderrTail.slice(-19), text];
      log(`    [stop worker ${this.child.pid}] ${text}`);
    });
  }

  /** The line "word id ..." (id "" for "ready <pid>": matched on the word only through the pid). */
  next(word: string, id: string, ms: number): Promise<Line> {
    const key = `${word} ${id}`;
    const found = new Promise<Line>((resolve, reject) => {
      const line = this.seen.get(key);
      if (line) {
        this.seen.delete(key);
        resolve(line);
        return;
      }
      this.waiters.set(key, resolve);
      void this.exited.then(() =>
        reject(new Error(`stop worker exited while waiting for ${key}: ${this.stderrTail.join(" | ")}`)),
      );
    });
    return within(found, ms, `"${key}" from the stop worker`).finally(() => this.waiters.delete(key));
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  async kill(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
    await within(this.exited, 10_000, `exit of stop worker ${this.pid}`);
  }
}

// ------------------------------------------------------------------ one mode

async function runMode(redis: PrivateRedis, mode: StopMode, options: StopOptions): Promise<StopModeResult> {
  const started = performance.now();
  const { log } = options;
  const schema = newSchema(`stop_${mode}`);
  const queue = await BuildQueue.open({
    databaseUrl: DATABASE_URL,
    redisUrl: mode === "redis" ? redis.url : undefined,
    schema,
    prefix: schema,
    reconcileIntervalMs: 3_600_000,
  });
  let worker: StopWorker | undefined;
  const latencies: number[] = [];
  const stopCalls: number[] = [];
  const pipeLags: number[] = [];
  const anomalies: string[] = [];
  try {
    if (queue.mode !== mode) throw new Error(`queue opened in ${queue.mode} mode, expected ${mode}`);
    worker = new StopWorker(
      [
        ...["--database-url", DATABASE_URL, "--schema", schema],
        ...(mode === "redis" ? ["--redis-port", String(redis.port)] : []),
      ],
      log,
    );
    await worker.next("ready", String(worker.pid), 30_000);
    const total = options.warmup + options.tries;
    for (let t = 1; t <= total; t++) {
      const { build } = await queue.submit({ strategyId: "bench-stop", params: {} });
      const id = build.id;
      await worker.next("started", id, 10_000);
      await sleep(options.pauseMs);
      const aborted = worker.next("aborted", id, 10_000);
      const t0 = now();
      await queue.stop(id, { actor: "bench", reason: "stop latency benchmark" });
      const returned = now();
      const line = await aborted;
      // The build must end stopped (the handler threw the signal's reason).
      const deadline = Date.now() + 10_000;
      let status = (await queue.get(id)).status;
      while (status !== "stopped" && Date.now() < deadline) {
        await sleep(2);
        status = (await queue.get(id)).status;
      }
      if (line.why !== "stopped" || status !== "stopped") {
        anomalies.push(`${id}: signal why ${line.why}, status ${status}`);
        if (status !== "stopped")
          throw new Error(`build ${id} was not recorded stopped within 10 s (${status})`);
      }
      if (t <= options.warmup) continue;
      latencies.push(line.at - t0);
      stopCalls.push(returned - t0);
      pipeLags.push(line.receivedAt - line.at);
      if ((t - options.warmup) % 50 === 0) {
        log(`  ${mode} try ${t - options.warmup}/${options.tries}: ${(line.at - t0).toFixed(2)} ms`);
      }
    }
  } finally {
    await worker?.kill().catch(() => undefined);
    await queue.close().catch((err: Error) => log(`  could not close the ${mode} queue: ${err.message}`));
    await dropSchema(schema).catch(() => undefined);
  }
  return {
    ms: distribution(latencies),
    stopCallMs: distribution(stopCalls),
    pipeLagMs: distribution(pipeLags),
    anomalies,
    durationSec: (performance.now() - started) / 1000,
  };
}

export async function runStop(redis: PrivateRedis, options: StopOptions): Promise<StopPart> {
  const results = {} as Record<StopMode, StopModeResult>;
  try {
    for (const mode of STOP_MODES) {
      options.log(
        `stop: ${mode} mode, ${options.tries} tries (after ${options.warmup} warm-up), worker in another process`,
      );
      await redis.flushAll();
      const r = await runMode(redis, mode, options);
      options.log(
        `  p50 ${r.ms.p50.toFixed(2)} ms, p99 ${r.ms.p99.toFixed(2)} ms, max ${r.ms.max.toFixed(2)} ms; stop() call p50 ${r.stopCallMs.p50.toFixed(2)} ms (${r.durationSec.toFixed(0)} s)${r.anomalies.length ? `; ANOMALIES: ${r.anomalies.join("; ")}` : ""}`,
      );
      results[mode] = r;
    }
  } finally {
    await stopStopWorkers();
  }
  return {
    tries: options.tries,
    warmup: options.warmup,
    pauseMs: options.pauseMs,
    note:
      "queue.stop() call in the parent -> ctx.signal fires in the handler of a worker in another process " +
      "(timeOrigin + performance.now() on both sides, same machine); 'stopping' committed in PostgreSQL " +
      "before stop() returns; one worker process (capacity 1) per mode",
    results,
  };
}
