/**
 * PostgreSQL-path claims with many delayed retries waiting: milliseconds per claim of one build, with
 * 0 and with 50,000 builds waiting out a retry backoff (put there the way a fleet does: claimed, then
 * failed with retries left), and a few thousand ready builds behind them in dispatch order.
 *   npx tsx bench/claim-delayed.ts [delayed=50000] [claims=500]
 * EXPLAIN=1 prints the plan of one more claim (EXPLAIN ANALYZE, generic plan); NO_VACUUM=1 measures
 * before vacuum has removed the dead index entries the setup leaves.
 */
import { performance } from "node:perf_hooks";
import pg from "pg";
import { silentLogger } from "../src/core/logger.js";
import { queries } from "../src/generated/assets.js";
import { openPostgres } from "../src/postgres/db.js";
import { migrate } from "../src/postgres/migrate.js";
import { BuildStore } from "../src/postgres/store.js";
import { DATABASE_URL, dropSchema, newSchema } from "./postgres.js";

const HOUR_MS = 3_600_000;

async function measure(delayed: number, claims: number): Promise<number> {
  const schema = newSchema("claim_delayed");
  const db = await openPostgres(DATABASE_URL, schema, silentLogger(), { poolSize: 2 });
  try {
    await migrate(db);
    const store = new BuildStore(db, "unused");
    for (let left = delayed; left > 0; left -= 1000) {
      const n = Math.min(1000, left);
      // Higher priority than the ready builds: they sit first in dispatch order.
      await store.insert(
        Array.from({ length: n }, () => ({ strategyId: "d", priority: 5, params: {}, maxRetries: 3 })),
        "bench",
      );
      const running = await store.claimNext(n, "bench", HOUR_MS);
      await store.fail(
        running.map((b) => ({ id: b.id, lease: b.lease, error: "flaky", retryable: true })),
        { baseDelayMs: HOUR_MS, maxDelayMs: HOUR_MS },
      );
    }
    await store.insert(
      Array.from({ length: claims + 100 }, () => ({
        strategyId: "r",
        priority: 0,
        params: {},
        maxRetries: 3,
      })),
      "bench",
    );
    // As autovacuum leaves it: the delayed builds' first versions (queued at submit, then claimed)
    // are dead entries at the front of the dispatch index until vacuum removes them.
    if (!process.env.NO_VACUUM) await db.query("VACUUM ANALYZE builds");
    else await db.query("ANALYZE builds");
    for (let i = 0; i < 20; i++) await store.claimNext(1, "warm-up", HOUR_MS); // past the plan cache's 5 custom plans
    const start = performance.now();
    for (let i = 0; i < claims; i++) {
      const [build] = await store.claimNext(1, "bench", HOUR_MS);
      if (build?.strategyId !== "r") throw new Error("claimed a delayed build, or nothing");
    }
    const perClaim = (performance.now() - start) / claims;
    if (process.env.EXPLAIN) console.log(await explainClaim(schema));
    return perClaim;
  } finally {
    await db.close();
    await dropSchema(schema);
  }
}

/** EXPLAIN ANALYZE of one claim as a generic plan (what a connection runs after five executions). */
async function explainClaim(schema: string): Promise<string> {
  const client = new pg.Client({ connectionString: DATABASE_URL, options: `-c search_path=${schema}` });
  await client.connect();
  try {
    await client.query("BEGIN");
    await client.query("SET LOCAL plan_cache_mode = force_generic_plan");
    await client.query(`PREPARE claim(integer, text, integer, jsonb) AS ${queries.claim_next}`);
    const res = await client.query(
      "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE claim(1, 'explain', 60000, '{}')",
    );
    return res.rows.map((r: Record<string, string>) => r["QUERY PLAN"]).join("\n");
  } finally {
    await client.query("ROLLBACK");
    await client.end();
  }
}

const delayed = Number(process.argv[2] ?? 50_000);
const claims = Number(process.argv[3] ?? 500);
for (const n of [0, delayed]) {
  const ms = await measure(n, claims);
  console.log(`${n} delayed retries: ${ms.toFixed(3)} ms per claim (${claims} claims of one build)`);
}
