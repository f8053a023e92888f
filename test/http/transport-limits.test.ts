/**
 * Transport limits (src/http/transport.ts) over real sockets: a request whose body or headers never
 * arrive gets 408 in the error shape and its connection closed; an event stream outlives the request
 * timeout (which covers receiving the request only); idle keep-alive connections are closed; a
 * socket serves at most maxRequestsPerSocket requests; connections beyond maxConnections are closed
 * at once, and a slot frees when a connection ends.
 */
import { connect, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildServer } from "../../src/http/server.js";
import { ConfigError } from "../../src/index.js";
import { captureLogs, openTestApi, type TestApi } from "../helpers/api.js";
import { eventually } from "../helpers/queue.js";

const ADMIN = "transport-admin-token-0123456789";
const REQUEST_TIMEOUT_MS = 1000;

interface RawConnection {
  socket: Socket;
  /** Everything the server sent so far. */
  received(): string;
  closed: Promise<void>;
  isClosed(): boolean;
}

/** A plain TCP connection to the API, to send exactly (and only) what a test wants. */
async function rawConnection(url: string): Promise<RawConnection> {
  const { hostname, port } = new URL(url);
  const socket = connect({ host: hostname, port: Number(port) });
  let text = "";
  let ended = false;
  socket.on("data", (chunk: Buffer) => {
    text += chunk.toString("utf8");
  });
  socket.on("error", () => undefined);
  const closed = new Promise<void>((resolve) =>
    socket.on("close", () => {
      ended = true;
      resolve();
    }),
  );
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  return { socket, received: () => text, closed, isClosed: () => ended };
}

/** The JSON body of the (last) HTTP response in `text`. */
function bodyOf(text: string): unknown {
  return JSON.parse(text.slice(text.lastIndexOf("\r\n\r\n") + 4));
}

describe("request and header timeouts", () => {
  let api: TestApi;
  let url: string;
  beforeAll(async () => {
    api = await openTestApi("transport_timeouts", {
      tokens: [{ name: "ops", token: ADMIN, scopes: ["admin"] }],
      limits: { requestTimeoutMs: REQUEST_TIMEOUT_MS, headersTimeoutMs: REQUEST_TIMEOUT_MS },
      sseHeartbeatMs: 200,
    });
    url = await api.url();
  });
  afterAll(() => api?.cleanup());

  it("an authenticated POST announcing 100,000 bytes and sending none: 408 in the error shape, connection closed", async () => {
    const conn = await rawConnection(url);
    const started = Date.now();
    conn.socket.write(
      "POST /v1/builds HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
        `Authorization: Bearer ${ADMIN}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n`,
    );
    await conn.closed;
    // Closed because of the timeout, not at once (generous bounds: a busy machine is slow, not fast).
    expect(Date.now() - started).toBeGreaterThanOrEqual(REQUEST_TIMEOUT_MS - 50);
    expect(conn.received()).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n/);
    expect(bodyOf(conn.received())).toEqual({
      error: { code: "request_timeout", message: expect.stringMatching(/did not arrive in time/) },
    });
    // The operator sees it in the log.
    const line = api.logs.find((l) => l.includes("client error: connection closed"));
    expect(JSON.parse(line ?? "{}")).toMatchObject({ level: 30, code: "ERR_HTTP_REQUEST_TIMEOUT" });
  });

  it("headers that never end: 408, connection closed", async () => {
    const conn = await rawConnection(url);
    conn.socket.write("GET /v1/queue HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1\r\n");
    await conn.closed;
    expect(conn.received()).toMatch(/^HTTP\/1\.1 408 /);
  });

  it("a connection that sends nothing at all is closed", async () => {
    const conn = await rawConnection(url);
    await conn.closed;
    expect(conn.isClosed()).toBe(true);
  });

  it("an event stream is not cut by the request timeout (it covers receiving the request only)", async () => {
    const controller = new AbortController();
    const res = await fetch(`${url}/v1/events`, {
      headers: { authorization: `Bearer ${ADMIN}`, accept: "text/event-stream" },
      signal: controller.signal,
    });
    expect(res.status).toBe(200);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    const decoder = new TextDecoder();
    const opened = Date.now();
    let heartbeats = 0;
    let ended = false;
    // Three request timeouts, each past Node's check interval: a stream cut by it would end here.
    while (Date.now() - opened < 3 * REQUEST_TIMEOUT_MS + 500) {
      const { value, done } = await reader.read();
      if (done) {
        ended = true;
        break;
      }
      heartbeats += (decoder.decode(value, { stream: true }).match(/: heartbeat/g) ?? []).length;
    }
    controller.abort();
    expect(ended).toBe(false);
    expect(heartbeats).toBeGreaterThan(1);
  });
});

describe("keep-alive and requests per socket", () => {
  let api: TestApi;
  let url: string;
  beforeAll(async () => {
    api = await openTestApi("transport_keepalive", {
      limits: { keepAliveTimeoutMs: 1000, maxRequestsPerSocket: 2 },
    });
    url = await api.url();
  });
  afterAll(() => api?.cleanup());

  const healthRequest = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

  it("an idle keep-alive connection is closed after the keep-alive timeout (announced in Keep-Alive)", async () => {
    const conn = await rawConnection(url);
    conn.socket.write(healthRequest);
    await eventually(async () => conn.received().includes("\r\n\r\n{"));
    expect(conn.received()).toMatch(/\r\nkeep-alive: timeout=1\b/i);
    await conn.closed;
    expect(conn.isClosed()).toBe(true);
  });

  it("the second request on a socket is answered with Connection: close, and the socket ends", async () => {
    const conn = await rawConnection(url);
    conn.socket.write(healthRequest);
    await eventually(async () => (conn.received().match(/HTTP\/1\.1 200/g) ?? []).length === 1);
    expect(conn.received()).toMatch(/\r\nconnection: keep-alive\r\n/i);
    conn.socket.write(healthRequest);
    await conn.closed;
    const responses = conn.received().split(/(?=HTTP\/1\.1 )/);
    expect(responses).toHaveLength(2);
    expect(responses[1]).toMatch(/\r\nconnection: close\r\n/i);
  });
});

describe("maxConnections", () => {
  let api: TestApi;
  let url: string;
  beforeAll(async () => {
    api = await openTestApi("transport_maxconn", { limits: { maxConnections: 2 } });
    url = await api.url();
  });
  afterAll(() => api?.cleanup());

  it("a connection beyond the cap is closed at once; once one ends, a new one is served", async () => {
    const first = await rawConnection(url);
    const second = await rawConnection(url);
    // Both are accepted (served) before the third is tried.
    for (const conn of [first, second]) {
      conn.socket.write("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
      await eventually(async () => conn.received().includes("HTTP/1.1 200"));
    }
    const third = await rawConnection(url);
    third.socket.write("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    await third.closed;
    expect(third.received()).toBe("");

    first.socket.destroy();
    await first.closed;
    const status = await eventually(async () => (await fetch(`${url}/health`)).status);
    expect(status).toBe(200);
    second.socket.destroy();
  });
});

describe("limits that would cut event streams", () => {
  it("a connection (idle) timeout at or below the SSE heartbeat is refused", () => {
    const { logger } = captureLogs();
    expect(() =>
      buildServer({} as never, {
        auth: { tokens: [] },
        logger,
        sseHeartbeatMs: 15_000,
        limits: { connectionTimeoutMs: 10_000 },
      }),
    ).toThrow(ConfigError);
  });
});
