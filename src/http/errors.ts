/**
 * Every error leaves the API as `{error: {code, message, field?}}` with the status its type names.
 * The queue's typed errors (OculusError) map directly; Fastify's own (bad JSON, body too large,
 * unsupported media type) get codes of their own; anything else is a bug: 500 with a generic
 * message and the request id, and the details only in the log. Never a stack trace.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { z } from "zod";
import {
  OculusError,
  ResumeTooOldError,
  StoreUnavailableError,
  type StoreUnavailableReason,
  ValidationError,
} from "../core/errors.js";
import { asStoreError } from "../queue/store-errors.js";

export interface ApiErrorBody {
  error: {
    code: string;
    message: string;
    field?: string;
    reason?: string;
    requestId?: string;
    oldestEventId?: string;
  };
}

/** A zod failure as the queue's ValidationError: the first issue, its field and reason. */
export function toValidationError(error: z.ZodError, part: string): ValidationError {
  const issue = error.issues[0];
  if (issue?.code === "unrecognized_keys") {
    const plural = issue.keys.length > 1 ? "s" : "";
    const field = [...issue.path, issue.keys[0] ?? ""].join(".");
    return new ValidationError(field, `unknown ${partName(part)}field${plural} ${issue.keys.join(", ")}`);
  }
  if (!issue?.path.length) {
    // The whole part has the wrong shape (a JSON array or string where an object belongs).
    const reason = issue?.code === "invalid_type" ? `must be a JSON ${issue.expected}` : issue?.message;
    return new ValidationError(`(${part})`, reason ?? "is invalid");
  }
  return new ValidationError(issue.path.join("."), issue.message);
}

function partName(part: string): string {
  return part === "querystring" ? "query " : "";
}

/** Fastify's client errors (raised before a handler runs), by their code. */
const FASTIFY_CLIENT_ERRORS: Record<string, { status: number; code: string; message: string }> = {
  FST_ERR_CTP_INVALID_JSON_BODY: {
    status: 400,
    code: "invalid_input",
    message: "body is not valid JSON (or holds a __proto__ or constructor key)",
  },
  FST_ERR_CTP_EMPTY_JSON_BODY: {
    status: 400,
    code: "invalid_input",
    message: "body is empty but Content-Type is application/json",
  },
  FST_ERR_CTP_BODY_TOO_LARGE: {
    status: 413,
    code: "payload_too_large",
    message: "body is over the size limit",
  },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: {
    status: 415,
    code: "invalid_input",
    message: "unsupported Content-Type: send application/json",
  },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: {
    status: 400,
    code: "invalid_input",
    message: "Content-Length does not match the body",
  },
};

/**
 * What a client is told when the record cannot take the request: what is wrong, in words, never the
 * driver's message (it names hosts and ports: internals, kept for the log).
 */
const STORE_UNAVAILABLE_MESSAGES: Record<StoreUnavailableReason, string> = {
  unreachable: "the build store (PostgreSQL) is unreachable; retry later",
  read_only: "the build store (PostgreSQL) is read-only (a failover in progress?); retry later",
  busy: "the build store (PostgreSQL) is busy (no free connection); retry later",
  timeout: "the build store (PostgreSQL) did not answer in time; retry later",
  conflict: "the build store (PostgreSQL) aborted the operation (a conflict with another); retry",
};

function bodyOf(err: OculusError): ApiErrorBody {
  if (err instanceof StoreUnavailableError) {
    const message = STORE_UNAVAILABLE_MESSAGES[err.reason];
    return { error: { code: err.code, message, reason: err.reason } };
  }
  if (err.code === "store_unavailable") {
    return { error: { code: err.code, message: STORE_UNAVAILABLE_MESSAGES.unreachable } };
  }
  if (err instanceof ResumeTooOldError) {
    return { error: { code: err.code, message: err.message, oldestEventId: err.oldestEventId } };
  }
  const field = typeof err.details.field === "string" ? err.details.field : undefined;
  return { error: { code: err.code, message: err.message, ...(field ? { field } : {}) } };
}

/** Status and body for any error thrown while serving a request. */
export function describeError(
  err: FastifyError | Error,
  requestId: string,
  bodyLimit?: number,
): { status: number; body: ApiErrorBody } {
  // A PostgreSQL fault that reached here unconverted is still "the record is away": 503, never 500.
  const classified = asStoreError(err);
  if (classified instanceof StoreUnavailableError) err = classified;
  // An OculusError whose status is not an HTTP one (ConfigError's exit code) is an internal error.
  if (err instanceof OculusError && err.httpStatus >= 400 && err.httpStatus < 600) {
    return { status: err.httpStatus, body: bodyOf(err) };
  }
  const code = (err as FastifyError).code;
  const known = code ? FASTIFY_CLIENT_ERRORS[code] : undefined;
  if (known) {
    const limit = known.status === 413 && bodyLimit ? ` of ${bodyLimit} bytes` : "";
    return {
      status: known.status,
      body: { error: { code: known.code, message: `${known.message}${limit}` } },
    };
  }
  // JSON parse errors surface as SyntaxError with a 400 status from Fastify's parser.
  if (err instanceof SyntaxError && (err as FastifyError).statusCode === 400) {
    return { status: 400, body: { error: { code: "invalid_input", message: "body is not valid JSON" } } };
  }
  return {
    status: 500,
    body: {
      error: {
        code: "internal_error",
        message: `internal error; the server log has the details under request id ${requestId}`,
        requestId,
      },
    },
  };
}

/** Installs the error and not-found handlers on the instance. */
export function installErrorHandlers(app: FastifyInstance, bodyLimit: number): void {
  app.setErrorHandler((err: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    const { status, body } = describeError(err, request.id, bodyLimit);
    if (status >= 500 && status !== 503) request.log.error({ err }, "request failed");
    else if (status === 503) request.log.warn({ err: err.message }, "store unavailable");
    else request.log.info({ code: body.error.code, message: body.error.message }, "request refused");
    if (status === 429 || status === 503) reply.header("retry-after", String(retryAfterOf(err)));
    if (status === 401) reply.header("www-authenticate", 'Bearer realm="oculus"');
    return reply.status(status).send(body);
  });
  app.setNotFoundHandler((request: FastifyRequest, reply: FastifyReply) => {
    const path = request.url.split("?")[0] ?? "";
    return reply.status(404).send({
      error: { code: "not_found", message: `no route ${request.method} ${path}` },
    } satisfies ApiErrorBody);
  });
}

/** Seconds, from the error (rate limit window, the store's hint); 1 when it has none. */
function retryAfterOf(err: Error): number {
  const typed = asStoreError(err);
  const details = typed instanceof OculusError ? typed.details : {};
  return typeof details.retryAfterSeconds === "number" ? details.retryAfterSeconds : 1;
}
