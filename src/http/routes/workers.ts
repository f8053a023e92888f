/** GET /v1/workers: the fleet, with each worker's status (from its heartbeats), capacity and load. */
import { z } from "zod";
import { type ApiApp, AUTH_ERRORS, accessDoc, errorResponses, type RouteContext } from "../context.js";
import { toApiWorker, workerSchema, workersQuery } from "../schemas.js";

export function workerRoutes(app: ApiApp, { queue }: RouteContext): void {
  app.get(
    "/v1/workers",
    {
      config: { access: "read" },
      schema: {
        tags: ["workers"],
        summary: "Registered workers: status, capacity, active builds, free slots, heartbeat age",
        ...accessDoc("read"),
        querystring: workersQuery,
        response: {
          200: z.object({ workers: z.array(workerSchema) }),
          ...errorResponses(400, ...AUTH_ERRORS),
        },
      },
    },
    async (request) => {
      const { status } = request.query;
      const fleet = await queue.workers.list();
      return { workers: fleet.filter((w) => !status || w.status === status).map(toApiWorker) };
    },
  );
}
