/**
 * Throughput of our queue: `builds` no-op builds submitted with submitMany in chunks, then processed by
 * the product's claim loop at the given concurrency. Every processed build is checked in PostgreSQL.
 */

import { inputs, type OurMode, openQueue, startWorker } from "./ours.js";
import { analyze, dropSchema, newSchema, statusCounts } from "./postgres.js";
import { within } from "./stats.js";

export interface ThroughputOptions {
  builds: number;
  chunk: number;
  concurrency: number;
}

export interface ThroughputSample {
  submitMs: number;
  processMs: number;
  submitPerSec: number;
  processedPerSec: number;
}

export async function ourThroughput(
  mode: OurMode,
  redisUrl: string,
  options: ThroughputOptions,
  analyzeFirst = false,
): Promise<ThroughputSample> {
  const schema = newSchema(`tp_${mode}`);
  try {
    const queue = await openQueue(mode, schema, redisUrl);
    const errors: unknown[] = [];
    try {
      const chunk = inputs(options.chunk);
      const submitStart = performance.now();
      for (let done = 0; done < options.builds; done += options.chunk) {
        await queue.submitMany(chunk.slice(0, Math.min(options.chunk, options.builds - done)));
      }
      const submitMs = performance.now() - submitStart;
      // Optional, untimed: fresh statistics, as autovacuum would give a long-lived table.
      if (analyzeFirst) await analyze(schema);

      let completed = 0;
      let allDone: () => void = () => undefined;
      const finished = new Promise<void>((resolve) => {
        allDone = resolve;
      });
      const processStart = performance.now();
      let processMs = 0;
      const worker = startWorker(queue, async () => null, options.concurrency, {
        onCompleted: () => {
          completed += 1;
          if (completed === options.builds) {
            processMs = performance.now() - processStart;
            allDone();
          }
        },
        onError: (err) => errors.push(err),
      });
      try {
        await within(finished, 300_000, `${mode} mode processing`);
      } finally {
        await worker.stop();
      }
      if (errors.length > 0) throw new Error(`worker errors: ${String(errors[0])}`);
      const counts = await statusCounts(schema);
      if (counts.completed !== options.builds) {
        throw new Error(
          `expected ${options.builds} completed builds in PostgreSQL, found ${JSON.stringify(counts)}`,
        );
      }
      return {
        submitMs,
        processMs,
        submitPerSec: (options.builds / submitMs) * 1000,
        processedPerSec: (options.builds / processMs) * 1000,
      };
    } finally {
      await queue.close();
    }
  } finally {
    await dropSchema(schema);
  }
}
