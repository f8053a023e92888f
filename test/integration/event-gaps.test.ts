/**
 * The event hub's gap rule against PostgreSQL's own transactions (src/queue/event-gaps.ts): holes in
 * the event ids that no running transaction can fill are stepped over at once, whatever else runs in
 * the cluster; an event whose transaction commits late (after more than 10 s) is delivered, once, in
 * order, to live and to resuming subscribers. Events are written by separate connections, as other
 * processes would.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/core/logger.js";
import type { BuildEvent, StreamItem } from "../../src/index.js";
import { BuildQueue } from "../../src/index.js";
import { EventStore, type EventWriter } from "../../src/postgres/event-store.js";
import { DEFAULT_HUB_OPTIONS, EventHub } from "../../src/queue/event-hub.js";
import { TEST_DATABASE_URL } from "../helpers/postgres.js";
import { eventually, openTestQueue } from "../helpers/queue.js";

/** Counts the hub's reads of the stream and its probes of the writers. */
class CountingEventStore extends EventStore {
  reads = 0;
  probes = 0;
  override async after(afterId: number, limit: number): Promise<BuildEvent[]> {
    this.reads += 1;
    return super.after(afterId, limit);
  }
  override async writers(): Promise<EventWriter[]> {
    this.probes += 1;
    return super.writers();
  }
}

const INSERT =
  "INSERT INTO build_events (build_id, type, to_status, actor) VALUES ($1, 'progress', 'running', $2) RETURNING id";

/** Reads a stream in the background; `until` waits for an event by actor. */
function follow(subscribe: (signal: AbortSignal) => AsyncGenerator<StreamItem>) {
  const controller = new AbortController();
  const stream = subscribe(controller.signal);
  const received: BuildEvent[] = [];
  let ended = false;
  const done = (async () => {
    for await (const item of stream) if (item.kind === "event") received.push(item);
    ended = true;
  })();
  return {
    received,
    actors: () => received.map((e) => e.actor),
    until: (actor: string, timeoutMs = 30_000) =>
      eventually(async () => received.some((e) => e.actor === actor) || ended, timeoutMs),
    async close() {
      controller.abort();
      await done.catch(() => undefined);
    },
  };
}

