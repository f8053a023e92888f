/**
 * Concurrency limits (issue 14): GET /v1/limits (the keys, with their limits and how their builds
 * stand), GET /v1/limits/:key, PUT /v1/limits/:key {limit} (admin). At most `limit` builds of a key
 * run at once (default 1); see docs/architecture.md, "Concurrency keys".
 */
import { z } from "zod";
import { type ApiApp, AUTH_ERRORS, accessDoc, errorResponses, type RouteContext } from "../context.js";
import {
  concurrencyLimitViewSchema,
  limitKeyParams,
  limitsQuery,
  setLimitBody,
  toApiLimit,
} from "../schemas.js";

const tags = ["limits"];
const limitEnvelope = z.object({ limit: concurrencyLimitViewSchema });

export function limitRoutes(app: ApiApp, { queue }: RouteContext): void {
  app.get(
    "/v1/limits",
    {
      config: { access: "read" },
      schema: {
        tags,
        summary: "Concurrency keys in key order: limit, running, admitted and waiting builds",
        ...accessDoc("read"),
        querystring: limitsQuery,
        response: {
          200: z.object({
            limits: z.array(concurrencyLimitViewSchema),
            nextAfter: z.string().nullable().describe("pass as `after` for the next page; null on the last"),
          }),
          ...errorResponses(400, ...AUTH_ERRORS),
        },
      },
    },
    async (request) => {
      const { after, limit } = request.query;
      const limits = await queue.limits({ after, limit });
      const last = limits.at(-1);
      return { limits: limits.map(toApiLimit), nextAfter: limits.length === limit && last ? last.key : null };
    },
  );

  app.get(
    "/v1/limits/:key",
    {
      config: { access: "read" },
      schema: {
        tags,
        summary: "One concurrency key: its limit (default 1) and how its builds stand",
        ...accessDoc("read"),
        params: limitKeyParams,
        response: { 200: limitEnvelope, ...errorResponses(400, ...AUTH_ERRORS) },
      },
    },
    async (request) => ({ limit: toApiLimit(await queue.limit(request.params.key)) }),
  );

  app.put(
    "/v1/limits/:key",
    {
      config: { access: "admin" },
      schema: {
        tags,
        summary: "Set how many builds of a key may run at once (raising it admits waiting builds at once)",
        ...accessDoc("admin"),
        params: limitKeyParams,
        body: setLimitBody,
        response: { 200: limitEnvelope, ...errorResponses(400, 415, ...AUTH_ERRORS) },
      },
    },
    async (request) => ({ limit: toApiLimit(await queue.setLimit(request.params.key, request.body.limit)) }),
  );
}
