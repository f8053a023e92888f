/**
 * The PostgreSQL connection lifecycle against a private cluster: a transaction whose backend is
 * terminated (or ended by the idle-in-transaction timeout) while it is checked out fails with a
 * StoreUnavailableError and the process lives on (an unhandled 'error' of `pg` would kill it: vitest
 * reports it as an unhandled error); the statement timeout, the per-call timeout and the bounded
 * wait queue answer StoreUnavailable with their reason; the pool recovers by itself.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StoreUnavailableError } from "../../src/core/errors.js";
import { silentLogger } from "../../src/core/logger.js";
import { type Db, openPostgres } from "../../src/postgres/db.js";
import { asStoreError } from "../../src/queue/store-errors.js";
import { PgCluster } from "../helpers/pg-cluster.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function expectUnavailable(err: unknown, reason: string): void {
  const converted = asStoreError(err);
  expect(converted, String(err)).toBeInstanceOf(StoreUnavailableError);
  expect((converted as StoreUnavailableError).reason).toBe(reason);
}

async function failure(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error("expected a failure");
    },
    (err: unknown) => err,
  );
}

describe("PostgreSQL connection lifecycle", () => {
  let cluster: PgCluster;
  const dbs: Db[] = [];
  const open = async (options: Parameters<typeof openPostgres>[3] = {}, name = "oculus-lifecycle") => {
    const db = await openPostgres(
      `${cluster.url()}?application_name=${name}`,
      "public",
      silentLogger(),
      options,
    );
    dbs.push(db);
    return db;
  };

  beforeAll(async () => {
    cluster = await PgCluster.start();
  });
  afterAll(async () => {
    for (const db of dbs) await db.close().catch(() => undefined);
    cluster?.destroy();
  });

  it("a transaction whose backend is terminated while it is checked out: StoreUnavailable, the process lives", async () => {
    const db = await open({}, "oculus-terminated");
    const outcome = failure(
      db.transaction(async (tx) => {
        await tx.query("SELECT 1");
        // Terminated while idle in the transaction: `pg` emits 'error' on the checked-out client.
        expect(await cluster.terminateBackends("oculus-terminated")).toBe(1);
        await sleep(300);
        await tx.query("SELECT 1");
      }),
    );
    expectUnavailable(await outcome, "unreachable");
    // The broken client was destroyed, not handed out again.
    expect((await db.query<{ one: number }>("SELECT 1 AS one")).rows).toEqual([{ one: 1 }]);
  });

  it("terminated in the middle of a statement, and between transactions: every caller gets StoreUnavailable", async () => {
    const db = await open({ poolSize: 3 }, "oculus-terminated-busy");
    await Promise.all([db.query("SELECT 1"), db.query("SELECT 1"), db.query("SELECT 1")]); // idle clients
    const sleeping = failure(db.transaction((tx) => tx.query("SELECT pg_sleep(5)")));
    await sleep(300);
    expect(await cluster.terminateBackends("oculus-terminated-busy")).toBeGreaterThanOrEqual(1);
    expectUnavailable(await sleeping, "unreachable");
    await sleep(200); // the idle clients' 'error' events arrive (the pool's listener takes them)
    expect((await db.query<{ one: number }>("SELECT 1 AS one")).rows).toEqual([{ one: 1 }]);
  });

  it("the idle-in-transaction timeout ends a transaction left idle: StoreUnavailable (timeout), the process lives", async () => {
    const db = await open({ pgIdleInTransactionTimeoutMs: 200 }, "oculus-idle-tx");
    const err = await failure(
      db.transaction(async (tx) => {
        await tx.query("SELECT 1");
        await sleep(800);
        await tx.query("SELECT 1");
      }),
    );
    expect(asStoreError(err)).toBeInstanceOf(StoreUnavailableError);
    expect((await db.query<{ one: number }>("SELECT 1 AS one")).rows).toEqual([{ one: 1 }]);
  });

  it("the statement timeout (server side) and a per-call timeout (client side) answer StoreUnavailable (timeout)", async () => {
    const db = await open({ pgStatementTimeoutMs: 200 }, "oculus-statement-timeout");
    expectUnavailable(await failure(db.query("SELECT pg_sleep(2)")), "timeout");
    const loose = await open({ pgStatementTimeoutMs: 0 }, "oculus-call-timeout");
    const started = Date.now();
    expectUnavailable(await failure(loose.query("SELECT pg_sleep(3)", [], { timeoutMs: 300 })), "timeout");
    expect(Date.now() - started).toBeLessThan(2500);
    expect((await loose.query<{ one: number }>("SELECT 1 AS one")).rows).toEqual([{ one: 1 }]);
  });

  it("a full wait queue refuses at once (busy) instead of queueing without bound", async () => {
    const db = await open({ poolSize: 1, pgMaxWaiting: 2 }, "oculus-wait-queue");
    const holder = db.query("SELECT pg_sleep(1)");
    const waiting = [db.query("SELECT 1"), db.query("SELECT 1")];
    const started = Date.now();
    expectUnavailable(await failure(db.query("SELECT 1")), "busy");
    expect(Date.now() - started).toBeLessThan(500);
    await Promise.all([holder, ...waiting]);
  });

  it("PostgreSQL restarted (immediate) under an open pool: StoreUnavailable meanwhile, then it works again", async () => {
    const db = await open({ poolSize: 2 }, "oculus-restart");
    await Promise.all([db.query("SELECT 1"), db.query("SELECT 1")]);
    const inFlight = failure(db.transaction((tx) => tx.query("SELECT pg_sleep(5)")));
    await sleep(200);
    cluster.restart("immediate");
    expect(asStoreError(await inFlight)).toBeInstanceOf(StoreUnavailableError);
    // The first statement after the restart may meet a connection the server dropped; one retry is
    // the caller's business (a StoreUnavailable), and the next one works.
    for (let i = 0; ; i++) {
      try {
        await db.query("SELECT 1");
        break;
      } catch (err) {
        expect(asStoreError(err)).toBeInstanceOf(StoreUnavailableError);
        if (i > 20) throw err;
        await sleep(100);
      }
    }
  });
});
