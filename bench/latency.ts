/**
 * Dispatch latency: one build at a time to an idle worker with one slot, from just before the submit
 * to the handler's first line. ourLatencyAcross and bullmqLatencyAcross (the benchmark's figures) run
 * the worker in another process (bench/latency-worker.ts); ourLatency runs it in this process, for
 * the breakdown of one dispatch hop by hop (bench/dispatch-hops.ts probes the queue from inside).
 */
import type { ChildProcess } from "node:child_process";
import { Queue } from "bullmq";

import type { BuildQueue } from "../src/index.js";
import { killChildren, LineChild } from "./child.js";
import { type OurMode, openQueue, startWorker } from "./ours.js";
import { DATABASE_URL, dropSchema, newSchema } from "./postgres.js";
import type { PrivateRedis } from "./redis-server.js";
import { sleep, within } from "./stats.js";

/** Looks inside the dispatches of ourLatency (bench/dispatch-hops.ts times each hop with it). */
export interface LatencyProbe {
  /** Once, with the opened queue, before its worker starts. */
  attach(queue: BuildQueue): void;
  /** Before each dispatch. */
  before(): void;
  /** After each measured dispatch (not the warm-up ones): the submit() call's and the handler's times. */
  measured(t0: number, tStart: number): void;
}

export async function ourLatency(
  mode: OurMode,
  redisUrl: string,
  count: number,
  warmup: number,
  probe?: LatencyProbe,
): Promise<number[]> {
  const schema = newSchema(`lat_${mode}`);
  try {
    const queue = await openQueue(mode, schema, redisUrl);
    probe?.attach(queue);
    const errors: unknown[] = [];
    let onStart: ((t: number) => void) | undefined;
    let onDone: (() => void) | undefined;
    const worker = startWorker(
      queue,
      async () => {
        onStart?.(performance.now());
        return null;
      },
      1,
      { onCompleted: () => onDone?.(), onError: (err) => errors.push(err) },
    );
    try {
      const samples: number[] = [];
      for (let i = 0; i < warmup + count; i++) {
        // Idle worker: the previous build is done and the loop waits for a wake-up.
        await sleep(5);
        for (let spin = 0; !worker.idle && spin < 2000; spin++) await sleep(1);
        const started = new Promise<number>((resolve) => {
          onStart = resolve;
        });
        const done = new Promise<void>((resolve) => {
          onDone = resolve;
        });
        probe?.before();
        const t0 = performance.now();
        const submitted = queue.submit({ strategyId: "bench-noop", params: {} });
        const tStart = await within(started, 30_000, `${mode} mode dispatch`);
        await submitted;
        await within(done, 30_000, `${mode} mode completion`);
        if (i < warmup) continue;
        samples.push(tStart - t0);
        probe?.measured(t0, tStart);
      }
      if (errors.length > 0) throw new Error(`worker errors: ${String(errors[0])}`);
      return samples;
    } finally {
      await worker.stop();
      await queue.close();
    }
  } finally {
    await dropSchema(schema);
  }
}

// ------------------------------------------------------------------ across processes

const children = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

/** Kills every latency worker process still running (the benchmark's cleanup). */
export async function stopLatencyWorkers(): Promise<void> {
  await killChildren(children);
}

const epochNow = () => performance.timeOrigin + performance.now();

/**
 * `count` dispatches (after `warmup`) to an idle worker in another process (bench/latency-worker.ts):
 * from just before `submit()` here to the handler's first line there, both read on the machine's
 * clock (timeOrigin + performance.now()).
 */
async function dispatchesTo(
  worker: LineChild,
  submit: () => Promise<unknown>,
  count: number,
  warmup: number,
): Promise<number[]> {
  const samples: number[] = [];
  await worker.next("ready", 30_000);
  await sleep(100);
  for (let i = 0; i < warmup + count; i++) {
    const started = worker.next("started", 30_000);
    const idle = worker.next("idle", 30_000);
    const t0 = epochNow();
    const submitted = submit();
    const tStart = Number(await started);
    await submitted;
    await idle;
    if (i >= warmup) samples.push(tStart - t0);
    await sleep(5);
  }
  return samples;
}

/** Our dispatch latency with the worker in another process (Redis mode or PostgreSQL only). */
export async function ourLatencyAcross(
  mode: OurMode,
  redis: PrivateRedis,
  count: number,
  warmup: number,
  log: (line: string) => void,
): Promise<number[]> {
  const schema = newSchema(`lx_${mode}`);
  try {
    const queue = await openQueue(mode, schema, redis.url);
    const args = ["--system", "ours", "--schema", schema, "--database-url", DATABASE_URL];
    if (mode === "redis") args.push("--redis-port", String(redis.port));
    const worker = new LineChild(`latency worker ${mode}`, "latency-worker", args, log, children);
    try {
      return await dispatchesTo(
        worker,
        () => queue.submit({ strategyId: "bench-noop", params: {} }),
        count,
        warmup,
      );
    } finally {
      await worker.stop();
      await queue.close();
    }
  } finally {
    await dropSchema(schema);
  }
}

let bullmqQueues = 0;

/** BullMQ's dispatch latency with its Worker in another process. */
export async function bullmqLatencyAcross(
  redis: PrivateRedis,
  count: number,
  warmup: number,
  log: (line: string) => void,
): Promise<number[]> {
  bullmqQueues += 1;
  const name = `bench-latx-${bullmqQueues}`;
  const queue = new Queue(name, { connection: { host: "127.0.0.1", port: redis.port } });
  const worker = new LineChild(
    "latency worker bullmq",
    "latency-worker",
    ["--system", "bullmq", "--queue", name, "--redis-port", String(redis.port)],
    log,
    children,
  );
  try {
    await queue.waitUntilReady();
    return await dispatchesTo(
      worker,
      () => queue.add("build", { strategyId: "bench-noop", params: {} }),
      count,
      warmup,
    );
  } finally {
    await worker.stop();
    await queue.close();
  }
}
