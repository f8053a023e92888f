/**
 * Scaling with worker processes (issue 15): `builds` no-op builds submitted first, then processed
 * by 1, 2 and 4 worker processes (bench/processes-worker.ts), each with `concurrency` builds in
 * flight: BullMQ, ours in Redis mode and ours on PostgreSQL only. The clock runs from the "go" sent
 * to every process (all connected) to the moment their completed counts add up to `builds`.
 */
import type { ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { Queue } from "bullmq";
import { spawnBenchScript } from "./child.js";
import { inputs, openQueue } from "./ours.js";
import { dropSchema, newSchema, statusCounts } from "./postgres.js";
import type { PrivateRedis } from "./redis-server.js";
import { median, within } from "./stats.js";

export const PROCESS_SYSTEMS = ["bullmq", "redis", "postgres"] as const;
export type ProcessSystem = (typeof PROCESS_SYSTEMS)[number];

export interface ProcessesPoint {
  processes: number;
  /** processed/s of each run, and their median. */
  runs: number[];
  processedPerSec: number;
}

export interface ProcessesPart {
  builds: number;
  concurrencyPerProcess: number;
  counts: number[];
  results: Record<ProcessSystem, ProcessesPoint[]>;
}

export interface ProcessesOptions {
  builds: number;
  chunk: number;
  concurrencyPerProcess: number;
  counts: number[];
  runs: number;
  log: (line: string) => void;
}

const children = new Set<ChildProcess>();

/** Ends every worker process still running (the benchmark was interrupted). */
export function stopProcessWorkers(): void {
  for (const child of children) child.kill("SIGKILL");
  children.clear();
}

export async function runProcesses(redis: PrivateRedis, options: ProcessesOptions): Promise<ProcessesPart> {
  const results = Object.fromEntries(PROCESS_SYSTEMS.map((s) => [s, []])) as unknown as Record<
    ProcessSystem,
    ProcessesPoint[]
  >;
  for (const count of options.counts) {
    const runs: Record<ProcessSystem, number[]> = { bullmq: [], redis: [], postgres: [] };
    // Interleaved runs, as in the throughput part.
    for (let run = 1; run <= options.runs; run++) {
      for (const system of PROCESS_SYSTEMS) {
        await redis.flushAll();
        const perSec = await oneRun(system, count, redis, options);
        runs[system].push(perSec);
        options.log(`  ${count} process(es), run ${run}, ${system}: ${Math.round(perSec)} processed/s`);
      }
    }
    for (const system of PROCESS_SYSTEMS) {
      results[system].push({ processes: count, runs: runs[system], processedPerSec: median(runs[system]) });
    }
  }
  return {
    builds: options.builds,
    concurrencyPerProcess: options.concurrencyPerProcess,
    counts: options.counts,
    results,
  };
}

async function oneRun(
  system: ProcessSystem,
  count: number,
  redis: PrivateRedis,
  options: ProcessesOptions,
): Promise<number> {
  if (system === "bullmq") {
    const name = `bench-processes-${count}-${Date.now()}`;
    const queue = new Queue(name, {
      connection: { host: "127.0.0.1", port: redis.port, maxRetriesPerRequest: null },
    });
    try {
      const chunk = Array.from({ length: options.chunk }, () => ({
        name: "build",
        data: { strategyId: "bench-noop", params: {} },
      }));
      for (let done = 0; done < options.builds; done += options.chunk) {
        await queue.addBulk(chunk.slice(0, Math.min(options.chunk, options.builds - done)));
      }
      return await processWith(count, options, [
        "--system",
        "bullmq",
        "--redis-port",
        String(redis.port),
        "--queue",
        name,
      ]);
    } finally {
      await queue.close();
    }
  }
  const schema = newSchema(`proc_${system}`);
  try {
    const queue = await openQueue(system, schema, redis.url);
    try {
      const chunk = inputs(options.chunk);
      for (let done = 0; done < options.builds; done += options.chunk) {
        await queue.submitMany(chunk.slice(0, Math.min(options.chunk, options.builds - done)));
      }
    } finally {
      await queue.close();
    }
    const perSec = await processWith(count, options, [
      "--system",
      "ours",
      "--mode",
      system,
      "--redis-url",
      redis.url,
      "--schema",
      schema,
    ]);
    const counts = await statusCounts(schema);
    if (counts.completed !== options.builds) {
      throw new Error(`expected ${options.builds} completed builds, found ${JSON.stringify(counts)}`);
    }
    return perSec;
  } finally {
    await dropSchema(schema);
  }
}

/** Starts `count` worker processes, lets them go at once, and times them to `builds` completions. */
async function processWith(count: number, options: ProcessesOptions, args: string[]): Promise<number> {
  const workers = Array.from({ length: count }, () =>
    spawnBenchScript("processes-worker", [...args, "--concurrency", String(options.concurrencyPerProcess)]),
  );
  const completed = new Array<number>(count).fill(0);
  let allDone: () => void = () => undefined;
  let failed: (err: Error) => void = () => undefined;
  const finished = new Promise<void>((resolve, reject) => {
    allDone = resolve;
    failed = reject;
  });
  try {
    const ready = workers.map((child, i) => {
      children.add(child);
      child.stderr?.on("data", (d: Buffer) => process.stderr.write(`[worker ${i}] ${d.toString()}`));
      return new Promise<void>((resolve, reject) => {
        child.once("exit", (code) => {
          const err = new Error(`worker process ${i} exited (${code}) before the end`);
          reject(err);
          failed(err);
        });
        createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
          if (line === "ready") resolve();
          const m = /^count (\d+)$/.exec(line);
          if (m) {
            completed[i] = Number(m[1]);
            if (completed.reduce((a, b) => a + b, 0) >= options.builds) allDone();
          }
        });
      });
    });
    await within(Promise.all(ready), 60_000, "worker processes ready");
    const start = performance.now();
    for (const child of workers) child.stdin?.write("go\n");
    await within(finished, 600_000, `${count} worker processes`);
    return (options.builds / (performance.now() - start)) * 1000;
  } finally {
    await Promise.all(
      workers.map(
        (child) =>
          new Promise<void>((resolve) => {
            children.delete(child);
            if (child.exitCode !== null) return resolve();
            child.removeAllListeners("exit");
            const kill = setTimeout(() => child.kill("SIGKILL"), 30_000);
            child.once("exit", () => {
              clearTimeout(kill);
              resolve();
            });
            child.stdin?.end();
          }),
      ),
    );
  }
}
