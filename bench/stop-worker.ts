/**
 * A worker PROCESS for the stop-latency benchmark (bench/stop.ts starts it as
 * `node dist/bench/stop-worker.js --schema S --database-url U [--redis-port P]`).
 *
 * It opens a BuildQueue (Redis mode with --redis-port, else PostgreSQL-only: no redisUrl at all) and
 * runs the product's Worker (src/worker/worker.ts, capacity 1). Its handler reports its start, then
 * waits for the build's signal; when the signal fires it reports the time and throws the signal's
 * reason (a BuildAbandoned, why "stopped"), so the build ends stopped.
 * Protocol, stdout, one line each:
 *   ready <pid>
 *   started <id> <epochMs>
 *   aborted <id> <epochMs> <why>     the handler's ctx.signal fired (epochMs: timeOrigin + performance.now(),
 *                                    taken first thing in the abort listener)
 * The process exits when its stdin closes (the parent is gone), so no worker outlives the benchmark.
 */
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { BuildAbandoned, Worker } from "../src/index.js";
import { openChildQueue } from "./ours.js";

const { values: args } = parseArgs({
  options: {
    "redis-port": { type: "string" },
    "database-url": { type: "string" },
    schema: { type: "string" },
  },
});

const say = (line: string) => process.stdout.write(`${line}\n`);
const now = () => performance.timeOrigin + performance.now();

const databaseUrl = args["database-url"];
const schema = args.schema;
if (!databaseUrl || !schema) throw new Error("--database-url and --schema are required");
const redisPort = args["redis-port"];

createInterface({ input: process.stdin }).on("close", () => process.exit(0));

const queue = await openChildQueue(databaseUrl, schema, redisPort);

const worker = new Worker(queue, {
  capacity: 1,
  handler: (ctx) =>
    new Promise<null>((_, reject) => {
      const id = ctx.build.id;
      ctx.signal.addEventListener(
        "abort",
        () => {
          const at = now();
          const reason: unknown = ctx.signal.reason;
          const why = reason instanceof BuildAbandoned ? reason.why : "other";
          say(`aborted ${id} ${at.toFixed(3)} ${why.replace(/\s+/g, "-")}`);
          reject(reason instanceof Error ? reason : new Error(String(reason)));
        },
        { once: true },
      );
      say(`started ${id} ${now().toFixed(3)}`);
    }),
});
await worker.start();
say(`ready ${process.pid}`);
