/** GET /metrics: the Prometheus text format (see ../metrics.ts for what is measured). */

import { z } from "zod";
import type { ApiApp } from "../context.js";
import { AUTH_ERRORS, accessDoc, errorResponses } from "../context.js";
import type { ApiMetrics } from "../metrics.js";

export function metricsRoutes(app: ApiApp, metrics: ApiMetrics): void {
  app.get(
    "/metrics",
    {
      config: { access: "read", rateLimit: false },
      schema: {
        tags: ["operations"],
        summary: "Prometheus metrics: queue length, builds by status, claim/dispatch latency, workers, mode",
        ...accessDoc("read"),
        response: {
          200: { description: "Prometheus text format", content: { "text/plain": { schema: z.string() } } },
          ...errorResponses(...AUTH_ERRORS),
        },
      },
    },
    async (_request, reply) => {
      const text = await metrics.registry.metrics();
      return reply.type(metrics.registry.contentType).send(text);
    },
  );
}