describe("event gaps on PostgreSQL", () => {
  let queue: BuildQueue;
  let schema: string;
  let cleanup: () => Promise<void>;
  let buildId: string;
  const clients: pg.Client[] = [];

  beforeAll(async () => {
    ({ queue, schema, cleanup } = await openTestQueue("event_gaps"));
    buildId = (await queue.submit({ strategyId: "gaps" })).build.id;
  });
  afterAll(async () => {
    for (const c of clients) await c.end().catch(() => undefined);
    await cleanup();
  });

  async function connect(): Promise<pg.Client> {
    const client = new pg.Client({
      connectionString: TEST_DATABASE_URL,
      options: `-c search_path=${schema}`,
    });
    await client.connect();
    clients.push(client);
    return client;
  }

  async function openHub() {
    const store = new CountingEventStore(queue.store.db);
    const hub = new EventHub(
      store,
      queue.store.db,
      `oculus_gaps_${schema}`,
      undefined,
      "unused",
      silentLogger(),
      {
        ...DEFAULT_HUB_OPTIONS,
        pollMs: 100,
      },
    );
    const live = follow((signal) => hub.subscribe({ signal }));
    await eventually(async () => hub.position > 0);
    return { store, hub, live };
  }

  /** An unrelated transaction that holds a transaction id and sits idle (an analytics session). */
  async function idleTransactionWithXid(): Promise<pg.Client> {
    const idle = await connect();
    await idle.query("BEGIN");
    await idle.query("SELECT pg_current_xact_id()");
    return idle;
  }

  it("steps over a rolled-back insert while an unrelated idle transaction holds an xid", async () => {
    const idle = await idleTransactionWithXid();
    const { store, hub, live } = await openHub();
    try {
      const writer = await connect();
      await writer.query("BEGIN");
      await writer.query(INSERT, [buildId, "rolled-back"]);
      await writer.query("ROLLBACK");
      const readsBefore = store.reads;
      await writer.query(INSERT, [buildId, "after-rollback"]);
      await live.until("after-rollback");
      // The old rule waited for xmin to pass a bound (the idle transaction holds it back) or 10 s,
      // re-reading every 5 ms: some 1,500 reads. Now: a probe or two and a few reads.
      expect(live.actors()).toEqual(["after-rollback"]);
      expect(store.reads - readsBefore).toBeLessThan(50);
      expect(store.probes).toBeLessThanOrEqual(3);
      expect((await idle.query("SELECT 1")).rowCount).toBe(1); // still open all along
    } finally {
      await idle.query("ROLLBACK");
      await live.close();
      await hub.close();
    }
  });

  it("steps over a sequence jump (ids drawn by no insert, as after a crash)", async () => {
    const idle = await idleTransactionWithXid();
    const { store, hub, live } = await openHub();
    try {
      const writer = await connect();
      await writer.query("SELECT setval('build_events_id_seq', nextval('build_events_id_seq') + 32)");
      const readsBefore = store.reads;
      await writer.query(INSERT, [buildId, "after-jump"]);
      await live.until("after-jump");
      expect(live.actors()).toEqual(["after-jump"]);
      expect(store.reads - readsBefore).toBeLessThan(50);
    } finally {
      await idle.query("ROLLBACK");
      await live.close();
      await hub.close();
    }
  });

  it("delivers an event committed after more than 10 s, once and in order, to live and resuming subscribers", async () => {
    const idle = await idleTransactionWithXid();
    const { store, hub, live } = await openHub();
    const late = await connect();
    const resumers: ReturnType<typeof follow>[] = [];
    try {
      await late.query("BEGIN");
      const n = Number((await late.query(INSERT, [buildId, "late"])).rows[0].id);
      await (await connect()).query(INSERT, [buildId, "next"]); // n + 1, committed at once
      // A subscriber resuming from before the hole while it is open.
      resumers.push(follow((signal) => hub.subscribe({ lastEventId: String(n - 1), signal })));
      await new Promise((r) => setTimeout(r, 11_000)); // past the old rule's 10 s
      expect(live.received.map((e) => e.actor)).toEqual([]);
      const probesWhileWaiting = store.probes;
      await late.query("COMMIT");
      await live.until("next");
      await resumers[0]?.until("next");
      // And one that resumes after the commit, from before the hole.
      resumers.push(follow((signal) => hub.subscribe({ lastEventId: String(n - 1), signal })));
      await resumers[1]?.until("next");
      for (const stream of [live, ...resumers]) {
        expect(stream.received.map((e) => [Number(e.id), e.actor])).toEqual([
          [n, "late"],
          [n + 1, "next"],
        ]);
      }
      // Rechecks back off to 100 ms: about a hundred probes in 11 s, not thousands of reads.
      expect(probesWhileWaiting).toBeLessThan(200);
      expect(store.reads).toBeLessThan(400);
    } finally {
      await late.query("ROLLBACK").catch(() => undefined);
      await idle.query("ROLLBACK");
      for (const r of resumers) await r.close();
      await live.close();
      await hub.close();
    }
  }, 60_000);
});

describe("event gaps on PGlite (one connection: no other writer can be listed)", () => {
  let dataDir: string;
  let queue: BuildQueue;

  beforeAll(async () => {
    dataDir = mkdtempSync(path.join(tmpdir(), "oculus-gaps-"));
    queue = await BuildQueue.open({ dataDir, schema: "oculus" });
  });
  afterAll(async () => {
    await queue.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("steps over a rolled-back insert", async () => {
    const { build } = await queue.submit({ strategyId: "gaps" });
    const live = follow((signal) => queue.events.subscribe({ signal }));
    try {
      await eventually(async () => queue.events.position() > 0);
      await queue.store.db
        .transaction(async (tx) => {
          await tx.query(INSERT, [build.id, "rolled-back"]);
          throw new Error("roll back");
        })
        .catch(() => undefined);
      await queue.store.db.query(INSERT, [build.id, "after-rollback"]);
      await live.until("after-rollback");
      expect(live.actors()).toEqual(["after-rollback"]);
    } finally {
      await live.close();
    }
  });
});
