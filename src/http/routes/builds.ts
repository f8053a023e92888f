/**
 * /v1/builds: submit, read, list, stop and retry builds. Each handler is one queue call; the queue
 * validates again and raises typed errors, which errors.ts maps to statuses.
 */
import { actorOf } from "../auth.js";
import { type ApiApp, AUTH_ERRORS, accessDoc, errorResponses, type RouteContext } from "../context.js";
import {
  buildDetailWithPositionSchema,
  buildEnvelopeSchema,
  buildIdParams,
  buildListSchema,
  buildWithPositionSchema,
  listQuery,
  retryBody,
  stopBody,
  submitBody,
  toApiBuild,
  toApiBuildDetail,
} from "../schemas.js";

const tags = ["builds"];

export function buildRoutes(app: ApiApp, { queue }: RouteContext): void {
  app.post(
    "/v1/builds",
    {
      config: { access: "submit" },
      schema: {
        tags,
        summary: "Submit a build",
        ...accessDoc("submit"),
        body: submitBody,
        response: {
          201: buildWithPositionSchema.describe("created"),
          200: buildWithPositionSchema.describe("the idempotency key was seen: the earlier build"),
          ...errorResponses(400, 413, 415, ...AUTH_ERRORS),
        },
      },
    },
    async (request, reply) => {
      const { build, created, position, etaSeconds, superseded } = await queue.submit(request.body, {
        actor: actorOf(request),
      });
      const waitingOn = await queue.waitingOn(build);
      return reply.status(created ? 201 : 200).send({
        build: toApiBuild(build),
        position,
        etaSeconds,
        waitingOn,
        ...(superseded ? { superseded } : {}),
      });
    },
  );

  app.get(
    "/v1/builds/:id",
    {
      config: { access: "read" },
      schema: {
        tags,
        summary: "A build: status, phase, progress, position if queued, worker, retries, times, log tail",
        ...accessDoc("read"),
        params: buildIdParams,
        response: { 200: buildDetailWithPositionSchema, ...errorResponses(400, 404, ...AUTH_ERRORS) },
      },
    },
    async (request) => {
      const build = await queue.get(request.params.id);
      const position = build.status === "queued" ? await queue.positionOf(build) : null;
      const etaSeconds = await queue.etaSeconds(build, position);
      const waitingOn = await queue.waitingOn(build);
      return { build: toApiBuildDetail(build), position, etaSeconds, waitingOn };
    },
  );

  app.get(
    "/v1/builds",
    {
      config: { access: "read" },
      schema: {
        tags,
        summary:
          "List builds, newest submitted first or (order=finished) latest finished first, optionally by status and strategy (cursor pagination)",
        ...accessDoc("read"),
        querystring: listQuery,
        response: { 200: buildListSchema, ...errorResponses(400, ...AUTH_ERRORS) },
      },
    },
    async (request) => {
      const { order, status, strategyId, limit, cursor } = request.query;
      const page = await queue.list({ order, status, strategyId, limit, cursor });
      return { builds: page.builds.map(toApiBuild), nextCursor: page.nextCursor };
    },
  );

  app.post(
    "/v1/builds/:id/stop",
    {
      config: { access: "admin" },
      schema: {
        tags,
        summary: "Stop a build: queued ones at once, running ones through their worker (status stopping)",
        ...accessDoc("admin"),
        params: buildIdParams,
        body: stopBody,
        response: { 202: buildEnvelopeSchema, ...errorResponses(400, 404, 409, 415, ...AUTH_ERRORS) },
      },
    },
    async (request, reply) => {
      const build = await queue.stop(request.params.id, {
        actor: actorOf(request),
        reason: request.body?.reason,
      });
      return reply.status(202).send({ build: toApiBuild(build) });
    },
  );

  app.post(
    "/v1/builds/:id/retry",
    {
      config: { access: "admin" },
      schema: {
        tags,
        summary: "Run a failed or stopped build again (back to queued, retries reset)",
        ...accessDoc("admin"),
        params: buildIdParams,
        body: retryBody,
        response: { 202: buildEnvelopeSchema, ...errorResponses(400, 404, 409, 415, ...AUTH_ERRORS) },
      },
    },
    async (request, reply) => {
      const build = await queue.retry(request.params.id, { actor: actorOf(request) });
      return reply.status(202).send({ build: toApiBuild(build) });
    },
  );
}
