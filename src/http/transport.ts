/**
 * Timeouts and caps of the HTTP server itself (docs/security.md#transport-limits), so that a client
 * that connects and then sends slowly or nothing cannot hold a connection, or all of them:
 *
 * - requestTimeout: the whole request (headers and body) must arrive within it, else 408 and the
 *   connection is closed. It covers receiving the request only: a response streamed for hours (the
 *   SSE routes) is not cut by it.
 * - headersTimeout: the request's headers must arrive within it (at most the request timeout).
 * - keepAliveTimeout: an idle keep-alive connection is closed after it.
 * - connectionTimeout: a socket with no traffic either way for this long is closed (off by default;
 *   when on, it must exceed the SSE heartbeat interval, or idle event streams would be cut).
 * - maxRequestsPerSocket: requests served on one keep-alive connection before it is closed.
 * - maxConnections: connections open at once; more are closed as soon as they are accepted.
 *
 * Node checks the request and header timeouts on a timer (connectionsCheckingInterval), so a
 * connection is cut within the timeout plus that interval: a tenth of the shorter timeout here.
 */
import type http from "node:http";
import { ConfigError } from "../core/errors.js";

export interface TransportLimits {
  /** ms to receive a whole request; 0: none. */
  requestTimeoutMs: number;
  /** ms to receive a request's headers; 0: none. At most requestTimeoutMs. */
  headersTimeoutMs: number;
  /** ms an idle keep-alive connection stays open. */
  keepAliveTimeoutMs: number;
  /** ms of no traffic on a socket before it is closed; 0: none. */
  connectionTimeoutMs: number;
  /** Requests per keep-alive connection; 0: no limit. */
  maxRequestsPerSocket: number;
  /** Connections open at once; 0: no limit. */
  maxConnections: number;
}

export const DEFAULT_TRANSPORT_LIMITS: TransportLimits = {
  requestTimeoutMs: 30_000,
  headersTimeoutMs: 30_000,
  // Fastify's default: above the 60 s idle timeout of common load balancers, so that the balancer,
  // not this server, closes an idle connection (no request is sent on a connection being closed).
  keepAliveTimeoutMs: 72_000,
  connectionTimeoutMs: 0,
  maxRequestsPerSocket: 0,
  maxConnections: 4096,
};

/** The settings, their variables and their bounds (docs/security.md lists the same). */
export const TRANSPORT_SETTINGS: Record<
  keyof TransportLimits,
  { env: string; min: number; max: number; offAllowed: boolean; unit: "ms" | "" }
> = {
  requestTimeoutMs: {
    env: "OCULUS_HTTP_REQUEST_TIMEOUT_MS",
    min: 1000,
    max: 3_600_000,
    offAllowed: true,
    unit: "ms",
  },
  headersTimeoutMs: {
    env: "OCULUS_HTTP_HEADERS_TIMEOUT_MS",
    min: 1000,
    max: 3_600_000,
    offAllowed: true,
    unit: "ms",
  },
  keepAliveTimeoutMs: {
    env: "OCULUS_HTTP_KEEP_ALIVE_TIMEOUT_MS",
    min: 1000,
    max: 3_600_000,
    offAllowed: false,
    unit: "ms",
  },
  connectionTimeoutMs: {
    env: "OCULUS_HTTP_CONNECTION_TIMEOUT_MS",
    min: 1000,
    max: 24 * 3_600_000,
    offAllowed: true,
    unit: "ms",
  },
  maxRequestsPerSocket: {
    env: "OCULUS_HTTP_MAX_REQUESTS_PER_SOCKET",
    min: 1,
    max: 1_000_000_000,
    offAllowed: true,
    unit: "",
  },
  maxConnections: {
    env: "OCULUS_HTTP_MAX_CONNECTIONS",
    min: 1,
    max: 1_000_000,
    offAllowed: true,
    unit: "",
  },
};

