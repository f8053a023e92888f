/**
 * The HTTP API (docs/http-api.md): Fastify with zod schemas (request validation, response checks and
 * the OpenAPI document from the same definitions), bearer-token auth, a per-token rate limit, request
 * ids, Prometheus metrics, Server-Sent Events, and optionally CORS and trusted proxies. `buildServer`
 * wires it to a BuildQueue without binding a port (tests use `inject`); `listenApi` binds it, refusing
 * an open API beyond loopback. Given a PendingQueue instead, the server may listen before the queue is
 * open: until then /health and every store route answer 503 (`installStartingGate`).
 */
import { randomUUID } from "node:crypto";
import type { IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import rateLimit from "@fastify/rate-limit";
import swagger from "@fastify/swagger";
import swaggerUi from "@fastify/swagger-ui";
import Fastify, { type FastifyRequest, LogController } from "fastify";
import {
  createJsonSchemaTransform,
  jsonSchemaTransformObject,
  serializerCompiler,
  type ZodTypeProvider,
} from "fastify-type-provider-zod";
import type { z } from "zod";
import { RateLimitedError, StoreUnavailableError } from "../core/errors.js";
import type { Logger } from "../core/logger.js";
import { web } from "../generated/assets.js";
import type { BuildQueue } from "../queue/build-queue.js";
import { type AuthConfig, type AuthState, authEnabled, checkBind, currentAuth, installAuth } from "./auth.js";
import { type AuthFailureLimit, AuthFailureLimiter, DEFAULT_AUTH_FAILURE_LIMIT } from "./auth-failures.js";
import { installBodyGuard } from "./body-guard.js";
import type { ApiApp, RouteContext } from "./context.js";
import { type CorsOptions, registerCors } from "./cors.js";
import {
  clientErrorHandler,
  frameworkErrorHandler,
  installClosingAnswer,
  installErrorHandlers,
  toValidationError,
} from "./errors.js";
import { type ApiMetrics, createMetrics, DEFAULT_METRICS_CACHE_MS } from "./metrics.js";
import { installOpenModeGuards } from "./open-mode.js";
import { PendingQueue } from "./pending-queue.js";
import type { PersistenceProvider } from "./persistence.js";
import { type SharedRateLimit, sharedRateLimitStore } from "./rate-limit-store.js";
import { withRequestRedaction } from "./request-log.js";
import { buildRoutes } from "./routes/builds.js";
import { dashboardRoutes } from "./routes/dashboard.js";
import { eventRoutes } from "./routes/events.js";
import { healthRoutes } from "./routes/health.js";
import { limitRoutes } from "./routes/limits.js";
import { logRoutes } from "./routes/logs.js";
import { metricsRoutes } from "./routes/metrics.js";
import { queueRoutes } from "./routes/queue.js";
import { scheduleRoutes } from "./routes/schedules.js";
import { statsRoutes } from "./routes/stats.js";
import { workerRoutes } from "./routes/workers.js";
import { installSecurityHeaders } from "./security-headers.js";
import { StreamRegistry } from "./sse.js";
import { DEFAULT_SAMPLE_MS, ModeHistory, StatsHistory } from "./stats-history.js";
import { DEFAULT_STREAM_LIMITS } from "./stream-limits.js";
import {
  applyServerLimits,
  checkTransportLimits,
  DEFAULT_TRANSPORT_LIMITS,
  fastifyTransportOptions,
  type TransportLimits,
} from "./transport.js";
import { fastifyTrustProxy, type TrustProxy } from "./trust-proxy.js";

export { type AuthConfig, AuthState } from "./auth.js";
export type { AuthFailureLimit } from "./auth-failures.js";
export type { CorsOptions } from "./cors.js";
export { PendingQueue } from "./pending-queue.js";
export type { PersistenceProvider, PersistenceReport } from "./persistence.js";
export type { TransportLimits } from "./transport.js";
export type { TrustProxy } from "./trust-proxy.js";

export interface RateLimitOptions {
  /** Requests per window per token (per client address when auth is off). */
  max: number;
  windowMs: number;
  /** Count through Redis, so that every API process shares one budget (rate-limit-store.ts). */
  shared?: SharedRateLimit;
}

export interface ServerOptions {
  /** Fixed tokens, or an AuthState whose tokens can be replaced while the server runs. */
  auth: AuthConfig | AuthState;
  logger: Logger;
  /** The latest Redis persistence report (shown by /health and /metrics), if checks run. */
  persistence?: PersistenceProvider;
  /** Default 1200 requests a minute; false: no limit. */
  rateLimit?: RateLimitOptions | false;
  /** Largest request body in bytes (default 1 MiB; larger: 413). */
  bodyLimit?: number;
  /** Interval of SSE heartbeat comments (default 15 s). */
  sseHeartbeatMs?: number;
  /** Open event streams per client address (default 50; stream-limits.ts). */
  maxStreamsPerAddress?: number;
  /** How many events a stream's resume may replay (default 50,000; further back: 410). */
  maxResumeEvents?: number;
  /**
   * On close, requests in flight get this long (default 10 s); then every connection still open is
   * cut, so that a client that connected and sent nothing cannot hold the shutdown.
   */
  shutdownGraceMs?: number;
  /** Origins whose pages may call the API from a browser; unset: no CORS headers (same-origin only). */
  cors?: CorsOptions;
  /**
   * Which proxies' X-Forwarded-For to believe for the client address (`request.ip`, the rate limit's
   * key without auth); default false: the socket's address, whatever the header says.
   */
  trustProxy?: TrustProxy;
  // Hardening (docs/security.md); each has an OCULUS_* variable read by http-settings.ts.
  /** Timeouts and connection caps of the HTTP server; unset fields: DEFAULT_TRANSPORT_LIMITS. */
  limits?: Partial<TransportLimits>;
  /** Open mode only: Host names answered besides the loopback ones (OCULUS_HTTP_ALLOWED_HOSTS). */
  allowedHosts?: readonly string[];
  /** Failed authentications per client address per window before 429 (default 60 a minute); false: none. */
  authFailureLimit?: AuthFailureLimit | false;
  /** How long /metrics reuses its store counts, in ms (default 5000; 0: shared only while in progress). */
  metricsCacheMs?: number;
  /**
   * Sample the last hour for the dashboard's charts (GET /v1/stats/history, stats-history.ts): a
   * subscription to the event stream and a queue count every `sampleMs` (default 5000). Off by
   * default in the library; `oculus up` turns it on.
   */
  statsHistory?: { sampleMs?: number } | false;
}

export const DEFAULT_RATE_LIMIT: RateLimitOptions = { max: 1200, windowMs: 60_000 };
export const DEFAULT_BODY_LIMIT = 1024 * 1024;
const DOCS_PREFIX = "/docs";

/** A client's own request id is kept when it is short and plain; otherwise a new one is drawn. */
function requestIdOf(req: IncomingMessage): string {
  const given = req.headers["x-request-id"];
  return typeof given === "string" && /^[A-Za-z0-9._:-]{1,64}$/.test(given) ? given : randomUUID();
}

export function buildServer(queue: BuildQueue | PendingQueue, options: ServerOptions): ApiApp {
  const slot = queue instanceof PendingQueue ? queue : PendingQueue.of(queue);
  const bodyLimit = options.bodyLimit ?? DEFAULT_BODY_LIMIT;
  const limits: TransportLimits = { ...DEFAULT_TRANSPORT_LIMITS, ...options.limits };
  checkTransportLimits(limits, options.sseHeartbeatMs ?? 15_000);
  const app = Fastify({
    // Fastify's logger type, so the instance keeps the default logger type parameter; query
    // parameters that look like credentials are redacted from the logged URL.
    loggerInstance: withRequestRedaction(options.logger),
    ...fastifyTransportOptions(limits),
    bodyLimit,
    // A path parameter may be this long (encoded): a concurrency key (PUT /v1/limits/:key) is up to
    // 200 characters, each up to 9 once percent-encoded as UTF-8 (Fastify's default, 100, refused
    // keys over 100 ASCII characters with 414 although a submit accepts them).
    routerOptions: { maxParamLength: 2400 },
    genReqId: requestIdOf,
    requestIdHeader: false,
    // Requests during shutdown get 503 with the error shape from installClosingAnswer instead.
    return503OnClosing: false,
    trustProxy: fastifyTrustProxy(options.trustProxy ?? false),
    // Fastify logs two lines per request at info; the dashboard's reloads alone flooded the terminal.
    // One line per request, at debug (OCULUS_LOG_LEVEL=debug), from the hook below.
    logController: new LogController({ disableRequestLogging: true }),
    // Errors before routing and requests Node's parser refuses: the error shape too (errors.ts).
    frameworkErrors: frameworkErrorHandler,
    clientErrorHandler,
  }).withTypeProvider<ZodTypeProvider>();
  app.addHook("onResponse", async (request, reply) => {
    request.log.debug(
      {
        method: request.method,
        // The path only: a query string may hold a token (?access_token= for EventSource clients).
        path: request.url.split("?")[0],
        statusCode: reply.statusCode,
        responseTimeMs: Math.round(reply.elapsedTime),
      },
      "request completed",
    );
  });
  applyServerLimits(app.server, limits);

  // zod validates every params, query and body; a failure is the queue's ValidationError (field, reason).
  app.setValidatorCompiler<z.ZodType>(({ schema, httpPart }) => (data) => {
    const result = schema.safeParse(data);
    return result.success
      ? { value: result.data }
      : { error: toValidationError(result.error, httpPart ?? "body") };
  });
  app.setSerializerCompiler(serializerCompiler);
  // JSON only: other bodies get 415 rather than a confusing validation error.
  app.removeContentTypeParser("text/plain");
  installErrorHandlers(app, bodyLimit);
  installBodyGuard(app);
  installClosingAnswer(app);
  // CORS before auth: Fastify queues request hooks behind the plugins registered before them, so
  // CORS's onRequest hook runs first. A preflight is then answered before auth looks for a token, and
  // a 401 or 403 still carries the CORS headers (a page cannot read a cross-origin answer without them).
  registerCors(app, options.cors);
  // Then, in this order: the security headers (so that every refusal below carries them), open
  // mode's Host and CSRF guards, and auth with its limit on failed attempts (docs/security.md).
  installSecurityHeaders(app, { overview: web["dashboard.html"], build: web["build.html"] }, DOCS_PREFIX);
  installOpenModeGuards(app, options.auth, options.allowedHosts);
  const failureLimit = options.authFailureLimit ?? DEFAULT_AUTH_FAILURE_LIMIT;
  installAuth(app, options.auth, failureLimit ? new AuthFailureLimiter(failureLimit) : undefined);
  // Only for a queue not open yet: a server given an open queue pays nothing per request.
  if (!slot.current) installStartingGate(app, slot, options.persistence);
  app.addHook("onSend", async (request, reply) => {
    reply.header("x-request-id", request.id);
  });

  const streams = new StreamRegistry(
    options.maxStreamsPerAddress ?? DEFAULT_STREAM_LIMITS.maxStreamsPerAddress,
  );
  // The claim histograms listen to the queue: created once it is open.
  let metrics: ApiMetrics | undefined;
  let history: StatsHistory | undefined;
  let modes: ModeHistory | undefined;
  let closed = false;
  slot.whenFilled((open) => {
    if (!closed) {
      metrics = createMetrics(
        open,
        options.persistence,
        options.logger,
        options.metricsCacheMs ?? DEFAULT_METRICS_CACHE_MS,
      );
      modes = new ModeHistory(open);
      if (options.statsHistory) {
        history = new StatsHistory(open, options.logger, options.statsHistory.sampleMs ?? DEFAULT_SAMPLE_MS);
        history.start();
      }
    }
  });
  let deadline: NodeJS.Timeout | undefined;
  // Before the HTTP server closes: end the event streams, or they would hold it open.
  app.addHook("preClose", async () => {
    streams.closeAll();
    deadline = setTimeout(() => app.server.closeAllConnections(), options.shutdownGraceMs ?? 10_000);
    deadline.unref();
  });
  app.addHook("onClose", async () => {
    closed = true;
    clearTimeout(deadline);
    metrics?.close();
    history?.close();
    modes?.close();
  });

  registerDocs(app, currentAuth(options.auth));
  registerRateLimit(app, options.rateLimit ?? DEFAULT_RATE_LIMIT);

  const ctx: RouteContext = {
    queue: slot.current ?? slot.standIn,
    persistence: options.persistence,
    streams,
    sseHeartbeatMs: options.sseHeartbeatMs ?? 15_000,
    maxResumeEvents: options.maxResumeEvents ?? DEFAULT_STREAM_LIMITS.maxResumeEvents,
    stats: () => ({ history, modes }),
  };
  // Registered as a plugin so that it loads after swagger and the rate limit, whose route hooks it needs.
  app.register(async (api) => {
    const typed = api.withTypeProvider<ZodTypeProvider>();
    buildRoutes(typed, ctx);
    logRoutes(typed, ctx);
    queueRoutes(typed, ctx);
    workerRoutes(typed, ctx);
    scheduleRoutes(typed, ctx);
    limitRoutes(typed, ctx);
    eventRoutes(typed, ctx);
    statsRoutes(typed, ctx);
    dashboardRoutes(typed);
    healthRoutes(typed, ctx);
    metricsRoutes(typed, {
      get registry() {
        if (!metrics) throw new StoreUnavailableError("the queue is not open yet: waiting for PostgreSQL");
        return metrics.registry;
      },
      close: () => metrics?.close(),
    });
    typed.get("/openapi.json", { config: { access: "public" }, schema: { hide: true } }, async () =>
      app.swagger(),
    );
  });
  return app;
}

/** While the queue is not open, Retry-After of the 503s (the open is retried every 0.25 s at most). */
const STARTING_RETRY_AFTER_S = 1;

/**
 * Until the queue is open: GET /health answers 503 `unavailable` with `starting: true` (a load
 * balancer keeps the process out of rotation), and every other route that needs the store (all of
 * /v1, /metrics) answers 503 `store_unavailable` with Retry-After. The dashboard page, /docs and
 * /openapi.json are served. A preHandler, so that auth (401/403), the rate limit and request
 * validation (400) answer first, as they would with the queue open; once it is, one check per request.
 */
function installStartingGate(app: ApiApp, slot: PendingQueue, persistence?: PersistenceProvider): void {
  app.addHook("preHandler", (request, reply, done) => {
    if (slot.current) return done();
    const route = request.routeOptions;
    if (route.url === "/health") {
      // Sent as plain JSON: the route's schema predates the `starting` field (docs/http-api.md).
      void reply
        .status(503)
        .serializer(JSON.stringify)
        .type("application/json; charset=utf-8")
        .send({
          status: "unavailable",
          starting: true,
          mode: "postgres",
          postgres: { status: "down" },
          redis: { status: slot.hasRedis ? "unavailable" : "none" },
          persistence: persistence?.() ?? null,
        });
      return;
    }
    if ((route.config.access ?? "public") === "public") return done();
    void reply
      .status(503)
      .header("retry-after", String(STARTING_RETRY_AFTER_S))
      .send({
        error: {
          code: "store_unavailable",
          message: "the queue is starting: waiting for the build store (PostgreSQL); retry later",
        },
      });
  });
}

function registerDocs(app: ApiApp, auth: AuthConfig): void {
  app.register(swagger, {
    openapi: {
      openapi: "3.0.3",
      info: {
        title: "Oculus build queue",
        description:
          "Durable priority build queue. Errors are `{error: {code, message, field?}}`. " +
          (authEnabled(auth)
            ? "Send `Authorization: Bearer <token>`."
            : "Auth is off on this server: it answers loopback `Host` names only, and a POST needs " +
              "`Content-Type: application/json` (`{}` for no fields) or an `X-Oculus-Client` header."),
        version: "1",
      },
      components: {
        securitySchemes: { bearerAuth: { type: "http", scheme: "bearer" } },
      },
    },
    transform: createJsonSchemaTransform({ skipList: [] }),
    transformObject: jsonSchemaTransformObject,
  });
  // The UI's assets ship inside the package: /docs works without network access.
  app.register(swaggerUi, {
    routePrefix: DOCS_PREFIX,
    uiConfig: { validatorUrl: null, deepLinking: true },
  });
}

function registerRateLimit(app: ApiApp, limit: RateLimitOptions | false): void {
  if (limit === false) return;
  app.register(rateLimit, {
    max: limit.max,
    timeWindow: limit.windowMs,
    ...(limit.shared ? { store: sharedRateLimitStore(limit.shared) } : {}),
    // Runs after auth (a route hook; auth is an instance hook), so a token's requests share a budget.
    keyGenerator: (request: FastifyRequest) =>
      request.principal ? `token:${request.principal.name}` : `ip:${request.ip}`,
    allowList: (request: FastifyRequest) =>
      request.url.startsWith(DOCS_PREFIX) || request.url === "/openapi.json",
    errorResponseBuilder: (_request, context) =>
      new RateLimitedError(Math.max(1, Math.ceil(context.ttl / 1000))),
  });
}

/** Binds the server (port 0: any free port); refuses a non-loopback host when auth is off. */
export async function listenApi(
  app: ApiApp,
  options: { host: string; port: number; auth: AuthConfig | AuthState },
): Promise<{ url: string; port: number }> {
  checkBind(options.host, currentAuth(options.auth));
  await app.listen({ host: options.host, port: options.port });
  const address = app.server.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return { url: `http://${host}:${address.port}`, port: address.port };
}
