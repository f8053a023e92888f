/**
 * The build model: its fields, its statuses and the transitions between them, and validation of what
 * callers submit. Storage-free: both stores and every interface (library, CLI, HTTP) share it.
 */
import { z } from "zod";
import { concurrencyKeySchema } from "./concurrency.js";
import { PayloadTooLargeError, ValidationError } from "./errors.js";
import { LABEL_KEY_PATTERN, MAX_LABEL_VALUE_CHARS, MAX_REQUIRES, type Requirements } from "./pools.js";
import { PRIORITY_MAX, PRIORITY_MIN } from "./score.js";

export const BUILD_STATUSES = ["queued", "running", "stopping", "completed", "failed", "stopped"] as const;
export type BuildStatus = (typeof BUILD_STATUSES)[number];
export const FINAL_STATUSES: readonly BuildStatus[] = ["completed", "failed", "stopped"];

/** Allowed status changes (DESIGN.md "Shape"). */
export const TRANSITIONS: Readonly<Record<BuildStatus, readonly BuildStatus[]>> = {
  queued: ["running", "stopped"],
  running: ["completed", "failed", "stopped", "stopping", "queued"],
  stopping: ["stopped", "completed", "failed"],
  completed: [],
  failed: [],
  stopped: [],
};

export function canTransition(from: BuildStatus, to: BuildStatus): boolean {
  return TRANSITIONS[from].includes(to);
}

export interface Build {
  id: string;
  strategyId: string;
  params: Record<string, unknown>;
  priority: number;
  /** Submit order; kept across requeues so a requeued build returns to the front of its priority. */
  seq: number;
  status: BuildStatus;
  phase: string | null;
  retryCount: number;
  maxRetries: number;
  /** Fencing token: bumped by every claim and requeue; every worker write must carry the current one. */
  lease: number;
  workerId: string | null;
  idempotencyKey: string | null;
  /** Worker labels this build needs (routing); {} runs anywhere. */
  requires: Requirements;
  /** The pool of builds with the same requirements (src/core/pools.ts), "default" for none. */
  pool: string;
  /** How long a run may take, in seconds (null: the worker's default). */
  timeoutSeconds: number | null;
  /** At most the key's limit of builds with this key run at once (src/core/concurrency.ts); null: none. */
  concurrencyKey: string | null;
  /** Queued and waiting for a slot of its concurrency key (not claimable until admitted). */
  held: boolean;
  lastError: string | null;
  result: unknown;
  createdAt: Date;
  updatedAt: Date;
  /** When a queued build becomes claimable (later than now while it waits out a retry backoff). */
  runAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
  /** While running: the build belongs to its worker until then (heartbeats extend it). */
  leaseExpiresAt: Date | null;
  /** The latest progress its worker reported. */
  progress: BuildProgress | null;
  /** The last part of the build's output (a build command's stdout and stderr). */
  logTail: string | null;
  /** When a stop was asked for, by whom and why. */
  stopRequestedAt: Date | null;
  stoppedBy: string | null;
  stopReason: string | null;
}

export interface BuildProgress {
  phase?: string;
  percent?: number;
  iteration?: number;
  maxIterations?: number;
  message?: string;
  /** When it was reported (ISO time). */
  at?: string;
}

/** A build handed to a worker: the lease is what it must present for every later write. */
export interface ClaimedBuild extends Build {
  status: "running";
  workerId: string;
}

export const DEFAULT_MAX_RETRIES = 3;
export const MAX_RETRIES_LIMIT = 100;
/**
 * Largest `params` accepted, as serialized JSON. Builds carry configuration, not data sets; and a
 * build command gets them in one environment variable, which Linux caps at 128 KiB.
 */
export const MAX_PARAMS_BYTES = 100 * 1024;
export const MAX_BATCH_SIZE = 10_000;
/** Longest stop reason (characters). */
export const MAX_REASON_CHARS = 1000;

