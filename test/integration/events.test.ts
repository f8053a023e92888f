/**
 * The build event stream: snapshot first, then every state change and progress, once, in id order;
 * resuming after the last id seen; progress fenced and throttled; on Redis, PostgreSQL and PGlite.
 * Producers and subscribers are separate queues (separate connections and hubs), as separate
 * processes would be.
 */

import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/core/logger.js";
import {
  type BuildEvent,
  BuildNotFoundError,
  type BuildQueue,
  StaleLeaseError,
  type StreamItem,
  ValidationError,
} from "../../src/index.js";
import { EventStore, type EventWriter } from "../../src/postgres/event-store.js";
import { DEFAULT_HUB_OPTIONS, EventHub } from "../../src/queue/event-hub.js";
import { backends } from "../helpers/backends.js";
import { sql, TEST_DATABASE_URL } from "../helpers/postgres.js";
import { eventually } from "../helpers/queue.js";

/** Counts the hub's probes of the event writers (one per gap it has not yet seen covered). */
class CountingEventStore extends EventStore {
  probes = 0;
  override async writers(): Promise<EventWriter[]> {
    this.probes += 1;
    return super.writers();
  }
}

/** Collects items from an iterator until `until` says stop or the iterator ends. */
async function collect(
  stream: AsyncIterable<StreamItem>,
  until: (items: StreamItem[]) => boolean = () => false,
): Promise<StreamItem[]> {
  const items: StreamItem[] = [];
  for await (const item of stream) {
    items.push(item);
    if (until(items)) break;
  }
  return items;
}

const events = (items: StreamItem[]) => items.filter((i): i is BuildEvent => i.kind === "event");

function expectIncreasingIds(items: StreamItem[]): void {
  const ids = events(items).map((e) => Number(e.id));
  expect(ids).toEqual([...ids].sort((a, b) => a - b));
  expect(new Set(ids).size).toBe(ids.length);
}

