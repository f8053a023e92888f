/**
 * Bearer-token auth with three scopes: `read` (every GET), `submit` (POST /v1/builds) and `admin`
 * (stop, retry; admin implies every scope). Tokens come from OCULUS_TOKENS or OCULUS_TOKENS_FILE
 * (docs/http-api.md). Only their SHA-256 digests are kept, and a presented token is compared with
 * every configured digest in constant time, so neither the match nor its position leaks by timing.
 * With no tokens configured the API is open, and the CLI then binds to loopback only.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { z } from "zod";
import { ConfigError, ForbiddenError, UnauthorizedError } from "../core/errors.js";
import type { AuthFailureLimiter } from "./auth-failures.js";

export const SCOPES = ["read", "submit", "admin"] as const;
export type Scope = (typeof SCOPES)[number];
/** What a route needs: a scope, or nothing at all ("public": /health, the docs). */
export type RouteAccess = Scope | "public";

export interface Principal {
  /** The token's name: the actor recorded for what it does. */
  name: string;
  scopes: ReadonlySet<Scope>;
}

interface TokenEntry {
  name: string;
  scopes: ReadonlySet<Scope>;
  digest: Buffer;
}

export interface AuthConfig {
  /** Empty: auth is off (every request is allowed; bind to loopback only). */
  readonly tokens: readonly TokenEntry[];
}

export interface TokenSpec {
  name: string;
  token: string;
  scopes: Scope[];
}

declare module "fastify" {
  interface FastifyRequest {
    /** Who made the request; null when auth is off or the route is public. */
    principal: Principal | null;
  }
  interface FastifyContextConfig {
    /** What the route needs (routes under /v1 must say). */
    access?: RouteAccess;
  }
}

const MIN_TOKEN_LENGTH = 16;
const NAME = /^[A-Za-z0-9_.-]{1,64}$/;

const digest = (token: string) => createHash("sha256").update(token, "utf8").digest();

const tokenSpecSchema = z.strictObject({
  name: z.string().regex(NAME, "must be 1-64 characters of letters, digits, _ . -"),
  token: z
    .string()
    .min(MIN_TOKEN_LENGTH, `must be at least ${MIN_TOKEN_LENGTH} characters`)
    .regex(/^[^\s,]+$/, "must not contain spaces or commas"),
  scopes: z.array(z.enum(SCOPES, { error: "must be read, submit or admin" })).min(1, "must not be empty"),
});

/** Builds the auth configuration from token specs (validated: names and tokens unique). */
export function authConfig(specs: TokenSpec[], source = "tokens"): AuthConfig {
  const tokens: TokenEntry[] = [];
  specs.forEach((spec, index) => {
    const parsed = tokenSpecSchema.safeParse(spec);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const field = issue?.path.join(".") || "entry";
      throw new ConfigError(`${source}: token ${index + 1}: ${field} ${issue?.message ?? "is invalid"}`);
    }
    const { name, token, scopes } = parsed.data;
    if (tokens.some((t) => t.name === name)) throw new ConfigError(`${source}: token name "${name}" repeats`);
    const entry = { name, scopes: new Set(scopes), digest: digest(token) };
    if (tokens.some((t) => t.digest.equals(entry.digest))) {
      throw new ConfigError(`${source}: token "${name}" has the same secret as another token`);
    }
    tokens.push(entry);
  });
  return { tokens };
}

/**
 * OCULUS_TOKENS: comma-separated `name:scopes:token` entries, scopes joined by `+`
 * (`ci:submit+read:3f9c...,ops:admin:77aa...`). The token comes last and may contain `:`.
 */
export function parseTokenList(text: string, source = "OCULUS_TOKENS"): TokenSpec[] {
  return text
    .split(",")
    .map((entry) => entry.trim())
    .filter((entry) => entry.length > 0)
    .map((entry, index) => {
      const first = entry.indexOf(":");
      const second = first < 0 ? -1 : entry.indexOf(":", first + 1);
      if (first < 1 || second < 0) {
        throw new ConfigError(`${source}: entry ${index + 1} is not name:scopes:token (scopes joined by +)`);
      }
      const scopes = entry.slice(first + 1, second).split("+") as Scope[];
      return { name: entry.slice(0, first), scopes, token: entry.slice(second + 1) };
    });
}

const tokenFileSchema = z.strictObject({ tokens: z.array(z.unknown()) });

/**
 * The auth configuration from the environment: OCULUS_TOKENS, or OCULUS_TOKENS_FILE (a JSON file
 * `{"tokens": [{"name", "token", "scopes": [...]}]}`), not both. Neither: auth off.
 */
