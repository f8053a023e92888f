/**
 * Throughput under PostgreSQL pressure (issue 15): each system runs a steady no-op workload (a feeder
 * keeps a backlog, `concurrency` jobs in flight) through three phases, back to back on the same tables:
 *
 * - clean: nothing else on the database;
 * - xidHeld: a connection holds a transaction that has an xid, idle, for the whole phase (2 minutes by
 *   default): the xmin horizon is pinned, so no row version deleted since can be vacuumed away;
 * - readers: four REPEATABLE READ transactions scan the system's tables (each table once a second,
 *   each transaction kept open for READER_HOLD_MS, then the next), as dashboards and reports would.
 *
 * With `offeredPerSec` (`--pressure-rate`), the feeder submits at that rate instead of keeping a backlog:
 * a queue that is not CPU-bound at that rate is then measured on whether it keeps up with the offered
 * work under each pressure, rather than on how much of the machine's CPU the readers leave it.
 *
 * After each phase: processed/s over the phase, our claim latency (the duration of each non-empty
 * claim, as BuildQueue's "claimed" event reports it), and the dead tuples and total size of the
 * system's tables (pg_stat_user_tables, pg_total_relation_size). SKIP LOCKED queues are published to
 * lose about a third of their throughput with a pinned horizon; ours in Redis mode claims by primary
 * key and should not.
 */
import { Logger, run } from "graphile-worker";
import pg from "pg";
import { inputs, type OurMode, openQueue, startWorker } from "./ours.js";
import { startPgBoss } from "./pg-queues.js";
import { DATABASE_URL, dropSchema, newSchema } from "./postgres.js";
import { type Distribution, distribution, sleep } from "./stats.js";

export const PRESSURE_PHASES = ["clean", "xidHeld", "readers"] as const;
export type PressurePhase = (typeof PRESSURE_PHASES)[number];
export const PRESSURE_SYSTEMS = ["redis", "postgres", "pgboss", "graphile"] as const;
export type PressureSystem = (typeof PRESSURE_SYSTEMS)[number];

const READERS = 4;
const READER_HOLD_MS = 10_000;
/** The feeder submits a chunk whenever fewer than BACKLOG_LOW jobs are waiting or running. */
const BACKLOG_LOW = 3000;
const FEED_CHUNK = 1000;
const WARMUP_MS = 5000;

export interface TableStats {
  table: string;
  liveTuples: number;
  deadTuples: number;
  bytes: number;
}

export interface PhaseResult {
  seconds: number;
  processed: number;
  processedPerSec: number;
  /** Of our claims that took builds; null for the other systems (their claim is not observable). */
  claimMs: Distribution | null;
  deadTuples: number;
  tableBytes: number;
  tables: TableStats[];
}

export interface PressurePart {
  phaseSeconds: Record<PressurePhase, number>;
  concurrency: number;
  readers: number;
  readerHoldSeconds: number;
  /** Jobs submitted per second by the feeder; null: a backlog kept (as many as the system takes). */
  offeredPerSec: number | null;
  note: string;
  systems: Partial<Record<PressureSystem, Record<PressurePhase, PhaseResult>>>;
}

export interface PressureOptions {
  systems: PressureSystem[];
  phaseSeconds: Record<PressurePhase, number>;
  concurrency: number;
  /** Submit this many jobs per second instead of keeping a backlog (0 or absent: a backlog). */
  offeredPerSec?: number;
  redisUrl: string;
  log(line: string): void;
}

/** One system under test: it takes jobs, processes them, and counts what it finished. */
interface Driver {
  schema: string;
  submit(n: number): Promise<void>;
  /** Starts processing; `done(n)` is called as jobs finish. */
  start(done: (n: number) => void): Promise<void>;
  /** Claim durations since the last call (ours), else null. */
  takeClaimMs(): number[] | null;
  stop(): Promise<void>;
}

const graphileLogger = new Logger(() => (level, message) => {
  if (level === "error") process.stderr.write(`graphile-worker: ${message}\n`);
});
const jobData = { strategyId: "bench-noop", params: {} };

