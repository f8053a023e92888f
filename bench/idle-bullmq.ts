/**
 * One process of BullMQ's idle fleet (bench/idle.ts): `--role api` holds a Queue (what an API
 * process that submits keeps open), `--role worker` runs a Worker with concurrency 1 waiting for jobs.
 * Prints "ready" once connected, then idles until SIGTERM.
 * Usage: idle-bullmq --role api|worker --port N --queue NAME
 */
import { parseArgs } from "node:util";
import { Queue, Worker } from "bullmq";

const { values: args } = parseArgs({
  options: {
    role: { type: "string" },
    port: { type: "string" },
    queue: { type: "string" },
  },
});
const connection = { host: "127.0.0.1", port: Number(args.port), maxRetriesPerRequest: null };
const name = args.queue ?? "bench-idle";

async function main(): Promise<void> {
  let close: () => Promise<void>;
  if (args.role === "api") {
    const queue = new Queue(name, { connection });
    await queue.waitUntilReady();
    close = () => queue.close();
  } else if (args.role === "worker") {
    const worker = new Worker(name, async () => null, { connection, concurrency: 1 });
    await worker.waitUntilReady();
    close = () => worker.close();
  } else {
    throw new Error(`--role: api or worker, not ${String(args.role)}`);
  }
  process.stdout.write("ready\n");
  process.once("SIGTERM", () => {
    void close().finally(() => process.exit(0));
  });
}

main().catch((err: Error) => {
  process.stderr.write(`${err.message}\n`);
  process.exit(1);
});
