/**
 * Plans of the concurrency-key statements at scale (migration 0011), planned generically as the
 * query files run after five executions: 50,000 builds held back by 500 keys' limits, ahead of 100
 * ready builds in dispatch order. A claim reads none of the held builds; an admission and the sweep's
 * key search read index probes, not the held backlog. This checks plans and rows read, not time.
 */
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/core/logger.js";
import { queries } from "../../src/generated/assets.js";
import { openPostgres } from "../../src/postgres/db.js";
import { migrate } from "../../src/postgres/migrate.js";
import { dropSchema, TEST_DATABASE_URL, uniqueSchema } from "../helpers/postgres.js";

const KEYS = 500;
const HELD_PER_KEY = 100;
const READY = 100;

/** Every node of a plan, from EXPLAIN (FORMAT JSON). */
function nodesIn(plan: unknown): Record<string, unknown>[] {
  if (Array.isArray(plan)) return plan.flatMap(nodesIn);
  if (plan === null || typeof plan !== "object") return [];
  const node = plan as Record<string, unknown>;
  const own = typeof node["Node Type"] === "string" ? [node] : [];
  return [...own, ...Object.values(node).flatMap(nodesIn)];
}

describe("concurrency keys: query plans at scale (generic plans)", () => {
  const schema = uniqueSchema("plans_keys");
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL, options: `-c search_path=${schema}` });

  beforeAll(async () => {
    const db = await openPostgres(TEST_DATABASE_URL, schema, silentLogger(), { poolSize: 1 });
    await migrate(db).finally(() => db.close());
    await client.connect();
    await client.query("ALTER TABLE builds SET (autovacuum_enabled = false)");
    // Per key: one running build (its slot taken, limit 1) and HELD_PER_KEY held ones, at a higher
    // priority than the ready builds without a key.
    await client.query(
      `INSERT INTO builds (strategy_id, priority, seq, status, max_retries, concurrency_key, held, worker_id)
       SELECT 'k', 5, g, CASE WHEN g <= $1 THEN 'running' ELSE 'queued' END, 3, 'key-' || (g % $1),
              g > $1, CASE WHEN g <= $1 THEN 'w' END
       FROM generate_series(1, $1::int * ($2::int + 1)) g`,
      [KEYS, HELD_PER_KEY],
    );
    await client.query(
      `INSERT INTO builds (strategy_id, priority, seq, status, max_retries)
       SELECT 'r', 0, g, 'queued', 3 FROM generate_series(1000000, 1000000 + $1::int - 1) g`,
      [READY],
    );
    await client.query(
      "INSERT INTO concurrency_limits (key) SELECT 'key-' || g FROM generate_series(0, $1::int - 1) g",
      [KEYS],
    );
    await client.query("VACUUM ANALYZE builds");
    await client.query("ANALYZE concurrency_limits");
  });
  afterAll(async () => {
    await client.end();
    await dropSchema(schema);
  });

  /** EXPLAIN ANALYZE of the statement prepared and planned generically, rolled back. */
  async function genericPlan(
    text: string,
    values: unknown[],
    before?: string,
  ): Promise<Record<string, unknown>[]> {
    await client.query("BEGIN");
    try {
      if (before) await client.query(before);
      await client.query("SET LOCAL plan_cache_mode = force_generic_plan");
      await client.query(`PREPARE under_test AS ${text}`);
      const args = values.map((v) => client.escapeLiteral(String(v))).join(", ");
      const res = await client.query(`EXPLAIN (FORMAT JSON, ANALYZE) EXECUTE under_test(${args})`);
      return nodesIn(res.rows[0]["QUERY PLAN"]);
    } finally {
      await client.query("ROLLBACK");
      await client.query("DEALLOCATE ALL");
    }
  }

  const buildScans = (nodes: Record<string, unknown>[]) =>
    nodes.filter((n) => n["Relation Name"] === "builds" && String(n["Node Type"]).endsWith("Scan"));
  const rowsRead = (nodes: Record<string, unknown>[]) =>
    buildScans(nodes).reduce(
      (sum, n) => sum + Number(n["Actual Rows"] ?? 0) * Number(n["Actual Loops"] ?? 1),
      0,
    );
  // Rows of builds read and dropped (concurrency_limits, one small row per key, may be read whole).
  const removedByFilter = (nodes: Record<string, unknown>[]) =>
    buildScans(nodes).reduce((sum, n) => sum + Number(n["Rows Removed by Filter"] ?? 0), 0);

  it("a claim reads none of the 50,000 held builds ahead of the ready ones", async () => {
    const nodes = await genericPlan(queries.claim_next, [1, "w-plan", 60_000, "{}"]);
    expect(buildScans(nodes).filter((n) => n["Node Type"] === "Seq Scan")).toEqual([]);
    expect(removedByFilter(nodes)).toBeLessThan(10);
    expect(rowsRead(nodes)).toBeLessThan(10);
  });

  it("an admission of a key with a free slot reads its slots and its first held build, not its backlog", async () => {
    // key-7's running build ended: one slot free.
    const nodes = await genericPlan(
      queries.admit_waiting,
      ["{key-7}"],
      "UPDATE builds SET status = 'completed' WHERE concurrency_key = 'key-7' AND status = 'running'",
    );
    expect(buildScans(nodes).filter((n) => n["Node Type"] === "Seq Scan")).toEqual([]);
    expect(removedByFilter(nodes)).toBeLessThan(10);
    expect(rowsRead(nodes)).toBeLessThan(20);
  });

  it("the sweep's key search probes each key once, and finds only keys with a free slot", async () => {
    const nodes = await genericPlan(queries.keys_due, [100]);
    expect(buildScans(nodes).filter((n) => n["Node Type"] === "Seq Scan")).toEqual([]);
    // One probe per key (and a few per key for its slots), not one row per held build.
    expect(rowsRead(nodes)).toBeLessThan(KEYS * 6);
    const found = await client.query(queries.keys_due, [100]);
    expect(found.rows).toEqual([]); // every key's slot is taken
  });
});
