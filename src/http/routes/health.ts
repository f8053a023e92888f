/**
 * GET /health, for load balancers and people (no token needed). 503 only when PostgreSQL, the
 * record, cannot be reached or takes no writes (read-only: a standby after a failover, or
 * default_transaction_read_only): then nothing can be accepted, and a load balancer should send the
 * traffic to a process whose PostgreSQL takes it. Redis down (the queue runs on PostgreSQL)
 * or failing persistence checks still answer 200, with status "degraded": every API process shares
 * them, so taking this one out of rotation would not help.
 */
import { z } from "zod";
import type { BuildQueue } from "../../queue/build-queue.js";
import { type ApiApp, accessDoc, type RouteContext } from "../context.js";
import { persistenceReportSchema } from "../persistence.js";

const PING_TIMEOUT_MS = 2000;
/**
 * A ping that times out while the database answered another statement this recently means a busy
 * pool (or a saturated process), not a lost server: "busy", 200. Taking a busy process out of rotation
 * would only move its load onto the others.
 */
const RECENT_ANSWER_MS = 5000;

const healthSchema = z
  .object({
    status: z.enum(["ok", "degraded", "unavailable"]),
    mode: z.enum(["redis", "postgres"]),
    postgres: z.object({
      status: z
        .enum(["up", "busy", "read-only", "down"])
        .describe(
          "busy: the ping timed out, but PostgreSQL answered another statement within 5 s; read-only: it answers but takes no writes (in recovery, or transactions are read-only)",
        ),
      latencyMs: z.number().optional(),
      lastAnswerMsAgo: z.number().optional().describe("busy only: when PostgreSQL last answered"),
    }),
    redis: z.object({
      status: z.enum(["up", "unavailable", "none"]).describe("none: not configured"),
    }),
    persistence: persistenceReportSchema.nullable().describe("Redis persistence checks (null: none yet)"),
  })
  .meta({ id: "Health" });

type PingResult =
  | { status: "up" | "read-only"; latencyMs: number }
  | { status: "busy"; lastAnswerMsAgo: number }
  | { status: "down" };

class PingTimeout extends Error {}

/**
 * A trivial query through the queue's own connection pool, bounded in time, that also asks whether
 * the record takes writes: a session in a standby (pg_is_in_recovery) or whose transactions default
 * to read-only refuses every write with 25006.
 */
async function pingPostgres(queue: BuildQueue): Promise<PingResult> {
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new PingTimeout()), PING_TIMEOUT_MS);
  });
  const db = queue.store.db;
  try {
    const res = await Promise.race([
      db.query<{ recovery: boolean; read_only: string }>(
        "SELECT pg_is_in_recovery() AS recovery, current_setting('transaction_read_only') AS read_only",
      ),
      timeout,
    ]);
    const row = res.rows[0];
    const readOnly = row?.recovery === true || row?.read_only === "on";
    const latencyMs = Math.round((performance.now() - started) * 100) / 100;
    return { status: readOnly ? "read-only" : "up", latencyMs };
  } catch (err) {
    const lastAnswerMsAgo = Date.now() - db.lastAnswerAt();
    if (err instanceof PingTimeout && lastAnswerMsAgo < RECENT_ANSWER_MS)
      return { status: "busy", lastAnswerMsAgo };
    return { status: "down" };
  } finally {
    clearTimeout(timer);
  }
}

export function healthRoutes(app: ApiApp, { queue, persistence }: RouteContext): void {
  app.get(
    "/health",
    {
      config: { access: "public", rateLimit: false },
      schema: {
        tags: ["operations"],
        summary:
          "Health: PostgreSQL, Redis, mode, Redis persistence checks (200, or 503 when PostgreSQL is down or read-only)",
        ...accessDoc("public"),
        response: { 200: healthSchema, 503: healthSchema },
      },
    },
    async (_request, reply) => {
      const postgres = await pingPostgres(queue);
      const redis = !queue.hasRedis ? "none" : queue.mode === "redis" ? "up" : "unavailable";
      const report = persistence?.() ?? null;
      const degraded = redis === "unavailable" || report?.status === "fail" || postgres.status === "busy";
      const unavailable = postgres.status === "down" || postgres.status === "read-only";
      const status = unavailable ? "unavailable" : degraded ? "degraded" : "ok";
      return reply.status(status === "unavailable" ? 503 : 200).send({
        status,
        mode: queue.mode,
        postgres,
        redis: { status: redis },
        persistence: report,
      });
    },
  );
}