describe.each(backends())("event stream on $name", (backend) => {
  let producer: BuildQueue;
  let watcher: BuildQueue;
  let cleanups: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    const a = await backend.open(`events_${backend.name}`, { progressIntervalMs: 20 });
    producer = a.queue;
    cleanups.push(a.cleanup);
    if (backend.name === "pglite") {
      watcher = producer; // one process owns an embedded store
    } else {
      const b = await backend.open(`events_${backend.name}_w`, {
        schema: producer.config.schema,
        prefix: producer.config.prefix,
      });
      watcher = b.queue;
      cleanups.unshift(() => b.queue.close());
    }
  });
  afterAll(async () => {
    for (const cleanup of cleanups) await cleanup();
    cleanups = [];
    await backend.teardown();
  });

  /** Claims exactly this build (other tests' builds are completed out of the way). */
  async function claimThis(id: string) {
    for (;;) {
      const [claimed] = await producer.claim("w-events", 1);
      if (!claimed) throw new Error("nothing to claim");
      if (claimed.id === id) return claimed;
      await producer.complete(claimed.id, claimed.lease, null);
    }
  }

  it("gives a build's snapshot, then its events in order, and ends after the final one", async () => {
    const { build } = await producer.submit({ strategyId: "stream-one" });
    const stream = watcher.events.subscribe({ buildId: build.id });
    const collected = collect(stream);
    // Let the subscription attach before the build moves (the snapshot then says queued).
    await new Promise((r) => setTimeout(r, 100));
    const claimed = await claimThis(build.id);
    await producer.reportProgress(build.id, claimed.lease, { phase: "training", percent: 50 });
    await producer.complete(build.id, claimed.lease, { ok: true });
    const items = await collected;
    expect(items[0]).toMatchObject({ kind: "snapshot", build: { id: build.id } });
    const types = events(items).map((e) => e.type);
    expect(types.at(-1)).toBe("completed");
    expect(types).toContain("progress");
    expect(events(items).find((e) => e.type === "progress")?.progress).toMatchObject({
      phase: "training",
      percent: 50,
    });
    expectIncreasingIds(items);
  });

  it("a finished build's stream is its snapshot alone", async () => {
    const { build } = await producer.submit({ strategyId: "stream-done" });
    await producer.stop(build.id, { reason: "not needed" });
    const items = await collect(watcher.events.subscribe({ buildId: build.id }));
    expect(items).toHaveLength(1);
    expect(items[0]).toMatchObject({ kind: "snapshot", build: { status: "stopped" } });
  });

  it("a reconnecting subscriber gets every missed event exactly once, in order", async () => {
    const { build } = await producer.submit({ strategyId: "stream-resume" });
    const claimed = await claimThis(build.id);
    const full = collect(watcher.events.subscribe({ buildId: build.id }));
    // First connection: reads the snapshot and two progress events, then drops.
    const first = watcher.events.subscribe({ buildId: build.id });
    const seen: StreamItem[] = [];
    const firstDone = (async () => {
      for await (const item of first) {
        seen.push(item);
        if (events(seen).filter((e) => e.type === "progress").length === 2) break;
      }
    })();
    for (let i = 1; i <= 10; i++) {
      await producer.reportProgress(build.id, claimed.lease, {
        phase: "training",
        iteration: i,
        maxIterations: 10,
      });
    }
    await firstDone;
    const lastSeen = seen.at(-1)?.id ?? "0";
    await producer.stop(build.id, { actor: "bob", reason: "enough" });
    await producer.fail(build.id, claimed.lease, "stopped by request");
    const resumed = await collect(watcher.events.subscribe({ buildId: build.id, lastEventId: lastSeen }));
    const all = events(await full);
    const missed = all.filter((e) => Number(e.id) > Number(lastSeen));
    expect(resumed.map((e) => e.id)).toEqual(missed.map((e) => e.id));
    expect(resumed.every((e) => e.kind === "event")).toBe(true);
    expect(
      events(resumed)
        .map((e) => e.type)
        .slice(-2),
    ).toEqual(["stopping", "stopped"]);
    expect(events(resumed).find((e) => e.type === "stopping")).toMatchObject({ actor: "bob" });
    expect(all.filter((e) => e.type === "progress").at(-1)?.progress).toMatchObject({ iteration: 10 });
  });

  it("refuses progress from a stale lease, and it never reaches subscribers", async () => {
    const { build } = await producer.submit({ strategyId: "stream-stale", maxRetries: 1 });
    const first = await claimThis(build.id);
    const all = watcher.events.subscribe({});
    const snapshot = (await all.next()).value as StreamItem;
    expect(snapshot.kind).toBe("snapshot");
    await producer.fail(build.id, first.lease, "flaky"); // requeued: lease bumped
    await expect(
      producer.reportProgress(build.id, first.lease, { message: "from the old run" }),
    ).rejects.toBeInstanceOf(StaleLeaseError);
    await new Promise((r) => setTimeout(r, 300));
    const second = await waitClaim(build.id);
    await producer.reportProgress(build.id, second.lease, { message: "from the new run" });
    await producer.complete(build.id, second.lease, null);
    const items: BuildEvent[] = [];
    for await (const item of all) {
      if (item.kind !== "event" || item.buildId !== build.id) continue;
      items.push(item);
      if (item.type === "completed") break;
    }
    const messages = items.filter((e) => e.type === "progress").map((e) => e.progress?.message);
    expect(messages).toEqual(["from the new run"]);
    expect(items.map((e) => e.type)).toEqual(["requeued", "running", "progress", "completed"]);
  });

  async function waitClaim(id: string) {
    for (let i = 0; i < 100; i++) {
      const [claimed] = await producer.claim("w-events", 1);
      if (claimed?.id === id) return claimed;
      if (claimed) await producer.complete(claimed.id, claimed.lease, null);
      else await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`could not claim ${id}`);
  }

  it("throttles a flood of progress to a few writes, ending with the latest value", async () => {
    const { build } = await producer.submit({ strategyId: "stream-flood" });
    const claimed = await claimThis(build.id);
    const calls: Promise<void>[] = [];
    for (let i = 1; i <= 1000; i++) {
      calls.push(producer.reportProgress(build.id, claimed.lease, { iteration: i, maxIterations: 1000 }));
    }
    await Promise.all(calls);
    const stored = await producer.get(build.id);
    expect(stored.progress).toMatchObject({ iteration: 1000 });
    await producer.complete(build.id, claimed.lease, null);
    const items = await collect(watcher.events.subscribe({ buildId: build.id, lastEventId: "0" }));
    const progress = events(items).filter((e) => e.type === "progress");
    expect(progress.length).toBeGreaterThanOrEqual(1);
    expect(progress.length).toBeLessThan(100); // 1,000 calls in one burst: a handful of writes
    expect(progress.at(-1)?.progress).toMatchObject({ iteration: 1000 });
  });

  it("retries a failed build (requeued on the stream) and lists builds page by page", async () => {
    const { build } = await producer.submit({ strategyId: "stream-retry", maxRetries: 0 });
    const claimed = await claimThis(build.id);
    await producer.fail(build.id, claimed.lease, "broken");
    const retried = await producer.retry(build.id, { actor: "carol" });
    expect(retried).toMatchObject({ status: "queued", retryCount: 0, lastError: null });
    await expect(producer.retry(build.id)).rejects.toThrow(/retry/);
    const history = events(
      await collect(watcher.events.subscribe({ buildId: build.id, lastEventId: "0" }), (items) =>
        events(items).some((e) => e.event === "retried"),
      ),
    );
    expect(history.map((e) => e.type)).toEqual(["queued", "running", "failed", "requeued"]);
    expect(history.at(-1)).toMatchObject({ actor: "carol", event: "retried" });

    const seen = new Set<string>();
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await watcher.list({ limit: 2, ...(cursor ? { cursor } : {}) });
      for (const b of page.builds) seen.add(b.id);
      cursor = page.nextCursor ?? undefined;
      pages += 1;
    } while (cursor && pages < 100);
    expect(seen.has(build.id)).toBe(true);
    expect(pages).toBeGreaterThan(2);
    const failedOnly = await watcher.list({ strategyId: "stream-retry", status: "queued" });
    expect(failedOnly.builds.map((b) => b.id)).toEqual([build.id]);
  });

  it("rejects bad subscriptions and list filters clearly", async () => {
    await expect(watcher.events.subscribe({ lastEventId: "abc" }).next()).rejects.toBeInstanceOf(
      ValidationError,
    );
    await expect(watcher.events.subscribe({ buildId: "nope" }).next()).rejects.toBeInstanceOf(
      ValidationError,
    );
    await expect(
      watcher.events.subscribe({ buildId: "00000000-0000-4000-8000-000000000000" }).next(),
    ).rejects.toBeInstanceOf(BuildNotFoundError);
    await expect(watcher.list({ limit: 0 })).rejects.toMatchObject({ field: "limit" });
    await expect(watcher.list({ status: "lost" })).rejects.toMatchObject({ field: "status" });
    await expect(watcher.list({ cursor: "garbage" })).rejects.toMatchObject({ field: "cursor" });
  });

  it("ends subscriptions when their signal aborts", async () => {
    const controller = new AbortController();
    const stream = watcher.events.subscribe({ signal: controller.signal });
    expect((await stream.next()).value).toMatchObject({ kind: "snapshot" });
    const pending = stream.next();
    controller.abort();
    expect(await pending).toMatchObject({ done: true });
  });

  it("reads nothing while nobody subscribes, and the next subscriber misses nothing", async () => {
    const first = watcher.events.subscribe({});
    expect((await first.next()).value).toMatchObject({ kind: "snapshot" });
    await first.return(undefined);
    const before = watcher.events.position();
    for (let i = 0; i < 3; i++) await producer.submit({ strategyId: "nobody-watching" });
    await new Promise((r) => setTimeout(r, 1200)); // two polls and the submits' notices
    expect(watcher.events.position()).toBe(before);

    const { build } = await producer.submit({ strategyId: "watched-again" });
    const collected = collect(watcher.events.subscribe({ buildId: build.id }));
    await new Promise((r) => setTimeout(r, 100));
    const claimed = await claimThis(build.id);
    await producer.complete(build.id, claimed.lease, { ok: true });
    const items = await collected;
    expect(items[0]).toMatchObject({ kind: "snapshot", build: { id: build.id } });
    expect(events(items).map((e) => e.type)).toEqual(["running", "completed"]);
    expect(watcher.events.position()).toBeGreaterThan(before);
  });

  it("steps over many gaps (pruned progress) with one probe of the writers, not one per gap", async () => {
    const { build } = await producer.submit({ strategyId: "many-gaps" });
    const insert = `INSERT INTO build_events (build_id, type, to_status, actor)
                    SELECT $1, 'progress', 'running', 'test' FROM generate_series(1, 400) RETURNING id`;
    const db = producer.store.db;
    const ids = (await db.query<{ id: number }>(insert, [build.id])).rows.map((r) => Number(r.id));
    await db.query("DELETE FROM build_events WHERE build_id = $1 AND type = 'progress' AND id % 2 = 0", [
      build.id,
    ]);
    const newest = Math.max(...ids.filter((id) => id % 2 === 1));
    const store = new CountingEventStore(db);
    const hub = new EventHub(
      store,
      db,
      "oculus_test_gaps",
      undefined,
      "unused",
      silentLogger(),
      DEFAULT_HUB_OPTIONS,
    );
    try {
      const stream = hub.subscribe({});
      expect((await stream.next()).value).toMatchObject({ kind: "snapshot" });
      await eventually(async () => hub.position >= newest);
      expect(store.probes).toBeLessThanOrEqual(3);
      await stream.return(undefined);
    } finally {
      await hub.close();
    }
  });

  it.skipIf(backend.name === "pglite")(
    "waits for an event id drawn by a transaction that started after the one that committed the next id",
    async () => {
      // T' has its transaction id first; T starts later (a larger id), draws event id N and stays
      // open; T' then draws N+1 and commits. A snapshot's xmax (one past T') is below T's id, so a
      // gap rule using it would step over N for good. N must still arrive, before N+1.
      const { build } = await producer.submit({ strategyId: "gap-order" });
      const stream = watcher.events.subscribe({});
      await stream.next(); // snapshot: the hub is reading
      const connect = async () => {
        const client = new pg.Client({
          connectionString: TEST_DATABASE_URL,
          options: `-c search_path=${producer.config.schema}`,
        });
        await client.connect();
        return client;
      };
      const [early, late] = [await connect(), await connect()];
      const insert =
        "INSERT INTO build_events (build_id, type, to_status, actor) VALUES ($1, 'progress', 'running', $2) RETURNING id";
      try {
        await early.query("BEGIN");
        await early.query("SELECT pg_current_xact_id()");
        await late.query("BEGIN");
        await late.query("SELECT pg_current_xact_id()");
        const n = String((await late.query(insert, [build.id, "late"])).rows[0].id);
        const n1 = String((await early.query(insert, [build.id, "early"])).rows[0].id);
        await early.query("COMMIT");
        await new Promise((r) => setTimeout(r, 1500)); // several hub reads see N+1 and not N
        await late.query("COMMIT");
        const seen: string[] = [];
        for await (const item of stream) {
          if (item.kind === "event" && (item.id === n || item.id === n1)) seen.push(item.id);
          if (seen.length === 2) break;
        }
        expect(seen).toEqual([n, n1]);
      } finally {
        await early.end();
        await late.end();
      }
    },
  );

  it.skipIf(backend.name === "pglite")(
    "delivers every event of concurrent writers once, in id order (all-builds stream)",
    async () => {
      const writers = await Promise.all(
        [1, 2, 3].map(() =>
          backend.open(`events_${backend.name}_x`, {
            schema: producer.config.schema,
            prefix: producer.config.prefix,
            progressIntervalMs: 0,
            progressHistory: 10_000,
          }),
        ),
      );
      try {
        const stream = watcher.events.subscribe({});
        const snapshot = (await stream.next()).value as StreamItem;
        const received: BuildEvent[] = [];
        let endId = "";
        const reading = (async () => {
          for await (const item of stream) {
            if (item.kind === "event") received.push(item);
            if (item.kind === "event" && item.buildId === endId && item.type === "stopped") break;
          }
        })();
        await Promise.all(
          writers.map(async ({ queue }, w) => {
            for (let round = 0; round < 15; round++) {
              const { build } = await queue.submit({ strategyId: `concurrent-${w}` });
              const [claimed] = await queue.claim(`w-${w}`, 1);
              if (!claimed) continue;
              await Promise.all(
                [1, 2, 3].map((i) => queue.reportProgress(claimed.id, claimed.lease, { iteration: i })),
              );
              await queue.complete(claimed.id, claimed.lease, null);
              void build;
            }
          }),
        );
        // A last, recognisable event closes the reading.
        const { build: last } = await producer.submit({ strategyId: "concurrent-end" });
        endId = last.id;
        await producer.stop(last.id, { reason: "end" });
        await eventuallyMarker(received, last.id);
        await reading;
        const rows = await sql<{ id: string }>(
          producer.config.schema,
          "SELECT id FROM build_events WHERE id > $1 ORDER BY id",
          [snapshot.id],
        );
        const stored = rows.map((r) => String(r.id));
        const got = received.map((e) => e.id);
        expect(got.slice(0, stored.length)).toEqual(stored);
      } finally {
        for (const w of writers) await w.queue.close();
      }
    },
  );
});

async function eventuallyMarker(received: BuildEvent[], buildId: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (received.some((e) => e.buildId === buildId && e.type === "stopped")) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("the last event never arrived");
}
