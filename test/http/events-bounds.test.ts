/**
 * The bounds on event streams (docs/security.md, "Event streams"), over real connections to the API
 * on the test PostgreSQL:
 * - a catch-up (`?lastEventId=0`) over a backlog of many pages delivers every event once, in order,
 *   reading a page only when the client has taken the previous ones (a client that stops reading
 *   holds the server's reads back; the heap does not grow by the backlog), and runs no catch-up query
 *   after its client left;
 * - a resume further back than the cap is `410 resume_too_old` with the oldest id one may resume
 *   after (per build: by the build's own events), and the CLI's client then starts over from a snapshot;
 * - the per-address cap on open streams (`429 too_many_streams`, Retry-After), by the address the
 *   trust-proxy setting gives (IPv6 by /64);
 * - HEAD on the stream routes answers the headers (or the error) and ends.
 *
 * Catch-up queries are counted at the driver (pg.Client.prototype.query), by the statement's text.
 */
import http from "node:http";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiClient, reconnectNote } from "../../src/cli/api-client.js";
import { streamAddressKey } from "../../src/http/stream-limits.js";
import { openTestApi, type TestApi } from "../helpers/api.js";
import { dropSchema, sql, uniqueSchema } from "../helpers/postgres.js";
import { eventually } from "../helpers/queue.js";
import { TcpProxy } from "../helpers/tcp-proxy.js";

interface ErrorBody {
  error: { code: string; message: string; oldestEventId?: string };
}

/** Catch-up page queries of every build's stream (events_between_all.sql) run by this process. */
let catchUpQueries = 0;
const originalQuery = pg.Client.prototype.query;

function countCatchUpQueries(): void {
  // biome-ignore lint/suspicious/noExplicitAny: the driver's overloads, passed through unchanged
  pg.Client.prototype.query = function (this: pg.Client, ...args: any[]) {
    const config = args[0] as { text?: string } | string;
    const text = typeof config === "string" ? config : config?.text;
    if (text?.startsWith("-- events_between_all")) catchUpQueries += 1;
    // biome-ignore lint/suspicious/noExplicitAny: as above
    return (originalQuery as any).apply(this, args);
  } as typeof pg.Client.prototype.query;
}

/**
 * The live heap (after a full collection): what the server holds, not the garbage a catch-up leaves
 * behind until the collector runs. `gc` is exposed at run time for this (V8's own flag).
 */
function liveHeap(): number {
  setFlagsFromString("--expose-gc");
  (runInNewContext("gc") as () => void)();
  return process.memoryUsage().heapUsed;
}

/** Inserts `n` progress events of about `bytes` each (made-up builds: build_events has no foreign key). */
async function insertEvents(schema: string, n: number, bytes: number, buildId?: string): Promise<void> {
  await sql(
    schema,
    `INSERT INTO build_events (build_id, type, from_status, to_status, actor, data)
     SELECT coalesce($3::uuid, gen_random_uuid()), 'progress', 'running', 'running', 'test',
            jsonb_build_object('phase', repeat('x', $2::int), 'percent', n % 100)
     FROM generate_series(1, $1::int) AS n`,
    [n, bytes, buildId ?? null],
  );
}

/** A raw SSE reader over node:http, so that the test decides when the socket is read. */
class RawStream {
  readonly ids: number[] = [];
  received = 0;
  status = 0;
  headers: http.IncomingHttpHeaders = {};
  private buffer = "";
  private res: http.IncomingMessage | undefined;
  private readonly req: http.ClientRequest;
  private changed: (() => void) | undefined;
  ended = false;

  constructor(url: string, headers: Record<string, string> = {}) {
    this.req = http.get(url, { headers }, (res) => {
      this.res = res;
      this.status = res.statusCode ?? 0;
      this.headers = res.headers;
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => this.take(chunk));
      res.on("end", () => this.finish());
      res.on("error", () => this.finish());
      this.changed?.();
    });
    this.req.on("error", () => this.finish());
  }

  private take(chunk: string): void {
    this.received += chunk.length;
    this.buffer += chunk;
    let end = this.buffer.indexOf("\n\n");
    while (end >= 0) {
      const id = /^id: (\d+)$/m.exec(this.buffer.slice(0, end))?.[1];
      if (id) this.ids.push(Number(id));
      this.buffer = this.buffer.slice(end + 2);
      end = this.buffer.indexOf("\n\n");
    }
    this.changed?.();
  }

  private finish(): void {
    this.ended = true;
    this.changed?.();
  }

  async until(check: () => boolean, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!check()) {
      if (this.ended)
        throw new Error(`stream ended first (status ${this.status}, ${this.ids.length} events)`);
      if (Date.now() > deadline) throw new Error(`timed out with ${this.ids.length} events`);
      await new Promise<void>((resolve) => {
        this.changed = resolve;
        setTimeout(resolve, 200);
      });
    }
  }

  pause(): void {
    this.res?.pause();
  }

  resume(): void {
    this.res?.resume();
  }

  close(): void {
    this.req.destroy();
  }
}

