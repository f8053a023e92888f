/**
 * /v1/schedules: recurring schedules (issue 14). Each handler is one call of `queue.schedules`,
 * which validates again (the cron expression and the zone: 400 naming the field) and raises typed
 * errors (404, 409), mapped by errors.ts. Reads need `read`; every change needs `admin`.
 */
import { type ApiApp, AUTH_ERRORS, accessDoc, errorResponses, type RouteContext } from "../context.js";
import {
  scheduleActionBody,
  scheduleCreateBody,
  scheduleEnvelopeSchema,
  scheduleListSchema,
  scheduleNameParams,
  scheduleUpdateBody,
  toApiSchedule,
} from "../schemas.js";

const tags = ["schedules"];

export function scheduleRoutes(app: ApiApp, { queue }: RouteContext): void {
  app.get(
    "/v1/schedules",
    {
      config: { access: "read" },
      schema: {
        tags,
        summary: "Every schedule, by name, with its next tick (UTC and the schedule's zone)",
        ...accessDoc("read"),
        response: { 200: scheduleListSchema, ...errorResponses(...AUTH_ERRORS) },
      },
    },
    async () => ({ schedules: (await queue.schedules.list()).map(toApiSchedule) }),
  );

  app.post(
    "/v1/schedules",
    {
      config: { access: "admin" },
      schema: {
        tags,
        summary: "Create a schedule: each tick of its cron expression (in its zone) submits one build",
        ...accessDoc("admin"),
        body: scheduleCreateBody,
        response: {
          201: scheduleEnvelopeSchema.describe("created"),
          ...errorResponses(400, 409, 413, 415, ...AUTH_ERRORS),
        },
      },
    },
    async (request, reply) => {
      const schedule = await queue.schedules.add(request.body);
      return reply.status(201).send({ schedule: toApiSchedule(schedule) });
    },
  );

  app.get(
    "/v1/schedules/:name",
    {
      config: { access: "read" },
      schema: {
        tags,
        summary: "A schedule: definition, next tick, last tick and its build",
        ...accessDoc("read"),
        params: scheduleNameParams,
        response: { 200: scheduleEnvelopeSchema, ...errorResponses(400, 404, ...AUTH_ERRORS) },
      },
    },
    async (request) => ({ schedule: toApiSchedule(await queue.schedules.get(request.params.name)) }),
  );

  app.put(
    "/v1/schedules/:name",
    {
      config: { access: "admin" },
      schema: {
        tags,
        summary:
          "Replace a schedule's definition (omitted fields take their defaults); its next tick is recomputed, its history kept",
        ...accessDoc("admin"),
        params: scheduleNameParams,
        body: scheduleUpdateBody,
        response: { 200: scheduleEnvelopeSchema, ...errorResponses(400, 404, 413, 415, ...AUTH_ERRORS) },
      },
    },
    async (request) => ({
      schedule: toApiSchedule(await queue.schedules.update(request.params.name, request.body)),
    }),
  );

  app.delete(
    "/v1/schedules/:name",
    {
      config: { access: "admin" },
      schema: {
        tags,
        summary: "Remove a schedule (the builds it submitted stay)",
        ...accessDoc("admin"),
        params: scheduleNameParams,
        response: { 200: scheduleEnvelopeSchema, ...errorResponses(400, 404, ...AUTH_ERRORS) },
      },
    },
    async (request) => ({ schedule: toApiSchedule(await queue.schedules.remove(request.params.name)) }),
  );

  for (const action of ["pause", "resume"] as const) {
    app.post(
      `/v1/schedules/:name/${action}`,
      {
        config: { access: "admin" },
        schema: {
          tags,
          summary:
            action === "pause"
              ? "Pause a schedule: no builds until resumed (ticks meanwhile are skipped)"
              : "Resume a schedule from its first tick after now",
          ...accessDoc("admin"),
          params: scheduleNameParams,
          body: scheduleActionBody,
          response: { 200: scheduleEnvelopeSchema, ...errorResponses(400, 404, 415, ...AUTH_ERRORS) },
        },
      },
      async (request) => ({
        schedule: toApiSchedule(await queue.schedules[action](request.params.name)),
      }),
    );
  }
}
