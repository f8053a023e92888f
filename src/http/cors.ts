/**
 * CORS (docs/http-api.md#cors), so that the Oculus web app served from another origin can call the
 * API from the browser. OCULUS_CORS_ORIGINS lists the exact origins allowed, or `*` for any; unset,
 * no CORS header is sent and browsers allow same-origin pages only. Tokens travel in the
 * Authorization header, never in cookies, so credentials (cookies) are not allowed cross-origin.
 */
import cors from "@fastify/cors";
import { ConfigError } from "../core/errors.js";
import type { ApiApp } from "./context.js";

export interface CorsOptions {
  /** Exact origins (`https://app.example.com`) whose pages may call the API, or "*" for any. */
  origins: readonly string[] | "*";
}

/** What a page may send besides the CORS-safelisted headers. */
export const CORS_ALLOWED_HEADERS = ["authorization", "content-type", "last-event-id", "x-request-id"];

/**
 * What a page may read besides the safelisted response headers: the request id, and what a client
 * needs to pace itself (Retry-After on 429, @fastify/rate-limit's x-ratelimit-* headers).
 */
export const CORS_EXPOSED_HEADERS = [
  "x-request-id",
  "retry-after",
  "x-ratelimit-limit",
  "x-ratelimit-remaining",
  "x-ratelimit-reset",
];

/** Browsers may reuse a preflight's answer this long (seconds) before asking again. */
export const CORS_MAX_AGE_S = 600;

const VARIABLE = "OCULUS_CORS_ORIGINS";

/**
 * Registers @fastify/cors when origins are configured. Its onRequest hook answers preflights (OPTIONS
 * with Origin and Access-Control-Request-Method) itself with 204, so they need no token and never
 * reach the rate limit (a route hook, run after it); it must run before auth's hook (see
 * buildServer) so that refusals (401, 403) carry the headers a page needs to read them.
 */
export function registerCors(app: ApiApp, options: CorsOptions | undefined): void {
  if (!options) return;
  app.register(cors, {
    origin: options.origins === "*" ? "*" : [...options.origins],
    methods: ["GET", "POST", "PUT", "DELETE", "OPTIONS"],
    allowedHeaders: CORS_ALLOWED_HEADERS,
    exposedHeaders: CORS_EXPOSED_HEADERS,
    maxAge: CORS_MAX_AGE_S,
    credentials: false,
  });
}

/**
 * OCULUS_CORS_ORIGINS: comma-separated origins (`https://app.example.com,http://localhost:3000`), or
 * `*` for any origin. Unset or empty: CORS off (undefined).
 */
export function corsFromEnv(env: NodeJS.ProcessEnv = process.env): CorsOptions | undefined {
  const raw = env[VARIABLE]?.trim();
  if (!raw) return undefined;
  if (raw === "*") return { origins: "*" };
  const origins = raw
    .split(",")
    .map((entry) => entry.trim())
    .filter((entry) => entry.length > 0);
  if (origins.length === 0) throw new ConfigError(`invalid ${VARIABLE}: names no origin, got "${raw}"`);
  for (const origin of origins) checkOrigin(origin);
  return { origins };
}

/**
 * An entry must be exactly what a browser sends as Origin (scheme, lower-case host, port only when
 * not the default, nothing after it): the match is exact, so anything else would never match.
 */
function checkOrigin(entry: string): void {
  // Origins match exactly: a pattern would be taken literally and never match.
  if (entry.includes("*")) {
    throw new ConfigError(
      `invalid ${VARIABLE}: "${entry}": no wildcards in origins (list each one, or "*" alone for any origin)`,
    );
  }
  const origin = originOf(entry);
  if (origin === entry) return;
  const hint = origin ? `; as an origin it is "${origin}"` : "";
  throw new ConfigError(
    `invalid ${VARIABLE}: "${entry}" is not an origin (http:// or https://, host, optional port; ` +
      `no path, query or trailing slash)${hint}`,
  );
}

/** The origin of an http(s) URL without credentials, or undefined. */
function originOf(entry: string): string | undefined {
  let url: URL;
  try {
    url = new URL(entry);
  } catch {
    return undefined;
  }
  const web = url.protocol === "http:" || url.protocol === "https:";
  return web && !url.username && !url.password ? url.origin : undefined;
}