/** Waits until `read()` has stayed the same for `quietMs` (the server stalled on a full socket). */
async function settled(read: () => number, quietMs = 1500): Promise<number> {
  let value = read();
  let since = Date.now();
  for (;;) {
    await new Promise((r) => setTimeout(r, 100));
    const now = read();
    if (now !== value) {
      value = now;
      since = Date.now();
    } else if (Date.now() - since >= quietMs) return value;
  }
}

describe("a catch-up over a long backlog", () => {
  const EVENTS = 40_000;
  const PAGES = EVENTS / 500;
  const schema = uniqueSchema("sse_catchup");
  let api: TestApi;
  let base: string;
  let allIds: number[];

  beforeAll(async () => {
    api = await openTestApi("sse_catchup", { queue: { schema }, maxResumeEvents: 100_000 });
    base = await api.url();
    await insertEvents(schema, EVENTS, 1000);
    allIds = (await sql<{ id: string }>(schema, "SELECT id FROM build_events ORDER BY id")).map((r) =>
      Number(r.id),
    );
    countCatchUpQueries();
  }, 120_000);
  afterAll(async () => {
    pg.Client.prototype.query = originalQuery;
    await api?.cleanup();
    await dropSchema(schema);
  });

  it("delivers every event once and in order, reading pages only as fast as the client takes them", async () => {
    const heapBefore = liveHeap();
    const queriesBefore = catchUpQueries;
    const stream = new RawStream(`${base}/v1/events?lastEventId=0`);
    await stream.until(() => stream.received >= 1024 * 1024);
    stream.pause();
    // The client reads nothing more: once the socket buffers are full the server waits for "drain".
    const pagesWhilePaused = (await settled(() => catchUpQueries)) - queriesBefore;
    const heapGrowth = liveHeap() - heapBefore;
    expect(pagesWhilePaused).toBeLessThan(PAGES / 2);
    // Loosely: the backlog is ~40 MB (more as JS objects), a page ~0.5 MB, what the client has 1 MB.
    expect(heapGrowth).toBeLessThan(15 * 1024 * 1024);
    expect(stream.ended).toBe(false);

    stream.resume();
    await stream.until(() => stream.ids.length >= EVENTS);
    stream.close();
    expect(stream.ids).toEqual(allIds);
    expect(catchUpQueries - queriesBefore).toBeGreaterThanOrEqual(PAGES);
    expect(catchUpQueries - queriesBefore).toBeLessThanOrEqual(PAGES + 1);
  }, 120_000);

  it("runs no catch-up query once its client has gone", async () => {
    const endedBefore = api.logs.filter((line) => line.includes("client went away")).length;
    const queriesBefore = catchUpQueries;
    const stream = new RawStream(`${base}/v1/events?lastEventId=0`);
    await stream.until(() => stream.received >= 256 * 1024);
    stream.pause();
    const atLeave = await settled(() => catchUpQueries);
    stream.close();
    await eventually(
      async () => api.logs.filter((line) => line.includes("client went away")).length > endedBefore,
    );
    // The stream ended in the server with at most the page it was reading (none, if it was waiting
    // for "drain"); nothing runs on later either.
    const atEnd = catchUpQueries;
    expect(atEnd).toBeLessThanOrEqual(atLeave + 1);
    await new Promise((r) => setTimeout(r, 1000));
    expect(catchUpQueries).toBe(atEnd);
    expect(atLeave - queriesBefore).toBeLessThan(PAGES / 2);
  }, 120_000);

  it("a client that leaves as soon as the stream opened stops the catch-up", async () => {
    const endedBefore = api.logs.filter((line) => line.includes("client went away")).length;
    const queriesBefore = catchUpQueries;
    const stream = new RawStream(`${base}/v1/events?lastEventId=0`);
    await stream.until(() => stream.received > 0); // ": stream open"
    stream.close();
    await eventually(
      async () => api.logs.filter((line) => line.includes("client went away")).length > endedBefore,
    );
    const atEnd = catchUpQueries;
    await new Promise((r) => setTimeout(r, 1000));
    expect(catchUpQueries).toBe(atEnd);
    expect(atEnd - queriesBefore).toBeLessThan(PAGES / 2);
  }, 120_000);
});

