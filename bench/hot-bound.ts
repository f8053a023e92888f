/**
 * The upper bound of the "status changes as HOT updates" lever (issue 15), before building it: the
 * throughput benchmark's processing phase (20,000 no-op builds submitted first, then the claim loop at
 * concurrency 50, Redis mode, prefetch auto) on the product's schema, and on the same schema with
 * every index a claim or a completion changes dropped (the eight whose predicate reads `status`, or
 * whose key is the lease or the worker) and a fillfactor that leaves room on each page, so that every
 * status change can be a heap-only update. That schema cannot serve the product (no PostgreSQL-path
 * dispatch, no reaper index): the narrow dispatch and lease tables that would take those indexes over
 * cost writes of their own, so the real gain is below this bound.
 *   node dist/bench/hot-bound.js [runs=3] [fillfactor=40]
 * Alternating runs (product, bound, product, ...), on a private redis-server; prints one JSON object:
 * builds/s, the builds table's size after, and the share of updates that were heap-only, per run.
 */
import { loadavg } from "node:os";
import pg from "pg";
import { inputs, openQueue, startWorker } from "./ours.js";
import { DATABASE_URL, dropSchema, newSchema } from "./postgres.js";
import { PrivateRedis } from "./redis-server.js";
import { median, within } from "./stats.js";

const BUILDS = 20_000;
const CONCURRENCY = 50;
/** The indexes a claim or a completion changes (any of them makes every status change non-HOT). */
const STATUS_INDEXES = [
  "builds_dispatch_idx",
  "builds_pool_dispatch_idx",
  "builds_queued_seq_idx",
  "builds_delayed_idx",
  "builds_key_active_idx",
  "builds_key_held_idx",
  "builds_worker_idx",
  "builds_lease_expiry_idx",
];

type Variant = "product" | "bound";

interface RunResult {
  variant: Variant;
  processedPerSec: number;
  buildsTableMiB: number;
  /** Heap-only updates of builds over all its updates in the phase (pg_stat_user_tables). */
  hotShare: number;
}

async function tableStats(client: pg.Client, schema: string) {
  // pg_stat_user_tables is fed by each backend at the end of its transactions, with a delay.
  await client.query("SELECT pg_stat_clear_snapshot()");
  const res = await client.query<{ upd: string; hot: string; bytes: string }>(
    `SELECT n_tup_upd AS upd, n_tup_hot_upd AS hot, pg_total_relation_size(relid) AS bytes
     FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = 'builds'`,
    [schema],
  );
  const row = res.rows[0];
  return { updates: Number(row?.upd ?? 0), hot: Number(row?.hot ?? 0), bytes: Number(row?.bytes ?? 0) };
}

async function runOnce(variant: Variant, redis: PrivateRedis, fillfactor: number): Promise<RunResult> {
  const schema = newSchema(`hot_${variant}`);
  const queue = await openQueue("redis", schema, redis.url);
  const client = new pg.Client({ connectionString: DATABASE_URL });
  await client.connect();
  try {
    if (variant === "bound") {
      for (const index of STATUS_INDEXES) await client.query(`DROP INDEX "${schema}".${index}`);
      await client.query(`ALTER TABLE "${schema}".builds SET (fillfactor = ${fillfactor})`);
    }
    for (let left = BUILDS; left > 0; left -= 1000) await queue.submitMany(inputs(Math.min(1000, left)));
    const before = await tableStats(client, schema);
    let done = 0;
    let finish: () => void = () => undefined;
    const finished = new Promise<void>((resolve) => {
      finish = resolve;
    });
    const errors: unknown[] = [];
    const started = performance.now();
    const worker = startWorker(
      queue,
      async () => null,
      CONCURRENCY,
      {
        onCompleted: () => {
          done += 1;
          if (done === BUILDS) finish();
        },
        onError: (err) => errors.push(err),
      },
      "auto",
    );
    try {
      await within(finished, 300_000, `${variant} processing`);
    } finally {
      await worker.stop();
    }
    const seconds = (performance.now() - started) / 1000;
    if (errors.length > 0)
      throw new Error(`${variant}: ${errors.length} errors, first: ${String(errors[0])}`);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const after = await tableStats(client, schema);
    const updates = after.updates - before.updates;
    return {
      variant,
      processedPerSec: Math.round(BUILDS / seconds),
      buildsTableMiB: Number((after.bytes / 2 ** 20).toFixed(1)),
      hotShare: updates > 0 ? Number(((after.hot - before.hot) / updates).toFixed(2)) : 0,
    };
  } finally {
    await client.end();
    await queue.close();
    await dropSchema(schema);
    await redis.flushAll();
  }
}

async function main(): Promise<void> {
  const runs = Number(process.argv[2] ?? 3);
  const fillfactor = Number(process.argv[3] ?? 40);
  if (!Number.isInteger(runs) || runs < 1)
    throw new Error(`runs: a positive integer, got ${process.argv[2]}`);
  if (!Number.isInteger(fillfactor) || fillfactor < 10 || fillfactor > 100) {
    throw new Error(`fillfactor: an integer from 10 to 100, got ${process.argv[3]}`);
  }
  const redis = await PrivateRedis.start();
  const results: RunResult[] = [];
  try {
    for (let i = 0; i < runs; i++) {
      for (const variant of ["product", "bound"] as const) {
        const result = await runOnce(variant, redis, fillfactor);
        process.stderr.write(`${JSON.stringify(result)}\n`);
        results.push(result);
      }
    }
  } finally {
    await redis.stop();
  }
  const of = (variant: Variant) => results.filter((r) => r.variant === variant);
  const summary = (variant: Variant) => ({
    processedPerSec: median(of(variant).map((r) => r.processedPerSec)),
    buildsTableMiB: median(of(variant).map((r) => r.buildsTableMiB)),
    hotShare: median(of(variant).map((r) => r.hotShare)),
  });
  const result = {
    builds: BUILDS,
    concurrency: CONCURRENCY,
    fillfactor,
    runs: results,
    product: summary("product"),
    bound: summary("bound"),
    loadAverageAtEnd: loadavg()[0],
  };
  console.log(JSON.stringify(result, null, 2));
}

await main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