/**
 * Deepest `params` accepted: objects and arrays nested at most this many levels, `params` itself
 * being the first. Configuration is shallow; the limit keeps every later step (JSON.stringify, the
 * jsonb input function, a build command's environment) far from any recursion limit.
 */
export const MAX_PARAMS_DEPTH = 32;

/** A string field as PostgreSQL can store it in a text column: no NUL, no lone surrogate. */
export function storableString(schema: z.ZodString): z.ZodString {
  return schema.refine((text) => unstorableReason(text) === undefined, {
    error: (issue) => unstorableReason(issue.input as string) ?? "is invalid",
  });
}

/** Furthest runAt accepted. */
export const MAX_RUN_AT_AHEAD_MS = 366 * 86_400_000;
/** Longest timeoutSeconds accepted: a week. */
export const MAX_TIMEOUT_SECONDS = 7 * 24 * 3600;

const requiresSchema = z
  .record(
    z.string().regex(LABEL_KEY_PATTERN, "keys must be 1-63 letters, digits, '.', '_', '/' or '-'"),
    storableString(
      z
        .string({ error: "values must be strings" })
        .min(1, "values must not be empty")
        .max(MAX_LABEL_VALUE_CHARS, `values must be at most ${MAX_LABEL_VALUE_CHARS} characters`),
    ),
    { error: 'must be an object of string labels, e.g. {"gpu": "true"}' },
  )
  .refine((r) => Object.keys(r).length <= MAX_REQUIRES, `at most ${MAX_REQUIRES} keys`);

/** What a submit accepts (also the HTTP API's request body schema). */
export const submitSchema = z.strictObject({
  strategyId: storableString(
    z
      .string({ error: "is required and must be a string" })
      .min(1, "must not be empty")
      .max(200, "must be at most 200 characters"),
  ),
  priority: z
    .number({ error: "must be a number" })
    .int("must be an integer")
    .min(PRIORITY_MIN, `must be at least ${PRIORITY_MIN}`)
    .max(PRIORITY_MAX, `must be at most ${PRIORITY_MAX}`)
    .default(0),
  params: z
    .record(z.string(), z.unknown(), { error: "must be a JSON object" })
    .superRefine((params, ctx) => {
      const problem = findUnstorableJson(params, MAX_PARAMS_DEPTH);
      if (problem) ctx.addIssue({ code: "custom", path: problem.path, message: problem.reason });
    })
    .default({}),
  maxRetries: z
    .number({ error: "must be a number" })
    .int("must be an integer")
    .min(0, "must be at least 0")
    .max(MAX_RETRIES_LIMIT, `must be at most ${MAX_RETRIES_LIMIT}`)
    .default(DEFAULT_MAX_RETRIES),
  idempotencyKey: storableString(
    z
      .string({ error: "must be a string" })
      .min(1, "must not be empty")
      .max(200, "must be at most 200 characters"),
  ).optional(),
  requires: requiresSchema
    .default({})
    .describe("worker labels the build needs: only workers whose --label k=v include all of them run it"),
  timeoutSeconds: z
    .number({ error: "must be a number" })
    .int("must be an integer")
    .min(1, "must be at least 1")
    .max(MAX_TIMEOUT_SECONDS, `must be at most ${MAX_TIMEOUT_SECONDS}`)
    .optional()
    .describe("past this the build's command gets SIGTERM (then SIGKILL) and the build fails"),
  runAt: z.iso
    .datetime({ offset: true, error: "must be an ISO 8601 time with a time zone, e.g. 2026-12-24T08:00:00Z" })
    .refine(
      (t) => Date.parse(t) <= Date.now() + MAX_RUN_AT_AHEAD_MS,
      `must be at most ${MAX_RUN_AT_AHEAD_MS / 86_400_000} days ahead`,
    )
    .optional()
    .describe("the build is not run before this time (a time already past: at once)"),
  concurrencyKey: concurrencyKeySchema
    .optional()
    .describe(
      "at most the key's limit (default 1, PUT /v1/limits/:key) of the builds with this key run at once; the others wait in order",
    ),
  supersede: z
    .boolean({ error: "must be true or false" })
    .default(false)
    .describe(
      "latest wins: the still-queued builds of the same strategy are stopped (event 'superseded'); running ones are untouched",
    ),
});

