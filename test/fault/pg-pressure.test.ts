/**
 * The pressure phases of `npm run chaos`, in the test suite (issue 10): while an idle transaction
 * holds an xid (vacuum stalls, and the cluster's xmin stays put) and four REPEATABLE READ readers
 * scan the queue's tables, builds submitted faster than the workers run them (sustained overload)
 * all run exactly once, and a live subscriber of the event stream receives every completion (the
 * event hub waits only for transactions that write events, never for an unrelated xid).
 */
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BuildQueue } from "../../src/index.js";
import { Worker } from "../../src/worker/worker.js";
import { TEST_DATABASE_URL } from "../helpers/postgres.js";
import { eventually, openTestQueue } from "../helpers/queue.js";

const BUILDS = 300;
const BURST = 50;

describe("PostgreSQL under pressure (idle xid, REPEATABLE READ readers, overload)", () => {
  let queue: BuildQueue;
  let schema: string;
  let cleanup: () => Promise<void>;
  const clients: pg.Client[] = [];
  const workers: Worker[] = [];
  let readersStop = false;
  let readerLoops: Promise<number>[] = [];

  beforeAll(async () => {
    ({ queue, schema, cleanup } = await openTestQueue("pg_pressure", {
      health: { heartbeatMs: 500, deadAfterMs: 10_000 },
    }));
  });

  afterAll(async () => {
    readersStop = true;
    await Promise.all(readerLoops).catch(() => undefined);
    await Promise.all(workers.map((w) => w.stop()));
    for (const client of clients) await client.end().catch(() => undefined);
    await cleanup?.();
  });

  async function connect(): Promise<pg.Client> {
    const client = new pg.Client({
      connectionString: TEST_DATABASE_URL,
      options: `-c search_path=${schema}`,
      application_name: "oculus-pressure-test",
    });
    client.on("error", () => undefined);
    await client.connect();
    clients.push(client);
    return client;
  }

  /** A REPEATABLE READ reader that keeps one snapshot while it scans, as an analytics session does. */
  async function readLoop(client: pg.Client): Promise<number> {
    let scans = 0;
    await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ");
    while (!readersStop) {
      await client.query("SELECT count(*) FROM builds");
      await client.query("SELECT count(*) FROM build_events");
      scans += 1;
      await new Promise((r) => setTimeout(r, 20));
    }
    await client.query("ROLLBACK");
    return scans;
  }

  it("runs every build once and delivers every completion live", async () => {
    const idle = await connect();
    await idle.query("BEGIN");
    const [held] = (await idle.query<{ xid: string }>("SELECT txid_current()::text AS xid")).rows;
    expect(held?.xid).toBeTruthy();
    // Each reader loops until readersStop; they are not awaited here.
    const readers = await Promise.all(Array.from({ length: 4 }, () => connect()));
    readerLoops = readers.map((client) => readLoop(client));

    // The live subscriber attaches before anything is submitted.
    const completions = new Map<string, number>();
    const controller = new AbortController();
    const stream = queue.events.subscribe({ signal: controller.signal });
    const consuming = (async () => {
      for await (const item of stream) {
        if (item.kind === "event" && item.type === "completed") {
          completions.set(item.buildId, (completions.get(item.buildId) ?? 0) + 1);
        }
      }
    })();

    const starts = new Map<string, number>();
    for (let i = 0; i < 2; i++) {
      const worker = new Worker(queue, {
        capacity: 4,
        handler: async (ctx) => {
          starts.set(ctx.build.id, (starts.get(ctx.build.id) ?? 0) + 1);
          await new Promise((r) => setTimeout(r, 5));
          return { ok: true };
        },
      });
      workers.push(worker);
      await worker.start();
    }

    // Overload: bursts of submits, each far more than the eight slots take at once.
    const ids: string[] = [];
    for (let i = 0; i < BUILDS / BURST; i++) {
      const results = await queue.submitMany(
        Array.from({ length: BURST }, (_, j) => ({ strategyId: `pressure-${i}-${j}` })),
      );
      ids.push(...results.map((r) => r.build.id));
    }

    await eventually(async () => completions.size === BUILDS, 120_000).catch(async (err: Error) => {
      const counts = await queue.statusCounts();
      throw new Error(`${err.message}: ${completions.size} completions seen, ${JSON.stringify(counts)}`);
    });
    controller.abort();
    await consuming;

    // The xid was held the whole time (the idle transaction is still open).
    const [still] = (await idle.query<{ xid: string }>("SELECT txid_current()::text AS xid")).rows;
    expect(still?.xid).toBe(held?.xid);
    readersStop = true;
    const scans = await Promise.all(readerLoops);
    expect(scans.every((n) => n > 0)).toBe(true);
    await idle.query("ROLLBACK");

    expect(new Set(ids).size).toBe(BUILDS);
    for (const id of ids) {
      expect(starts.get(id), `starts of ${id}`).toBe(1);
      expect(completions.get(id), `completions of ${id}`).toBe(1);
    }
    const counts = await queue.statusCounts();
    expect(counts.completed).toBe(BUILDS);
  }, 180_000);
});
