/**
 * The submit's own durable commit against the cheapest durable commit (issue 15, dispatch latency):
 * `count` submits of one build through the queue's store (insert_builds.sql: the build, its event,
 * its listing row, one transaction), then `count` single-row INSERTs into a two-column table from one
 * node-postgres client, each its own transaction with synchronous_commit on. One at a time, 2 ms
 * apart, after 200 untimed of each; PostgreSQL only (no Redis, no worker).
 *   node dist/bench/submit-commit.js [count=1000]
 * Prints one JSON object: p50 / p99 (and the rest) of each loop, in microseconds.
 */
import { loadavg } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { openQueue } from "./ours.js";
import { DATABASE_URL, dropSchema, newSchema } from "./postgres.js";
import { distribution } from "./stats.js";

const WARMUP = 200;
const PAUSE_MS = 2;

/** Microseconds of each of `count` calls of `once`, after WARMUP untimed ones. */
async function timed(count: number, once: () => Promise<unknown>): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < WARMUP + count; i++) {
    const t0 = performance.now();
    await once();
    if (i >= WARMUP) samples.push((performance.now() - t0) * 1000);
    await sleep(PAUSE_MS);
  }
  return samples;
}

async function main(): Promise<void> {
  const count = Number(process.argv[2] ?? 1000);
  if (!Number.isInteger(count) || count < 1)
    throw new Error(`count: a positive integer, got ${process.argv[2]}`);
  const loadAtStart = loadavg()[0];
  const schema = newSchema("submit_commit");
  const queue = await openQueue("postgres", schema, "");
  const client = new pg.Client({ connectionString: DATABASE_URL });
  await client.connect();
  try {
    const submit = () =>
      queue.store.insert([{ strategyId: "bench-noop", priority: 0, params: {}, maxRetries: 0 }], "bench");
    const submitUs = distribution(await timed(count, submit));
    await client.query("SET synchronous_commit = on");
    // A temporary table's rows are not WAL-logged: the floor needs a table that is.
    await client.query(`CREATE TABLE "${schema}".commit_floor (id serial PRIMARY KEY, at timestamptz)`);
    const insert = { name: "floor", text: `INSERT INTO "${schema}".commit_floor (at) VALUES (now())` };
    const singleRowUs = distribution(await timed(count, () => client.query(insert)));
    console.log(
      JSON.stringify(
        {
          count,
          warmup: WARMUP,
          pauseMs: PAUSE_MS,
          submitUs,
          singleRowUs,
          loadAverage: { start: loadAtStart, end: loadavg()[0] },
        },
        null,
        2,
      ),
    );
  } finally {
    await client.end();
    await queue.close();
    await dropSchema(schema);
  }
}

await main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