async function ourDriver(mode: OurMode, redisUrl: string, concurrency: number): Promise<Driver> {
  const schema = newSchema(`pr_${mode}`);
  const queue = await openQueue(mode, schema, redisUrl);
  let claimMs: number[] = [];
  queue.on("claimed", (e: { durationMs: number }) => claimMs.push(e.durationMs));
  let worker: { stop(): Promise<void> } | undefined;
  return {
    schema,
    submit: async (n) => {
      await queue.submitMany(inputs(n));
    },
    start: async (done) => {
      worker = startWorker(queue, async () => null, concurrency, {
        onCompleted: () => done(1),
        onError: (err) => process.stderr.write(`pressure ${mode}: ${String(err)}\n`),
      });
    },
    takeClaimMs: () => {
      const taken = claimMs;
      claimMs = [];
      return taken;
    },
    stop: async () => {
      await worker?.stop();
      await queue.close();
    },
  };
}

/** pg-boss as in the throughput part: ten workers fetching batches of 100 (its best case). */
async function pgBossDriver(): Promise<Driver> {
  const schema = newSchema("pr_pgboss");
  const { boss, name } = await startPgBoss(schema);
  return {
    schema,
    submit: async (n) => {
      await boss.insert(Array.from({ length: n }, () => ({ name, data: jobData })));
    },
    start: async (done) => {
      for (let i = 0; i < 10; i++) {
        await boss.work(name, { batchSize: 100, pollingIntervalSeconds: 0.5 }, async (jobs) => {
          done(jobs.length);
        });
      }
    },
    takeClaimMs: () => null,
    stop: async () => {
      await boss.stop({ graceful: false, wait: true, timeout: 5000 }).catch(() => undefined);
    },
  };
}

async function graphileDriver(concurrency: number): Promise<Driver> {
  const schema = newSchema("pr_graphile");
  const { makeWorkerUtils } = await import("graphile-worker");
  const utils = await makeWorkerUtils({ connectionString: DATABASE_URL, schema, logger: graphileLogger });
  await utils.migrate();
  let runner: { stop(): Promise<void> } | undefined;
  return {
    schema,
    submit: async (n) => {
      await utils.addJobs(Array.from({ length: n }, () => ({ identifier: "noop", payload: jobData })));
    },
    start: async (done) => {
      runner = await run({
        connectionString: DATABASE_URL,
        schema,
        concurrency,
        noHandleSignals: true,
        pollInterval: 1000,
        logger: graphileLogger,
        taskList: { noop: async () => done(1) },
      });
    },
    takeClaimMs: () => null,
    stop: async () => {
      await runner?.stop();
      await utils.release();
    },
  };
}

async function openDriver(system: PressureSystem, options: PressureOptions): Promise<Driver> {
  switch (system) {
    case "redis":
    case "postgres":
      return ourDriver(system, options.redisUrl, options.concurrency);
    case "pgboss":
      return pgBossDriver();
    case "graphile":
      return graphileDriver(options.concurrency);
  }
}

async function connect(): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: DATABASE_URL });
  client.on("error", () => undefined);
  await client.connect();
  return client;
}

/** The schema's top-level tables (partitions are scanned through their parent). */
async function tablesOf(schema: string): Promise<string[]> {
  const client = await connect();
  try {
    const res = await client.query<{ name: string }>(
      `SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c
       JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY c.relname`,
      [schema],
    );
    return res.rows.map((r) => r.name);
  } finally {
    await client.end();
  }
}

async function tableStats(schema: string): Promise<TableStats[]> {
  const client = await connect();
  try {
    const res = await client.query<{ table: string; live: string; dead: string; bytes: string }>(
      `SELECT relname AS table, n_live_tup AS live, n_dead_tup AS dead,
              pg_total_relation_size(relid) AS bytes
       FROM pg_stat_user_tables WHERE schemaname = $1 ORDER BY pg_total_relation_size(relid) DESC`,
      [schema],
    );
    return res.rows.map((r) => ({
      table: r.table,
      liveTuples: Number(r.live),
      deadTuples: Number(r.dead),
      bytes: Number(r.bytes),
    }));
  } finally {
    await client.end();
  }
}

/** What runs beside the workload in a phase; resolves its stop function. */
type Pressure = () => Promise<() => Promise<void>>;

/** A transaction with an xid, left idle until the phase ends. */
const holdXid: Pressure = async () => {
  const client = await connect();
  await client.query("BEGIN");
  await client.query("SELECT txid_current()");
  return async () => {
    await client.query("ROLLBACK").catch(() => undefined);
    await client.end().catch(() => undefined);
  };
};

