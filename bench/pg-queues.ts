/**
 * The PostgreSQL job queues ours is compared with in PostgreSQL-only mode, the newest versions that
 * run on Node.js 20 (issue 15): pg-boss 10 (11 wants Node 22) and graphile-worker 0.17 (0.18 wants
 * Node 22.18), each in a schema of its own on the benchmark's PostgreSQL, driven as their
 * documentation shows. Same shape as the other throughput runs: `builds` no-op jobs inserted in
 * chunks (submit rate), then processed with `concurrency` jobs in flight (processed rate).
 */
import { Logger, makeWorkerUtils, run } from "graphile-worker";
import PgBoss from "pg-boss";
import { DATABASE_URL, dropSchema, newSchema } from "./postgres.js";
import { within } from "./stats.js";
import {
  completionCounter,
  type ThroughputOptions,
  type ThroughputSample,
  throughputSample,
} from "./throughput.js";

const jobData = { strategyId: "bench-noop", params: {} };

/** graphile-worker logs to stdout by default, which would break `--json`: errors go to stderr. */
const graphileLogger = new Logger(() => (level, message) => {
  if (level === "error") process.stderr.write(`graphile-worker: ${message}\n`);
});

/**
 * pg-boss 10: `insert` in chunks, then `work` handlers. A pg-boss 10 worker fetches a batch, runs the
 * handler on it, completes it, and then waits out the rest of its polling interval (at least 0.5 s)
 * before the next fetch, whether or not it found jobs: its rate is workers x batch size / interval.
 * With `concurrency` jobs in flight (50 workers of one job) that is 100 jobs/s, so it runs here the
 * way its documentation points to for throughput instead, batches: ten workers fetching 100 jobs
 * each every 0.5 s (up to 1,000 in flight). Its best case, not a like-for-like concurrency.
 */
const PGBOSS_WORKERS = 10;
const PGBOSS_BATCH = 100;

/** pg-boss started in `schema` with the benchmark's queue created (no supervision, no schedules). */
export async function startPgBoss(schema: string): Promise<{ boss: PgBoss; name: string }> {
  const boss = new PgBoss({
    connectionString: DATABASE_URL,
    schema,
    max: 10,
    supervise: false,
    schedule: false,
  });
  boss.on("error", () => undefined);
  await boss.start();
  const name = "bench_noop";
  await boss.createQueue(name);
  return { boss, name };
}

export async function pgBossThroughput(options: ThroughputOptions): Promise<ThroughputSample> {
  const schema = newSchema("pgboss");
  const { boss, name } = await startPgBoss(schema);
  try {
    const submitStart = performance.now();
    for (let done = 0; done < options.builds; done += options.chunk) {
      const size = Math.min(options.chunk, options.builds - done);
      await boss.insert(Array.from({ length: size }, () => ({ name, data: jobData })));
    }
    const submitMs = performance.now() - submitStart;

    const counter = completionCounter(options.builds);
    for (let i = 0; i < PGBOSS_WORKERS; i++) {
      await boss.work(name, { batchSize: PGBOSS_BATCH, pollingIntervalSeconds: 0.5 }, async (jobs) => {
        counter.done(jobs.length);
      });
    }
    await within(counter.finished, 600_000, "pg-boss processing");
    return throughputSample(options.builds, submitMs, counter.elapsedMs());
  } finally {
    await boss.stop({ graceful: false, wait: true, timeout: 5000 }).catch(() => undefined);
    await dropSchema(schema);
  }
}

/**
 * graphile-worker 0.17: `addJobs` in chunks through WorkerUtils, then a runner with `concurrency`
 * (its own setting for jobs in flight; new jobs are announced with LISTEN/NOTIFY).
 */
export async function graphileThroughput(options: ThroughputOptions): Promise<ThroughputSample> {
  const schema = newSchema("graphile");
  const utils = await makeWorkerUtils({ connectionString: DATABASE_URL, schema, logger: graphileLogger });
  try {
    await utils.migrate();
    const submitStart = performance.now();
    for (let done = 0; done < options.builds; done += options.chunk) {
      const size = Math.min(options.chunk, options.builds - done);
      await utils.addJobs(Array.from({ length: size }, () => ({ identifier: "noop", payload: jobData })));
    }
    const submitMs = performance.now() - submitStart;

    const counter = completionCounter(options.builds);
    const runner = await run({
      connectionString: DATABASE_URL,
      schema,
      concurrency: options.concurrency,
      noHandleSignals: true,
      pollInterval: 1000,
      logger: graphileLogger,
      taskList: {
        noop: async () => counter.done(),
      },
    });
    try {
      await within(counter.finished, 600_000, "graphile-worker processing");
    } finally {
      await runner.stop();
    }
    return throughputSample(options.builds, submitMs, counter.elapsedMs());
  } finally {
    await utils.release();
    await dropSchema(schema);
  }
}
