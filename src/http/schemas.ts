/**
 * The HTTP API's shapes, as zod schemas: they validate requests (400 naming the field), check
 * responses, and generate the OpenAPI document. Builds leave the library as `Build` objects (Dates,
 * internal fields such as the lease); `toApiBuild` turns them into the documented JSON.
 */
import { z } from "zod";
import {
  BUILD_ID_PATTERN,
  BUILD_STATUSES,
  type Build,
  MAX_REASON_CHARS,
  storableString,
  submitSchema,
} from "../core/build.js";
import { type ConcurrencyLimit, concurrencyKeySchema, concurrencyLimitSchema } from "../core/concurrency.js";
import {
  localTime,
  type Schedule,
  scheduleInputSchema,
  scheduleNameSchema,
  scheduleUpdateSchema,
} from "../core/schedule.js";
import type { WorkerView } from "../queue/workers.js";

export const MAX_LIST_LIMIT = 1000;
export const DEFAULT_LIST_LIMIT = 50;

const time = z.string().describe("ISO 8601 time");
const nullableTime = time.nullable();

export const buildStatusSchema = z.enum(BUILD_STATUSES);

export const progressSchema = z
  .object({
    phase: z.string().optional(),
    percent: z.number().optional(),
    iteration: z.number().optional(),
    maxIterations: z.number().optional(),
    message: z.string().optional(),
    at: z.string().optional().describe("when the worker reported it"),
  })
  .meta({ id: "Progress", description: "The latest progress its worker reported." });

const buildFields = {
  id: z.string().describe("build id (UUID)"),
  strategyId: z.string(),
  status: buildStatusSchema,
  phase: z.string().nullable().describe("the current phase (designing, training, ...)"),
  progress: progressSchema.nullable(),
  priority: z.number().int(),
  params: z.record(z.string(), z.unknown()),
  result: z.unknown().describe("what the build returned (completed builds)"),
  lastError: z.string().nullable(),
  workerId: z.string().nullable().describe("the worker running it (or that ran it last)"),
  retryCount: z.number().int(),
  maxRetries: z.number().int(),
  idempotencyKey: z.string().nullable(),
  requires: z
    .record(z.string(), z.string())
    .describe("worker labels the build needs ({}: any worker); only workers with all of them run it"),
  pool: z.string().describe('its pool: "default" (no requirements), or the id of its requirement set'),
  timeoutSeconds: z
    .number()
    .int()
    .nullable()
    .describe("how long a run may take (null: the worker's default)"),
  concurrencyKey: z
    .string()
    .nullable()
    .describe(
      "at most the key's limit of builds with this key run at once (GET /v1/limits/:key); null: none",
    ),
  held: z
    .boolean()
    .describe(
      "queued and waiting for a slot of its concurrency key (see waitingOn); not claimable until admitted",
    ),
  createdAt: time,
  updatedAt: time,
  runAt: time.describe("when a queued build becomes claimable (later than now during a retry backoff)"),
  startedAt: nullableTime,
  finishedAt: nullableTime,
  stopRequestedAt: nullableTime,
  stoppedBy: z.string().nullable(),
  stopReason: z.string().nullable(),
};

/** A build as lists show it. */
export const buildSchema = z.object(buildFields).meta({ id: "Build" });

/** One build in full: also the last part of its output. */
export const buildDetailSchema = z
  .object({ ...buildFields, logTail: z.string().nullable().describe("the last 64 KiB of output") })
  .meta({ id: "BuildDetail" });

export type ApiBuild = z.output<typeof buildSchema>;
export type ApiBuildDetail = z.output<typeof buildDetailSchema>;

const iso = (d: Date | null) => (d === null ? null : d.toISOString());

/** The API's view of a build: times as ISO strings, internals (lease, seq, lease expiry) left out. */
export function toApiBuild(build: Build): ApiBuild {
  return {
    id: build.id,
    strategyId: build.strategyId,
    status: build.status,
    phase: build.phase,
    progress: build.progress,
    priority: build.priority,
    params: build.params,
    result: build.result,
    lastError: build.lastError,
    workerId: build.workerId,
    retryCount: build.retryCount,
    maxRetries: build.maxRetries,
    idempotencyKey: build.idempotencyKey,
    requires: build.requires,
    pool: build.pool,
    timeoutSeconds: build.timeoutSeconds,
    concurrencyKey: build.concurrencyKey,
    held: build.held,
    createdAt: build.createdAt.toISOString(),
    updatedAt: build.updatedAt.toISOString(),
    runAt: build.runAt.toISOString(),
    startedAt: iso(build.startedAt),
    finishedAt: iso(build.finishedAt),
    stopRequestedAt: iso(build.stopRequestedAt),
    stoppedBy: build.stoppedBy,
    stopReason: build.stopReason,
  };
}

