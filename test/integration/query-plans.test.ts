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
  /** No ANALYZE at all: the planner knows only the table's size in pages. */
  unanalyzed?: boolean;
}

const SITUATIONS: Situation[] = [
  {
    name: "stale statistics: 5,000 running, none when analyzed",
    total: 100_000,
    queued: 5_000,
    running: 5_000,
  },
  { name: "fresh statistics, 20,000 builds, 100 running", total: 20_000, queued: 20_000, running: 100 },
  {
    // As under a pinned xmin horizon: the statistics count few live queued builds, while the
    // partial indexes over queued builds still hold an entry for each build claimed since.
    name: "fresh statistics counting 50 queued builds of 20,000 (a drained queue), 10 of them running",
    total: 20_000,
    queued: 50,
    running: 10,
  },
  {
    name: "a new installation: 1,000 builds, 3 queued, 1 running, no statistics",
    total: 1_000,
    queued: 3,
    running: 1,
    unanalyzed: true,
  },
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
    if (!situation.unanalyzed) await client.query("ANALYZE builds");
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
      () => [queries.complete_builds, [JSON.stringify(running.map((b) => ({ ...b, result: null }))), false]],
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

  it("claim_by_ids (the Redis path's claim) looks its ids up by primary key only and reads no whole table", async () => {
    const queued = await client.query<{ id: string }>(
      "SELECT id FROM builds WHERE status = 'queued' ORDER BY seq LIMIT 50",
    );
    const ids = queued.rows.length > 0 ? queued.rows.map((r) => r.id) : running.map((b) => b.id);
    await client.query("BEGIN");
    const res = await client
      .query(`EXPLAIN (FORMAT JSON) ${queries.claim_by_ids}`, [ids, "w-plan", 60_000])
      .finally(() => client.query("ROLLBACK"));
    const plan = res.rows[0]["QUERY PLAN"];
    expect(scansIn(plan).filter((s) => s.relation === "builds" && s.node === "Seq Scan")).toEqual([]);
    // No partial index over queued builds: under a pinned horizon it holds every claimed build too.
    const indexes = scansIn(plan).flatMap((s) => (s.index?.startsWith("builds_") ? [s.index] : []));
    expect(indexes.filter((i) => i !== "builds_pkey")).toEqual([]);
    const update = nodesIn(plan).find((n) => n["Node Type"] === "ModifyTable" && n.Operation === "Update");
    expect(scansIn(update).map((s) => s.index)).toContain("builds_pkey");
  });

  // On a table of a few pages that was never analyzed these scan those pages, the planner's own
  // choice (it cannot know how many ids an array holds); autovacuum's ANALYZE ends that within a
  // minute of the first few hundred builds.
  it.runIf(!situation.unanalyzed).each(cases)(
    "%s looks its builds up by primary key",
    async (name, statement) => {
      const [text, values] = statement();
      const scans = await scansOf(text, values);
      // A bitmap scan names its index on the inner node, which names no relation: take every index.
      const indexes = scans.flatMap((s) => (s.index?.startsWith("builds_") ? [s.index] : []));
      expect(indexes).toContain("builds_pkey");
      expect(scans.filter((s) => s.relation === "builds" && s.node === "Seq Scan")).toEqual([]);
      // Only the reaper may also walk the expired leases (a range scan that stops at now()).
      const allowed = name === "reap_builds" ? ["builds_pkey", "builds_lease_expiry_idx"] : ["builds_pkey"];
      expect(indexes.filter((i) => !allowed.includes(i))).toEqual([]);
    },
  );

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

/** Every node of a plan, from EXPLAIN (FORMAT JSON). */
function nodesIn(plan: unknown): Record<string, unknown>[] {
  if (Array.isArray(plan)) return plan.flatMap(nodesIn);
  if (plan === null || typeof plan !== "object") return [];
  const node = plan as Record<string, unknown>;
  const own = typeof node["Node Type"] === "string" ? [node] : [];
  return [...own, ...Object.values(node).flatMap(nodesIn)];
}

/**
 * At scale, and as a connection runs the statements after five executions (a generic plan: the query
 * files run as named prepared statements): claims read no delayed retries, and no statement's plan
 * depends on a parameter being null.
 */
describe("query plans at scale (generic plans)", () => {
  const schema = uniqueSchema("plans_scale");
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL, options: `-c search_path=${schema}` });
  const DELAYED = 50_000;
  const READY = 100;
  let someBuild = "";

  beforeAll(async () => {
    const db = await openPostgres(TEST_DATABASE_URL, schema, silentLogger(), { poolSize: 1 });
    await migrate(db).finally(() => db.close());
    await client.connect();
    await client.query("ALTER TABLE builds SET (autovacuum_enabled = false)");
    // The delayed retries as a fleet makes them: running builds that failed with retries left. They
    // keep their sequence numbers, ahead of the ready builds in dispatch order (and higher priority).
    const running = await client.query<{ id: string; lease: string }>(
      `INSERT INTO builds (strategy_id, priority, seq, status, max_retries, lease, worker_id)
       SELECT 'd' || (g % 10), 5, g, 'running', 3, 1, 'w' FROM generate_series(1, $1::int) g RETURNING id, lease`,
      [DELAYED],
    );
    const failures = running.rows.map((r) => ({
      id: r.id,
      lease: Number(r.lease),
      error: "x",
      retryable: true,
    }));
    await client.query(queries.fail_builds, [JSON.stringify(failures), 3_600_000, 3_600_000]);
    await client.query(
      `INSERT INTO builds (strategy_id, priority, seq, status, max_retries)
       SELECT 'r', 0, g, 'queued', 3 FROM generate_series($1::int + 1, $1::int + $2::int) g`,
      [DELAYED, READY],
    );
    await client.query(
      "INSERT INTO build_listing (seq, strategy_id, build_id) SELECT seq, strategy_id, id FROM builds",
    );
    someBuild = running.rows[0]?.id ?? "";
    await client.query(
      `INSERT INTO build_events (build_id, type, actor)
       SELECT id, 'progress', 'w' FROM builds, generate_series(1, 3)`,
    );
    await client.query("VACUUM ANALYZE builds");
    await client.query("ANALYZE build_events");
    await client.query("ANALYZE build_listing");
  });
  afterAll(async () => {
    await client.end();
    await dropSchema(schema);
  });

  /** EXPLAIN of the statement prepared and planned generically (as after five executions), rolled back. */
  async function genericPlan(
    text: string,
    values: unknown[],
    analyze = false,
  ): Promise<Record<string, unknown>[]> {
    await client.query("BEGIN");
    try {
      await client.query("SET LOCAL plan_cache_mode = force_generic_plan");
      await client.query(`PREPARE under_test AS ${text}`);
      const args = values.map((v) => (v === null ? "NULL" : client.escapeLiteral(String(v)))).join(", ");
      const res = await client.query(
        `EXPLAIN (FORMAT JSON${analyze ? ", ANALYZE" : ""}) EXECUTE under_test(${args})`,
      );
      return nodesIn(res.rows[0]["QUERY PLAN"]);
    } finally {
      await client.query("ROLLBACK");
      await client.query("DEALLOCATE ALL"); // prepared statements outlive the transaction
    }
  }

  it("a claim reads no delayed retry (50,000 of them ahead in dispatch order)", async () => {
    const nodes = await genericPlan(queries.claim_next, [1, "w-plan", 60_000, "{}"], true);
    const removed = nodes.reduce((sum, n) => sum + Number(n["Rows Removed by Filter"] ?? 0), 0);
    expect(removed).toBeLessThan(10);
    const builds = nodes.filter(
      (n) => n["Relation Name"] === "builds" && String(n["Node Type"]).endsWith("Scan"),
    );
    expect(builds.filter((n) => n["Node Type"] === "Seq Scan")).toEqual([]);
    const read = builds.reduce(
      (sum, n) => sum + Number(n["Actual Rows"] ?? 0) * Number(n["Actual Loops"] ?? 1),
      0,
    );
    expect(read).toBeLessThan(10);
  });

  it("a due retry is claimed first, in dispatch order; the due ones not taken become ready", async () => {
    await client.query("BEGIN");
    try {
      const due = await client.query<{ id: string }>(
        `UPDATE builds SET run_at = now() - interval '1 second'
         WHERE id IN (SELECT id FROM builds WHERE status = 'queued' AND delayed ORDER BY seq DESC LIMIT 5)
         RETURNING id, seq`,
      );
      const dueIds = (
        await client.query<{ id: string }>("SELECT id FROM builds WHERE id = ANY($1) ORDER BY seq", [
          due.rows.map((r) => r.id),
        ])
      ).rows.map((r) => r.id);
      const first = await client.query<{ id: string }>(queries.claim_next, [2, "w", 60_000, "{}"]);
      expect(first.rows.map((r) => r.id)).toEqual(dueIds.slice(0, 2));
      const promoted = await client.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM builds WHERE id = ANY($1) AND status = 'queued' AND NOT delayed",
        [dueIds],
      );
      expect(promoted.rows[0]?.n).toBe(3);
      const next = await client.query<{ id: string; priority: number }>(queries.claim_next, [
        5,
        "w",
        60_000,
        "{}",
      ]);
      expect(next.rows.map((r) => r.id).slice(0, 3)).toEqual(dueIds.slice(2));
      expect(next.rows.slice(3).map((r) => r.priority)).toEqual([0, 0]);
      // Position on the PostgreSQL path counts the due-but-not-promoted with the ready ones.
      const position = await client.query<{ position: number }>(queries.queue_position, [
        0,
        DELAYED + READY,
        "default",
      ]);
      expect(position.rows[0]?.position).toBe(READY - 2);
    } finally {
      await client.query("ROLLBACK");
    }
  });

  it("a resume of one build's events walks that build's index (no plan needs the build id to be null)", async () => {
    const nodes = await genericPlan(queries.events_between_build, [someBuild, 0, 1_000_000_000, 500], true);
    const scans = nodes.filter((n) => n["Relation Name"] === "build_events");
    expect(scans.map((n) => n["Index Name"])).toEqual(["build_events_build_idx"]);
    expect(String(scans[0]?.["Index Cond"])).toContain("build_id");
    expect(nodes.reduce((sum, n) => sum + Number(n["Rows Removed by Filter"] ?? 0), 0)).toBe(0);
  });

  it("a listing page starts at its cursor, by strategy along the strategy's index", async () => {
    const all = await genericPlan(queries.list_builds, [null, 1_000, 50], true);
    const listing = all.filter((n) => n["Relation Name"] === "build_listing");
    expect(listing.map((n) => n["Index Name"])).toEqual(["build_listing_pkey"]);
    expect(String(listing[0]?.["Index Cond"])).toContain("seq <");
    // By strategy the planner may walk either index (the strategy's, or the listing order filtered by
    // strategy when its statistics say each strategy is common): either way from the cursor on.
    const byStrategy = await genericPlan(queries.list_builds_by_strategy, [null, "d3", 1_000, 50], true);
    const strategyScans = byStrategy.filter((n) => n["Relation Name"] === "build_listing");
    expect(strategyScans).toHaveLength(1);
    expect(String(strategyScans[0]?.["Index Cond"])).toContain("seq <");
    expect(Number(strategyScans[0]?.["Actual Rows"])).toBe(50);
  });
});
