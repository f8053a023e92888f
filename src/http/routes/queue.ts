/**
 * GET /v1/queue: the operator's overview in one call: how many builds wait, the first of them with
 * their positions, what is running (with phase and progress), the workers and their free slots, the
 * pools (builds no live worker can run are flagged `unrunnable`), and the mode.
 */
import { z } from "zod";
import type { Build } from "../../core/build.js";
import type { PoolView } from "../../queue/build-queue.js";
import { type ApiApp, AUTH_ERRORS, accessDoc, errorResponses, type RouteContext } from "../context.js";
import {
  buildSchema,
  etaSeconds,
  queueQuery,
  toApiBuild,
  toApiWorker,
  waitingOnSchema,
  workerSchema,
} from "../schemas.js";

const overviewSchema = z.object({
  mode: z.enum(["redis", "postgres"]).describe("redis: fast path; postgres: fallback (or no Redis)"),
  length: z.number().int().describe("queued builds ready to dispatch"),
  delayed: z.number().int().describe("queued builds waiting out a retry backoff"),
  waitingOnLimit: z
    .number()
    .int()
    .describe("queued builds waiting for a slot of their concurrency key (not in length or delayed)"),
  unrunnable: z
    .number()
    .int()
    .describe("queued builds that no live worker can run (no active worker's labels include their requires)"),
  queued: z
    .array(
      z.object({
        build: buildSchema,
        position: z.number().int().nullable().describe("1-based place in its pool"),
        unrunnable: z.boolean().describe("no live worker's labels include this build's requires"),
        etaSeconds: etaSeconds,
        waitingOn: waitingOnSchema,
      }),
    )
    .describe("the first queued builds in dispatch order (ready first, then delayed: position null)"),
  pools: z
    .array(
      z
        .object({
          pool: z.string(),
          requires: z.record(z.string(), z.string()),
          queued: z.number().int().describe("queued builds (ready or in backoff)"),
          workers: z.number().int().describe("live workers whose labels satisfy the pool"),
          capacity: z.number().int().describe("their capacity (builds at once)"),
          freeSlots: z.number().int().describe("their free slots now"),
          unrunnable: z.boolean().describe("builds wait and no live worker can run them"),
        })
        .meta({ id: "Pool" }),
    )
    .describe("every pool (requirement set) that has had builds"),
  active: z
    .array(buildSchema)
    .describe("running and stopping builds, newest first (at most `limit` of each)"),
  workers: z.array(workerSchema).describe("workers that are not stopped"),
});

export function queueRoutes(app: ApiApp, { queue }: RouteContext): void {
  app.get(
    "/v1/queue",
    {
      config: { access: "read" },
      schema: {
        tags: ["queue"],
        summary: "Overview: queue length, first queued builds, active builds, workers, mode",
        ...accessDoc("read"),
        querystring: queueQuery,
        response: { 200: overviewSchema, ...errorResponses(400, ...AUTH_ERRORS) },
      },
    },
    async (request) => {
      const { limit } = request.query;
      const [counts, waitingOnLimit, queued, running, stopping, fleet] = await Promise.all([
        queue.counts(),
        queue.countWaitingOnLimit(),
        queue.listQueued({ limit }),
        queue.list({ status: "running", limit }),
        queue.list({ status: "stopping", limit }),
        queue.workers.list(),
      ]);
      const pools = await queue.pools(fleet);
      // One read per concurrency key shown, however many of its builds wait.
      const waits = new Map<string, ReturnType<typeof queue.waitingOn>>();
      const waitingOn = (build: Build) => {
        const key = build.held ? build.concurrencyKey : null;
        if (key === null) return Promise.resolve(null);
        if (!waits.has(key)) waits.set(key, queue.waitingOn(build));
        return waits.get(key) ?? Promise.resolve(null);
      };
      const unrunnablePools = new Set(pools.filter((p) => p.unrunnable).map((p) => p.pool));
      return {
        mode: queue.mode,
        length: counts.ready,
        delayed: counts.delayed,
        waitingOnLimit,
        unrunnable: pools.filter((p) => p.unrunnable).reduce((n, p) => n + p.queued, 0),
        queued: await Promise.all(
          (await withPositions(queued, (build) => queue.positionOf(build))).map(async (entry, i) => ({
            ...entry,
            unrunnable: unrunnablePools.has(entry.build.pool),
            etaSeconds: await queue.etaSeconds(queued[i] as Build, entry.position, pools),
            waitingOn: await waitingOn(queued[i] as Build),
          })),
        ),
        pools: pools.map((p: PoolView) => ({ ...p })),
        active: [...stopping.builds, ...running.builds].map(toApiBuild),
        workers: fleet.filter((w) => w.status !== "stopped").map(toApiWorker),
      };
    },
  );
}

/** Each build with its current position (null once it was claimed meanwhile, or while delayed). */
async function withPositions(builds: Build[], position: (build: Build) => Promise<number | null>) {
  const positions = await Promise.all(builds.map((b) => position(b)));
  return builds.map((build, i) => ({ build: toApiBuild(build), position: positions[i] ?? null }));
}
