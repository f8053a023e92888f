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
  /** Ours: builds claimed ahead of free slots, or "auto" (ClaimLoopOptions.prefetch; default 0). */
  prefetch?: number | "auto";
}

export interface ThroughputSample {
  submitMs: number;
  processMs: number;
  submitPerSec: number;
  processedPerSec: number;
}

/** The sample of `builds` submitted in `submitMs` and processed in `processMs`. */
export function throughputSample(builds: number, submitMs: number, processMs: number): ThroughputSample {
  return {
    submitMs,
    processMs,
    submitPerSec: (builds / submitMs) * 1000,
    processedPerSec: (builds / processMs) * 1000,
  };
}

/**
 * Counts completions: `finished` resolves at the `total`-th `done()`, and `elapsedMs` is then the
 * time since the counter was made (start it when processing starts).
 */
export function completionCounter(total: number): {
  done(n?: number): void;
  finished: Promise<void>;
  elapsedMs(): number;
} {
  const start = performance.now();
  let completed = 0;
  let endedAt: number | undefined;
  let resolve: () => void = () => undefined;
  const finished = new Promise<void>((r) => {
    resolve = r;
  });
  return {
    done(n = 1) {
      completed += n;
      if (completed >= total && endedAt === undefined) {
        endedAt = performance.now();
        resolve();
      }
    },
    finished,
    elapsedMs: () => (endedAt ?? performance.now()) - start,
  };
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

      const counter = completionCounter(options.builds);
      const worker = startWorker(
        queue,
        async () => null,
        options.concurrency,
        { onCompleted: () => counter.done(), onError: (err) => errors.push(err) },
        options.prefetch ?? 0,
      );
      try {
        await within(counter.finished, 300_000, `${mode} mode processing`);
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
      return throughputSample(options.builds, submitMs, counter.elapsedMs());
    } finally {
      await queue.close();
    }
  } finally {
    await dropSchema(schema);
  }
}
