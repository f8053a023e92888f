/**
 * Every error leaves the API as `{error: {code, message, field?}}` with the status its type names.
 * The queue's typed errors (OculusError) map directly; Fastify's own (bad JSON, body too large,
 * unsupported media type, a bad URL) and its plugins' 4xx get codes of their own, and so do the
 * requests Node's HTTP parser refuses before Fastify sees them (`clientErrorHandler`); anything else
 * is a bug: 500 with a generic message and the request id, and the details only in the log. Never a
 * stack trace.
 */
import { STATUS_CODES } from "node:http";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
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
  FST_ERR_BAD_URL: {
    status: 400,
    code: "invalid_input",
    message: "the URL's path is not valid (a bad percent-encoding)",
  },
  FST_ERR_MAX_PARAM_LENGTH: {
    status: 414,
    code: "invalid_input",
    message: "a segment of the URL's path is over the length limit",
  },
};

/**
 * A 4xx that Fastify or a plugin raised without a code of ours (an http-errors object, a Fastify error
 * not listed above): the status is kept, the code and message come from here. Their own messages are
 * not passed on (they may name files or internals).
 */
const CLIENT_ERRORS_BY_STATUS: Record<number, { code: string; message: string }> = {
  400: { code: "invalid_input", message: "the request is not valid" },
  404: { code: "not_found", message: "not found" },
  408: { code: "request_timeout", message: "the request was not received in time" },
  413: { code: "payload_too_large", message: "the request is over the size limit" },
  414: { code: "invalid_input", message: "the URL is too long" },
  415: { code: "invalid_input", message: "unsupported Content-Type: send application/json" },
  431: { code: "payload_too_large", message: "the request's headers are over the size limit" },
};

/** The status a foreign error asks for (http-errors and Fastify errors carry one), if a 4xx. */
function clientStatusOf(err: Error): number | undefined {
  const { statusCode, status } = err as { statusCode?: unknown; status?: unknown };
  const given = typeof statusCode === "number" ? statusCode : status;
  return typeof given === "number" && given >= 400 && given < 500 ? given : undefined;
}

function foreignClientError(status: number): { status: number; body: ApiErrorBody } {
  const known = CLIENT_ERRORS_BY_STATUS[status] ?? {
    code: "invalid_input",
    message: (STATUS_CODES[status] ?? "client error").toLowerCase(),
  };
  return { status, body: { error: { code: known.code, message: known.message } } };
}

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
  const clientStatus = clientStatusOf(err);
  if (clientStatus !== undefined) return foreignClientError(clientStatus);
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

/**
 * Paths under which files are served (the API docs' assets): a 4xx there (a path that leaves the
 * folder, a NUL in the name) is answered as what it is to the client, a file that does not exist.
 */
const FILE_PREFIXES = ["/docs/"];

function isFileRoute(request: FastifyRequest): boolean {
  const route = request.routeOptions?.url ?? "";
  return FILE_PREFIXES.some((prefix) => route.startsWith(prefix));
}

/** Installs the error and not-found handlers on the instance. */
export function installErrorHandlers(app: FastifyInstance, bodyLimit: number): void {
  app.setErrorHandler((err: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    const described = describeError(err, request.id, bodyLimit);
    const { status, body } =
      described.status >= 400 &&
      described.status < 500 &&
      !(err instanceof OculusError) &&
      isFileRoute(request)
        ? { status: 404, body: { error: { code: "not_found", message: "no such file" } } }
        : described;
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

/**
 * Fastify's `frameworkErrors`: errors raised before routing (a URL whose percent-encoding is bad, an
 * over-long path segment). Answered with the error shape and the request id, like any other.
 */
export function frameworkErrorHandler(err: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const { status, body } = describeError(err, request.id);
  if (status >= 500) request.log.error({ err }, "request failed");
  else request.log.info({ code: body.error.code, message: body.error.message }, "request refused");
  void reply.status(status).header("x-request-id", request.id).send(body);
}

/** Node's HTTP parser errors, by their code: what the client is told. */
function parserError(code: string | undefined): { status: number; code: string; message: string } {
  if (code === "ERR_HTTP_REQUEST_TIMEOUT") {
    return {
      status: 408,
      code: "request_timeout",
      message: "the request did not arrive in time; the connection is closed",
    };
  }
  if (code === "HPE_HEADER_OVERFLOW") {
    return {
      status: 431,
      code: "payload_too_large",
      message: "the request's headers are over the size limit",
    };
  }
  return { status: 400, code: "invalid_input", message: "the request is not valid HTTP" };
}

/**
 * Fastify's `clientErrorHandler`: requests Node's HTTP parser refuses before any route runs (a bad
 * header character, a malformed request line, headers too large, a request not received in time).
 * The answer has the error shape; the connection is then closed, as Node's own handler does.
 */
export function clientErrorHandler(this: FastifyInstance, err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === "ECONNRESET" || socket.destroyed) return;
  const { status, code, message } = parserError(err.code);
  // A timed-out request is what a slow or stalled client looks like: worth a line for the operator.
  const level = err.code === "ERR_HTTP_REQUEST_TIMEOUT" ? "info" : "debug";
  this.log[level](
    { err: err.message, code: err.code, remoteAddress: (socket as Partial<Socket>).remoteAddress },
    "client error: connection closed",
  );
  if (socket.writable) {
    const body = JSON.stringify({ error: { code, message } } satisfies ApiErrorBody);
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy(err);
}

/** Retry-After of the 503 a request gets while the server shuts down (another process takes it). */
const CLOSING_RETRY_AFTER_S = 1;

/**
 * While the server shuts down, a request that still arrives (on a kept-alive connection) gets 503
 * `unavailable` with the error shape, Retry-After and `Connection: close`, before auth or any
 * handler runs. (Fastify's own answer, `return503OnClosing`, has a shape of its own: it is turned off.)
 */
export function installClosingAnswer(app: FastifyInstance): void {
  let closing = false;
  app.addHook("preClose", async () => {
    closing = true;
  });
  app.addHook("onRequest", (request, reply, done) => {
    if (!closing) return done();
    // The path only: a query string may hold a credential.
    request.log.info({ method: request.method, path: request.url.split("?")[0] }, "refused: shutting down");
    void reply
      .status(503)
      .header("retry-after", String(CLOSING_RETRY_AFTER_S))
      .header("connection", "close")
      .send({
        error: {
          code: "unavailable",
          message: "the server is shutting down; retry (another instance may answer)",
        },
      } satisfies ApiErrorBody);
  });
}