export function toApiBuildDetail(build: Build): ApiBuildDetail {
  return { ...toApiBuild(build), logTail: build.logTail };
}

const position = z
  .number()
  .int()
  .nullable()
  .describe(
    "1-based place among the ready queued builds of its pool; null when not waiting (running, finished, backoff)",
  );

export const etaSeconds = z
  .number()
  .int()
  .nullable()
  .describe(
    "estimated seconds until a queued build starts: recent run times of its strategy (or of all builds), its position in its pool and the pool's live capacity; null when not queued, when no live worker can run it, or before any build completed",
  );

export const waitingOnSchema = z
  .object({
    concurrencyKey: z.string(),
    running: z.number().int().describe("builds of the key running (or stopping) now"),
    limit: z.number().int().describe("at most this many of them run at once"),
  })
  .meta({ id: "WaitingOn" })
  .nullable()
  .describe("a queued build held back by its concurrency key's limit: what it waits on; null otherwise");

export const buildWithPositionSchema = z.object({
  build: buildSchema,
  position,
  etaSeconds,
  waitingOn: waitingOnSchema,
  superseded: z
    .array(z.string())
    .optional()
    .describe("submit with supersede: true: the ids of the queued builds of the strategy this one stopped"),
});
export const buildDetailWithPositionSchema = z.object({
  build: buildDetailSchema,
  position,
  etaSeconds,
  waitingOn: waitingOnSchema,
});
export const buildEnvelopeSchema = z.object({ build: buildSchema });

export const buildListSchema = z.object({
  builds: z.array(buildSchema),
  nextCursor: z.string().nullable().describe("pass as `cursor` for the next page; null on the last page"),
});

export const workerSchema = z
  .object({
    id: z.string(),
    hostname: z.string(),
    pid: z.number().int(),
    version: z.string(),
    labels: z.record(z.string(), z.string()),
    status: z.enum(["active", "stale", "dead", "stopped"]),
    capacity: z.number().int(),
    activeBuilds: z.number().int(),
    freeSlots: z.number().int(),
    heartbeatAgeMs: z.number(),
    startedAt: time,
    lastHeartbeatAt: time,
    stoppedAt: nullableTime,
  })
  .meta({ id: "Worker" });

export function toApiWorker(worker: WorkerView): z.output<typeof workerSchema> {
  return {
    id: worker.id,
    hostname: worker.hostname,
    pid: worker.pid,
    version: worker.version,
    labels: worker.labels,
    status: worker.status,
    capacity: worker.capacity,
    activeBuilds: worker.activeBuilds,
    freeSlots: worker.freeSlots,
    heartbeatAgeMs: Math.round(worker.heartbeatAgeMs),
    startedAt: worker.startedAt.toISOString(),
    lastHeartbeatAt: worker.lastHeartbeatAt.toISOString(),
    stoppedAt: iso(worker.stoppedAt),
  };
}

export const errorSchema = z
  .object({
    error: z.object({
      code: z.string().describe("stable machine-readable code (invalid_input, not_found, ...)"),
      message: z.string(),
      field: z.string().optional().describe("the offending field, for invalid_input"),
      reason: z
        .enum(["unreachable", "read_only", "busy", "timeout", "conflict"])
        .optional()
        .describe(
          "store_unavailable only: why PostgreSQL cannot take the request now (retry after Retry-After)",
        ),
      requestId: z.string().optional().describe("quote it when reporting an internal error"),
      oldestEventId: z
        .string()
        .optional()
        .describe("resume_too_old (410) only: the oldest event id an event stream may resume after"),
    }),
  })
  .meta({ id: "Error" });

// ---------------------------------------------------------------- requests

const buildId = z.string().regex(BUILD_ID_PATTERN, "must be a build id (a UUID)").describe("build id (UUID)");

export const buildIdParams = z.strictObject({ id: buildId });

/** POST /v1/builds: the library's own submit schema (the same fields, limits and messages). */
export const submitBody = submitSchema;

const reason = storableString(
  z
    .string({ error: "must be a string" })
    .max(MAX_REASON_CHARS, `must be at most ${MAX_REASON_CHARS} characters`),
)
  .optional()
  .describe("why (recorded with the build)");