export function loadAuthConfig(env: NodeJS.ProcessEnv = process.env): AuthConfig {
  const list = env.OCULUS_TOKENS?.trim() || undefined;
  const file = env.OCULUS_TOKENS_FILE?.trim() || undefined;
  if (list && file) throw new ConfigError("set OCULUS_TOKENS or OCULUS_TOKENS_FILE, not both");
  if (list) return authConfig(parseTokenList(list), "OCULUS_TOKENS");
  if (!file) return { tokens: [] };
  let content: unknown;
  try {
    content = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new ConfigError(`OCULUS_TOKENS_FILE: cannot read ${file} as JSON (${(err as Error).message})`);
  }
  const parsed = tokenFileSchema.safeParse(content);
  if (!parsed.success) {
    throw new ConfigError(`OCULUS_TOKENS_FILE: ${file} must hold {"tokens": [{"name", "token", "scopes"}]}`);
  }
  return authConfig(parsed.data.tokens as TokenSpec[], `OCULUS_TOKENS_FILE (${file})`);
}

/**
 * The tokens in force, replaceable while the server runs: `oculus up` re-reads OCULUS_TOKENS_FILE on
 * SIGHUP, so tokens rotate without a restart (requests already past auth are not affected).
 */
export class AuthState {
  constructor(private config: AuthConfig) {}

  get current(): AuthConfig {
    return this.config;
  }

  replace(next: AuthConfig): void {
    this.config = next;
  }
}

/** The configuration in force now, from a fixed config or a replaceable state. */
export function currentAuth(auth: AuthConfig | AuthState): AuthConfig {
  return auth instanceof AuthState ? auth.current : auth;
}

export function authEnabled(auth: AuthConfig): boolean {
  return auth.tokens.length > 0;
}

/** True for addresses only this machine can reach. */
export function isLoopback(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, "");
  if (bare === "localhost") return true;
  if (isIP(bare) === 4) return bare.startsWith("127.");
  return bare === "::1";
}

/** Without tokens the API is open: refuse to listen where other machines could reach it. */
export function checkBind(host: string, auth: AuthConfig): void {
  if (authEnabled(auth) || isLoopback(host)) return;
  throw new ConfigError(
    `refusing to listen on ${host} without authentication: anyone who can reach it could submit and ` +
      "stop builds. Configure tokens (OCULUS_TOKENS or OCULUS_TOKENS_FILE, see docs/http-api.md) or " +
      "listen on loopback (--host 127.0.0.1)",
  );
}

/** The principal behind an Authorization header, or UnauthorizedError. */
export function identify(auth: AuthConfig, header: string | undefined): Principal {
  const match = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  if (!match?.[1]) throw new UnauthorizedError("missing bearer token (Authorization: Bearer <token>)");
  const presented = digest(match[1]);
  let found: TokenEntry | undefined;
  // No early exit: every digest is compared, whichever matches.
  for (const entry of auth.tokens) {
    if (timingSafeEqual(entry.digest, presented) && !found) found = entry;
  }
  if (!found) throw new UnauthorizedError("invalid token");
  return { name: found.name, scopes: found.scopes };
}

export function hasScope(principal: Principal, scope: Scope): boolean {
  return principal.scopes.has("admin") || principal.scopes.has(scope);
}

/**
 * Installs auth: every route declares `config.access` (enforced for /v1 routes when they are
 * added), and an onRequest hook checks it before the body is even read. With a limiter, 401s are
 * counted per client address, and an address past the limit gets 429 (auth-failures.ts).
 */
export function installAuth(
  app: FastifyInstance,
  authSource: AuthConfig | AuthState,
  failures?: AuthFailureLimiter,
): void {
  app.decorateRequest("principal", null);
  app.addHook("onRoute", (route) => {
    if (route.url.startsWith("/v1") && !route.config?.access) {
      throw new Error(`route ${route.method} ${route.url} declares no access scope`);
    }
  });
  app.addHook("onRequest", async (request: FastifyRequest) => {
    const access = request.routeOptions.config.access ?? "public";
    const auth = currentAuth(authSource);
    if (access === "public" || !authEnabled(auth)) return;
    // An address past its failed attempts is refused before its token is even hashed.
    failures?.check(request.ip);
    let principal: Principal;
    try {
      principal = identify(auth, request.headers.authorization);
    } catch (err) {
      failures?.fail(request.ip);
      throw err;
    }
    if (!hasScope(principal, access)) throw new ForbiddenError(principal.name, access);
    request.principal = principal;
  });
}

/** Who is recorded as having done something: the token's name, or "api" when auth is off. */
export function actorOf(request: FastifyRequest): string {
  return request.principal?.name ?? "api";
}
