/**
 * PostgreSQL's lock conflicts are not failures of the queue:
 * - a claim on the Redis path never waits for a row another transaction holds (two claimers popping
 *   the same ids after a Redis failover deadlocked there): it takes the free builds at once, and the
 *   locked one is claimed once it is free again;
 * - a statement of its own that the server aborts for a deadlock is run again, and succeeds.
 */
import { randomInt } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/core/logger.js";
import { openPostgres } from "../../src/postgres/db.js";
import { TEST_DATABASE_URL } from "../helpers/postgres.js";
import { eventually, openTestQueue } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

let server: RedisServer;
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  server = await RedisServer.start({ appendonly: false });
});
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  await server?.destroy();
});

async function connect(options: { schema?: string } = {}): Promise<pg.Client> {
  const client = new pg.Client({
    connectionString: TEST_DATABASE_URL,
    ...(options.schema ? { options: `-c search_path=${options.schema}` } : {}),
  });
  await client.connect();
  cleanups.push(() => client.end());
  return client;
}

describe("PostgreSQL lock conflicts", () => {
  it("a Redis-path claim skips a build another transaction has locked instead of waiting for it", async () => {
    const { queue, schema, cleanup } = await openTestQueue("lock_skip", {
      redisUrl: server.url,
      reconcileIntervalMs: 3_600_000,
      // Far longer than the test waits: an old-style claim would sit on the lock until then.
      pgClaimTimeoutMs: 60_000,
    });
    cleanups.push(cleanup);
    expect(queue.mode).toBe("redis");
    const [first, second] = await queue.submitMany([{ strategyId: "locked" }, { strategyId: "free" }]);
    if (!first || !second) throw new Error("submit failed");

    // Another transaction (a claimer that popped the same id from a lagging replica, say) holds
    // the first build's row.
    const other = await connect({ schema });
    await other.query("BEGIN");
    await other.query("SELECT id FROM builds WHERE id = $1 FOR UPDATE", [first.build.id]);

    // The lock is held until after this returns: a claim that waited for it would not return here
    // (until its 60 s claim timeout, and then with an error).
    const claimed = await queue.claim("w1", 2);
    expect(claimed.map((b) => b.id)).toEqual([second.build.id]);
    expect((await queue.get(first.build.id)).status).toBe("queued");

    // The lock goes away without a change: the skipped build is claimable, in the index again.
    await other.query("ROLLBACK");
    const [again] = await eventually(async () => {
      const got = await queue.claim("w2", 2);
      return got.length > 0 ? got : undefined;
    });
    expect(again?.id).toBe(first.build.id);
    expect(again?.lease).toBe(1);
    expect(await queue.claim("w3", 2)).toEqual([]);
  });

  it("runs a statement of its own again when the server aborts it for a deadlock", async () => {
    const db = await openPostgres(TEST_DATABASE_URL, "public", silentLogger(), { poolSize: 2 });
    cleanups.push(() => db.close());
    const [a, b] = [randomInt(1, 2 ** 40), randomInt(1, 2 ** 40)];

    // The other session holds lock a, and detects deadlocks only after 30 s: the server aborts
    // the statement below (which detects after the default 1 s), not the other session.
    const other = await connect();
    await other.query("SET deadlock_timeout = '30s'");
    await other.query("BEGIN");
    await other.query("SELECT pg_advisory_xact_lock($1)", [a]);

    // Takes b, then waits for a.
    const statement = db.query<{ done: boolean }>(
      "SELECT pg_advisory_xact_lock($1::bigint), pg_advisory_xact_lock($2::bigint), true AS done",
      [b, a],
    );
    // Wait until it holds b and waits for a, then close the cycle: the other session asks for b.
    await eventually(async () => {
      // A bigint advisory key is split into classid (high 32 bits) and objid (low 32 bits).
      const res = await other.query(
        `SELECT count(*)::int AS n FROM pg_locks
         WHERE locktype = 'advisory' AND NOT granted AND objsubid = 1
           AND (classid::bigint << 32) | objid::bigint = $1`,
        [a],
      );
      return res.rows[0].n > 0;
    });
    const otherGetsB = other.query("SELECT pg_advisory_xact_lock($1)", [b]);
    // The server aborts the statement (deadlock detected), which frees b: the other session gets it
    // and commits, and the statement's second run takes b and a.
    await otherGetsB;
    await other.query("COMMIT");
    const res = await statement;
    expect(res.rows[0]?.done).toBe(true);
  });

  it("does not run again a statement that failed for another reason", async () => {
    const db = await openPostgres(TEST_DATABASE_URL, "public", silentLogger(), { poolSize: 1 });
    cleanups.push(() => db.close());
    await expect(db.query("SELECT 1 / 0")).rejects.toMatchObject({ code: "22012" });
    // The connection is still usable.
    expect((await db.query<{ one: number }>("SELECT 1 AS one")).rows[0]?.one).toBe(1);
  });
});
