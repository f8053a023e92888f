/**
 * The PRODUCER process of the progress fan-out benchmark (bench/fanout.ts starts it as
 * `node dist/bench/fanout-producer.js --system redis|postgres|bullmq ...`): a worker on "another
 * machine", with its own queue, hub and connections.
 *
 * ours (--system redis: Redis mode; --system postgres: no redisUrl at all): opens a BuildQueue on the
 * parent's schema and prefix, submits --builds builds and claims them all (a one-hour lease, so
 * nothing expires during the run; no reaper runs anyway). bullmq: adds --builds jobs to the queue
 * --queue-name and holds them active in a Worker (concurrency = --builds).
 *
 * After "go" on stdin, it sends --rate progress updates per second, spread evenly (update k at
 * start + k / rate), round-robin over the builds, for --warmup-seconds and then --seconds. Each update
 * carries its sequence number and its send time (timeOrigin + performance.now(), taken just before
 * the call): ours `queue.reportProgress(id, lease, {phase, percent, iteration: seq, maxIterations,
 * message: sendTime})`, BullMQ `job.updateProgress({seq, sentAt})`. The calls are not awaited one by
 * one (a worker's builds report independently).
 *
 * Protocol, stdout, one line each:
 *   ready <pid> <id,id,...>       the builds (jobs) are running; the ids in round-robin order
 *   measuring <epochMs>           the first measured update is about to be sent
 *   done <json>                   every update was sent and its call settled: ProducerReport
 * The process exits when its stdin closes (the parent is gone), so no producer outlives the benchmark.
 */
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { type ConnectionOptions, type Job, Queue, Worker } from "bullmq";
import { BuildQueue, type ClaimedBuild } from "../src/index.js";
import { distribution } from "./stats.js";

const { values: args } = parseArgs({
  options: {
    system: { type: "string" },
    "redis-port": { type: "string" },
    "database-url": { type: "string" },
    schema: { type: "string" },
    "queue-name": { type: "string" },
    builds: { type: "string", default: "100" },
    rate: { type: "string", default: "100" },
    "warmup-seconds": { type: "string", default: "3" },
    seconds: { type: "string", default: "20" },
    "progress-interval-ms": { type: "string", default: "200" },
  },
});

const say = (line: string) => process.stdout.write(`${line}\n`);
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

const system = args.system;
if (system !== "redis" && system !== "postgres" && system !== "bullmq") {
  throw new Error("--system must be redis, postgres or bullmq");
}
const builds = Number(args.builds);
const rate = Number(args.rate);
const total = Math.round((Number(args["warmup-seconds"]) + Number(args.seconds)) * rate);
const measuredFrom = Math.round(Number(args["warmup-seconds"]) * rate);
const redisPort = args["redis-port"];

/** Sends one update; resolves when the call has settled (ours: the progress write committed). */
type Send = (index: number, seq: number, sentAt: number) => Promise<void>;

/** What the producer reports at the end (its side of the measurement). */
export interface ProducerReport {
  /** Measured updates sent (after the warm-up). */
  sent: number;
  /** Calls that failed (all updates, warm-up included), with the first error. */
  errors: number;
  firstError: string | null;
  /** Send -> the call settled, measured updates (ours: the progress write committed). */
  callMs: ReturnType<typeof distribution>;
  /** How late the sends were against their even schedule, measured updates. */
  scheduleLagMs: ReturnType<typeof distribution>;
  /** First to last measured send (the achieved rate is sent / this). */
  sendWindowMs: number;
  /** CPU time of this process from the first measured send until every call had settled. */
  cpuMs: number;
  wallMs: number;
}

let closeAll: () => Promise<void> = async () => undefined;
createInterface({ input: process.stdin }).on("line", (line) => {
  if (line.trim() === "go") void run();
});
process.stdin.on("close", () => {
  void closeAll()
    .catch(() => undefined)
    .finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
});

const opened: Promise<Send> = system === "bullmq" ? openBullmq() : openOurs(system);
await opened;