describe("how far back a stream may resume", () => {
  const schema = uniqueSchema("sse_resume_cap");
  let api: TestApi;
  let base: string;

  beforeAll(async () => {
    api = await openTestApi("sse_resume_cap", { queue: { schema }, maxResumeEvents: 5 });
    base = await api.url();
  });
  afterAll(async () => {
    await api?.cleanup();
    await dropSchema(schema);
  });

  const head = async () =>
    Number((await sql<{ id: string }>(schema, "SELECT max(id) AS id FROM build_events"))[0]?.id ?? 0);

  it("every build's stream: further back than the cap is 410 with the oldest id; from it, exactly the cap", async () => {
    await insertEvents(schema, 12, 10);
    const newest = await head();
    for (const [url, headers] of [
      [`${base}/v1/events?lastEventId=0`, {}],
      [`${base}/v1/events`, { "last-event-id": String(newest - 6) }],
    ] as const) {
      const res = await fetch(url, { headers });
      expect(res.status).toBe(410);
      const body = (await res.json()) as ErrorBody;
      expect(body.error).toMatchObject({ code: "resume_too_old", oldestEventId: String(newest - 5) });
      expect(body.error.message).toContain("at most 5 events");
    }
    const stream = new RawStream(`${base}/v1/events?lastEventId=${newest - 5}`);
    await stream.until(() => stream.ids.length >= 5);
    stream.close();
    expect(stream.status).toBe(200);
    expect(stream.ids).toEqual([newest - 4, newest - 3, newest - 2, newest - 1, newest]);
  });

  it("one build's stream counts that build's events only: its whole history while it is short, else 410", async () => {
    const short = (await api.queue.submit({ strategyId: "short" })).build;
    await insertEvents(schema, 20, 10); // other builds' events: they do not count for `short`
    const shortStream = new RawStream(`${base}/v1/builds/${short.id}/events?lastEventId=0`);
    await shortStream.until(() => shortStream.ids.length >= 1);
    shortStream.close();
    expect(shortStream.status).toBe(200);

    const long = (await api.queue.submit({ strategyId: "long" })).build;
    await insertEvents(schema, 8, 10, long.id);
    const ids = (
      await sql<{ id: string }>(schema, "SELECT id FROM build_events WHERE build_id = $1 ORDER BY id", [
        long.id,
      ])
    ).map((r) => Number(r.id));
    expect(ids).toHaveLength(9);
    const res = await fetch(`${base}/v1/builds/${long.id}/events?lastEventId=0`);
    expect(res.status).toBe(410);
    const oldest = ((await res.json()) as ErrorBody).error.oldestEventId;
    expect(oldest).toBe(String(ids[3])); // resuming after it replays the newest 5
    const stream = new RawStream(`${base}/v1/builds/${long.id}/events?lastEventId=${oldest}`);
    await stream.until(() => stream.ids.length >= 5);
    stream.close();
    expect(stream.ids).toEqual(ids.slice(4));
  });

  it("the CLI's client, too far behind after a dropped connection, starts over from a snapshot", async () => {
    const port = Number(new URL(base).port);
    const proxy = await TcpProxy.start(port);
    const client = new ApiClient({ url: `http://127.0.0.1:${proxy.port}`, token: undefined });
    const seen: string[] = [];
    const controller = new AbortController();
    const reasons: string[] = [];
    const done = client.stream(
      "/v1/events",
      (message) => {
        seen.push(message.event ?? "message");
        return seen.filter((e) => e === "snapshot").length >= 2;
      },
      { signal: controller.signal, onReconnect: (_attempt, reason) => reasons.push(reason) },
    );
    try {
      await eventually(async () => seen.length >= 1);
      await api.queue.submit({ strategyId: "seen-live" });
      await eventually(async () => seen.length >= 2);
      proxy.cut();
      await insertEvents(schema, 10, 10); // more than the cap while it is away
      proxy.restore();
      await done;
      expect(seen[0]).toBe("snapshot");
      expect(seen.at(-1)).toBe("snapshot");
      // First the lost connection, then the 410 that made it start over; `oculus watch` says which.
      expect(reasons[0]).toBe("lost");
      expect(reasons.at(-1)).toBe("too-far-behind");
      expect(reconnectNote("too-far-behind")).toContain("starting over from a snapshot");
    } finally {
      controller.abort();
      await proxy.close();
    }
  }, 60_000);
});

