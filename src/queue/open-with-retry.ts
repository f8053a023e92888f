/**
 * Opening the queue (connect, migrate, start) when PostgreSQL may be away: a service started by a
 * supervisor (systemd, Docker, Kubernetes) before its database, or while the database restarts or
 * fails over, must wait for it rather than exit: a supervisor that gives up after a few quick
 * restarts would leave the service down after PostgreSQL returns (issue 16).
 *
 * `openQueueWaiting` (used by `oculus up` and `oculus worker`) retries for as long as PostgreSQL is
 * unreachable or refuses for a passing reason, and fails at once on a mistake in the configuration
 * (bad password, no such database, no permission on the schema): waiting cannot fix those.
 * `openQueueOnce` (the one-shot commands: migrate, reconcile, prune) tries once and says which of the
 * two it was.
 *
 * The classification is local to opening on purpose: it adds the refusals that only matter here
 * (25006, a standby refusing the migration; 53300, too many connections; a host name that does not
 * resolve yet, as in Docker Compose before the database's container exists) to the request path's
 * "unreachable" (store-errors.ts).
 */
import { redactUrl } from "../core/config.js";
import { ConfigError, OculusError } from "../core/errors.js";
import { BuildQueue, type BuildQueueOptions } from "./build-queue.js";
import { isTransientStoreError } from "./store-errors.js";

/** unreachable: wait and retry. misconfigured: stop, exit 2. other: stop (a bug, or a newer schema). */
export type OpenFailure = "unreachable" | "misconfigured" | "other";

/**
 * SQLSTATEs of a mistake in the configuration: authentication (class 28: bad password, unknown
 * role, pg_hba), no such database (3D000), no such schema (3F000), no permission (42501).
 */
function misconfiguredState(code: string): boolean {
  return code.startsWith("28") || code === "3D000" || code === "3F000" || code === "42501";
}

/** The error and its causes, outermost first (StoreUnavailableError wraps the driver's error). */
function chain(err: unknown): unknown[] {
  const out: unknown[] = [];
  for (let e = err; e !== undefined && out.length < 5; e = (e as { cause?: unknown }).cause) {
    out.push(e);
    if (typeof e !== "object" || e === null) break;
  }
  return out;
}

function codeOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

export function classifyOpenError(err: unknown): OpenFailure {
  const errors = chain(err);
  // The innermost error with a code decides whether the configuration is wrong (a wrapper may say 503).
  for (const e of [...errors].reverse()) {
    const code = codeOf(e);
    if (code === undefined) continue;
    if (misconfiguredState(code)) return "misconfigured";
    // ENOENT on connect: the Unix socket of a server that is not running (yet).
    if (code === "ENOENT" && (e as { syscall?: unknown }).syscall === "connect") return "unreachable";
  }
  // Away or transient by the queue's one classifier (store-errors.ts): wait and try again.
  if (errors.some((e) => isTransientStoreError(e))) return "unreachable";
  if (err instanceof OculusError && err.httpStatus === 503) return "unreachable";
  return "other";
}

/** The driver's own words, without the wrapper's prefix; an AggregateError (IPv4 and IPv6) in one line. */
export function reasonOf(err: unknown): string {
  const inner = chain(err).reverse();
  const e = (inner.find((x) => codeOf(x) !== undefined) ?? err) as Error & { errors?: Error[] };
  const message =
    e.message || (Array.isArray(e.errors) ? e.errors.map((x) => x.message).join("; ") : String(e));
  const code = codeOf(e);
  const withCode = code && !message.includes(code) ? `${message} (${code})` : message;
  return code === "25006" ? `${withCode}: the server is read-only (a standby?)` : withCode;
}

/** Where the queue's record is, for messages: the redacted URL, or the embedded store's directory. */
export function describeStore(options: BuildQueueOptions): string {
  return options.databaseUrl
    ? `PostgreSQL at ${redactUrl(options.databaseUrl)}`
    : `the embedded PostgreSQL (PGlite) in ${options.dataDir ?? ".oculus"}`;
}

/** A bad configuration as the CLI reports it (exit 2), naming the setting to check. */
function misconfigured(options: BuildQueueOptions, err: unknown): ConfigError {
  return new ConfigError(
    `cannot open the queue on ${describeStore(options)}: ${reasonOf(err)}; check --database-url / DATABASE_URL and --schema / OCULUS_SCHEMA`,
  );
}

/** Thrown by openQueueWaiting when its signal aborts the wait (SIGTERM, SIGINT). */
export class OpenAborted extends Error {
  constructor() {
    super("stopped while waiting for PostgreSQL");
    this.name = "OpenAborted";
  }
}

