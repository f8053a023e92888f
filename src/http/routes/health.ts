/**
 * GET /health, for load balancers and people (no token needed). 503 only when PostgreSQL, the
 * record, cannot be reached: then nothing can be accepted. Redis down (the queue runs on PostgreSQL)
 * or failing persistence checks still answer 200, with status "degraded": every API process shares
 * them, so taking this one out of rotation would not help.
 */
import { z } from "zod";
import type { BuildQueue } from "../../queue/build-queue.js";
import { type ApiApp, accessDoc, type RouteContext } from "../context.js";
import { persistenceReportSchema } from "../persistence.js";

const PING_TIMEOUT_MS = 2000;

const healthSchema = z
  .object({
    status: z.enum(["ok", "degraded", "unavailable"]),
    mode: z.enum(["redis", "postgres"]),
    postgres: z.object({ status: z.enum(["up", "down"]), latencyMs: z.number().optional() }),
    redis: z.object({
      status: z.enum(["up", "unavailable", "none"]).describe("none: not configured"),
    }),
    persistence: persistenceReportSchema.nullable().describe("Redis persistence checks (null: none yet)"),
  })
  .meta({ id: "Health" });

type PingResult = { status: "up"; latencyMs: number } | { status: "down" };

/** A trivial query through the queue's own connection pool, bounded in time. */
async function pingPostgres(queue: BuildQueue): Promise<PingResult> {
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("timed out")), PING_TIMEOUT_MS);
  });
  try {
    await Promise.race([queue.store.db.query("SELECT 1"), timeout]);
    return { status: "up", latencyMs: Math.round((performance.now() - started) * 100) / 100 };
  } catch {
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
        summary: "Health: PostgreSQL, Redis, mode, Redis persistence checks (200, or 503 without PostgreSQL)",
        ...accessDoc("public"),
        response: { 200: healthSchema, 503: healthSchema },
      },
    },
    async (_request, reply) => {
      const postgres = await pingPostgres(queue);
      const redis = !queue.hasRedis ? "none" : queue.mode === "redis" ? "up" : "unavailable";
      const report = persistence?.() ?? null;
      const degraded = redis === "unavailable" || report?.status === "fail";
      const status = postgres.status === "down" ? "unavailable" : degraded ? "degraded" : "ok";
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
