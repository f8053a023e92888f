/**
 * Routing on the PostgreSQL path matches with an index, not a scan (issue 14): with 50,000 queued
 * builds that need a GPU ahead in dispatch order (higher priority), a worker without labels reads
 * none of them, and a GPU worker reads a few rows from each pool it can run. Plans are checked as the
 * statements run after five executions (generic plans), with ANALYZE: rows read, not time.
 */
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/core/logger.js";
import { poolIdOf } from "../../src/core/pools.js";
import { queries } from "../../src/generated/assets.js";
import { openPostgres } from "../../src/postgres/db.js";
import { migrate } from "../../src/postgres/migrate.js";
import { dropSchema, TEST_DATABASE_URL, uniqueSchema } from "../helpers/postgres.js";

function nodesIn(plan: unknown): Record<string, unknown>[] {
  if (Array.isArray(plan)) return plan.flatMap(nodesIn);
  if (plan === null || typeof plan !== "object") return [];
  const node = plan as Record<string, unknown>;
  const own = typeof node["Node Type"] === "string" ? [node] : [];
  return [...own, ...Object.values(node).flatMap(nodesIn)];
}

describe("routing query plans (generic plans)", () => {
  const schema = uniqueSchema("plans_routing");
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL, options: `-c search_path=${schema}` });
  const GPU_BUILDS = 50_000;
  const DEFAULT_BUILDS = 100;
  const GPU_POOL = poolIdOf({ gpu: "true" });

  beforeAll(async () => {
    const db = await openPostgres(TEST_DATABASE_URL, schema, silentLogger(), { poolSize: 1 });
    await migrate(db).finally(() => db.close());
    await client.connect();
    await client.query("ALTER TABLE builds SET (autovacuum_enabled = false)");
    await client.query('INSERT INTO build_pools (id, requires) VALUES ($1, \'{"gpu": "true"}\')', [GPU_POOL]);
    await client.query(
      `INSERT INTO builds (strategy_id, priority, seq, status, max_retries, pool, requires)
       SELECT 'gpu', 5, g, 'queued', 3, $2, '{"gpu": "true"}' FROM generate_series(1, $1::int) g`,
      [GPU_BUILDS, GPU_POOL],
    );
    await client.query(
      `INSERT INTO builds (strategy_id, priority, seq, status, max_retries)
       SELECT 'cpu', 0, g, 'queued', 3 FROM generate_series($1::int + 1, $1::int + $2::int) g`,
      [GPU_BUILDS, DEFAULT_BUILDS],
    );
    await client.query("VACUUM ANALYZE builds");
    await client.query("ANALYZE build_pools");
  });
  afterAll(async () => {
    await client.end();
    await dropSchema(schema);
  });

  async function claimPlan(labels: Record<string, string>): Promise<Record<string, unknown>[]> {
    await client.query("BEGIN");
    try {
      await client.query("SET LOCAL plan_cache_mode = force_generic_plan");
      await client.query(`PREPARE under_test AS ${queries.claim_next}`);
      const res = await client.query(
        `EXPLAIN (FORMAT JSON, ANALYZE) EXECUTE under_test(1, 'w-plan', 60000, ${client.escapeLiteral(JSON.stringify(labels))})`,
      );
      return nodesIn(res.rows[0]["QUERY PLAN"]);
    } finally {
      await client.query("ROLLBACK");
      await client.query("DEALLOCATE ALL");
    }
  }

  function buildsRead(nodes: Record<string, unknown>[]): number {
    return nodes
      .filter((n) => n["Relation Name"] === "builds" && String(n["Node Type"]).endsWith("Scan"))
      .reduce((sum, n) => sum + Number(n["Actual Rows"] ?? 0) * Number(n["Actual Loops"] ?? 1), 0);
  }

  it("a worker without labels reads none of the GPU builds ahead of its own", async () => {
    const nodes = await claimPlan({});
    expect(nodes.filter((n) => n["Node Type"] === "Seq Scan" && n["Relation Name"] === "builds")).toEqual([]);
    expect(nodes.reduce((sum, n) => sum + Number(n["Rows Removed by Filter"] ?? 0), 0)).toBeLessThan(10);
    expect(buildsRead(nodes)).toBeLessThan(10);
    const indexes = nodes.map((n) => n["Index Name"]).filter(Boolean);
    expect(indexes).toContain("builds_pool_dispatch_idx");
  });

  it("a GPU worker reads a pool head from each pool it can run, and takes the best", async () => {
    const nodes = await claimPlan({ gpu: "true", arch: "x86_64" });
    expect(buildsRead(nodes)).toBeLessThan(10);
    await client.query("BEGIN");
    try {
      const cpu = await client.query<{ strategy_id: string }>(queries.claim_next, [2, "w", 60_000, "{}"]);
      expect(cpu.rows.map((r) => r.strategy_id)).toEqual(["cpu", "cpu"]);
      const gpu = await client.query<{ strategy_id: string }>(queries.claim_next, [
        2,
        "w",
        60_000,
        '{"gpu": "true"}',
      ]);
      expect(gpu.rows.map((r) => r.strategy_id)).toEqual(["gpu", "gpu"]);
    } finally {
      await client.query("ROLLBACK");
    }
  });
});