export type SubmitInput = z.input<typeof submitSchema>;
export type SubmitRequest = z.output<typeof submitSchema>;

/** Validates one submit request; throws ValidationError naming the field, or PayloadTooLargeError. */
export function parseSubmit(input: unknown, fieldPrefix = ""): SubmitRequest {
  const parsed = submitSchema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const path = issue?.path.length ? joinPath(issue.path) : "(body)";
    const reason =
      issue?.code === "unrecognized_keys"
        ? `unknown field${issue.keys.length > 1 ? "s" : ""} ${issue.keys.join(", ")}`
        : (issue?.message ?? "is invalid");
    const field = issue?.code === "unrecognized_keys" ? (issue.keys[0] ?? path) : path;
    throw new ValidationError(`${fieldPrefix}${field}`, reason);
  }
  const size = Buffer.byteLength(JSON.stringify(parsed.data.params));
  if (size > MAX_PARAMS_BYTES) throw new PayloadTooLargeError(`${fieldPrefix}params`, size, MAX_PARAMS_BYTES);
  return parsed.data;
}

export function parseSubmitMany(inputs: unknown): SubmitRequest[] {
  if (!Array.isArray(inputs)) throw new ValidationError("builds", "must be an array");
  if (inputs.length === 0) throw new ValidationError("builds", "must not be empty");
  if (inputs.length > MAX_BATCH_SIZE) {
    throw new ValidationError("builds", `at most ${MAX_BATCH_SIZE} builds per call`);
  }
  return inputs.map((input, index) => parseSubmit(input, `builds[${index}].`));
}

/** A build id: a lower-case UUID. */
export const BUILD_ID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Build ids are UUIDs; anything else cannot name a build. */
export function parseBuildId(id: unknown, field = "id"): string {
  if (typeof id !== "string" || !BUILD_ID_PATTERN.test(id)) {
    throw new ValidationError(field, "must be a build id (a UUID)");
  }
  return id;
}

export function parseWorkerId(id: unknown, field = "workerId"): string {
  if (typeof id !== "string" || id.length === 0 || id.length > 200) {
    throw new ValidationError(field, "must be a non-empty string of at most 200 characters");
  }
  return checkedString(id, field);
}

/** Who asked for an operation (a token's name, "cli", a user): 1..200 characters PostgreSQL can store. */
export function parseActor(actor: unknown, field = "actor"): string {
  if (typeof actor !== "string" || actor.length === 0 || actor.length > 200) {
    throw new ValidationError(field, "must be a non-empty string of at most 200 characters");
  }
  return checkedString(actor, field);
}

/**
 * What a worker registers, as PostgreSQL can store it: its id (parseWorkerId), and no NUL or lone
 * surrogate in its hostname, version or labels. Throws ValidationError naming the field.
 */
export function checkWorkerInfo(info: {
  id: unknown;
  hostname: unknown;
  version: unknown;
  labels: unknown;
}): void {
  parseWorkerId(info.id, "id");
  for (const field of ["hostname", "version"] as const) {
    const value = info[field];
    if (typeof value !== "string") throw new ValidationError(field, "must be a string");
    checkedString(value, field);
  }
  const problem = findUnstorableJson(info.labels, 2);
  if (problem) throw new ValidationError(joinPath(["labels", ...problem.path]), problem.reason);
}

/**
 * An optional free-text field (a stop reason): a string of at most `max` characters that PostgreSQL
 * can store, or null when absent. Throws ValidationError naming the field.
 */
