/**
 * One small database contract over the two PostgreSQL engines we run on: a real server through `pg`
 * (a pool, plus a dedicated connection for LISTEN) and the embedded PGlite. The same SQL runs on both.
 * Every connection's search_path is the configured schema, so queries name tables unqualified.
 */

import { mkdirSync } from "node:fs";
import pg from "pg";
import { StoreUnavailableError } from "../core/errors.js";
import type { Logger } from "../core/logger.js";
import { DEFAULT_POSTGRES_SETTINGS, type PostgresSettings } from "../core/postgres-settings.js";
import { queries } from "../generated/assets.js";
import { lockDataDir } from "./data-dir-lock.js";
import { timestampParser } from "./timestamps.js";

export interface QueryResult<T> {
  rows: T[];
  rowCount: number;
}

export interface QueryOptions {
  /**
   * Gives up after this long, waiting for a connection included (a tighter bound than the configured
   * query timeout, for a caller that has something better to do: a claim puts its ids back). The
   * statement may still have committed on the server if only its answer was lost.
   */
  timeoutMs?: number;
}

export interface Queryable {
  query<T = Record<string, unknown>>(
    text: string,
    params?: unknown[],
    options?: QueryOptions,
  ): Promise<QueryResult<T>>;
}

export interface Db extends Queryable {
  readonly engine: "postgres" | "pglite";
  readonly schema: string;
  /** Several statements, no parameters (migrations). */
  exec(text: string): Promise<void>;
  /** `options.timeoutMs` bounds the whole transaction (connection, statements and commit). */
  transaction<T>(fn: (tx: Queryable) => Promise<T>, options?: QueryOptions): Promise<T>;
  /** Calls `onNotify` for each NOTIFY on `channel`; resolves to an unsubscribe function. */
  listen(channel: string, onNotify: (payload: string) => void): Promise<() => Promise<void>>;
  /**
   * When the database last answered a statement, with rows or with an error of its own (Date.now()
   * ms; 0: never). Tells a pool that is only busy from a server that is gone.
   */
  lastAnswerAt(): number;
  close(): Promise<void>;
}

/** How a connection to a PostgreSQL server is opened (see openPostgres). */
export interface PostgresOptions extends Partial<PostgresSettings> {
  /** Pooled connections (default 10). */
  poolSize?: number;
  /**
   * application_name of the connections (default `oculus`; the LISTEN connection adds `-listen`),
   * as pg_stat_activity shows them. One given in the URL wins.
   */
  applicationName?: string;
}

/**
 * TCP keepalive after this long idle: a connection whose peer vanished without a word (a failover, a
 * dropped NAT entry) is found and closed by the kernel instead of being trusted for ever.
 */
const KEEPALIVE_IDLE_MS = 10_000;
const DEFAULT_POOL_SIZE = 10;
/** How often the LISTEN connection checks that it still reaches a writable primary (PostgresListener). */
const LISTEN_CHECK_MS = 5000;

// int8 (bigint) columns hold sequence numbers and leases, all below 2^53: parse them as numbers.
pg.types.setTypeParser(20, (value) => Number(value));
// timestamptz: read by position (see timestamps.ts), by pg's own parser when the shape is unusual.
pg.types.setTypeParser(1184, timestampParser(pg.types.getTypeParser(1184)));

const quoteIdent = (name: string) => `"${name.replaceAll('"', '""')}"`;

/** A SQLSTATE on an error means the server itself answered (a constraint, a cancel), not the network. */
function answeredWithError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code);
}

/** Runs `fn` and notes the time when the database answered it. */
function answerClock() {
  let lastAnswerAt = 0;
  return {
    lastAnswerAt: () => lastAnswerAt,
    async timed<T>(fn: () => Promise<T>): Promise<T> {
      try {
        const result = await fn();
        lastAnswerAt = Date.now();
        return result;
      } catch (err) {
        if (answeredWithError(err)) lastAnswerAt = Date.now();
        throw err;
      }
    },
  };
}

/**
 * The query files (queries/*.sql) run as named prepared statements: parsed and planned once per
 * connection instead of on every call (a claim of 50 builds: 1.75 ms -> 1.47 ms on the benchmark
 * machine). Any other text runs unnamed.
 */
