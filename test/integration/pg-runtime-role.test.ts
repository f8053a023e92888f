/**
 * The queue runs as a PostgreSQL role that may only read and write rows (docs/operations.md,
 * "PostgreSQL privileges"): no DDL when the schema is current. Migrations need a role that may
 * create; the runtime role asked to apply one is refused with a message that says what to run.
 */
import { randomBytes } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BuildQueue } from "../../src/index.js";
import { Worker } from "../../src/worker/worker.js";
import { oculus } from "../helpers/oculus-cli.js";
import { dropSchema, TEST_DATABASE_URL, uniqueSchema } from "../helpers/postgres.js";
import { eventually } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

const schema = uniqueSchema("runtime_role");
const role = `oculus_rt_${process.pid}_${randomBytes(3).toString("hex")}`;
const password = randomBytes(12).toString("hex");
let runtimeUrl: string;
let admin: pg.Client;
let redis: RedisServer;

const quote = (name: string) => `"${name.replaceAll('"', '""')}"`;

beforeAll(async () => {
  // The migration role (the test's superuser) brings the schema up to date.
  const migrating = await BuildQueue.open({ databaseUrl: TEST_DATABASE_URL, schema });
  await migrating.close();
  admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await admin.connect();
  // The runtime role: rows only (the statements docs/operations.md gives).
  await admin.query(`CREATE ROLE ${quote(role)} LOGIN PASSWORD '${password}'`);
  await admin.query(`GRANT USAGE ON SCHEMA ${quote(schema)} TO ${quote(role)}`);
  await admin.query(
    `GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ${quote(schema)} TO ${quote(role)}`,
  );
  await admin.query(
    `GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA ${quote(schema)} TO ${quote(role)}`,
  );
  const url = new URL(TEST_DATABASE_URL);
  url.username = role;
  url.password = password;
  runtimeUrl = url.toString();
  redis = await RedisServer.start({ appendonly: false });
});

afterAll(async () => {
  await redis?.destroy();
  await dropSchema(schema).catch(() => undefined);
  await admin?.query(`DROP OWNED BY ${quote(role)}`).catch(() => undefined);
  await admin?.query(`DROP ROLE IF EXISTS ${quote(role)}`).catch(() => undefined);
  await admin?.end();
});

describe("a runtime role with row privileges only", () => {
  it("may not create in the database (the premise of this test)", async () => {
    const client = new pg.Client({ connectionString: runtimeUrl });
    await client.connect();
    try {
      await expect(client.query(`CREATE SCHEMA IF NOT EXISTS ${quote(schema)}`)).rejects.toMatchObject({
        code: "42501",
      });
    } finally {
      await client.end();
    }
  });

  for (const mode of ["redis", "postgres"] as const) {
    it(`opens the queue and runs builds end to end (${mode})`, async () => {
      const queue = await BuildQueue.open({
        databaseUrl: runtimeUrl,
        schema,
        ...(mode === "redis" ? { redisUrl: redis.url, prefix: `rt${process.pid}` } : {}),
        reconcileIntervalMs: 500,
        backoff: { baseDelayMs: 50, maxDelayMs: 100 },
      });
      const worker = new Worker(queue, {
        handler: async (ctx) => {
          await ctx.progress({ phase: "training", percent: 50 });
          ctx.log(`running ${ctx.build.strategyId}`);
          if (ctx.build.strategyId === "fails-once" && ctx.build.retryCount === 0)
            throw new Error("first try");
          return { image: `oculus/${ctx.build.strategyId}` };
        },
      });
      try {
        expect(queue.mode).toBe(mode);
        queue.startReaper(200);
        queue.startScheduler();
        await worker.start();
        await queue.setLimit(`rt-key-${mode}`, 1);
        await queue.schedules.add({ name: `rt-${mode}`, cron: "* * * * * *", strategyId: `tick-${mode}` });
        const submitted = await queue.submitMany([
          { strategyId: "plain", idempotencyKey: `rt-${mode}-1` },
          { strategyId: "keyed", concurrencyKey: `rt-key-${mode}` },
          { strategyId: "keyed", concurrencyKey: `rt-key-${mode}` },
          { strategyId: "fails-once", maxRetries: 2 },
        ]);
        const removable = await queue.submit({
          strategyId: "removed",
          runAt: new Date(Date.now() + 3_600_000).toISOString(),
        });
        expect((await queue.remove(removable.build.id, { reason: "test" })).status).toBe("stopped");
        for (const { build } of submitted) {
          const done = await eventually(async () => {
            const b = await queue.get(build.id);
            return b.status === "completed" && b;
          }, 30_000);
          expect(done.result).toEqual({ image: `oculus/${build.strategyId}` });
        }
        // The scheduler's tick was submitted and run.
        await eventually(async () => {
          const page = await queue.list({ strategyId: `tick-${mode}` });
          return page.builds.some((b) => b.status === "completed");
        }, 30_000);
        await queue.schedules.remove(`rt-${mode}`);
        // Events, logs, the fleet, the reconciler and retention work with row privileges too.
        const stream = queue.events.subscribe({});
        const first = await stream.next();
        expect(first.done).toBe(false);
        await stream.return(undefined);
        const [firstBuild] = submitted;
        if (!firstBuild) throw new Error("submit failed");
        const log = await eventually(async () => {
          const text = (await queue.readLog(firstBuild.build.id, 0)).map((c) => c.text).join("");
          return text.includes("running plain") && text;
        });
        expect(log).toContain("running plain");
        expect((await queue.workers.list()).map((w) => w.id)).toContain(worker.id);
        if (mode === "redis") expect((await queue.reconcile()).queued).toBeGreaterThanOrEqual(0);
        await worker.stop();
        const report = await queue.prune({ olderThanMs: 0 });
        expect(report.builds).toBeGreaterThanOrEqual(submitted.length);
      } finally {
        await worker.stop().catch(() => undefined);
        await queue.close();
      }
    });
  }

  it("oculus migrate: nothing to do says so; a pending migration is refused with what to run (exit 2)", async () => {
    const env = { DATABASE_URL: runtimeUrl, OCULUS_SCHEMA: schema };
    const current = await oculus(["migrate"], env);
    expect(current.stderr).toBe("");
    expect(current.code).toBe(0);
    const version = Number(/is at migration (\d+)/.exec(current.stdout)?.[1]);
    expect(version).toBeGreaterThan(10);

    // As if this version of oculus were newer than the schema: its last migration is pending.
    const last = await admin.query(
      `DELETE FROM ${quote(schema)}.schema_migrations WHERE version = $1 RETURNING *`,
      [version],
    );
    try {
      const refused = await oculus(["migrate"], env);
      expect(refused.code).toBe(2);
      expect(refused.stderr).toContain(`is at migration ${version - 1} and this version needs ${version}`);
      expect(refused.stderr).toContain('run "oculus migrate" as a role that may create');
      // Nothing was applied.
      const rows = await admin.query(`SELECT max(version)::int AS v FROM ${quote(schema)}.schema_migrations`);
      expect(rows.rows[0].v).toBe(version - 1);
    } finally {
      const row = last.rows[0];
      await admin.query(
        `INSERT INTO ${quote(schema)}.schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
        [row.version, row.name, row.applied_at],
      );
    }
  });
});
