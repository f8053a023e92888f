/**
 * What the route modules share: the queue, the typed Fastify instance they register on, and the
 * OpenAPI pieces every route repeats (error responses, the bearer security requirement).
 */
import type {
  FastifyBaseLogger,
  FastifyInstance,
  RawReplyDefaultExpression,
  RawRequestDefaultExpression,
  RawServerDefault,
} from "fastify";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import type { BuildQueue } from "../queue/build-queue.js";
import type { RouteAccess } from "./auth.js";
import type { PersistenceProvider } from "./persistence.js";
import { errorSchema } from "./schemas.js";
import type { StreamRegistry } from "./sse.js";
import type { ModeHistory, StatsHistory } from "./stats-history.js";

/** The Fastify instance with zod schemas as its type provider. */
export type ApiApp = FastifyInstance<
  RawServerDefault,
  RawRequestDefaultExpression,
  RawReplyDefaultExpression,
  FastifyBaseLogger,
  ZodTypeProvider
>;

export interface RouteContext {
  /**
   * The queue; for a server that listens before its queue is open (`oculus up`), a stand-in that
   * forwards to it once open (pending-queue.ts). Routes take it when they register, as either.
   */
  queue: BuildQueue;
  persistence: PersistenceProvider | undefined;
  streams: StreamRegistry;
  /** Interval of the SSE heartbeat comments. */
  sseHeartbeatMs: number;
  /** A resume replays at most this many events (stream-limits.ts); further back is 410. */
  maxResumeEvents: number;
  /** The dashboard's history (stats-history.ts), once the queue is open; `history` only when sampling. */
  stats: () => { history: StatsHistory | undefined; modes: ModeHistory | undefined };
}

/** Error responses for the OpenAPI document (and the response check), by status. */
export function errorResponses(...statuses: number[]): Record<number, typeof errorSchema> {
  const out: Record<number, typeof errorSchema> = {};
  for (const status of statuses) out[status] = errorSchema;
  return out;
}

/** The statuses any authenticated route may answer besides its own. */
export const AUTH_ERRORS = [401, 403, 429, 503] as const;

/** `security` and a sentence on the scope, for a route's OpenAPI entry. */
export function accessDoc(access: RouteAccess): {
  security?: { bearerAuth: string[] }[];
  description: string;
} {
  if (access === "public") return { description: "No token needed." };
  return {
    security: [{ bearerAuth: [] }],
    description: `Needs a token with the \`${access}\` scope (or \`admin\`).`,
  };
}