const STATEMENT_NAMES = new Map<string, string>(
  Object.entries(queries).map(([name, text]) => [text, `oculus_${name}`]),
);

function toQueryConfig(text: string, values: unknown[] | undefined) {
  const name = STATEMENT_NAMES.get(text);
  return name ? { name, text, values } : { text, values };
}

/**
 * Every connection to the server, pooled or dedicated, gets the same bounds: a connect timeout, TCP
 * keepalive, the server-side statement and idle-in-transaction timeouts (startup options, next to
 * search_path), and a client-side read timeout a little above the statement timeout, for a server
 * or a link that silently stopped answering.
 */
function connectionConfig(
  url: string,
  schema: string,
  settings: PostgresSettings,
  applicationName: string,
): pg.ClientConfig {
  const options = [`-c search_path=${schema}`];
  if (settings.pgStatementTimeoutMs > 0)
    options.push(`-c statement_timeout=${settings.pgStatementTimeoutMs}`);
  if (settings.pgIdleInTransactionTimeoutMs > 0) {
    options.push(`-c idle_in_transaction_session_timeout=${settings.pgIdleInTransactionTimeoutMs}`);
  }
  return {
    connectionString: url,
    options: options.join(" "),
    connectionTimeoutMillis: settings.pgConnectTimeoutMs,
    keepAlive: true,
    keepAliveInitialDelayMillis: KEEPALIVE_IDLE_MS,
    ...(settings.pgQueryTimeoutMs > 0 ? { query_timeout: settings.pgQueryTimeoutMs } : {}),
    // A fallback: an application_name in the URL (a test naming its worker processes) wins.
    fallback_application_name: applicationName,
  };
}

/** pg-pool's own wording, so that the store-error classifier treats both timeouts alike. */
const acquireTimeout = () => new Error("timeout exceeded when trying to connect");

