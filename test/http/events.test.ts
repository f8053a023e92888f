/**
 * Server-Sent Events over real connections: the frame format, resuming with Last-Event-ID (header,
 * or the lastEventId query for clients that cannot set headers) after a disconnect without missing
 * or repeating an event, the end of a build's stream after its final event, heartbeats, a client
 * going away, and a server shutdown that ends open streams cleanly.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openTestApi, type TestApi } from "../helpers/api.js";
import { eventually } from "../helpers/queue.js";

interface Frame {
  id?: string;
  event?: string;
  // biome-ignore lint/suspicious/noExplicitAny: event payloads are read freely
  data?: any;
  comment?: string;
}

/** A minimal EventSource over fetch: frames as they arrive, and whether the server ended the stream. */
class SseClient {
  private buffer = "";
  private readonly frames: Frame[] = [];
  private waiting: (() => void) | undefined;
  ended = false;
  readonly status: number;
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;
  private readonly controller: AbortController;

  private constructor(res: Response, controller: AbortController) {
    this.status = res.status;
    this.controller = controller;
    if (!res.body) throw new Error("no body");
    this.reader = res.body.getReader();
    void this.pump();
  }

  static async open(url: string, headers: Record<string, string> = {}): Promise<SseClient> {
    const controller = new AbortController();
    const res = await fetch(url, { headers, signal: controller.signal });
    return new SseClient(res, controller);
  }

  private async pump(): Promise<void> {
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const { done, value } = await this.reader.read();
        if (done) break;
        this.buffer += decoder.decode(value, { stream: true });
        let end = this.buffer.indexOf("\n\n");
        while (end >= 0) {
          this.frames.push(parseFrame(this.buffer.slice(0, end)));
          this.buffer = this.buffer.slice(end + 2);
          end = this.buffer.indexOf("\n\n");
        }
        this.waiting?.();
      }
    } catch {
      // aborted by the test
    }
    this.ended = true;
    this.waiting?.();
  }

  /** Waits until `check` holds over the frames received so far (or the stream ended). */
  async until(check: (frames: Frame[]) => boolean, timeoutMs = 15_000): Promise<Frame[]> {
    const deadline = Date.now() + timeoutMs;
    while (!check(this.frames)) {
      if (this.ended) throw new Error(`stream ended first: ${JSON.stringify(this.frames)}`);
      if (Date.now() > deadline) throw new Error(`timed out: ${JSON.stringify(this.frames)}`);
      await new Promise<void>((resolve) => {
        this.waiting = resolve;
        setTimeout(resolve, 200);
      });
    }
    return [...this.frames];
  }

  /** Waits until the server ends the stream; returns every frame. */
  async end(timeoutMs = 15_000): Promise<Frame[]> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended) {
      if (Date.now() > deadline) throw new Error(`stream did not end: ${JSON.stringify(this.frames)}`);
      await new Promise<void>((resolve) => {
        this.waiting = resolve;
        setTimeout(resolve, 200);
      });
    }
    return [...this.frames];
  }

  close(): void {
    this.controller.abort();
  }
}

function parseFrame(text: string): Frame {
  const frame: Frame = {};
  for (const line of text.split("\n")) {
    if (line.startsWith(":")) frame.comment = line.slice(1).trim();
    else if (line.startsWith("id: ")) frame.id = line.slice(4);
    else if (line.startsWith("event: ")) frame.event = line.slice(7);
    else if (line.startsWith("data: ")) frame.data = JSON.parse(line.slice(6));
  }
  return frame;
}

const events = (frames: Frame[]) => frames.filter((f) => f.event !== undefined);

