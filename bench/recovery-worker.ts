/**
 * A worker PROCESS for the recovery benchmark (bench/recovery.ts starts it as
 * `node dist/bench/recovery-worker.js --system ours|bullmq ...` and kills it with SIGKILL).
 *
 *   --system ours:   a BuildQueue (Redis mode) and the product's Worker (src/worker/worker.ts, capacity 1,
 *                    heartbeats in their thread), with --heartbeat-ms / --dead-after-ms.
 *   --system bullmq: a BullMQ Worker (concurrency 1) with --lock-duration / --stalled-interval.
 *
 * Its handler never ends by itself: it reports its start and waits for the parent's "finish <id>".
 * Protocol, one line each way:
 *   stdout  ready <pid>
 *           started <id> <attempt> <epochMs>   handler entered; attempt: our retryCount, BullMQ's
 *                                              stalledCounter; epochMs: timeOrigin + performance.now()
 *           finished <id>                      the handler returned (its result is being recorded)
 *   stdin   finish <id>                        let that build's handler return
 * The process exits when its stdin closes (the parent is gone), so no worker outlives the benchmark.
 * BENCH_WORKER_LOG=<pino level> (ours only): the queue's and worker's log on stderr (the parent prints it).
 */
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";

const { values: args } = parseArgs({
  options: {
    system: { type: "string" },
    "redis-port": { type: "string" },
    "database-url": { type: "string" },
    schema: { type: "string" },
    prefix: { type: "string" },
    queue: { type: "string" },
    "heartbeat-ms": { type: "string" },
    "dead-after-ms": { type: "string" },
    "lock-duration": { type: "string" },
    "stalled-interval": { type: "string" },
  },
});

function required(name: keyof typeof args): string {
  const value = args[name];
  if (!value) throw new Error(`--${name} is required`);
  return value;
}

const say = (line: string) => process.stdout.write(`${line}\n`);
const now = () => performance.timeOrigin + performance.now();

/** Handlers waiting for the parent's "finish <id>". */
const waiting = new Map<string, () => void>();
const finishRequested = new Set<string>();

function untilFinish(id: string, signal?: AbortSignal): Promise<void> {
  if (finishRequested.delete(id)) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = () => {
      waiting.delete(id);
      resolve();
    };
    waiting.set(id, done);
    signal?.addEventListener("abort", done, { once: true });
  });
}

const stdin = createInterface({ input: process.stdin });
stdin.on("line", (line) => {
  const [command, id] = line.trim().split(/\s+/);
  if (command !== "finish" || !id) return;
  const resolve = waiting.get(id);
  if (resolve) resolve();
  else finishRequested.add(id);
});
// The parent is gone (or closed our stdin on purpose): leave at once, like a killed worker.
stdin.on("close", () => process.exit(0));

async function runOurs(): Promise<void> {
  const { BuildQueue, Worker } = await import("../src/index.js");
  const level = process.env.BENCH_WORKER_LOG;
  const logger = level ? (await import("pino")).pino({ level }, process.stderr) : undefined;
  const queue = await BuildQueue.open({
    databaseUrl: required("database-url"),
    redisUrl: `redis://127.0.0.1:${required("redis-port")}`,
    schema: required("schema"),
    prefix: required("prefix"),
    migrate: false,
    poolSize: 4,
    reconcileIntervalMs: 3_600_000,
    logger,
    health: { heartbeatMs: Number(required("heartbeat-ms")), deadAfterMs: Number(required("dead-after-ms")) },
  });
  if (queue.mode !== "redis") throw new Error(`queue opened in ${queue.mode} mode, expected redis`);
  const worker = new Worker(queue, {
    capacity: 1,
    logger,
    handler: async (ctx) => {
      say(`started ${ctx.build.id} ${ctx.build.retryCount} ${now().toFixed(3)}`);
      await untilFinish(ctx.build.id, ctx.signal);
      say(`finished ${ctx.build.id}`);
      return null;
    },
  });
  await worker.start();
}

async function runBullmq(): Promise<void> {
  const { Worker } = await import("bullmq");
  const worker = new Worker(
    required("queue"),
    async (job) => {
      const id = String(job.id);
      say(`started ${id} ${job.stalledCounter ?? 0} ${now().toFixed(3)}`);
      await untilFinish(id);
      say(`finished ${id}`);
      return null;
    },
    {
      connection: { host: "127.0.0.1", port: Number(required("redis-port")), maxRetriesPerRequest: null },
      concurrency: 1,
      lockDuration: Number(required("lock-duration")),
      stalledInterval: Number(required("stalled-interval")),
    },
  );
  worker.on("error", (err) => process.stderr.write(`bullmq worker error: ${err.message}\n`));
  await worker.waitUntilReady();
}

const system = required("system");
if (system === "ours") await runOurs();
else if (system === "bullmq") await runBullmq();
else throw new Error(`--system must be ours or bullmq, got ${system}`);
say(`ready ${process.pid}`);