export async function openPostgres(
  url: string,
  schema: string,
  logger: Logger,
  options: PostgresOptions = {},
): Promise<Db> {
  const settings = { ...DEFAULT_POSTGRES_SETTINGS, ...definedOnly(options) };
  const applicationName = options.applicationName ?? "oculus";
  const connection = connectionConfig(url, schema, settings, applicationName);
  const pool = new pg.Pool({ ...connection, max: options.poolSize ?? DEFAULT_POOL_SIZE });
  // A pool client that dies while idle must not crash the process; the next query reconnects.
  pool.on("error", (err) => logger.warn({ err: err.message }, "postgres idle connection error"));
  const listener = new PostgresListener(
    { ...connection, fallback_application_name: `${applicationName}-listen` },
    logger,
  );
  const clock = answerClock();
  const generations = new ConnectionGenerations(pool, () => {
    logger.warn(
      "PostgreSQL refused a write as read-only (a demoted primary, or a standby behind the address): dropping every connection opened before, so that the next ones reach the primary",
    );
    listener.reconnect();
  });

  /**
   * A pooled client with `onError` listening on it, within `timeoutMs` when given. Refused at once
   * when too many callers wait already: a queue that only grows while PostgreSQL is slow or away
   * helps nobody. The listener is attached inside pg-pool's callback, synchronously: a promise would
   * leave a gap of a few microtasks in which an ErrorResponse that arrived in the same packet as the
   * connection's ReadyForQuery (pg_terminate_backend right after connecting) meets no listener and
   * kills the process.
   */
  function checkout(timeoutMs: number | undefined, onError: (err: Error) => void): Promise<pg.PoolClient> {
    if (pool.waitingCount >= settings.pgMaxWaiting) {
      throw new StoreUnavailableError(
        `PostgreSQL is busy: ${pool.waitingCount} callers already wait for a connection`,
        undefined,
        { reason: "busy", retryAfterSeconds: 1 },
      );
    }
    return new Promise((resolve, reject) => {
      let gaveUp = false;
      const timer =
        timeoutMs === undefined
          ? undefined
          : setTimeout(
              () => {
                gaveUp = true;
                reject(acquireTimeout());
              },
              Math.max(1, timeoutMs),
            );
      const take = () =>
        pool.connect((err, client, release) => {
          if (err || !client) {
            clearTimeout(timer);
            if (!gaveUp) reject(err ?? new Error("no client"));
            return;
          }
          if (gaveUp) {
            release(); // given up on: the client goes straight back
            return;
          }
          if (generations.isStale(client)) {
            // Opened before the server behind the address was found read-only: close it, take another.
            release(new Error("connection opened before a read-only answer"));
            take();
            return;
          }
          clearTimeout(timer);
          client.on("error", onError);
          resolve(client);
        });
      take();
    });
  }

  /**
   * Runs `fn` on a checked-out client. While it is out, the client has an 'error' listener (`pg`
   * emits 'error' when the connection ends: a restart, pg_terminate_backend, an idle-in-transaction
   * timeout; without a listener that kills the process). A client that failed, or whose connection
   * reported an error, is released as broken, so the pool destroys it instead of handing it out.
   * `keep(err)` may keep a client after an error the server answered cleanly (a rolled-back
   * transaction).
   */
  async function withClient<T>(
    timeoutMs: number | undefined,
    fn: (client: pg.PoolClient, remainingMs: () => number | undefined) => Promise<T>,
    keep: (err: unknown) => Promise<boolean> = async () => false,
  ): Promise<T> {
    const deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
    const remainingMs = () => (deadline === undefined ? undefined : Math.max(1, deadline - Date.now()));
    let broken: Error | undefined;
    const onError = (err: Error) => {
      broken ??= err;
      logger.debug({ err: err.message }, "postgres connection error while checked out");
    };
    const client = await checkout(timeoutMs, onError);
    let failure: unknown;
    try {
      return await fn(client, remainingMs);
    } catch (err) {
      failure = err;
      throw err;
    } finally {
      if (failure !== undefined && isReadOnlyError(failure)) generations.readOnlyAnswer(client);
      const release =
        broken ??
        (failure !== undefined && !(await keep(failure)) ? failure : undefined) ??
        (generations.isStale(client) ? new Error("connection opened before a read-only answer") : undefined);
      client.removeListener("error", onError);
      client.release(release === undefined ? undefined : toError(release));
    }
  }

  const run = (client: pg.PoolClient, text: string, params: unknown[] | undefined, timeoutMs?: number) =>
    clock.timed(() =>
      client.query({
        ...toQueryConfig(text, params),
        ...(timeoutMs === undefined ? {} : { query_timeout: timeoutMs }),
      }),
    );

  return {
    engine: "postgres",
    schema,
    async query<T>(text: string, params?: unknown[], options?: QueryOptions) {
      const deadline = options?.timeoutMs === undefined ? undefined : Date.now() + options.timeoutMs;
      for (let attempt = 1; ; attempt++) {
        const left = deadline === undefined ? undefined : deadline - Date.now();
        try {
          const res = await withClient(
            left === undefined ? undefined : Math.max(1, left),
            (client, remaining) => run(client, text, params, remaining()),
            async (err) => isConflict(err),
          );
          return { rows: res.rows as T[], rowCount: res.rowCount ?? 0 };
        } catch (err) {
          // A statement of its own transaction that the server aborted for a deadlock or a
          // serialization failure changed nothing: running it again is safe, and spares the caller
          // a retry of its own (a claim would hand its ids back and report an error for nothing).
          const pause = CONFLICT_RETRY_BASE_MS * attempt * (0.5 + Math.random());
          const timeLeft = deadline === undefined || deadline - Date.now() > pause;
          if (!isConflict(err) || attempt >= CONFLICT_ATTEMPTS || !timeLeft) throw err;
          logger.debug(
            { err: (err as Error).message, attempt },
            "statement aborted by a conflict, running it again",
          );
          await new Promise((resolve) => setTimeout(resolve, pause));
        }
      }
    },
    async exec(text) {
      await withClient(undefined, (client) => clock.timed(() => client.query(text)));
    },
    async transaction(fn, options) {
      let rolledBack = false;
      return withClient(
        options?.timeoutMs,
        async (client, remaining) => {
          await run(client, "BEGIN", undefined, remaining());
          try {
            const result = await fn({
              async query<T>(text: string, params?: unknown[], queryOptions?: QueryOptions) {
                const bound = tighter(remaining(), queryOptions?.timeoutMs);
                const res = await run(client, text, params, bound);
                return { rows: res.rows as T[], rowCount: res.rowCount ?? 0 };
              },
            });
            await run(client, "COMMIT", undefined, remaining());
            return result;
          } catch (err) {
            // The server said no (a constraint, a conflict): roll back and keep the connection.
            // A lost or timed-out connection is dropped instead (the server rolls back on its own),
            // and so is one to a read-only server (see ConnectionGenerations).
            if (answeredWithError(err) && !isConnectionClass(err) && !isReadOnlyError(err)) {
              rolledBack = await run(client, "ROLLBACK", undefined, remaining()).then(
                () => true,
                () => false,
              );
            }
            throw err;
          }
        },
        async () => rolledBack,
      );
    },
    listen: (channel, onNotify) => listener.listen(channel, onNotify),
    lastAnswerAt: clock.lastAnswerAt,
    async close() {
      await listener.close();
      await pool.end();
    },
  };
}

