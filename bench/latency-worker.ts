/**
 * The worker PROCESS of the dispatch-latency benchmark (bench/latency.ts starts it): an idle worker
 * with one slot, in another process than the submitter, as the issue measures dispatch.
 *
 * `node dist/bench/latency-worker.js --system ours --schema S --database-url U [--redis-port P]`
 * runs our claim loop (bench/ours.ts, as `oculus worker` does) on a BuildQueue in Redis mode with
 * --redis-port, else PostgreSQL-only; `--system bullmq --queue NAME --redis-port P` runs a BullMQ
 * Worker (concurrency 1) on that queue.
 * Protocol, stdout, one line each:
 *   ready
 *   started <epochMs>   the handler's first line (epochMs: timeOrigin + performance.now(), the clock
 *                       the submitter reads too: same machine)
 *   idle                the job is recorded and the worker waits for the next one
 * The process exits when its stdin closes (the parent is gone).
 */
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { Worker } from "bullmq";
import { openChildQueue, startWorker } from "./ours.js";
import { sleep } from "./stats.js";

const { values: args } = parseArgs({
  options: {
    system: { type: "string" },
    "redis-port": { type: "string" },
    "database-url": { type: "string" },
    schema: { type: "string" },
    queue: { type: "string" },
  },
});

const say = (line: string) => process.stdout.write(`${line}\n`);
const now = () => performance.timeOrigin + performance.now();
const redisPort = args["redis-port"];

async function runOurs(): Promise<() => Promise<void>> {
  const databaseUrl = args["database-url"];
  const schema = args.schema;
  if (!databaseUrl || !schema) throw new Error("--database-url and --schema are required");
  const queue = await openChildQueue(databaseUrl, schema, redisPort);
  const worker = startWorker(
    queue,
    async () => {
      say(`started ${now().toFixed(3)}`);
      return null;
    },
    1,
    {
      onCompleted: () => {
        void (async () => {
          // Idle: the loop has claimed nothing more and waits for a wake-up.
          for (let spin = 0; !worker.idle && spin < 5000; spin++) await sleep(1);
          say("idle");
        })();
      },
      onError: (err) => process.stderr.write(`worker error: ${String(err)}\n`),
    },
  );
  return async () => {
    await worker.stop();
    await queue.close();
  };
}

async function runBullmq(): Promise<() => Promise<void>> {
  const name = args.queue;
  if (!name || !redisPort) throw new Error("--queue and --redis-port are required");
  const connection = { host: "127.0.0.1", port: Number(redisPort), maxRetriesPerRequest: null };
  const worker = new Worker(
    name,
    async () => {
      say(`started ${now().toFixed(3)}`);
      return null;
    },
    { connection, concurrency: 1 },
  );
  worker.on("completed", () => {
    // As in-process before: a moment for the worker to go back to its blocking wait.
    void sleep(5).then(() => say("idle"));
  });
  worker.on("error", (err) => process.stderr.write(`worker error: ${err.message}\n`));
  await worker.waitUntilReady();
  return () => worker.close();
}

const stop = args.system === "bullmq" ? await runBullmq() : await runOurs();
createInterface({ input: process.stdin }).on("close", () => {
  void stop().finally(() => process.exit(0));
});
say("ready");
