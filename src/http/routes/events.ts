/**
 * Live event streams (Server-Sent Events, see sse.ts): GET /v1/events for every build, and
 * GET /v1/builds/:id/events for one (it ends after the build's final event). Everything that can
 * be refused (bad ids, an unknown build, a resume further back than the cap: 410, one stream more
 * than the client address may hold: 429) is checked before the stream starts, so those get a plain
 * JSON error with its status instead of a stream. HEAD answers what GET would, headers only.
 */
import type { FastifyReply, FastifyRequest } from "fastify";
import { z } from "zod";
import { ValidationError } from "../../core/errors.js";
import { type ApiApp, AUTH_ERRORS, accessDoc, errorResponses, type RouteContext } from "../context.js";
import { buildIdParams, EVENT_ID_PATTERN, eventsQuery } from "../schemas.js";
import { pipeEvents, STREAM_HEADERS } from "../sse.js";
import { streamAddressKey } from "../stream-limits.js";

const tags = ["events"];

const streamResponse = {
  description:
    "text/event-stream: `id:`, `event:` (snapshot, queued, running, progress, stopping, stopped, " +
    "completed, failed, requeued) and `data:` (JSON) per item; `: heartbeat` comments",
  content: { "text/event-stream": { schema: z.string() } },
};

/** Where to resume: the Last-Event-ID header (a reconnecting EventSource), else the query. */
function resumeFrom(request: FastifyRequest, fromQuery: string | undefined): string | undefined {
  const header = request.headers["last-event-id"];
  if (header === undefined || header === "") return fromQuery;
  if (typeof header !== "string" || !EVENT_ID_PATTERN.test(header)) {
    throw new ValidationError("Last-Event-ID", "must be an event id (digits)");
  }
  return header;
}

export function eventRoutes(app: ApiApp, ctx: RouteContext): void {
  const { queue, streams } = ctx;

  const stream = async (
    request: FastifyRequest,
    reply: FastifyReply,
    buildId: string | undefined,
    lastEventId: string | undefined,
  ) => {
    if (buildId) await queue.get(buildId); // 404 before the stream starts
    await queue.events.checkResume({ buildId, lastEventId }, ctx.maxResumeEvents); // 410
    const controller = streams.track(streamAddressKey(request.ip)); // 429 over the address's cap
    try {
      // HEAD: what a GET would answer, without the stream (Fastify drops the body of a HEAD).
      if (request.method === "HEAD") return reply.status(200).headers(STREAM_HEADERS).send();
      const items = queue.events.subscribe({ buildId, lastEventId, signal: controller.signal });
      reply.hijack();
      await pipeEvents(reply.raw, items, {
        controller,
        heartbeatMs: ctx.sseHeartbeatMs,
        coalesceMs: () => streams.coalesceMs(),
        requestId: request.id,
        log: request.log,
        headers: reply.getHeaders(),
      });
    } finally {
      streams.release(controller);
    }
  };

  app.get(
    "/v1/events",
    {
      config: { access: "read" },
      schema: {
        tags,
        summary: "Every build's events, live (SSE); resumes after Last-Event-ID",
        ...accessDoc("read"),
        querystring: eventsQuery,
        response: { 200: streamResponse, ...errorResponses(400, 410, ...AUTH_ERRORS) },
      },
    },
    async (request, reply) => {
      await stream(request, reply, undefined, resumeFrom(request, request.query.lastEventId));
    },
  );

  app.get(
    "/v1/builds/:id/events",
    {
      config: { access: "read" },
      schema: {
        tags,
        summary: "One build's events, live (SSE), ending after its final event; resumes after Last-Event-ID",
        ...accessDoc("read"),
        params: buildIdParams,
        querystring: eventsQuery,
        response: { 200: streamResponse, ...errorResponses(400, 404, 410, ...AUTH_ERRORS) },
      },
    },
    async (request, reply) => {
      const lastEventId = resumeFrom(request, request.query.lastEventId);
      await stream(request, reply, request.params.id, lastEventId);
    },
  );
}