/** One whole-number setting from the environment: unset or empty gives the fallback. */
export function wholeNumberFromEnv(
  env: NodeJS.ProcessEnv,
  variable: string,
  bounds: { min: number; max: number; offAllowed: boolean; unit: "ms" | "" },
  fallback: number,
): number {
  const raw = env[variable]?.trim();
  if (!raw) return fallback;
  const n = Number(raw);
  const unit = bounds.unit ? ` ${bounds.unit}` : "";
  const range = `from ${bounds.min}${unit} to ${bounds.max}${unit}${bounds.offAllowed ? ", or 0 for none" : ""}`;
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n)) {
    throw new ConfigError(`invalid ${variable}: must be a whole number ${range}, got "${raw}"`);
  }
  if ((n === 0 && bounds.offAllowed) || (n >= bounds.min && n <= bounds.max)) return n;
  throw new ConfigError(`invalid ${variable}: must be ${range}, got "${raw}"`);
}

/** OCULUS_HTTP_*: the transport limits, each defaulting to DEFAULT_TRANSPORT_LIMITS. */
export function transportLimitsFromEnv(env: NodeJS.ProcessEnv = process.env): TransportLimits {
  const out = { ...DEFAULT_TRANSPORT_LIMITS };
  for (const key of Object.keys(TRANSPORT_SETTINGS) as (keyof TransportLimits)[]) {
    const setting = TRANSPORT_SETTINGS[key];
    out[key] = wholeNumberFromEnv(env, setting.env, setting, DEFAULT_TRANSPORT_LIMITS[key]);
  }
  checkTransportLimits(out);
  return out;
}

/** Combinations Node refuses, or that would cut the event streams, named by their variables. */
export function checkTransportLimits(limits: TransportLimits, sseHeartbeatMs?: number): void {
  const { requestTimeoutMs: request, headersTimeoutMs: headers } = limits;
  if (request > 0 && headers > request) {
    throw new ConfigError(
      `invalid OCULUS_HTTP_HEADERS_TIMEOUT_MS: ${headers} ms must not exceed OCULUS_HTTP_REQUEST_TIMEOUT_MS (${request} ms)`,
    );
  }
  const idle = limits.connectionTimeoutMs;
  if (idle > 0 && sseHeartbeatMs !== undefined && idle <= sseHeartbeatMs) {
    throw new ConfigError(
      `invalid OCULUS_HTTP_CONNECTION_TIMEOUT_MS: ${idle} ms must exceed the SSE heartbeat interval (${sseHeartbeatMs} ms), or idle event streams would be cut`,
    );
  }
}

/** How often Node looks for requests past their timeouts: a tenth of the shorter one, 50 ms..5 s. */
function checkingIntervalMs(limits: TransportLimits): number {
  const timeouts = [limits.requestTimeoutMs, limits.headersTimeoutMs].filter((t) => t > 0);
  if (timeouts.length === 0) return 30_000;
  return Math.min(5000, Math.max(50, Math.floor(Math.min(...timeouts) / 10)));
}

/** The Fastify constructor options that carry the limits (maxConnections is set on the server). */
export function fastifyTransportOptions(limits: TransportLimits) {
  return {
    // Fastify takes 0 as "use my default" for these two: 0 is passed as "none" through `http` too.
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    connectionTimeout: limits.connectionTimeoutMs,
    maxRequestsPerSocket: limits.maxRequestsPerSocket,
    http: {
      requestTimeout: limits.requestTimeoutMs,
      headersTimeout: limits.headersTimeoutMs,
      connectionsCheckingInterval: checkingIntervalMs(limits),
    } satisfies http.ServerOptions,
  };
}

/** The same limits for a plain node:http server (the worker's /metrics endpoint). */
export function nodeServerOptions(limits: TransportLimits): http.ServerOptions {
  return {
    requestTimeout: limits.requestTimeoutMs,
    headersTimeout: limits.headersTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    connectionsCheckingInterval: checkingIntervalMs(limits),
  };
}

/** Applies what Fastify has no option for. */
export function applyServerLimits(server: http.Server, limits: TransportLimits): void {
  // Node's default (no limit) is Infinity; 0 would refuse every connection.
  server.maxConnections = limits.maxConnections > 0 ? limits.maxConnections : Number.POSITIVE_INFINITY;
}
