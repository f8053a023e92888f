/**
 * The HTTP API over a real queue (the test PostgreSQL, optionally a private Redis), with its log
 * lines captured, and one way to call it either in-process (`inject`) or over a real socket (`fetch`).
 */
import { connect } from "node:net";
import { Writable } from "node:stream";
import type { RouteOptions } from "fastify";
import { pino } from "pino";
import { LOG_REDACTION, type Logger } from "../../src/core/logger.js";
import { type AuthConfig, authConfig, type TokenSpec } from "../../src/http/auth.js";
import { buildServer, listenApi, type ServerOptions } from "../../src/http/server.js";
import type { BuildQueue, BuildQueueOptions } from "../../src/index.js";
import { openTestQueue } from "./queue.js";

export type ApiApp = ReturnType<typeof buildServer>;

export interface ApiResponse {
  status: number;
  headers: Record<string, string>;
  text: string;
  // biome-ignore lint/suspicious/noExplicitAny: tests read response bodies freely
  json: any;
}

export interface CallOptions {
  body?: unknown;
  /** Sent as is (not JSON-encoded): malformed bodies. */
  rawBody?: string;
  token?: string;
  headers?: Record<string, string>;
}

export type Caller = (method: string, url: string, options?: CallOptions) => Promise<ApiResponse>;

/** A log destination that keeps every line (to look for leaked secrets and request ids). */
export function captureLogs(): { lines: string[]; logger: Logger } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(...chunk.toString().split("\n").filter(Boolean));
      done();
    },
  });
  // The CLI logger's redaction (src/core/logger.ts), which is what is under test.
  const logger: Logger = pino({ level: "debug", redact: LOG_REDACTION }, stream);
  return { lines, logger };
}

export interface TestApi {
  queue: BuildQueue;
  app: ApiApp;
  logs: string[];
  inject: Caller;
  /** Listens on 127.0.0.1, port 0 (once), and calls over the socket. */
  fetch: Caller;
  url(): Promise<string>;
  cleanup(): Promise<void>;
}

export interface TestApiOptions extends Partial<Omit<ServerOptions, "auth" | "logger">> {
  tokens?: TokenSpec[];
  queue?: BuildQueueOptions;
  /** Called before the server is ready: add test-only routes. */
  setup?: (app: ApiApp) => void;
}

function requestHeaders(options: CallOptions): Record<string, string> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  if ((options.body !== undefined || options.rawBody !== undefined) && !headers["content-type"]) {
    headers["content-type"] = "application/json";
  }
  return headers;
}

function payloadOf(options: CallOptions): string | undefined {
  if (options.rawBody !== undefined) return options.rawBody;
  return options.body === undefined ? undefined : JSON.stringify(options.body);
}

function parse(text: string) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

export async function openTestApi(label: string, options: TestApiOptions = {}): Promise<TestApi> {
  const { queue, cleanup } = await openTestQueue(label, options.queue);
  const { lines, logger } = captureLogs();
  const auth: AuthConfig = authConfig(options.tokens ?? []);
  const { tokens: _tokens, queue: _queue, setup, ...serverOptions } = options;
  // A short shutdown grace: a test client's idle connection must not hold the close.
  // No rate limits and no metrics cache by default: tests that exercise them turn them on.
  const app = buildServer(queue, {
    rateLimit: false,
    authFailureLimit: false,
    metricsCacheMs: 0,
    shutdownGraceMs: 200,
    ...serverOptions,
    auth,
    logger,
  });
  setup?.(app);
  await app.ready();
  let base: string | undefined;
  const url = async () => {
    base ??= (await listenApi(app, { host: "127.0.0.1", port: 0, auth })).url;
    return base;
  };
  const inject: Caller = async (method, path, callOptions = {}) => {
    const res = await app.inject({
      method: method as "GET",
      url: path,
      headers: requestHeaders(callOptions),
      payload: payloadOf(callOptions),
    });
    const headers = Object.fromEntries(Object.entries(res.headers).map(([k, v]) => [k, String(v)]));
    return { status: res.statusCode, headers, text: res.body, json: parse(res.body) };
  };
  const fetchCall: Caller = async (method, path, callOptions = {}) => {
    const res = await fetch(`${await url()}${path}`, {
      method,
      headers: requestHeaders(callOptions),
      body: payloadOf(callOptions),
    });
    const text = await res.text();
    return { status: res.status, headers: Object.fromEntries(res.headers), text, json: parse(text) };
  };
  return {
    queue,
    app,
    logs: lines,
    inject,
    fetch: fetchCall,
    url,
    async cleanup() {
      await app.close();
      await cleanup();
    },
  };
}

/** How many builds the queue's store holds (to show that a refused request created nothing). */
export async function countBuilds(queue: BuildQueue): Promise<number> {
  const counts = await queue.statusCounts();
  return Object.values(counts).reduce((a, b) => a + b, 0);
}

/**
 * Sends `request` as is over a new connection to `base` (http://host:port) and resolves with what
 * came back, parsed as an HTTP/1.1 response (status, lower-cased headers, body), once the server
 * closes the connection or `timeoutMs` passes. For requests fetch would refuse to send or would
 * normalise (`%2e%2e`, bad header bytes, a broken request line).
 */
export function rawHttp(base: string, request: string | Buffer, timeoutMs = 10_000): Promise<ApiResponse> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect(Number(port), hostname, () => socket.write(request));
    const timer = setTimeout(() => socket.destroy(new Error(`no answer in ${timeoutMs} ms`)), timeoutMs);
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("error", (err) => {
      clearTimeout(timer);
      if (chunks.length === 0) reject(err);
    });
    socket.on("close", () => {
      clearTimeout(timer);
      const raw = Buffer.concat(chunks).toString();
      const [head = "", ...rest] = raw.split("\r\n\r\n");
      const [statusLine = "", ...headerLines] = head.split("\r\n");
      const headers: Record<string, string> = {};
      for (const line of headerLines) {
        const colon = line.indexOf(":");
        if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      const text = rest.join("\r\n\r\n");
      resolve({ status: Number(statusLine.split(" ")[1] ?? 0), headers, text, json: parse(text) });
    });
  });
}

/** A route of the running server, as Fastify registered it (one entry per method). */
export interface RecordedRoute {
  method: string;
  url: string;
  /** Its 200 is an endless text/event-stream: a client reads the headers only. */
  stream: boolean;
  schema: RouteOptions["schema"];
}

/**
 * Records every route the server registers (Fastify's onRoute), so that a test can go through all
 * of them, including routes added after the test was written. Pass `setup` to openTestApi; `routes()`
 * lists them once the server is ready.
 */
export function routeRecorder(): { setup: (app: ApiApp) => void; routes: () => RecordedRoute[] } {
  const registered: RouteOptions[] = [];
  return {
    setup: (app) => {
      app.addHook("onRoute", (route) => {
        registered.push(route as RouteOptions);
      });
    },
    routes: () =>
      registered.flatMap((route) =>
        (Array.isArray(route.method) ? route.method : [route.method]).map((method) => ({
          method,
          url: route.url ?? "",
          stream: isEventStream(route),
          schema: route.schema,
        })),
      ),
  };
}

function isEventStream(route: RouteOptions): boolean {
  const response = (route.schema?.response ?? {}) as Record<string, { content?: Record<string, unknown> }>;
  return Object.keys(response["200"]?.content ?? {}).includes("text/event-stream");
}