export function parseOptionalText(value: unknown, field: string, max: number): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== "string" || value.length > max) {
    throw new ValidationError(field, `must be a string of at most ${max} characters`);
  }
  return checkedString(value, field);
}

export function parseLease(lease: unknown, field = "lease"): number {
  if (typeof lease !== "number" || !Number.isSafeInteger(lease) || lease < 1) {
    throw new ValidationError(field, "must be a positive integer (the lease returned by the claim)");
  }
  return lease;
}

const progressSchema = z.strictObject({
  phase: z
    .string({ error: "must be a string" })
    .min(1, "must not be empty")
    .max(100, "must be at most 100 characters")
    .optional(),
  percent: z
    .number({ error: "must be a number" })
    .min(0, "must be at least 0")
    .max(100, "must be at most 100")
    .optional(),
  iteration: z
    .number({ error: "must be a number" })
    .int("must be an integer")
    .min(0, "must be at least 0")
    .optional(),
  maxIterations: z
    .number({ error: "must be a number" })
    .int("must be an integer")
    .min(0, "must be at least 0")
    .optional(),
  message: z.string({ error: "must be a string" }).max(1000, "must be at most 1000 characters").optional(),
});

export type ProgressInput = z.input<typeof progressSchema>;

/** Validates a progress report; throws ValidationError naming the field. */
export function parseProgress(input: unknown): ProgressInput {
  const parsed = progressSchema.safeParse(input);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  if (issue?.code === "unrecognized_keys") {
    throw new ValidationError(
      `progress.${issue.keys[0] ?? ""}`,
      `unknown field${issue.keys.length > 1 ? "s" : ""} ${issue.keys.join(", ")}`,
    );
  }
  const path = issue?.path.length ? `progress.${issue.path.join(".")}` : "progress";
  throw new ValidationError(path, issue?.message ?? "is invalid");
}

// ---------------------------------------------------------------------------------------------------
// What PostgreSQL can store: text without NUL characters, and well-formed Unicode in jsonb

/** Lone UTF-16 surrogates (half of a character): jsonb refuses them, and text would get U+FFFD anyway. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const LONE_SURROGATES = new RegExp(LONE_SURROGATE.source, "g");

/**
 * `text` as PostgreSQL can store it in a text or jsonb column: NUL characters (which neither type can
 * hold) dropped, lone surrogates replaced by U+FFFD (what `String.prototype.toWellFormed` does). Used
 * for output that is kept as is and whose exact bytes do not matter: log tails, error messages,
 * progress text. A build's output must never be what keeps its result from being recorded.
 */
export function storableText(text: string): string {
  const withoutNul = text.includes("\u0000") ? text.replaceAll("\u0000", "") : text;
  return LONE_SURROGATE.test(withoutNul) ? withoutNul.replace(LONE_SURROGATES, "\uFFFD") : withoutNul;
}

/** Deeper results are refused (jsonb itself allows some 6,000 levels; nothing real comes close). */
const RESULT_MAX_DEPTH = 100;

/**
 * A build's result as it will be stored (jsonb), or ValidationError("result...", why) naming where
 * the first value PostgreSQL cannot store is: a string or key holding a NUL character or a lone
 * surrogate, a number that is not finite, a bigint, function, symbol, or a cycle. Unlike text, a
 * result is data: it is refused rather than silently changed. `undefined` is JSON's: an absent field,
 * and null as the whole result; objects with `toJSON` (Date) become what it returns.
 */
export function parseResult(value: unknown): unknown {
  return storableJson(value, "result", new Set(), 0) ?? null;
}

