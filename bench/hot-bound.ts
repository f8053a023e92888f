/**
 * Levers on PostgreSQL's share of a build (issue 15), measured before building them into the
 * product: the throughput benchmark's processing phase (20,000 no-op builds submitted first, then the
 * claim loop at concurrency 50, Redis mode, prefetch auto), once per variant in each round:
 * - "product": the product's schema and statements;
 * - "random-ids": the product with random (version 4) build ids, as before migration 0013;
 * - "bound": every index a claim or a completion changes dropped (the eight whose predicate reads
 *   `status`, or whose key is the lease or the worker) and a fillfactor that leaves room on each
 *   page, so that every status change can be a heap-only (HOT) update. That schema cannot serve the
 *   product (no PostgreSQL-path dispatch, no reaper index): the upper bound of the HOT lever;
 * - "narrow": the bound plus the narrow dispatch and lease tables that would take those indexes'
 *   work over, written by the statements themselves: the HOT lever as it would be built;
 * - "narrow-trigger": the same tables kept by statement-level triggers instead;
 * - "no-events": the product without the claim's and the completion's event rows: the bound of what
 *   cheaper events could save (every state change must be an event row: not a design);
 * - "no-events-index": the product without build_events_build_idx.
 *   node dist/bench/hot-bound.js [runs=3] [fillfactor=40] [variants=all, comma-separated]
 * On a private redis-server, after one untimed run; each round starts one variant further on. Prints
 * one line per run, then one JSON object: builds/s, the builds table's and the whole schema's size
 * after, the share of updates that were heap-only, per run and as medians per variant, and each
 * variant's builds/s over the product's in the same round (median).
 */
import { loadavg } from "node:os";
import pg from "pg";
import { queries } from "../src/generated/assets.js";
import { DATABASE_URL, dropSchema, newSchema } from "./postgres.js";
import { PrivateRedis } from "./redis-server.js";
import { median, within } from "./stats.js";

/**
 * The "narrow" variant's statements: the product's insert, claim and completion, each with the
 * narrow rows it would write (a dispatch row inserted at submit and deleted at claim, a lease row
 * inserted at claim and deleted at completion). They are added to the query set before the product's
 * modules load, so that they too run as named prepared statements (src/postgres/db.ts names the
 * texts it finds there when it loads), and swapped in for the narrow runs only.
 */
function withCte(text: string, cte: string): string {
  const at = text.indexOf("events AS (");
  if (at < 0) throw new Error("hot-bound: a statement without an events CTE changed shape");
  return `${text.slice(0, at)}${cte},\n${text.slice(at)}`;
}
type Statements = Record<"insert_builds" | "claim_by_ids" | "complete_builds", string>;
const PRODUCT_STATEMENTS: Statements = {
  insert_builds: queries.insert_builds,
  claim_by_ids: queries.claim_by_ids,
  complete_builds: queries.complete_builds,
};
const NARROW_STATEMENTS: Statements = {
  insert_builds: withCte(
    queries.insert_builds,
    `dispatched AS (INSERT INTO build_dispatch
  SELECT id, pool, priority, seq, run_at, delayed, held, concurrency_key FROM inserted)`,
  ),
  claim_by_ids: withCte(
    queries.claim_by_ids,
    `undispatched AS (DELETE FROM build_dispatch d USING claimed c WHERE d.build_id = c.id),
leased AS (INSERT INTO build_leases SELECT id, worker_id, lease_expires_at, concurrency_key FROM claimed)`,
  ),
  complete_builds: withCte(
    queries.complete_builds,
    "unleased AS (DELETE FROM build_leases l USING done d WHERE l.build_id = d.id)",
  ),
};
/**
 * The "no-events" variant (product schema): the claim and the completion without their event rows
 * (the events CTE becomes a SELECT nothing reads, which PostgreSQL does not run). Not a design, as
 * every state change must be an event row: the bound of what cheaper events could save.
 */
function withoutEvents(text: string): string {
  const insert = "INSERT INTO build_events (build_id, type, from_status, to_status, actor, data)\n  SELECT";
  if (!text.includes(insert)) throw new Error("hot-bound: a statement's events CTE changed shape");
  return text.replace(insert, "SELECT");
}
const NO_EVENT_STATEMENTS: Statements = {
  insert_builds: queries.insert_builds,
  claim_by_ids: withoutEvents(queries.claim_by_ids),
  complete_builds: withoutEvents(queries.complete_builds),
};
const mutableQueries = queries as unknown as Record<string, string>;
// Only the changed texts: a product text registered again would run under the other name.
for (const [label, set] of Object.entries({ narrow: NARROW_STATEMENTS, no_events: NO_EVENT_STATEMENTS })) {
  for (const [name, text] of Object.entries(set)) {
    if (text !== PRODUCT_STATEMENTS[name as keyof Statements])
      mutableQueries[`hot_bound_${label}_${name}`] = text;
  }
}
const useStatements = (set: Statements) => Object.assign(mutableQueries, set);
const { inputs, openQueue, startWorker } = await import("./ours.js");

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