function definedOnly<T extends object>(options: T): Partial<T> {
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function tighter(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return Math.min(a, b);
}

const toError = (err: unknown): Error => (err instanceof Error ? err : new Error(String(err)));

/** SQLSTATE classes 08 (connection) and 57P (shutdown, terminated): the session is gone. */
function isConnectionClass(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" && (code.startsWith("08") || code.startsWith("57P"));
}

/** How often a statement of its own is run when the server aborts it for a conflict (see query). */
const CONFLICT_ATTEMPTS = 3;
const CONFLICT_RETRY_BASE_MS = 5;

/** 40P01 deadlock_detected, 40001 serialization_failure: the server rolled the transaction back. */
function isConflict(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === "40P01" || code === "40001";
}

/** 25006 read_only_sql_transaction: the server behind the address is a standby or a demoted primary. */
function isReadOnlyError(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === "25006";
}

/**
 * After a failover the address (a virtual IP, a proxy, a DNS name) reaches the new primary, but a
 * connection opened before still reaches the old server: a demoted primary (or a standby) answers
 * every write on it with 25006 for as long as it lives, and its reads are stale. So the first
 * read-only answer starts a new generation: every connection of an older one is closed when it is
 * next released or checked out (pg-pool has no public way to empty itself; ending the pool and
 * opening a new one would strand the callers waiting on it), and new connections go to whatever the
 * address reaches now. While the server is truly read-only, each write then costs a new connection:
 * acceptable for the seconds a failover takes.
 */
class ConnectionGenerations {
  private current = 0;
  private readonly born = new WeakMap<pg.Client, number>();

  constructor(
    pool: pg.Pool,
    private readonly onNewGeneration: () => void,
  ) {
    pool.on("connect", (client) => this.born.set(client, this.current));
  }

  isStale(client: pg.Client): boolean {
    return (this.born.get(client) ?? this.current) < this.current;
  }

  /** `client` was answered 25006: connections of its generation (or older) are not trusted. */
  readOnlyAnswer(client: pg.Client): void {
    if (this.isStale(client)) return; // already counted
    this.current += 1;
    this.onNewGeneration();
  }
}

/**
 * The dedicated LISTEN connection. It reconnects by itself (with a pause) and re-issues every LISTEN,
 * so a PostgreSQL restart costs wake-ups for a moment, never for good (claimers also poll).
 */
class PostgresListener {
  private client: pg.Client | undefined;
  private connecting: Promise<pg.Client> | undefined;
  private readonly handlers = new Map<string, Set<(payload: string) => void>>();
  private closed = false;
  private checkTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly config: pg.ClientConfig,
    private readonly logger: Logger,
  ) {}

  /**
   * Every LISTEN_CHECK_MS the connection is asked whether it is read-only: one opened before a
   * failover may still reach the demoted server (where no NOTIFY arrives any more) in a process
   * whose pool never met a read-only answer (its idle connections simply timed out). It is then
   * reopened through the address. A check that fails reopens it too (a link that silently died).
   */
  private startChecks(): void {
    this.checkTimer ??= setInterval(() => void this.check(), LISTEN_CHECK_MS).unref();
  }

  private async check(): Promise<void> {
    const client = this.client;
    if (!client || this.closed) return;
    let why: string | undefined;
    try {
      const res = await client.query<{ ro: string }>("SELECT current_setting('transaction_read_only') AS ro");
      if (res.rows[0]?.ro === "on") why = "the server is read-only (a standby or a demoted primary)";
    } catch (err) {
      why = `check failed: ${(err as Error).message}`;
    }
    if (why && this.client === client) this.reopen(client, why);
  }

  async listen(channel: string, onNotify: (payload: string) => void): Promise<() => Promise<void>> {
    let set = this.handlers.get(channel);
    if (!set) {
      set = new Set();
      this.handlers.set(channel, set);
      const client = await this.connect();
      await client.query(`LISTEN ${quoteIdent(channel)}`);
    }
    set.add(onNotify);
    return async () => {
      set.delete(onNotify);
    };
  }

  private connect(): Promise<pg.Client> {
    if (this.client) return Promise.resolve(this.client);
    this.connecting ??= (async () => {
      const client = new pg.Client(this.config);
      client.on("notification", (msg) => {
        for (const handler of this.handlers.get(msg.channel) ?? []) handler(msg.payload ?? "");
      });
      client.on("error", (err) => this.onLost(client, err));
      client.on("end", () => this.onLost(client, new Error("connection ended")));
      try {
        await client.connect();
      } finally {
        this.connecting = undefined;
      }
      try {
        for (const channel of this.handlers.keys()) await client.query(`LISTEN ${quoteIdent(channel)}`);
      } catch (err) {
        // A standby refuses LISTEN (25006): no half-set-up connection is kept.
        client.removeAllListeners("end");
        await client.end().catch(() => undefined);
        throw err;
      }
      this.client = client;
      this.startChecks();
      return client;
    })();
    return this.connecting;
  }

  /**
   * Closes the connection (it may reach a demoted server, where no NOTIFY arrives any more); the
   * reconnection re-issues every LISTEN through the address.
   */
  reconnect(): void {
    if (this.client) this.reopen(this.client, "a pooled connection was answered read-only");
  }

  private reopen(client: pg.Client, why: string): void {
    this.onLost(client, new Error(`reopening: ${why}`));
    client.end().catch(() => undefined);
  }

  private onLost(client: pg.Client, err: Error): void {
    if (this.client !== client) return;
    this.client = undefined;
    if (this.closed) return;
    this.logger.warn({ err: err.message }, "postgres LISTEN connection lost; reconnecting");
    const retry = () => {
      if (this.closed || this.client) return;
      this.connect().catch(() => setTimeout(retry, 1000).unref());
    };
    setTimeout(retry, 200).unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.checkTimer);
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => undefined);
  }
}