describe("event streams over a real connection", () => {
  let api: TestApi;
  let base: string;

  beforeAll(async () => {
    api = await openTestApi("http_events", { sseHeartbeatMs: 100, queue: { progressIntervalMs: 0 } });
    base = await api.url();
  });
  afterAll(async () => {
    await api?.cleanup();
  });

  it("a build's stream: snapshot, live events; after a disconnect, Last-Event-ID resumes with exactly what was missed, and the stream ends after the final event", async () => {
    const { build } = await api.queue.submit({ strategyId: "sse-resume" });
    const first = await SseClient.open(`${base}/v1/builds/${build.id}/events`);
    expect(first.status).toBe(200);
    const [snapshot] = events(await first.until((f) => events(f).length >= 1));
    expect(snapshot).toMatchObject({
      event: "snapshot",
      data: { kind: "snapshot", build: { id: build.id, status: "queued" } },
    });
    expect(snapshot?.id).toBe(snapshot?.data.id);

    const [claimed] = await api.queue.claim("sse-worker", 1);
    if (!claimed) throw new Error("nothing claimed");
    const running = events(await first.until((f) => events(f).some((e) => e.event === "running")));
    const lastSeen = running.at(-1);
    expect(lastSeen).toMatchObject({
      event: "running",
      data: { buildId: build.id, type: "running", status: "running" },
    });
    first.close();

    // What happens while the client is away.
    await api.queue.reportProgress(build.id, claimed.lease, { phase: "training", percent: 50 });
    await api.queue.complete(build.id, claimed.lease, { image: "oculus/sse:1" });

    const again = await SseClient.open(`${base}/v1/builds/${build.id}/events`, {
      "last-event-id": lastSeen?.id ?? "",
    });
    const missed = events(await again.end());
    expect(missed.map((e) => e.event)).toEqual(["progress", "completed"]);
    expect(missed[0]?.data.progress).toMatchObject({ phase: "training", percent: 50 });
    const ids = missed.map((e) => Number(e.id));
    expect(ids[0]).toBeGreaterThan(Number(lastSeen?.id));
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
  });

  it("lastEventId in the query resumes too; the Last-Event-ID header wins over it (a reconnecting EventSource)", async () => {
    const { build } = await api.queue.submit({ strategyId: "sse-query" });
    await api.queue.stop(build.id, { reason: "done" });
    const all = events(
      await (await SseClient.open(`${base}/v1/builds/${build.id}/events?lastEventId=0`)).end(),
    );
    expect(all.map((e) => e.event)).toEqual(["queued", "stopped"]);
    const [queued, stopped] = all;
    const fromQuery = events(
      await (await SseClient.open(`${base}/v1/builds/${build.id}/events?lastEventId=${queued?.id}`)).end(),
    );
    expect(fromQuery.map((e) => e.id)).toEqual([stopped?.id]);
    const headerWins = await SseClient.open(`${base}/v1/builds/${build.id}/events?lastEventId=0`, {
      "last-event-id": String(queued?.id),
    });
    expect(events(await headerWins.end()).map((e) => e.id)).toEqual([stopped?.id]);
  });

  it("the all-builds stream: a snapshot with counts, live events of every build, heartbeat comments", async () => {
    const stream = await SseClient.open(`${base}/v1/events`);
    const [snapshot] = events(await stream.until((f) => events(f).length >= 1));
    expect(snapshot).toMatchObject({ event: "snapshot", data: { kind: "snapshot", active: [], counts: {} } });
    const { build } = await api.queue.submit({ strategyId: "sse-all" });
    const frames = await stream.until(
      (f) => events(f).some((e) => e.data?.buildId === build.id) && f.some((x) => x.comment === "heartbeat"),
    );
    expect(events(frames).find((e) => e.data?.buildId === build.id)).toMatchObject({ event: "queued" });
    stream.close();
  });

  it("a client that goes away ends its subscription on the server", async () => {
    const stream = await SseClient.open(`${base}/v1/events`, { "x-request-id": "sse-leaver" });
    await stream.until((f) => events(f).length >= 1);
    stream.close();
    await eventually(async () =>
      api.logs.some((l) => l.includes('"reqId":"sse-leaver"') && l.includes('"reason":"client went away"')),
    );
  });
});

describe("shutdown", () => {
  it("ends open streams cleanly (socket and in-process) and closes", async () => {
    const api = await openTestApi("http_events_close");
    try {
      const { build } = await api.queue.submit({ strategyId: "sse-close" });
      const all = await SseClient.open(`${await api.url()}/v1/events`);
      const one = await SseClient.open(`${await api.url()}/v1/builds/${build.id}/events`);
      const injected = api.app.inject({ method: "GET", url: "/v1/events" });
      await all.until((f) => events(f).length >= 1);
      await one.until((f) => events(f).length >= 1);
      await api.app.close();
      expect((await all.end()).length).toBeGreaterThan(0);
      expect((await one.end()).length).toBeGreaterThan(0);
      const res = await injected;
      expect(res.statusCode).toBe(200);
      expect(res.headers["content-type"]).toMatch(/^text\/event-stream/);
      expect(res.body).toMatch(/^: stream open\n\n/);
      expect(api.logs.filter((l) => l.includes('"reason":"server shutting down"')).length).toBe(3);
    } finally {
      await api.cleanup();
    }
  });
});
