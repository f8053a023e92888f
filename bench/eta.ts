/**
 * ETA error on a replayed workload (issue 14): how far `etaSeconds` (from submit's answer) is from
 * when each build actually started. A deterministic workload (seeded): four strategies with their own
 * run times (±30 % jitter), one of them routed to GPU workers, submitted in bursts faster than the
 * fleet runs them, so queues build up; the fleet is three workers without labels and one with
 * gpu=true (which also serves the default pool: the ETA does not model shared capacity). Each
 * strategy first runs a few builds so that run times are known. Prints the absolute error (mean,
 * median, p90, max), the bias (mean of eta - actual) and the mean actual wait, in seconds.
 *   npm run -s build && node dist/bench/eta.js [builds=80]        (REDIS_URL=... for Redis mode)
 */
import { setTimeout as sleep } from "node:timers/promises";
import { BuildQueue } from "../src/queue/build-queue.js";
import { Worker } from "../src/worker/worker.js";
import { DATABASE_URL, dropSchema, newSchema } from "./postgres.js";

interface Strategy {
  id: string;
  runMs: number;
  requires?: Record<string, string>;
}

const STRATEGIES: Strategy[] = [
  { id: "fast", runMs: 300 },
  { id: "mid", runMs: 1000 },
  { id: "slow", runMs: 2000 },
  { id: "train", runMs: 1500, requires: { gpu: "true" } },
];

/** mulberry32: the same workload every run. */
function prng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const quantile = (sorted: number[], q: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;

async function main(): Promise<void> {
  const total = Number(process.argv[2] ?? 80);
  const random = prng(14);
  const schema = newSchema("eta");
  const queue = await BuildQueue.open({
    databaseUrl: DATABASE_URL,
    redisUrl: process.env.REDIS_URL,
    schema,
    prefix: schema,
  });
  const handler = async ({
    build,
    signal,
  }: {
    build: { params: Record<string, unknown> };
    signal: AbortSignal;
  }) => {
    await sleep(Number(build.params.runMs), undefined, { signal });
    return null;
  };
  const workers = [
    ...[1, 2, 3].map((i) => new Worker(queue, { id: `cpu-${i}`, handler })),
    new Worker(queue, { id: "gpu-1", labels: { gpu: "true" }, handler }),
  ];
  try {
    for (const w of workers) await w.start();
    const jittered = (s: Strategy) => Math.round(s.runMs * (0.7 + 0.6 * random()));
    const input = (s: Strategy) => ({
      strategyId: s.id,
      params: { runMs: jittered(s) },
      ...(s.requires ? { requires: s.requires } : {}),
    });
    // Warm-up: run times become known.
    const warm = await queue.submitMany(STRATEGIES.flatMap((s) => [input(s), input(s), input(s)]));
    await waitUntilDone(
      queue,
      warm.map((w) => w.build.id),
    );

    const measured: { id: string; eta: number }[] = [];
    let unknown = 0;
    while (measured.length + unknown < total) {
      const burst = 1 + Math.floor(random() * 6);
      for (let i = 0; i < burst && measured.length + unknown < total; i++) {
        const strategy = STRATEGIES[Math.floor(random() * STRATEGIES.length)] as Strategy;
        const res = await queue.submit(input(strategy));
        if (res.etaSeconds === null) unknown++;
        else measured.push({ id: res.build.id, eta: res.etaSeconds });
      }
      await sleep(500);
    }
    await waitUntilDone(
      queue,
      measured.map((m) => m.id),
    );
    const errors: number[] = [];
    let waits = 0;
    for (const m of measured) {
      const b = await queue.get(m.id);
      const actual = ((b.startedAt?.getTime() ?? 0) - b.createdAt.getTime()) / 1000;
      waits += actual;
      errors.push(m.eta - actual);
    }
    const abs = errors.map(Math.abs).sort((a, b) => a - b);
    const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / Math.max(1, xs.length);
    console.log(
      [
        `ETA error over ${measured.length} builds (${unknown} without an ETA), mode ${queue.mode}:`,
        `  |eta - actual start wait| mean ${mean(abs).toFixed(2)} s, median ${quantile(abs, 0.5).toFixed(2)} s, ` +
          `p90 ${quantile(abs, 0.9).toFixed(2)} s, max ${(abs.at(-1) ?? 0).toFixed(2)} s`,
        `  bias (mean eta - actual) ${mean(errors).toFixed(2)} s; mean actual wait ${(waits / Math.max(1, measured.length)).toFixed(2)} s`,
      ].join("\n"),
    );
  } finally {
    for (const w of workers) await w.stop();
    await queue.close();
    await dropSchema(schema);
  }
}

async function waitUntilDone(queue: BuildQueue, ids: string[]): Promise<void> {
  for (const id of ids) {
    while ((await queue.get(id)).status !== "completed") await sleep(100);
  }
}

await main();