export interface RetryPolicy {
  /** The first pause after a failed attempt; each next one doubles (default 50 ms). */
  initialDelayMs: number;
  /**
   * The longest pause (default 250 ms): once PostgreSQL returns, the queue opens within this much
   * plus the open itself (150-250 ms on the test machine: connect, migrate, LISTEN), whatever the
   * outage's length, which keeps the target of under 1 s. A refused connection costs next to
   * nothing (a server that is starting forks one backend to refuse it): 4 attempts a second is cheap.
   */
  maxDelayMs: number;
  /** After the first failure, a repeated one is printed at most this often (default 10 s). */
  reportEveryMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { initialDelayMs: 50, maxDelayMs: 250, reportEveryMs: 10_000 };

export interface WaitOptions {
  /** Aborting it ends the wait at once with OpenAborted (an attempt in flight is closed when it ends). */
  signal?: AbortSignal;
  /** One line per reported failure (and one when the store answers after failures). */
  report: (line: string) => void;
  retry?: Partial<RetryPolicy>;
}

/**
 * Opens the queue, waiting for PostgreSQL as long as it is unreachable (forever: that is what a
 * supervisor wants). A misconfiguration throws ConfigError at once; other errors are rethrown.
 */
export function openQueueWaiting(options: BuildQueueOptions, wait: WaitOptions): Promise<BuildQueue> {
  return retryOpen(() => BuildQueue.open(options), describeStore(options), wait).catch((err: unknown) => {
    throw classifyOpenError(err) === "misconfigured" ? misconfigured(options, err) : err;
  });
}

/** Opens the queue once (the one-shot commands): a clear message for an unreachable or misconfigured store. */
export async function openQueueOnce(options: BuildQueueOptions): Promise<BuildQueue> {
  return BuildQueue.open(options).catch((err: unknown) => {
    throw explainOpenFailure(options, err);
  });
}

/** The error a one-shot command reports when it cannot reach or use the store. */
export function explainOpenFailure(options: BuildQueueOptions, err: unknown): unknown {
  const failure = classifyOpenError(err);
  if (failure === "misconfigured") return misconfigured(options, err);
  if (failure === "unreachable") {
    return new OculusError(
      "store_unavailable",
      1,
      `${describeStore(options)} is unreachable: ${reasonOf(err)} (this command does not wait; oculus up and oculus worker do)`,
    );
  }
  return err;
}

/**
 * Calls `open` until it succeeds, pausing between attempts while the failure is "unreachable".
 * Generic over what is opened so that the policy can be tested without a queue.
 */
export async function retryOpen<T extends { close(): Promise<void> }>(
  open: () => Promise<T>,
  what: string,
  wait: WaitOptions,
): Promise<T> {
  const policy = { ...DEFAULT_RETRY, ...wait.retry };
  const started = Date.now();
  let attempt = 0;
  let delayMs = policy.initialDelayMs;
  let lastReason: string | undefined;
  let lastReportAt = 0;
  for (;;) {
    attempt += 1;
    let opened: T;
    try {
      opened = await abortable(open(), wait.signal);
    } catch (err) {
      if (err instanceof OpenAborted || classifyOpenError(err) !== "unreachable") throw err;
      const reason = reasonOf(err);
      const now = Date.now();
      if (reason !== lastReason || now - lastReportAt >= policy.reportEveryMs) {
        const waited = attempt > 1 ? `, waiting ${seconds(now - started)} so far` : "";
        wait.report(
          `waiting for ${what}: ${reason} (attempt ${attempt}${waited}); next try in ${seconds(delayMs)}`,
        );
        lastReason = reason;
        lastReportAt = now;
      }
      await sleep(delayMs, wait.signal);
      delayMs = Math.min(policy.maxDelayMs, delayMs * 2);
      continue;
    }
    if (attempt > 1) {
      wait.report(`${what} answers: queue open after ${seconds(Date.now() - started)} (${attempt} attempts)`);
    }
    return opened;
  }
}

function seconds(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
}

/**
 * `attempt`, or OpenAborted as soon as the signal aborts; an attempt that still opens afterwards is
 * closed (a hung connect must not hold a shutdown).
 */
function abortable<T extends { close(): Promise<void> }>(
  attempt: Promise<T>,
  signal?: AbortSignal,
): Promise<T> {
  if (!signal) return attempt;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      reject(new OpenAborted());
      attempt.then((opened) => opened.close()).catch(() => undefined);
    };
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    attempt.then(
      (opened) => {
        signal.removeEventListener("abort", onAbort);
        resolve(opened);
      },
      (err: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(err);
      },
    );
  });
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(new OpenAborted());
    const onAbort = () => {
      clearTimeout(timer);
      reject(new OpenAborted());
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
