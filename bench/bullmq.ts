/**
 * BullMQ 6.7 on the same private Redis, driven the way its documentation shows: Queue.addBulk for the
 * submits, a Worker with a no-op processor. Job options are BullMQ's defaults (completed jobs kept).
 */
import { type ConnectionOptions, Queue, Worker } from "bullmq";
import { within } from "./stats.js";
import {
  completionCounter,
  type ThroughputOptions,
  type ThroughputSample,
  throughputSample,
} from "./throughput.js";

let counter = 0;

function connection(port: number): ConnectionOptions {
  return { host: "127.0.0.1", port, maxRetriesPerRequest: null };
}

const jobData = { strategyId: "bench-noop", params: {} };

export async function bullmqThroughput(port: number, options: ThroughputOptions): Promise<ThroughputSample> {
  counter += 1;
  const name = `bench-tp-${counter}`;
  const queue = new Queue(name, { connection: connection(port) });
  let worker: Worker | undefined;
  try {
    await queue.waitUntilReady();
    const chunk = Array.from({ length: options.chunk }, () => ({ name: "build", data: jobData }));
    const submitStart = performance.now();
    for (let done = 0; done < options.builds; done += options.chunk) {
      await queue.addBulk(chunk.slice(0, Math.min(options.chunk, options.builds - done)));
    }
    const submitMs = performance.now() - submitStart;

    let failed: Error | undefined;
    const w = new Worker(name, async () => null, {
      connection: connection(port),
      concurrency: options.concurrency,
      autorun: false,
    });
    worker = w;
    w.on("failed", (_job, err) => {
      failed = err;
    });
    w.on("error", (err) => {
      failed = err;
    });
    await w.waitUntilReady();
    const counter = completionCounter(options.builds);
    w.on("completed", () => counter.done());
    void w.run();
    await within(counter.finished, 300_000, "BullMQ processing");
    if (failed) throw failed;
    return throughputSample(options.builds, submitMs, counter.elapsedMs());
  } finally {
    await worker?.close();
    await queue.close();
  }
}