const VARIANTS = [
  "product",
  "random-ids",
  "bound",
  "narrow",
  "narrow-trigger",
  "no-events",
  "no-events-index",
] as const;

type Variant = (typeof VARIANTS)[number];

/**
 * The narrow variants: the bound's schema plus what would take the dropped indexes' work over, two
 * narrow tables (a dispatch row per queued build, a lease row per running one) with those indexes.
 * "narrow": the statements write them (NARROW_STATEMENTS). "narrow-trigger": statement-level
 * triggers write them from the builds rows a statement changed, the statements unchanged (it pays
 * for the transition tables, and deletes and re-inserts a row whose membership did not change).
 */
const NARROW_TABLES = `
CREATE TABLE build_dispatch (
  build_id uuid PRIMARY KEY, pool text NOT NULL, priority integer NOT NULL, seq bigint NOT NULL,
  run_at timestamptz NOT NULL, delayed boolean NOT NULL, held boolean NOT NULL, concurrency_key text);
CREATE INDEX build_dispatch_order_idx ON build_dispatch (priority DESC, seq) WHERE NOT delayed AND NOT held;
CREATE INDEX build_dispatch_pool_idx ON build_dispatch (pool, priority DESC, seq) WHERE NOT delayed AND NOT held;
CREATE INDEX build_dispatch_seq_idx ON build_dispatch (seq);
CREATE INDEX build_dispatch_delayed_idx ON build_dispatch (run_at) WHERE delayed;
CREATE INDEX build_dispatch_key_held_idx ON build_dispatch (concurrency_key, priority DESC, seq) WHERE held;
CREATE TABLE build_leases (
  build_id uuid PRIMARY KEY, worker_id text, lease_expires_at timestamptz, concurrency_key text);
CREATE INDEX build_leases_worker_idx ON build_leases (worker_id);
CREATE INDEX build_leases_expiry_idx ON build_leases (lease_expires_at);
CREATE INDEX build_leases_key_idx ON build_leases (concurrency_key) WHERE concurrency_key IS NOT NULL;
`;
/** The narrow rows of the builds a trigger's statement left queued or running (its `new_rows`). */
const NARROW_ROWS_FROM_NEW = `
  INSERT INTO build_dispatch
    SELECT id, pool, priority, seq, run_at, delayed, held, concurrency_key FROM new_rows WHERE status = 'queued';
  INSERT INTO build_leases
    SELECT id, worker_id, lease_expires_at, concurrency_key FROM new_rows WHERE status IN ('running', 'stopping');`;
const NARROW_TRIGGERS = `
CREATE FUNCTION narrow_rows_in() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN${NARROW_ROWS_FROM_NEW}
  RETURN NULL;
END $$;
CREATE FUNCTION narrow_rows_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM build_dispatch d USING old_rows o WHERE d.build_id = o.id AND o.status = 'queued';
  DELETE FROM build_leases l USING old_rows o WHERE l.build_id = o.id AND o.status IN ('running', 'stopping');${NARROW_ROWS_FROM_NEW}
  RETURN NULL;
END $$;
CREATE TRIGGER narrow_in AFTER INSERT ON builds REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION narrow_rows_in();
CREATE TRIGGER narrow_changed AFTER UPDATE ON builds REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION narrow_rows_changed();
`;

interface RunResult {
  variant: Variant;
  processedPerSec: number;
  buildsTableMiB: number;
  /** Every table of the schema with its indexes (builds, events, listing, the narrow tables). */
  schemaMiB: number;
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
  const all = await client.query<{ bytes: string }>(
    "SELECT sum(pg_total_relation_size(relid)) AS bytes FROM pg_stat_user_tables WHERE schemaname = $1",
    [schema],
  );
  return {
    updates: Number(row?.upd ?? 0),
    hot: Number(row?.hot ?? 0),
    bytes: Number(row?.bytes ?? 0),
    schemaBytes: Number(all.rows[0]?.bytes ?? 0),
  };
}

/** The narrow tables hold what they would in the product: a row per queued, and per running, build. */
async function expectNarrowRows(client: pg.Client, dispatch: number, leases: number): Promise<void> {
  const res = await client.query<{ dispatch: number; leases: number }>(
    "SELECT (SELECT count(*) FROM build_dispatch)::int AS dispatch, (SELECT count(*) FROM build_leases)::int AS leases",
  );
  const row = res.rows[0];
  if (row?.dispatch !== dispatch || row.leases !== leases) {
    throw new Error(
      `narrow tables: ${JSON.stringify(row)}, expected ${dispatch} dispatch and ${leases} lease rows`,
    );
  }
}

