/**
 * Every error the queue raises on purpose, as a typed code. Callers (library, CLI, HTTP) switch on
 * `code`; the HTTP layer maps `httpStatus` directly. Nothing else in the code base invents codes.
 */
export type ErrorCode =
  | "invalid_input"
  | "payload_too_large"
  | "not_found"
  | "already_exists"
  | "invalid_state"
  | "stale_lease"
  | "config_invalid"
  | "store_unavailable"
  | "unauthorized"
  | "forbidden"
  | "rate_limited"
  | "resume_too_old"
  | "too_many_streams"
  | "request_timeout"
  | "unavailable";

export class OculusError extends Error {
  readonly code: ErrorCode;
  readonly httpStatus: number;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, httpStatus: number, message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.httpStatus = httpStatus;
    this.details = details;
  }
}

/** Bad input: names the field and the reason. Nothing was written. */
export class ValidationError extends OculusError {
  readonly field: string;
  readonly reason: string;
  constructor(field: string, reason: string) {
    super("invalid_input", 400, `${field}: ${reason}`, { field, reason });
    this.field = field;
    this.reason = reason;
  }
}

export class PayloadTooLargeError extends OculusError {
  constructor(field: string, size: number, limit: number) {
    super("payload_too_large", 413, `${field}: ${size} bytes is over the limit of ${limit} bytes`, {
      field,
      size,
      limit,
    });
  }
}

/**
 * HTTP: a body the server cannot read as sent (415): a Content-Encoding other than identity, a
 * charset other than UTF-8. Refused rather than read as something else. Nothing was written.
 */
export class UnsupportedMediaTypeError extends OculusError {
  constructor(field: string, reason: string) {
    super("invalid_input", 415, `${field}: ${reason}`, { field, reason });
  }
}

export class BuildNotFoundError extends OculusError {
  constructor(id: string) {
    super("not_found", 404, `build ${id} does not exist`, { id });
  }
}

export class ScheduleNotFoundError extends OculusError {
  constructor(name: string) {
    super("not_found", 404, `schedule ${JSON.stringify(name)} does not exist`, { name });
  }
}

/** A schedule of that name exists already (create refuses; update it instead). */
export class ScheduleExistsError extends OculusError {
  constructor(name: string) {
    super(
      "already_exists",
      409,
      `schedule ${JSON.stringify(name)} exists already: update it (PUT /v1/schedules/NAME, oculus schedule update) or remove it first`,
      { name },
    );
  }
}

/** The build exists but is not in a state that allows the operation (e.g. removing a running build). */
export class InvalidStateError extends OculusError {
  constructor(id: string, status: string, operation: string, allowed: readonly string[]) {
    super(
      "invalid_state",
      409,
      `cannot ${operation} build ${id}: it is ${status} (allowed only when ${allowed.join(" or ")})`,
      { id, status, operation, allowed },
    );
  }
}

/**
 * The caller's lease is not the build's current lease: the build was requeued or claimed again since
 * this caller claimed it. The caller must abandon the build; nothing was changed.
 */
export class StaleLeaseError extends OculusError {
  constructor(id: string, lease: number, currentLease: number, status: string) {
    super(
      "stale_lease",
      409,
      `lease ${lease} of build ${id} is stale (current lease ${currentLease}, status ${status})`,
      { id, lease, currentLease, status },
    );
  }
}

export class ConfigError extends OculusError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super("config_invalid", 1, message, details);
  }
}

/**
 * Why the record cannot take an operation right now (all of them pass by themselves: retry later):
 * - unreachable: no connection (down, restarting, the network, the connection was terminated);
 * - read_only: it takes no writes (a standby, during or after a failover);
 * - busy: no free connection or server resource (the pool's wait queue, too many clients, a lock);
 * - timeout: a statement did not finish in time (statement_timeout, or no answer at all);
 * - conflict: aborted because of another transaction (deadlock, serialization failure).
 */
export type StoreUnavailableReason = "unreachable" | "read_only" | "busy" | "timeout" | "conflict";

export const STORE_UNAVAILABLE_REASONS: readonly StoreUnavailableReason[] = [
  "unreachable",
  "read_only",
  "busy",
  "timeout",
  "conflict",
];

/**
 * PostgreSQL, the record, cannot take the operation right now; nothing was acknowledged. Retryable:
 * `retryAfterSeconds` hints when to try again (HTTP 503 + Retry-After).
 */
export class StoreUnavailableError extends OculusError {
  readonly reason: StoreUnavailableReason;
  readonly retryAfterSeconds: number;

  constructor(
    message: string,
    cause?: unknown,
    options: { reason?: StoreUnavailableReason; retryAfterSeconds?: number } = {},
  ) {
    const reason = options.reason ?? "unreachable";
    const retryAfterSeconds = options.retryAfterSeconds ?? 1;
    super("store_unavailable", 503, message, { reason, retryAfterSeconds });
    this.reason = reason;
    this.retryAfterSeconds = retryAfterSeconds;
    if (cause !== undefined) this.cause = cause;
  }
}

/** HTTP: no bearer token, or one that matches no configured token. */
export class UnauthorizedError extends OculusError {
  constructor(message: string) {
    super("unauthorized", 401, message);
  }
}

/** HTTP: a valid token without the scope the route needs. */
export class ForbiddenError extends OculusError {
  constructor(tokenName: string, scope: string) {
    super("forbidden", 403, `token "${tokenName}" lacks the scope "${scope}"`, { scope });
  }
}

/** HTTP: too many requests for this token (or address) in the current window. */
export class RateLimitedError extends OculusError {
  constructor(retryAfterSeconds: number) {
    super("rate_limited", 429, `rate limit exceeded: retry in ${retryAfterSeconds} s`, { retryAfterSeconds });
  }
}

/**
 * An event stream asked to resume further back than the server replays (its resume cap): resume from
 * `oldestEventId` or later (some events are then skipped), or start over without an id (a snapshot).
 */
export class ResumeTooOldError extends OculusError {
  readonly oldestEventId: string;
  constructor(lastEventId: string, oldestEventId: string, maxEvents: number) {
    super(
      "resume_too_old",
      410,
      `cannot resume after event ${lastEventId}: a stream replays at most ${maxEvents} events; ` +
        `resume after ${oldestEventId} or later, or reconnect without an event id for a snapshot`,
      { lastEventId, oldestEventId, maxEvents },
    );
    this.oldestEventId = oldestEventId;
  }
}

/** HTTP: this client address already holds as many open event streams as the server allows. */
export class TooManyStreamsError extends OculusError {
  constructor(limit: number, retryAfterSeconds: number) {
    super(
      "too_many_streams",
      429,
      `too many open event streams from this address (at most ${limit}); close one or retry in ${retryAfterSeconds} s`,
      { limit, retryAfterSeconds },
    );
  }
}
