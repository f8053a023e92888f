/**
 * GET /v1/stats/history: the last hour minute by minute (submitted, completed, failed, queue depth,
 * dispatch latency) and this process's mode history, for the dashboard's charts. Sampled in memory
 * by the API process (stats-history.ts); `since` null: this server does not sample (the library's
 * default; `oculus up` does).
 */
import { z } from "zod";
import { type ApiApp, AUTH_ERRORS, accessDoc, errorResponses, type RouteContext } from "../context.js";
import { queryInteger } from "../schemas.js";
import { HISTORY_MINUTES } from "../stats-history.js";

const count = z.number().int();

const minuteSchema = z
  .object({
    at: z.string().describe("start of the minute (ISO 8601)"),
    submitted: count.describe("builds submitted in the minute (fleet-wide, from the event stream)"),
    completed: count.describe("builds that completed in the minute"),
    failed: count.describe(
      "builds that failed for good in the minute (a failure with retries left is not counted)",
    ),
    queueDepth: count
      .nullable()
      .describe("queued builds (ready + in backoff), the last sample of the minute"),
    queueDepthMax: count.nullable().describe("the largest sample of the minute"),
    dispatches: count.describe("claims in the minute whose dispatch latency is known"),
    dispatchLatencyMsAvg: z
      .number()
      .nullable()
      .describe("mean time from claimable (submit, requeue, end of backoff) to claim, ms; null: no claim"),
    dispatchLatencyMsMax: z.number().nullable().describe("the largest such time in the minute, ms"),
  })
  .meta({ id: "MinuteStats" });

const modeChangeSchema = z
  .object({
    mode: z.enum(["redis", "postgres"]),
    at: z.string().describe("when this process's queue entered the mode (ISO 8601)"),
    reason: z.string().describe('"at start", or what made it switch (the Redis fault)'),
  })
  .meta({ id: "ModeChange" });

const historySchema = z.object({
  since: z
    .string()
    .nullable()
    .describe("when this process began sampling (ISO 8601); null: it does not sample (yet)"),
  sampleMs: z.number().int().nullable().describe("how often the queue depth is sampled, ms"),
  minutes: z.array(minuteSchema).describe("oldest first; the last one is the current, incomplete minute"),
  mode: z.enum(["redis", "postgres"]),
  modes: z.array(modeChangeSchema).describe("this process's mode changes, oldest first (at most 100)"),
});

const historyQuery = z.strictObject({
  minutes: queryInteger(1, HISTORY_MINUTES, HISTORY_MINUTES).describe(
    `how many minutes back (1..${HISTORY_MINUTES}, default ${HISTORY_MINUTES}; decimal digits)`,
  ),
});

export function statsRoutes(app: ApiApp, { queue, stats }: RouteContext): void {
  app.get(
    "/v1/stats/history",
    {
      config: { access: "read" },
      schema: {
        tags: ["queue"],
        summary:
          "The last hour by minute (submitted, completed, failed, queue depth, dispatch latency) and the mode history",
        ...accessDoc("read"),
        querystring: historyQuery,
        response: { 200: historySchema, ...errorResponses(400, ...AUTH_ERRORS) },
      },
    },
    async (request) => {
      const { history, modes } = stats();
      const minutes = request.query.minutes;
      return {
        since: history?.since?.toISOString() ?? null,
        sampleMs: history?.sampleMs ?? null,
        minutes: history ? history.history(minutes) : [],
        mode: queue.mode,
        modes: modes?.list() ?? [],
      };
    },
  );
}
