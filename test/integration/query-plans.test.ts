/**
 * The statements a running build's worker sends (result, failure, progress, lease renewal) must look
 * their rows up by primary key, also when the planner's statistics are stale. Before migration 0006
 * they read every running build through the partial indexes over running builds whenever the
 * statistics counted none (a fleet that started after the last ANALYZE): O(running builds) per write.
 * This checks the plans, not the time: plans do not depend on the machine's load.
 */
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/core/logger.js";
import { queries } from "../../src/generated/assets.js";
import { openPostgres } from "../../src/postgres/db.js";
import { migrate } from "../../src/postgres/migrate.js";
import { dropSchema, TEST_DATABASE_URL, uniqueSchema } from "../helpers/postgres.js";

/** Builds in the table (finished but these), and how many of them start running after the ANALYZE. */
const TOTAL = 100_000;
const RUNNING = 5_000;

/** Every index a plan reads, from EXPLAIN (FORMAT JSON). */
function indexesIn(plan: unknown): string[] {
  if (Array.isArray(plan)) return plan.flatMap(indexesIn);
  if (plan === null || typeof plan !== "object") return [];
  const node = plan as Record<string, unknown>;
  const own = typeof node["Index Name"] === "string" ? [node["Index Name"]] : [];
  return [...own, ...Object.values(node).flatMap(indexesIn)];
}

describe("query plans with stale statistics (many running builds, statistics taken when none ran)", () => {
  const schema = uniqueSchema("plans");
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL, options: `-c search_path=${schema}` });
  let running: { id: string; lease: string }[] = [];

  beforeAll(async () => {
    const db = await openPostgres(TEST_DATABASE_URL, schema, silentLogger(), 1);
    await migrate(db).finally(() => db.close());
    await client.connect();
    // Autovacuum would refresh the statistics at a moment of its own choosing: this test fixes them.
    await client.query("ALTER TABLE builds SET (autovacuum_enabled = false)");
    await client.query(
      `INSERT INTO builds (strategy_id, priority, seq, status, max_retries)
       SELECT 's', 0, g, CASE WHEN g <= $2 THEN 'queued' ELSE 'completed' END, 3
       FROM generate_series(1, $1::int) g`,
      [TOTAL, RUNNING],
    );
    await client.query("ANALYZE builds");
    const claimed = await client.query<{ id: string; lease: string }>(
      `UPDATE builds SET status = 'running', lease = lease + 1, worker_id = 'w' || (seq % 50),
              lease_expires_at = now() + interval '1 hour'
       WHERE status = 'queued' RETURNING id, lease`,
    );
    running = claimed.rows.slice(0, 50);
  });
  afterAll(async () => {
    await client.end();
    await dropSchema(schema);
  });

  async function indexesOf(text: string, values: unknown[]): Promise<string[]> {
    await client.query("BEGIN");
    try {
      const res = await client.query(`EXPLAIN (FORMAT JSON) ${text}`, values);
      return indexesIn(res.rows[0]["QUERY PLAN"]);
    } finally {
      await client.query("ROLLBACK");
    }
  }

  const leases = () => running.map((b) => ({ id: b.id, lease: Number(b.lease) }));
  const cases: [string, () => [string, unknown[]]][] = [
    [
      "complete_builds",
      () => [queries.complete_builds, [JSON.stringify(leases().map((b) => ({ ...b, result: null })))]],
    ],
    [
      "fail_builds",
      () => [
        queries.fail_builds,
        [JSON.stringify(leases().map((b) => ({ ...b, error: "x", retryable: true }))), 1000, 60_000],
      ],
    ],
    [
      "record_progress",
      () => [
        queries.record_progress,
        [running[0]?.id, running[0]?.lease, JSON.stringify({ percent: 1 }), 100],
      ],
    ],
    ["renew_worker_leases", () => [queries.renew_worker_leases, [JSON.stringify(leases()), 60_000]]],
  ];

  it.each(cases)("%s looks its builds up by primary key", async (_name, statement) => {
    const [text, values] = statement();
    const used = await indexesOf(text, values);
    expect(used).toContain("builds_pkey");
    expect(used).not.toContain("builds_worker_idx");
    expect(used).not.toContain("builds_lease_expiry_idx");
  });

  it("a worker's heartbeat and the reaper still use the indexes over running builds", async () => {
    expect(await indexesOf(queries.heartbeat_worker, ["w1", 60_000, "[]"])).toContain("builds_worker_idx");
    expect(await indexesOf(queries.expired_leases, [100])).toContain("builds_lease_expiry_idx");
  });
});