describe("open streams per client address", () => {
  let api: TestApi;
  let base: string;

  beforeAll(async () => {
    api = await openTestApi("sse_stream_cap", { maxStreamsPerAddress: 2, trustProxy: true });
    base = await api.url();
  });
  afterAll(async () => {
    await api?.cleanup();
  });

  const open = async (address: string) => {
    const stream = new RawStream(`${base}/v1/events`, { "x-forwarded-for": address });
    await stream.until(() => stream.status !== 0);
    return stream;
  };

  it("one stream more than the cap is 429 with Retry-After; other addresses and closed streams do not count", async () => {
    const first = await open("10.0.0.1");
    const second = await open("10.0.0.1");
    expect([first.status, second.status]).toEqual([200, 200]);
    const refused = await fetch(`${base}/v1/events`, { headers: { "x-forwarded-for": "10.0.0.1" } });
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(((await refused.json()) as ErrorBody).error).toMatchObject({ code: "too_many_streams" });
    const other = await open("10.0.0.2");
    expect(other.status).toBe(200);

    first.close();
    const again = await eventually(async () => {
      const stream = await open("10.0.0.1");
      if (stream.status === 200) return stream;
      stream.close();
      return undefined;
    });
    for (const stream of [second, other, again]) stream.close();
  });

  it("IPv6 addresses count by /64; IPv4-mapped addresses as IPv4", async () => {
    expect(streamAddressKey("2001:db8::1")).toBe(streamAddressKey("2001:db8:0:0:ffff::2"));
    expect(streamAddressKey("2001:db8::1")).not.toBe(streamAddressKey("2001:db8:0:1::1"));
    expect(streamAddressKey("::ffff:10.0.0.1")).toBe("10.0.0.1");
    expect(streamAddressKey("10.0.0.1")).toBe("10.0.0.1");
    const a = await open("2001:db8::1");
    const b = await open("2001:db8::2");
    const refused = await fetch(`${base}/v1/events`, { headers: { "x-forwarded-for": "2001:db8::3" } });
    expect([a.status, b.status, refused.status]).toEqual([200, 200, 429]);
    const elsewhere = await open("2001:db8:0:1::1");
    expect(elsewhere.status).toBe(200);
    for (const stream of [a, b, elsewhere]) stream.close();
  });
});

describe("HEAD on the event streams", () => {
  let api: TestApi;
  let base: string;

  beforeAll(async () => {
    api = await openTestApi("sse_head", { maxStreamsPerAddress: 1, maxResumeEvents: 1 });
    base = await api.url();
  });
  afterAll(async () => {
    await api?.cleanup();
  });

  it("answers the stream's headers, or its error, and ends; it holds no stream", async () => {
    const build = (await api.queue.submit({ strategyId: "head" })).build;
    await api.queue.submit({ strategyId: "head-2" });
    for (const path of ["/v1/events", `/v1/builds/${build.id}/events`, "/v1/events?lastEventId=999"]) {
      const res = await fetch(`${base}${path}`, { method: "HEAD", signal: AbortSignal.timeout(15_000) });
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toContain("text/event-stream");
      expect(await res.text()).toBe("");
    }
    const unknown = await fetch(`${base}/v1/builds/00000000-0000-4000-8000-000000000000/events`, {
      method: "HEAD",
      signal: AbortSignal.timeout(15_000),
    });
    expect(unknown.status).toBe(404);
    const tooOld = await fetch(`${base}/v1/events?lastEventId=0`, {
      method: "HEAD",
      signal: AbortSignal.timeout(15_000),
    });
    expect(tooOld.status).toBe(410);
    // The HEADs left no stream open: the one stream this address may hold is still free.
    const stream = new RawStream(`${base}/v1/events`);
    await stream.until(() => stream.status !== 0);
    expect(stream.status).toBe(200);
    const second = await fetch(`${base}/v1/events`, { method: "HEAD", signal: AbortSignal.timeout(15_000) });
    expect(second.status).toBe(429);
    stream.close();
  });
});