/** What a variant changes on a new schema before the builds are submitted. */
async function prepare(variant: Variant, client: pg.Client, schema: string, fillfactor: number) {
  await client.query(`SET search_path = "${schema}"`);
  if (variant === "random-ids") {
    // Before migration 0013: random (version 4) build ids.
    await client.query("ALTER TABLE builds ALTER COLUMN id SET DEFAULT gen_random_uuid()");
  }
  if (variant === "bound" || variant === "narrow" || variant === "narrow-trigger") {
    for (const index of STATUS_INDEXES) await client.query(`DROP INDEX ${index}`);
    await client.query(`ALTER TABLE builds SET (fillfactor = ${fillfactor})`);
  }
  if (variant === "narrow" || variant === "narrow-trigger") await client.query(NARROW_TABLES);
  if (variant === "narrow-trigger") await client.query(NARROW_TRIGGERS);
  if (variant === "no-events-index") await client.query("DROP INDEX build_events_build_idx");
  useStatements(
    variant === "narrow"
      ? NARROW_STATEMENTS
      : variant === "no-events"
        ? NO_EVENT_STATEMENTS
        : PRODUCT_STATEMENTS,
  );
}

async function runOnce(variant: Variant, redis: PrivateRedis, fillfactor: number): Promise<RunResult> {
  const schema = newSchema(`hot_${variant.replaceAll("-", "_")}`);
  const queue = await openQueue("redis", schema, redis.url);
  const client = new pg.Client({ connectionString: DATABASE_URL });
  await client.connect();
  const narrow = variant === "narrow" || variant === "narrow-trigger";
  try {
    await prepare(variant, client, schema, fillfactor);
    for (let left = BUILDS; left > 0; left -= 1000) await queue.submitMany(inputs(Math.min(1000, left)));
    if (narrow) await expectNarrowRows(client, BUILDS, 0);
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
    if (narrow) await expectNarrowRows(client, 0, 0);
    const updates = after.updates - before.updates;
    return {
      variant,
      processedPerSec: Math.round(BUILDS / seconds),
      buildsTableMiB: Number((after.bytes / 2 ** 20).toFixed(1)),
      schemaMiB: Number((after.schemaBytes / 2 ** 20).toFixed(1)),
      hotShare: updates > 0 ? Number(((after.hot - before.hot) / updates).toFixed(2)) : 0,
    };
  } finally {
    await client.end();
    await queue.close();
    useStatements(PRODUCT_STATEMENTS);
    await dropSchema(schema);
    await redis.flushAll();
  }
}

/**
 * The median over rounds of a variant's builds/s over the product's in the same round: the machine's
 * speed drifts between rounds (by a third within minutes here), so only runs side by side compare.
 */
function pairedRatio(results: (RunResult & { round: number })[], variant: Variant): number {
  const ratios: number[] = [];
  for (const r of results) {
    if (r.variant !== variant) continue;
    const product = results.find((p) => p.round === r.round && p.variant === "product");
    if (product) ratios.push(r.processedPerSec / product.processedPerSec);
  }
  return Number(median(ratios).toFixed(2));
}

async function main(): Promise<void> {
  const runs = Number(process.argv[2] ?? 3);
  const fillfactor = Number(process.argv[3] ?? 40);
  if (!Number.isInteger(runs) || runs < 1)
    throw new Error(`runs: a positive integer, got ${process.argv[2]}`);
  if (!Number.isInteger(fillfactor) || fillfactor < 10 || fillfactor > 100) {
    throw new Error(`fillfactor: an integer from 10 to 100, got ${process.argv[3]}`);
  }
  const variants = (process.argv[4]?.split(",") ?? [...VARIANTS]) as Variant[];
  const unknown = variants.filter((v) => !VARIANTS.includes(v));
  if (unknown.length > 0 || !variants.includes("product")) {
    throw new Error(
      `variants: a comma-separated list of ${VARIANTS.join(", ")}, with product; got ${process.argv[4]}`,
    );
  }
  const redis = await PrivateRedis.start();
  const results: (RunResult & { round: number })[] = [];
  try {
    // Untimed: the first run of a process is slower (compilation, cold caches), whatever it runs.
    await runOnce("product", redis, fillfactor);
    for (let round = 1; round <= runs; round++) {
      // Each round starts one variant further on, so that no variant always runs first or after
      // the same other one.
      const order = variants.map((_, i) => variants[(i + round - 1) % variants.length] as Variant);
      for (const variant of order) {
        const result = { round, ...(await runOnce(variant, redis, fillfactor)) };
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
    schemaMiB: median(of(variant).map((r) => r.schemaMiB)),
    hotShare: median(of(variant).map((r) => r.hotShare)),
  });
  const result = {
    builds: BUILDS,
    concurrency: CONCURRENCY,
    fillfactor,
    runs: results,
    medians: Object.fromEntries(variants.map((v) => [v, summary(v)])),
    ratioToProduct: Object.fromEntries(variants.map((v) => [v, pairedRatio(results, v)])),
    loadAverageAtEnd: loadavg()[0],
  };
  console.log(JSON.stringify(result, null, 2));
}

await main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
