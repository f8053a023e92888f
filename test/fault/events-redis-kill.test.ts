/**
 * The event stream through a Redis kill -9 and restart: a subscriber in another queue (its own hub
 * and connections) keeps getting every event of a running build, once and in order, while the
 * notices go over PostgreSQL NOTIFY instead of Redis pub/sub; and a subscriber that reconnects
 * after the outage with its last event id gets exactly what it missed.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BuildEvent, StreamItem } from "../../src/index.js";
import { eventually, openTestQueue } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

describe("event stream across a Redis kill -9", () => {
  let server: RedisServer;
  const cleanups: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    server = await RedisServer.start({ appendonly: false });
    cleanups.push(() => server.destroy());
  });
  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  });

  it("delivers every progress and state event once, in order, before, during and after the outage", async () => {
    const producer = await openTestQueue("events_kill", { redisUrl: server.url, progressIntervalMs: 0 });
    cleanups.push(producer.cleanup);
    const watcher = await openTestQueue("events_kill", {
      redisUrl: server.url,
      schema: producer.schema,
      prefix: producer.prefix,
    });
    cleanups.push(watcher.cleanup);
    const { build } = await producer.queue.submit({ strategyId: "outage" });
    const [claimed] = await producer.queue.claim("w-outage", 1);
    if (!claimed) throw new Error("nothing claimed");

    const live: BuildEvent[] = [];
    const liveDone = (async () => {
      for await (const item of watcher.queue.events.subscribe({ buildId: build.id })) {
        if (item.kind === "event") live.push(item);
      }
    })();
    // A second subscriber drops after the first progress and comes back after the outage.
    const early: StreamItem[] = [];
    for await (const item of watcher.queue.events.subscribe({ buildId: build.id })) {
      early.push(item);
      if (item.kind === "snapshot") {
        await producer.queue.reportProgress(build.id, claimed.lease, { iteration: 1 });
        continue;
      }
      break;
    }

    for (let i = 2; i <= 5; i++)
      await producer.queue.reportProgress(build.id, claimed.lease, { iteration: i });
    await server.kill9();
    for (let i = 6; i <= 10; i++)
      await producer.queue.reportProgress(build.id, claimed.lease, { iteration: i });
    expect(producer.queue.mode).toBe("postgres");
    await eventually(async () => live.filter((e) => e.type === "progress").length === 10);
    await server.restart();
    await eventually(async () => producer.queue.mode === "redis" && watcher.queue.mode === "redis", 20_000);
    for (let i = 11; i <= 12; i++)
      await producer.queue.reportProgress(build.id, claimed.lease, { iteration: i });
    await producer.queue.complete(build.id, claimed.lease, { ok: true });
    await liveDone;

    const iterations = live.filter((e) => e.type === "progress").map((e) => e.progress?.iteration);
    expect(iterations).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    expect(live.at(-1)?.type).toBe("completed");
    const ids = live.map((e) => Number(e.id));
    expect(ids).toEqual([...ids].sort((a, b) => a - b));

    const lastSeen = early.at(-1)?.id ?? "0";
    const resumed: StreamItem[] = [];
    for await (const item of watcher.queue.events.subscribe({ buildId: build.id, lastEventId: lastSeen })) {
      resumed.push(item);
    }
    expect(resumed.map((e) => e.id)).toEqual(
      live.filter((e) => Number(e.id) > Number(lastSeen)).map((e) => e.id),
    );
  });
});