export async function openPglite(dataDir: string, schema: string): Promise<Db> {
  const { PGlite } = await import("@electric-sql/pglite");
  mkdirSync(dataDir, { recursive: true });
  const unlock = lockDataDir(dataDir);
  const db = await PGlite.create(dataDir).catch((err: unknown) => {
    unlock();
    throw err;
  });
  await db.exec(
    `CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}; SET search_path TO ${quoteIdent(schema)}`,
  );
  const toResult = <T>(res: { rows: unknown[]; affectedRows?: number }): QueryResult<T> => ({
    rows: res.rows as T[],
    rowCount: res.affectedRows ?? res.rows.length,
  });
  const clock = answerClock();
  return {
    engine: "pglite",
    schema,
    async query<T>(text: string, params?: unknown[]) {
      return toResult<T>(
        await clock.timed(() => db.query(text, params, { parsers: { 20: (v: string) => Number(v) } })),
      );
    },
    async exec(text) {
      await clock.timed(() => db.exec(text));
    },
    async transaction(fn) {
      return clock.timed(() =>
        db.transaction(async (tx) =>
          fn({
            async query<T>(text: string, params?: unknown[]) {
              return toResult<T>(await tx.query(text, params, { parsers: { 20: (v: string) => Number(v) } }));
            },
          }),
        ),
      );
    },
    lastAnswerAt: clock.lastAnswerAt,
    async listen(channel, onNotify) {
      const unsubscribe = await db.listen(channel, onNotify);
      return async () => unsubscribe();
    },
    async close() {
      await db.close();
      unlock();
    },
  };
}
