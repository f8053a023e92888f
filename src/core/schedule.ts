/**
 * Recurring schedules (issue 14): what a schedule is, how its input is validated, and its ticks.
 * A schedule names a cron expression (5 fields, or 6 with seconds first, or an @alias), an IANA time
 * zone the expression is read in (explicit: "UTC" unless given), and the build each tick submits.
 * Ticks are computed by cron-parser (DST: docs/operations.md, "Schedules"); every process computes
 * them from PostgreSQL's clock (src/queue/scheduler.ts), so all of them agree on which tick is due.
 */
import { CronExpressionParser } from "cron-parser";
import { z } from "zod";
import { joinPath, MAX_PARAMS_BYTES, submitSchema } from "./build.js";
import { PayloadTooLargeError, ValidationError } from "./errors.js";

export const SCHEDULE_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;
export const MAX_CRON_CHARS = 200;
/** The time zone of a schedule created without one (stated in every listing). */
export const DEFAULT_TIMEZONE = "UTC";
/** Older due ticks counted at most this far (the count goes into params.schedule.missed). */
export const MAX_MISSED_COUNT = 1000;
/** The key of a scheduled build's params that the scheduler fills ({name, tick, missed}). */
export const SCHEDULE_PARAMS_KEY = "schedule";

const ALIASES = [
  "@yearly",
  "@annually",
  "@monthly",
  "@weekly",
  "@daily",
  "@hourly",
  "@minutely",
  "@secondly",
  "@weekdays",
  "@weekends",
];

/** A schedule as the library returns it. */
export interface Schedule {
  name: string;
  cron: string;
  timezone: string;
  strategyId: string;
  params: Record<string, unknown>;
  priority: number;
  requires: Record<string, string>;
  /** Retries of each tick's build (default 3, as for a submit). */
  maxRetries: number | null;
  /** null: the worker's default. */
  timeoutSeconds: number | null;
  /** Each tick's build gets this concurrency key (a tick waits while the key is at its limit). */
  concurrencyKey: string | null;
  paused: boolean;
  /** The next tick that will submit a build; null while paused. */
  nextTickAt: Date | null;
  /** The last tick that submitted a build, and that build. */
  lastTickAt: Date | null;
  lastBuildId: string | null;
  /** Older due ticks skipped at that submit (the scheduler was not running over them). */
  lastMissed: number;
  /** Why the scheduler paused it (its tick's build could not be made); null otherwise. */
  lastError: string | null;
  createdAt: Date;
  updatedAt: Date;
}

export const scheduleNameSchema = z
  .string({ error: "must be a string" })
  .regex(
    SCHEDULE_NAME_PATTERN,
    "must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit",
  );

const submitFields = submitSchema.shape;

/** A schedule's definition, as PUT /v1/schedules/:name takes it (everything but the name). */
export const scheduleDefinitionSchema = z.strictObject({
  cron: z
    .string({ error: "is required and must be a string" })
    .max(MAX_CRON_CHARS, `must be at most ${MAX_CRON_CHARS} characters`)
    .describe(
      "cron expression: 5 fields (minute hour day-of-month month day-of-week), 6 with seconds first, or @hourly, @daily, ...",
    ),
  timezone: z
    .string({ error: "must be a string" })
    .max(100, "must be at most 100 characters")
    .default(DEFAULT_TIMEZONE)
    .describe('IANA time zone the expression is read in, e.g. "Europe/Berlin" (default "UTC")'),
  strategyId: submitFields.strategyId,
  params: submitFields.params,
  priority: submitFields.priority,
  requires: submitFields.requires,
  maxRetries: submitFields.maxRetries,
  timeoutSeconds: submitFields.timeoutSeconds,
  concurrencyKey: submitFields.concurrencyKey,
  paused: z.boolean({ error: "must be true or false" }).default(false).describe("created paused"),
});

/**
 * PUT /v1/schedules/:name: the whole definition; `paused` omitted keeps the schedule's current state
 * (an update does not resume a paused schedule, or pause a running one, unless it says so).
 */
export const scheduleUpdateSchema = scheduleDefinitionSchema.extend({
  paused: z
    .boolean({ error: "must be true or false" })
    .optional()
    .describe("pause or resume with the update (omitted: as it is)"),
});

/** POST /v1/schedules: the name and the definition. */
export const scheduleInputSchema = z.strictObject({
  name: scheduleNameSchema,
  ...scheduleDefinitionSchema.shape,
});

export type ScheduleDefinitionInput = z.input<typeof scheduleUpdateSchema>;
export type ScheduleInput = z.input<typeof scheduleInputSchema>;
export type ScheduleDefinition = z.output<typeof scheduleUpdateSchema>;
export type ScheduleRequest = z.output<typeof scheduleInputSchema>;

/** Validates a schedule name (ValidationError "name"). */
export function parseScheduleName(name: unknown): string {
  const parsed = scheduleNameSchema.safeParse(name);
  if (!parsed.success) throw new ValidationError("name", parsed.error.issues[0]?.message ?? "is invalid");
  return parsed.data;
}

/** Validates a whole schedule (name and definition): ValidationError naming the field. */
export function parseScheduleInput(input: unknown): ScheduleRequest {
  return checkDefinition(parseWith(scheduleInputSchema, input));
}

/** Validates a definition for an update (the name comes from the URL; `paused` may be left out). */
export function parseScheduleDefinition(input: unknown): ScheduleDefinition {
  return checkDefinition(parseWith(scheduleUpdateSchema, input));
}

