/**
 * The statements that write a running build by id (result, failure, progress, lease renewal,
 * heartbeat, hand-back, reap) must look their rows up by primary key whatever the planner's
 * statistics say. Two situations went wrong before:
 * - stale statistics that count no running builds while thousands run (a fleet that started after
 *   the last ANALYZE): they read every running build through the partial indexes over running
 *   builds (fixed by migration 0006);
 * - then, on a table of some 20,000 builds with fresh statistics and a hundred running (the
 *   throughput benchmark), a sequential scan of the whole table per completion (fixed by giving the
 *   planner the ids as an array: `b.id = ANY (ARRAY(SELECT id FROM input))`).
 * This checks the plans, not the time: plans do not depend on the machine's load.
 */
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/core/logger.js";
import { queries } from "../../src/generated/assets.js";
import { openPostgres } from "../../src/postgres/db.js";
import { migrate } from "../../src/postgres/migrate.js";
import { dropSchema, TEST_DATABASE_URL, uniqueSchema } from "../helpers/postgres.js";

interface Scan {
  node: string;
  relation: string | undefined;
  index: string | undefined;
}

/** Every scan of a plan, from EXPLAIN (FORMAT JSON). */
function scansIn(plan: unknown): Scan[] {
  if (Array.isArray(plan)) return plan.flatMap(scansIn);
  if (plan === null || typeof plan !== "object") return [];
  const node = plan as Record<string, unknown>;
  const type = node["Node Type"];
  const own =
    typeof type === "string" && type.endsWith("Scan")
      ? [
          {
            node: type,
            relation: node["Relation Name"] as string | undefined,
            index: node["Index Name"] as string | undefined,
          },
        ]
      : [];
  return [...own, ...Object.values(node).flatMap(scansIn)];
}

interface Situation {
  name: string;
  /** Builds in the table: `queued` of them queued when the statistics are taken, the rest completed. */
  total: number;
  queued: number;
  /** How many of the queued ones then start running (after the ANALYZE). */
  running: number;
}

const SITUATIONS: Situation[] = [
  {
    name: "stale statistics: 5,000 running, none when analyzed",
    total: 100_000,
    queued: 5_000,
    running: 5_000,
  },
  { name: "fresh statistics, 20,000 builds, 100 running", total: 20_000, queued: 20_000, running: 100 },
];

describe.each(SITUATIONS)("query plans: $name", (situation) => {
  const schema = uniqueSchema("plans");
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL, options: `-c search_path=${schema}` });
  let running: { id: string; lease: number }[] = [];

  beforeAll(async () => {
    const db = await openPostgres(TEST_DATABASE_URL, schema, silentLogger(), { poolSize: 1 });
    await migrate(db).finally(() => db.close());
    await client.connect();
    // Autovacuum would refresh the statistics at a moment of its own choosing: this test fixes them.
    await client.query("ALTER TABLE builds SET (autovacuum_enabled = false)");
    await client.query(
      `INSERT INTO builds (strategy_id, priority, seq, status, max_retries)
       SELECT 's', 0, g, CASE WHEN g <= $2 THEN 'queued' ELSE 'completed' END, 3
       FROM generate_series(1, $1::int) g`,
      [situation.total, situation.queued],
    );
    await client.query("ANALYZE builds");
    const claimed = await client.query<{ id: string; lease: string }>(
      `UPDATE builds SET status = 'running', lease = lease + 1, worker_id = 'w' || (seq % 50),
              lease_expires_at = now() + interval '1 hour'
       WHERE status = 'queued' AND seq <= $1 RETURNING id, lease`,
      [situation.running],
    );
    running = claimed.rows.slice(0, 50).map((r) => ({ id: r.id, lease: Number(r.lease) }));
  });
  afterAll(async () => {
    await client.end();
    await dropSchema(schema);
  });

  async function scansOf(text: string, values: unknown[]): Promise<Scan[]> {
    await client.query("BEGIN");
    try {
      const res = await client.query(`EXPLAIN (FORMAT JSON) ${text}`, values);
      return scansIn(res.rows[0]["QUERY PLAN"]);
    } finally {
      await client.query("ROLLBACK");
    }
  }

  const leases = () => JSON.stringify(running);
  const cases: [string, () => [string, unknown[]]][] = [
    [
      "complete_builds",
      () => [queries.complete_builds, [JSON.stringify(running.map((b) => ({ ...b, result: null })))]],
    ],
    [
      "fail_builds",
      () => [
        queries.fail_builds,
        [JSON.stringify(running.map((b) => ({ ...b, error: "x", retryable: true }))), 1000, 60_000],
      ],
    ],
    [
      "record_progress",
      () => [
        queries.record_progress,
        [running[0]?.id, running[0]?.lease, JSON.stringify({ percent: 1 }), 100],
      ],
    ],
    ["renew_worker_leases", () => [queries.renew_worker_leases, [leases(), 60_000]]],
    ["reap_builds", () => [queries.reap_builds, [leases(), "test"]]],
  ];

  it.each(cases)("%s looks its builds up by primary key", async (name, statement) => {
    const [text, values] = statement();
    const scans = await scansOf(text, values);
    // A bitmap scan names its index on the inner node, which names no relation: take every index.
    const indexes = scans.flatMap((s) => (s.index?.startsWith("builds_") ? [s.index] : []));
    expect(indexes).toContain("builds_pkey");
    expect(scans.filter((s) => s.relation === "builds" && s.node === "Seq Scan")).toEqual([]);
    // Only the reaper may also walk the expired leases (a range scan that stops at now()).
    const allowed = name === "reap_builds" ? ["builds_pkey", "builds_lease_expiry_idx"] : ["builds_pkey"];
    expect(indexes.filter((i) => !allowed.includes(i))).toEqual([]);
  });

  it("a worker's heartbeat and hand-back read no whole table; the reaper's search uses its index", async () => {
    for (const [text, values] of [
      [queries.heartbeat_worker, ["w1", 60_000, leases()]],
      [queries.release_builds, [leases(), "w1"]],
    ] as const) {
      const builds = (await scansOf(text, [...values])).filter((s) => s.relation === "builds");
      expect(builds.filter((s) => s.node === "Seq Scan")).toEqual([]);
    }
    const expired = await scansOf(queries.expired_leases, [100]);
    expect(expired.map((s) => s.index)).toContain("builds_lease_expiry_idx");
  });
});