function storableJson(value: unknown, path: string, ancestors: Set<object>, depth: number): unknown {
  if (value === null || typeof value === "boolean") return value;
  if (typeof value === "string") return checkedString(value, path);
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new ValidationError(path, `${value} is not a JSON number`);
    return value;
  }
  if (value === undefined) return undefined;
  if (typeof value !== "object") throw new ValidationError(path, `a ${typeof value} is not a JSON value`);
  const json = (value as { toJSON?: unknown }).toJSON;
  if (typeof json === "function") return storableJson(json.call(value), path, ancestors, depth);
  if (ancestors.has(value)) throw new ValidationError(path, "refers to itself (a cycle is not JSON)");
  if (depth >= RESULT_MAX_DEPTH)
    throw new ValidationError(path, `nested more than ${RESULT_MAX_DEPTH} levels`);
  ancestors.add(value);
  try {
    if (Array.isArray(value)) {
      return value.map((item, i) => storableJson(item, `${path}[${i}]`, ancestors, depth + 1) ?? null);
    }
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) {
      const itemPath = `${path}.${checkedString(key, `${path} key ${JSON.stringify(key)}`)}`;
      const stored = storableJson(item, itemPath, ancestors, depth + 1);
      if (stored !== undefined) out[key] = stored;
    }
    return out;
  } finally {
    ancestors.delete(value);
  }
}

/** Why PostgreSQL cannot store `text` (a NUL character, a lone surrogate), or undefined when it can. */
export function unstorableReason(text: string): string | undefined {
  if (text.includes("\u0000")) return "contains a NUL character (\\u0000), which PostgreSQL cannot store";
  if (LONE_SURROGATE.test(text)) {
    return "contains a lone surrogate (not valid Unicode), which PostgreSQL cannot store";
  }
  return undefined;
}

/** `text` itself, or ValidationError(path, why) when PostgreSQL cannot store it. */
export function checkedString(text: string, path: string): string {
  const reason = unstorableReason(text);
  if (reason) throw new ValidationError(path, reason);
  return text;
}

/** A path of object keys and array indexes as fields are named in errors: `params.a.0.b`. */
export function joinPath(path: readonly PropertyKey[]): string {
  return path.map(String).join(".");
}

/**
 * The first place in a JSON object that PostgreSQL cannot store as it was given, with why: a string
 * or key with a NUL or a lone surrogate, a number that is not finite (JSON.parse turns `1e400` into
 * Infinity, which JSON.stringify would silently make null), a bigint, function or symbol, a cycle, or
 * objects nested deeper than `maxDepth` levels (the value itself is level 1). Undefined when none.
 * Recursion stops at `maxDepth`, so no input can exhaust the stack here. Values with `toJSON` (Date)
 * are judged by what it returns, and `undefined` members are skipped, as JSON.stringify does.
 */
export function findUnstorableJson(
  value: unknown,
  maxDepth: number,
): { path: (string | number)[]; reason: string } | undefined {
  const path: (string | number)[] = [];
  const ancestors = new Set<object>();
  const visit = (item: unknown, depth: number): string | undefined => {
    if (item === null || item === undefined || typeof item === "boolean") return undefined;
    if (typeof item === "string") return unstorableReason(item);
    if (typeof item === "number") return Number.isFinite(item) ? undefined : "must be a finite number";
    if (typeof item !== "object") return `a ${typeof item} is not a JSON value`;
    const json = (item as { toJSON?: unknown }).toJSON;
    if (typeof json === "function") return visit(json.call(item), depth);
    if (ancestors.has(item)) return "refers to itself (a cycle is not JSON)";
    if (depth > maxDepth) return `is nested deeper than ${maxDepth} levels`;
    ancestors.add(item);
    const entries: [string | number, unknown][] = Array.isArray(item)
      ? item.map((member, index) => [index, member])
      : Object.entries(item);
    for (const [key, member] of entries) {
      // A bad key is reported at its object: the key itself cannot be shown as a field name.
      const badKey = typeof key === "string" ? unstorableReason(key) : undefined;
      if (badKey) return `has a key that ${badKey}`;
      path.push(key);
      const reason = visit(member, depth + 1);
      if (reason) return reason;
      path.pop();
    }
    ancestors.delete(item);
    return undefined;
  };
  const reason = visit(value, 1);
  return reason ? { path, reason } : undefined;
}