function parseWith<T extends z.ZodType>(schema: T, input: unknown): z.output<T> {
  const parsed = schema.safeParse(input);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  if (issue?.code === "unrecognized_keys") {
    throw new ValidationError(issue.keys[0] ?? "(body)", `unknown field ${issue.keys.join(", ")}`);
  }
  const field = issue?.path.length ? joinPath(issue.path) : "(body)";
  throw new ValidationError(field, issue?.message ?? "is invalid");
}

/** What zod cannot check: the expression, the zone, the reserved params key, the size. */
function checkDefinition<T extends ScheduleDefinition>(definition: T): T {
  const timezone = parseTimezone(definition.timezone);
  parseCron(definition.cron, timezone);
  if (Object.hasOwn(definition.params, SCHEDULE_PARAMS_KEY)) {
    throw new ValidationError(
      `params.${SCHEDULE_PARAMS_KEY}`,
      "is reserved: the scheduler sets it to {name, tick, missed} in each build it submits",
    );
  }
  // Room for params.schedule, so that every tick's build passes the submit's own size check.
  const size = Buffer.byteLength(JSON.stringify(definition.params)) + 300;
  if (size > MAX_PARAMS_BYTES) throw new PayloadTooLargeError("params", size, MAX_PARAMS_BYTES);
  return { ...definition, timezone };
}

/**
 * An IANA time zone name, as the runtime knows it (canonical spelling: "utc" -> "UTC");
 * ValidationError "timezone" otherwise. Offsets ("+02:00") are refused: they have no DST rules, so a
 * schedule would silently drift from local time; name the zone.
 */
export function parseTimezone(timezone: string): string {
  const refuse = (why: string) =>
    new ValidationError("timezone", `${JSON.stringify(timezone)} is not an IANA time zone name (${why})`);
  if (!/^[A-Za-z][A-Za-z0-9_+\-/]*$/.test(timezone)) throw refuse('e.g. "UTC", "Europe/Berlin"');
  try {
    return new Intl.DateTimeFormat("en-US", { timeZone: timezone }).resolvedOptions().timeZone;
  } catch {
    throw refuse('unknown zone; e.g. "UTC", "Europe/Berlin", "America/New_York"');
  }
}

/**
 * A cron expression cron-parser accepts and that every process reads the same way: 5 or 6 fields or
 * an @alias. Refused: other field counts (cron-parser would fill them in), and Jenkins-style `H`
 * (hashed per seed: two processes must agree on every tick). ValidationError "cron" otherwise.
 */
export function parseCron(cron: string, timezone: string): void {
  const refuse = (why: string) =>
    new ValidationError("cron", `${JSON.stringify(cron)} is not a valid cron expression: ${why}`);
  const text = cron.trim();
  if (text.startsWith("@")) {
    if (!ALIASES.includes(text)) throw refuse(`unknown alias; one of ${ALIASES.join(", ")}`);
  } else {
    const fields = text.split(/\s+/).filter((f) => f !== "");
    if (fields.length !== 5 && fields.length !== 6) {
      throw refuse(
        `has ${fields.length} field(s); needs 5 (minute hour day-of-month month day-of-week) or 6 (seconds first)`,
      );
    }
    // Jenkins-style H (a value hashed from a seed): two processes must agree on every tick.
    // Month and weekday names hold no field-initial H (thu has one inside).
    if (/(^|[\s,])H/i.test(text)) throw refuse("H (hashed values) is not supported");
  }
  try {
    CronExpressionParser.parse(text, { tz: timezone }).next();
  } catch (err) {
    throw refuse((err as Error).message);
  }
}

function expression(cron: string, timezone: string, currentDate: Date) {
  return CronExpressionParser.parse(cron.trim(), { tz: timezone, currentDate });
}

/** The first tick strictly after `after`. */
export function nextTickAfter(cron: string, timezone: string, after: Date): Date {
  return expression(cron, timezone, after).next().toDate();
}

export interface DueTick {
  /** The tick that gets a build: the most recent due one. */
  tick: Date;
  /** Due ticks older than it, skipped (counted up to MAX_MISSED_COUNT). */
  missed: number;
  /** The schedule's next tick after it (after `now`). */
  next: Date;
}

/**
 * The missed-ticks policy: of the ticks due by `now` (from `nextTickAt`, the first one not submitted,
 * through `now`), only the most recent gets a build; the older ones are skipped and counted. Like a
 * Kubernetes CronJob that catches up with one run, not a burst of them after downtime.
 */
export function dueTick(cron: string, timezone: string, nextTickAt: Date, now: Date): DueTick {
  const latest = expression(cron, timezone, new Date(now.getTime() + 1))
    .prev()
    .toDate();
  const tick = latest.getTime() >= nextTickAt.getTime() ? latest : nextTickAt;
  let missed = 0;
  const walk = expression(cron, timezone, new Date(nextTickAt.getTime() - 1));
  while (missed < MAX_MISSED_COUNT && walk.next().toDate().getTime() < tick.getTime()) missed += 1;
  return {
    tick,
    missed,
    next: nextTickAfter(cron, timezone, new Date(Math.max(tick.getTime(), now.getTime()))),
  };
}

/** The idempotency key of a tick's build: one build per schedule and tick, whoever submits it. */
export function tickKey(name: string, tick: Date): string {
  return `schedule:${name}:${tick.toISOString()}`;
}

/** A time as a clock on the wall of `timezone` reads it: "2026-12-04 02:00:00 CET". */
export function localTime(at: Date, timezone: string): string {
  const parts = new Intl.DateTimeFormat("en-GB", {
    timeZone: timezone,
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hourCycle: "h23",
    timeZoneName: "short",
  }).formatToParts(at);
  const part = (type: string) => parts.find((p) => p.type === type)?.value ?? "";
  return `${part("year")}-${part("month")}-${part("day")} ${part("hour")}:${part("minute")}:${part("second")} ${part("timeZoneName")}`;
}
