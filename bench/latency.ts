/**
 * Dispatch latency of our queue: one build at a time to an idle worker (the product's claim loop,
 * concurrency 1, in this process), from just before submit() to the handler's first line.
 */

import type { BuildQueue } from "../src/index.js";
import { type OurMode, openQueue, startWorker } from "./ours.js";
import { dropSchema, newSchema } from "./postgres.js";
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