async function openOurs(mode: "redis" | "postgres"): Promise<Send> {
  const databaseUrl = args["database-url"];
  const schema = args.schema;
  if (!databaseUrl || !schema) throw new Error("--database-url and --schema are required");
  const queue = await BuildQueue.open({
    databaseUrl,
    redisUrl: mode === "redis" ? `redis://127.0.0.1:${redisPort}` : undefined,
    schema,
    prefix: schema,
    migrate: false,
    poolSize: 10,
    reconcileIntervalMs: 3_600_000,
    progressIntervalMs: Number(args["progress-interval-ms"]),
  });
  closeAll = () => queue.close();
  if (queue.mode !== mode) throw new Error(`queue opened in ${queue.mode} mode, expected ${mode}`);
  await queue.submitMany(
    Array.from({ length: builds }, (_, i) => ({ strategyId: `bench-fanout-${i}`, params: {} })),
  );
  const claimed: ClaimedBuild[] = [];
  for (let round = 0; claimed.length < builds && round < 100; round++) {
    claimed.push(
      ...(await queue.claim("bench-fanout-producer", builds - claimed.length, { leaseMs: 3_600_000 })),
    );
  }
  if (claimed.length !== builds) throw new Error(`claimed ${claimed.length} of ${builds} builds`);
  say(`ready ${process.pid} ${claimed.map((b) => b.id).join(",")}`);
  return (index, seq, sentAt) => {
    const build = claimed[index] as ClaimedBuild;
    return queue.reportProgress(build.id, build.lease, {
      phase: "fanout",
      percent: Math.floor((seq * 100) / total),
      iteration: seq,
      maxIterations: total,
      message: sentAt.toFixed(3),
    });
  };
}

async function openBullmq(): Promise<Send> {
  const name = args["queue-name"];
  if (!name || !redisPort) throw new Error("--queue-name and --redis-port are required");
  const connection: ConnectionOptions = {
    host: "127.0.0.1",
    port: Number(redisPort),
    maxRetriesPerRequest: null,
  };
  const queue = new Queue(name, { connection });
  await queue.waitUntilReady();
  const held: Job[] = [];
  let release: () => void = () => undefined;
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  const worker = new Worker(
    name,
    async (job: Job) => {
      held.push(job);
      await released;
      return null;
    },
    { connection, concurrency: builds },
  );
  closeAll = async () => {
    release();
    await worker.close(true);
    await queue.close();
  };
  await worker.waitUntilReady();
  await queue.addBulk(
    Array.from({ length: builds }, (_, i) => ({ name: "build", data: { strategyId: `bench-fanout-${i}` } })),
  );
  const deadline = Date.now() + 30_000;
  while (held.length < builds) {
    if (Date.now() > deadline) throw new Error(`only ${held.length} of ${builds} BullMQ jobs became active`);
    await sleep(5);
  }
  say(`ready ${process.pid} ${held.map((j) => j.id).join(",")}`);
  return async (index, seq, sentAt) => {
    await (held[index] as Job).updateProgress({ seq, sentAt });
  };
}

let running = false;
async function run(): Promise<void> {
  if (running) return;
  running = true;
  const send = await opened;
  const interval = 1000 / rate;
  const calls: Promise<void>[] = [];
  const callMs: number[] = [];
  const lagMs: number[] = [];
  let errors = 0;
  let firstError: string | null = null;
  let cpuAtStart = process.cpuUsage();
  let wallAtStart = 0;
  let firstSend = 0;
  let lastSend = 0;
  const start = performance.now() + 20;
  for (let seq = 0; seq < total; ) {
    const t = performance.now();
    while (seq < total && start + seq * interval <= t) {
      if (seq === measuredFrom) {
        cpuAtStart = process.cpuUsage();
        wallAtStart = performance.now();
        say(`measuring ${now().toFixed(3)}`);
      }
      const target = start + seq * interval;
      const sentAt = now();
      const measured = seq >= measuredFrom;
      if (measured) {
        lagMs.push(performance.now() - target);
        if (seq === measuredFrom) firstSend = sentAt;
        lastSend = sentAt;
      }
      calls.push(
        send(seq % builds, seq, sentAt).then(
          () => {
            if (measured) callMs.push(now() - sentAt);
          },
          (err: unknown) => {
            errors += 1;
            firstError ??= err instanceof Error ? err.message : String(err);
          },
        ),
      );
      seq += 1;
    }
    if (seq < total) await sleep(Math.max(0, start + seq * interval - performance.now()));
  }
  await Promise.all(calls);
  const cpu = process.cpuUsage(cpuAtStart);
  const report: ProducerReport = {
    sent: total - measuredFrom,
    errors,
    firstError,
    callMs: distribution(callMs),
    scheduleLagMs: distribution(lagMs),
    sendWindowMs: lastSend - firstSend,
    cpuMs: (cpu.user + cpu.system) / 1000,
    wallMs: performance.now() - wallAtStart,
  };
  say(`done ${JSON.stringify(report)}`);
}