/** POST /v1/builds/:id/stop: a body is optional (null when absent). */
export const stopBody = z.strictObject({ reason }).nullable();

/** POST /v1/builds/:id/retry takes no fields; an empty object or no body. */
export const retryBody = z.strictObject({}).nullable();

/** Query integers are plain decimal digits: "0x10", "1e1", " 5", "+5" or "5.0" are refused, not coerced. */
const DECIMAL_DIGITS = /^[0-9]{1,15}$/;

/**
 * An integer query parameter from `min` to `max`, `fallback` when absent. Use it for every integer
 * in a query string (z.coerce.number would take hex, exponents and blanks).
 */
export const queryInteger = (min: number, max: number, fallback: number) =>
  z
    .string({ error: "must be an integer" })
    .regex(DECIMAL_DIGITS, "must be an integer (decimal digits only)")
    .transform(Number)
    .pipe(z.number().min(min, `must be at least ${min}`).max(max, `must be at most ${max}`))
    .default(fallback);

const limit = (max: number, fallback: number) => queryInteger(1, max, fallback);

export const listQuery = z.strictObject({
  order: z
    .enum(["submitted", "finished"], { error: "must be submitted or finished" })
    .optional()
    .describe(
      "submitted (default): newest submitted first; finished: finished builds only (completed, failed, stopped), the latest finish first (a page may hold fewer than `limit` builds while nextCursor is set: each page looks at a bounded number of events)",
    ),
  status: z.enum(BUILD_STATUSES, { error: `must be one of ${BUILD_STATUSES.join(", ")}` }).optional(),
  strategyId: storableString(
    z
      .string({ error: "must be a string" })
      .min(1, "must not be empty")
      .max(200, "must be at most 200 characters"),
  ).optional(),
  limit: limit(MAX_LIST_LIMIT, DEFAULT_LIST_LIMIT).describe(
    `page size (1..${MAX_LIST_LIMIT}, default ${DEFAULT_LIST_LIMIT}; decimal digits)`,
  ),
  cursor: z
    .string()
    .min(1, "must not be empty")
    .max(200, "must be at most 200 characters")
    .optional()
    .describe("nextCursor of the previous page"),
});

export const queueQuery = z.strictObject({
  limit: limit(100, 20).describe(
    "how many queued and active builds to show (1..100, default 20; decimal digits)",
  ),
});

export const workersQuery = z.strictObject({
  status: z
    .enum(["active", "stale", "dead", "stopped"], { error: "must be one of active, stale, dead, stopped" })
    .optional(),
});

/** Event ids are the events' row ids: digits. */
export const EVENT_ID_PATTERN = /^\d{1,15}$/;

export const eventsQuery = z.strictObject({
  lastEventId: z
    .string()
    .regex(EVENT_ID_PATTERN, "must be an event id (digits)")
    .optional()
    .describe("resume after this event (for clients that cannot send the Last-Event-ID header)"),
});

// ---------------------------------------------------------------- concurrency limits

export const concurrencyLimitViewSchema = z
  .object({
    key: z.string(),
    limit: z.number().int().describe("at most this many builds of the key run at once (default 1)"),
    running: z.number().int().describe("builds of the key running or stopping"),
    admitted: z
      .number()
      .int()
      .describe("queued builds of the key holding a slot (claimable now, or in a retry backoff)"),
    waiting: z.number().int().describe("queued builds of the key waiting for a slot"),
    updatedAt: nullableTime.describe("when the limit was set or the key first used; null: never seen"),
  })
  .meta({ id: "ConcurrencyLimit" });

export function toApiLimit(limit: ConcurrencyLimit): z.output<typeof concurrencyLimitViewSchema> {
  return { ...limit, updatedAt: iso(limit.updatedAt) };
}

export const limitKeyParams = z.strictObject({
  key: concurrencyKeySchema.describe("the concurrency key (URL-encoded)"),
});

export const setLimitBody = z.strictObject({
  limit: concurrencyLimitSchema.describe(
    "at most this many builds of the key run at once (raising it admits waiting builds at once)",
  ),
});

export const limitsQuery = z.strictObject({
  after: concurrencyKeySchema
    .optional()
    .describe("list the keys after this one (the last key of the previous page)"),
  limit: limit(1000, 100).describe("page size (1..1000, default 100; decimal digits)"),
});

// ---------------------------------------------------------------- build logs

/** A byte offset into a build's log: digits only (no signs, exponents or hex). */
const logOffset = z
  .string()
  .regex(/^\d{1,15}$/, "must be a byte offset (digits)")
  .transform(Number);

