/**
 * The HTTP API over a real queue (the test PostgreSQL, optionally a private Redis), with its log
 * lines captured, and one way to call it either in-process (`inject`) or over a real socket (`fetch`).
 */
import { Writable } from "node:stream";
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
