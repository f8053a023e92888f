import { afterAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/core/logger.js";
import { openPostgres } from "../../src/postgres/db.js";
import { migrate } from "../../src/postgres/migrate.js";
import { dropSchema, sql, TEST_DATABASE_URL, uniqueSchema } from "../helpers/postgres.js";

describe("migrations", () => {
  const schema = uniqueSchema("migrate");
  afterAll(() => dropSchema(schema));

  it("apply once when several processes start at the same time", async () => {
    const dbs = await Promise.all(
      Array.from({ length: 6 }, () =>
        openPostgres(TEST_DATABASE_URL, schema, silentLogger(), { poolSize: 1 }),
      ),
    );
    try {
      const reports = await Promise.all(dbs.map((db) => migrate(db)));
      const appliers = reports.filter((r) => r.applied.length > 0);
      expect(appliers).toHaveLength(1);
      expect(new Set(reports.map((r) => r.current)).size).toBe(1);
      const rows = await sql<{ version: number }>(
        schema,
        "SELECT version FROM schema_migrations ORDER BY version",
      );
      expect(rows.map((r) => r.version)).toEqual(appliers[0]?.applied.map((a) => a.version));
      // Running again is a no-op.
      expect((await migrate(dbs[0] as (typeof dbs)[number])).applied).toEqual([]);
    } finally {
      await Promise.all(dbs.map((db) => db.close()));
    }
  });

  it("0007 moves the listing order of existing builds into build_listing", async () => {
    const { BuildQueue } = await import("../../src/index.js");
    const own = `${schema}_l`;
    const queue = await BuildQueue.open({ databaseUrl: TEST_DATABASE_URL, schema: own });
    try {
      const submitted = await queue.submitMany([
        { strategyId: "a" },
        { strategyId: "b" },
        { strategyId: "a" },
      ]);
      // Back to migration 6 with these builds: no listing table, the listing indexes of 0004.
      await sql(
        own,
        `DROP TABLE build_listing;
         CREATE INDEX builds_seq_all_idx ON builds (seq);
         CREATE INDEX builds_strategy_seq_idx ON builds (strategy_id, seq);
         DELETE FROM schema_migrations WHERE version = 7`,
      );
      const report = await migrate(queue.store.db);
      expect(report.applied.map((m) => m.version)).toEqual([7]);
      const page = await queue.list({ strategyId: "a" });
      expect(page.builds.map((b) => b.id)).toEqual([submitted[2]?.build.id, submitted[0]?.build.id]);
      expect((await queue.list({})).builds).toHaveLength(3);
    } finally {
      await queue.close();
      await dropSchema(own);
    }
  });

  it("0008 takes builds waiting out a retry backoff out of the dispatch index", async () => {
    const { BuildQueue } = await import("../../src/index.js");
    const own = `${schema}_d`;
    const open = () =>
      BuildQueue.open({
        databaseUrl: TEST_DATABASE_URL,
        schema: own,
        backoff: { baseDelayMs: 3_600_000, maxDelayMs: 3_600_000 },
      });
    let queue = await open();
    try {
      const [retried, ready] = await queue.submitMany([
        { strategyId: "a", priority: 5 },
        { strategyId: "b" },
      ]);
      const [claimed] = await queue.store.claimNext(1, "w", 60_000);
      expect(claimed?.id).toBe(retried?.build.id);
      await queue.store.fail(
        [{ id: claimed?.id ?? "", lease: claimed?.lease ?? 0, error: "x", retryable: true }],
        {
          baseDelayMs: 3_600_000,
          maxDelayMs: 3_600_000,
        },
      );
      // Back to migration 7 with a delayed retry queued: no flag, the dispatch index over every queued row.
      await sql(
        own,
        `DROP INDEX builds_delayed_idx;
         DROP INDEX builds_dispatch_idx;
         ALTER TABLE builds DROP COLUMN delayed;
         CREATE INDEX builds_dispatch_idx ON builds (priority DESC, seq) WHERE status = 'queued';
         DELETE FROM schema_migrations WHERE version = 8`,
      );
      const report = await migrate(queue.store.db);
      expect(report.applied.map((m) => m.version)).toEqual([8]);
      // Re-adding the column moved it after the later migrations' columns: statements prepared on the
      // old connections would refuse the new row type ("cached plan must not change result type").
      await queue.close();
      queue = await open();
      const flags = await sql<{ id: string; delayed: boolean }>(
        own,
        "SELECT id, delayed FROM builds ORDER BY seq",
      );
      expect(flags).toEqual([
        { id: retried?.build.id, delayed: true },
        { id: ready?.build.id, delayed: false },
      ]);
      const next = await queue.store.claimNext(5, "w", 60_000);
      expect(next.map((b) => b.id)).toEqual([ready?.build.id]);
      // Once due, the retry is claimed again (before anything of lower priority).
      await sql(own, "UPDATE builds SET run_at = now() - interval '1 second' WHERE id = $1", [
        retried?.build.id,
      ]);
      expect((await queue.store.claimNext(5, "w", 60_000)).map((b) => b.id)).toEqual([retried?.build.id]);
    } finally {
      await queue.close();
      await dropSchema(own);
    }
  });

  it("refuses a database migrated by a newer version", async () => {
    await sql(schema, "INSERT INTO schema_migrations (version, name) VALUES (9999, 'from_the_future')");
    const db = await openPostgres(TEST_DATABASE_URL, schema, silentLogger(), { poolSize: 1 });
    try {
      await expect(migrate(db)).rejects.toThrow(/newer than this version knows/);
    } finally {
      await db.close();
      await sql(schema, "DELETE FROM schema_migrations WHERE version = 9999");
    }
  });
});