export const logQuery = z.strictObject({
  offset: logOffset
    .optional()
    .describe("read from this byte offset (at most 1 MiB; X-Log-Next-Offset says where to go on)"),
});

export const logStreamQuery = z.strictObject({
  offset: logOffset
    .optional()
    .describe("start at this byte offset (clients that cannot send Last-Event-ID); default 0"),
});

/** The text responses of GET /v1/builds/:id/logs. */
export function logTextResponse(description: string) {
  return {
    description:
      `${description}. Headers: X-Log-Size (bytes so far), X-Log-Complete (the build has ended), ` +
      "X-Log-Truncated (the per-build cap cut it), X-Build-Status, Accept-Ranges: bytes.",
    content: { "text/plain": { schema: z.string() } },
  };
}

export const logStreamResponse = {
  description:
    "text/event-stream: `log` events (`id:` the byte offset after the event's text, for Last-Event-ID; " +
    "`data:` JSON {stream: stdout|stderr|system, at, offset, text}), then one `end` event " +
    "(`data:` {status, size, truncated}) once the build has ended and its log is read; `: heartbeat` comments",
  content: { "text/event-stream": { schema: z.string() } },
};

// ---------------------------------------------------------------- schedules

export const scheduleSchema = z
  .object({
    name: z.string(),
    cron: z.string().describe("cron expression (5 fields, 6 with seconds first, or an @alias)"),
    timezone: z.string().describe('IANA time zone the expression is read in ("UTC" unless given)'),
    strategyId: z.string(),
    params: z
      .record(z.string(), z.unknown())
      .describe("each tick's build gets these, plus `schedule: {name, tick, missed}`"),
    priority: z.number().int(),
    requires: z.record(z.string(), z.string()).describe("worker labels each tick's build needs"),
    maxRetries: z.number().int().nullable(),
    timeoutSeconds: z.number().int().nullable(),
    concurrencyKey: z
      .string()
      .nullable()
      .describe("each tick's build gets this concurrency key (it waits while the key is at its limit)"),
    paused: z.boolean(),
    nextTickAt: nullableTime.describe("the next tick that submits a build (UTC); null while paused"),
    nextTickLocal: z
      .string()
      .nullable()
      .describe('the same tick on the clock of the schedule\'s zone, e.g. "2026-12-04 02:00:00 CET"'),
    lastTickAt: nullableTime.describe("the last tick that submitted a build"),
    lastBuildId: z.string().nullable().describe("the build of that tick"),
    lastMissed: z
      .number()
      .int()
      .describe(
        "older due ticks skipped at that submit (no scheduler ran over them; only the latest gets a build)",
      ),
    lastError: z.string().nullable().describe("why the scheduler paused it, if it did"),
    createdAt: time,
    updatedAt: time,
  })
  .meta({ id: "Schedule" });

export function toApiSchedule(s: Schedule): z.output<typeof scheduleSchema> {
  return {
    name: s.name,
    cron: s.cron,
    timezone: s.timezone,
    strategyId: s.strategyId,
    params: s.params,
    priority: s.priority,
    requires: s.requires,
    maxRetries: s.maxRetries,
    timeoutSeconds: s.timeoutSeconds,
    concurrencyKey: s.concurrencyKey,
    paused: s.paused,
    nextTickAt: iso(s.nextTickAt),
    nextTickLocal: s.nextTickAt ? localTime(s.nextTickAt, s.timezone) : null,
    lastTickAt: iso(s.lastTickAt),
    lastBuildId: s.lastBuildId,
    lastMissed: s.lastMissed,
    lastError: s.lastError,
    createdAt: s.createdAt.toISOString(),
    updatedAt: s.updatedAt.toISOString(),
  };
}

export const scheduleEnvelopeSchema = z.object({ schedule: scheduleSchema });
export const scheduleListSchema = z.object({ schedules: z.array(scheduleSchema) });
export const scheduleNameParams = z.strictObject({ name: scheduleNameSchema });
/** POST /v1/schedules: the library's own schema (the same fields, limits and messages). */
export const scheduleCreateBody = scheduleInputSchema;
/** PUT /v1/schedules/:name: the whole definition (omitted fields take their defaults; `paused`: as it is). */
export const scheduleUpdateBody = scheduleUpdateSchema;
/** POST /v1/schedules/:name/pause and /resume take no fields; an empty object or no body. */
export const scheduleActionBody = z.strictObject({}).nullable();
