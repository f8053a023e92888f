/**
 * A worker PROCESS for the scaling benchmark (bench/processes.ts starts 1, 2 or 4 of them):
 *
 *   --system ours:   a BuildQueue in --mode redis|postgres and the product's claim loop (bench/ours.ts)
 *   --system bullmq: a BullMQ Worker
 *
 * each with --concurrency builds in flight and a no-op handler. Protocol, one line each way:
 *   stdout  ready            connected, not claiming yet
 *           count <n>        builds completed so far (at most every 20 ms, when it changed)
 *   stdin   go               start claiming
 * The process stops and exits when its stdin closes (the parent is done, or gone).
 */
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { Worker as BullWorker } from "bullmq";
import { openQueue, startWorker } from "./ours.js";

const { values: args } = parseArgs({
  options: {
    system: { type: "string" },
    mode: { type: "string" },
    "redis-url": { type: "string" },
    "redis-port": { type: "string" },
    schema: { type: "string" },
    queue: { type: "string" },
    concurrency: { type: "string" },
  },
});

const say = (line: string) => process.stdout.write(`${line}\n`);
const concurrency = Number(args.concurrency ?? "25");
let completed = 0;

async function prepare(): Promise<{ go(): void; stop(): Promise<void> }> {
  if (args.system === "bullmq") {
    const worker = new BullWorker(args.queue ?? "bench-processes", async () => null, {
      connection: { host: "127.0.0.1", port: Number(args["redis-port"]), maxRetriesPerRequest: null },
      concurrency,
      autorun: false,
    });
    worker.on("completed", () => {
      completed += 1;
    });
    await worker.waitUntilReady();
    return {
      go: () => void worker.run(),
      stop: () => worker.close(),
    };
  }
  const mode = args.mode === "postgres" ? "postgres" : "redis";
  const queue = await openQueue(mode, args.schema ?? "", args["redis-url"] ?? "");
  let stopWorker: (() => Promise<void>) | undefined;
  return {
    go: () => {
      const worker = startWorker(queue, async () => null, concurrency, {
        onCompleted: () => {
          completed += 1;
        },
        onError: (err) => process.stderr.write(`worker error: ${String(err)}\n`),
      });
      stopWorker = () => worker.stop();
    },
    stop: async () => {
      await stopWorker?.();
      await queue.close();
    },
  };
}

async function main(): Promise<void> {
  const worker = await prepare();
  let reported = 0;
  const ticker = setInterval(() => {
    if (completed !== reported) {
      reported = completed;
      say(`count ${completed}`);
    }
  }, 20);
  say("ready");
  const lines = createInterface({ input: process.stdin });
  lines.on("line", (line) => {
    if (line.trim() === "go") worker.go();
  });
  lines.once("close", () => {
    clearInterval(ticker);
    void worker.stop().finally(() => process.exit(0));
  });
}

main().catch((err: Error) => {
  process.stderr.write(`${err.stack ?? err.message}\n`);
  process.exit(1);
});