/** READERS REPEATABLE READ transactions scanning `tables`, each held READER_HOLD_MS. */
function scanReaders(tables: string[]): Pressure {
  return async () => {
    let running = true;
    const clients = await Promise.all(Array.from({ length: READERS }, () => connect()));
    const loops = clients.map(async (client) => {
      while (running) {
        await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ");
        const until = Date.now() + READER_HOLD_MS;
        while (running && Date.now() < until) {
          for (const table of tables) await client.query(`SELECT count(*) FROM ${table}`);
          await sleep(1000);
        }
        await client.query("COMMIT");
      }
    });
    return async () => {
      running = false;
      await Promise.allSettled(loops);
      await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
    };
  };
}

async function runSystem(
  system: PressureSystem,
  options: PressureOptions,
): Promise<Record<PressurePhase, PhaseResult>> {
  const driver = await openDriver(system, options);
  let submitted = 0;
  let completed = 0;
  let feeding = true;
  let feedError: unknown;
  const rate = options.offeredPerSec ?? 0;
  try {
    if (rate === 0) {
      await driver.submit(2 * BACKLOG_LOW);
      submitted += 2 * BACKLOG_LOW;
    }
    await driver.start((n) => {
      completed += n;
    });
    const feedStarted = performance.now();
    const feeder = (async () => {
      while (feeding) {
        if (rate > 0) {
          // What the rate owes since the start, in chunks every 20 ms; the backlog bound still holds.
          const owed = Math.floor((rate * (performance.now() - feedStarted)) / 1000) - submitted;
          const n = Math.min(owed, FEED_CHUNK, BACKLOG_LOW - (submitted - completed));
          if (n > 0) {
            await driver.submit(n);
            submitted += n;
          }
          await sleep(20);
        } else if (submitted - completed < BACKLOG_LOW) {
          await driver.submit(FEED_CHUNK);
          submitted += FEED_CHUNK;
        } else await sleep(10);
      }
    })().catch((err: unknown) => {
      feedError = err;
    });
    await sleep(WARMUP_MS);
    const tables = await tablesOf(driver.schema);
    const pressures: Record<PressurePhase, Pressure | undefined> = {
      clean: undefined,
      xidHeld: holdXid,
      readers: scanReaders(tables),
    };
    const results = {} as Record<PressurePhase, PhaseResult>;
    for (const phase of PRESSURE_PHASES) {
      const release = await pressures[phase]?.();
      driver.takeClaimMs();
      const startCount = completed;
      const started = performance.now();
      await sleep(options.phaseSeconds[phase] * 1000);
      const seconds = (performance.now() - started) / 1000;
      const processed = completed - startCount;
      const claims = driver.takeClaimMs();
      await release?.();
      if (feedError) throw feedError;
      const tableList = await tableStats(driver.schema);
      results[phase] = {
        seconds,
        processed,
        processedPerSec: processed / seconds,
        claimMs: claims ? distribution(claims) : null,
        deadTuples: tableList.reduce((n, t) => n + t.deadTuples, 0),
        tableBytes: tableList.reduce((n, t) => n + t.bytes, 0),
        tables: tableList.slice(0, 6),
      };
      const p99 = results[phase].claimMs?.p99;
      options.log(
        `  ${system} ${phase}: ${Math.round(processed / seconds)}/s${p99 === undefined ? "" : `, claim p99 ${p99.toFixed(1)} ms`}, dead tuples ${results[phase].deadTuples}, tables ${(results[phase].tableBytes / 2 ** 20).toFixed(1)} MiB`,
      );
    }
    feeding = false;
    await feeder;
    return results;
  } finally {
    feeding = false;
    await driver.stop();
    await dropSchema(driver.schema);
  }
}

export async function runPressure(options: PressureOptions): Promise<PressurePart> {
  const systems: PressurePart["systems"] = {};
  for (const system of options.systems) systems[system] = await runSystem(system, options);
  return {
    phaseSeconds: options.phaseSeconds,
    concurrency: options.concurrency,
    readers: READERS,
    readerHoldSeconds: READER_HOLD_MS / 1000,
    offeredPerSec: options.offeredPerSec || null,
    note: `${
      options.offeredPerSec
        ? `a feeder submits ${options.offeredPerSec} no-op jobs/s (at most ${BACKLOG_LOW} waiting or running)`
        : `a feeder keeps ${BACKLOG_LOW}-${BACKLOG_LOW + FEED_CHUNK} no-op jobs waiting or running`
    }; phases run back to back on the same tables after ${WARMUP_MS / 1000} s of warm-up`,
    systems,
  };
}
