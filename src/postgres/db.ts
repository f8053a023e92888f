/**
 * One small database contract over the two PostgreSQL engines we run on: a real server through `pg`
 * (a pool, plus a dedicated connection for LISTEN) and the embedded PGlite. The same SQL runs on both.
 * Every connection's search_path is the configured schema, so queries name tables unqualified.
 */

import { mkdirSync } from "node:fs";
import pg from "pg";
import type { Logger } from "../core/logger.js";
import { queries } from "../generated/assets.js";
import { lockDataDir } from "./data-dir-lock.js";

export interface QueryResult<T> {
  rows: T[];
  rowCount: number;
}

export interface Queryable {
  query<T = Record<string, unknown>>(text: string, params?: unknown[]): Promise<QueryResult<T>>;
}

export interface Db extends Queryable {
  readonly engine: "postgres" | "pglite";
  readonly schema: string;
  /** Several statements, no parameters (migrations). */
  exec(text: string): Promise<void>;
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  /** Calls `onNotify` for each NOTIFY on `channel`; resolves to an unsubscribe function. */
  listen(channel: string, onNotify: (payload: string) => void): Promise<() => Promise<void>>;
  /**
   * When the database last answered a statement, with rows or with an error of its own (Date.now()
   * ms; 0: never). Tells a pool that is only busy from a server that is gone.
   */
  lastAnswerAt(): number;
  close(): Promise<void>;
}

// int8 (bigint) columns hold sequence numbers and leases, all below 2^53: parse them as numbers.
pg.types.setTypeParser(20, (value) => Number(value));

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

export async function openPostgres(url: string, schema: string, logger: Logger, poolSize = 10): Promise<Db> {
  const options = `-c search_path=${schema}`;
  const pool = new pg.Pool({ connectionString: url, max: poolSize, options });
  // A pool client that dies while idle must not crash the process; the next query reconnects.
  pool.on("error", (err) => logger.warn({ err: err.message }, "postgres idle connection error"));
  const listener = new PostgresListener(url, options, logger);
  const clock = answerClock();

  return {
    engine: "postgres",
    schema,
    async query<T>(text: string, params?: unknown[]) {
      const res = await clock.timed(() => pool.query(toQueryConfig(text, params)));
      return { rows: res.rows as T[], rowCount: res.rowCount ?? 0 };
    },
    async exec(text) {
      await clock.timed(() => pool.query(text));
    },
    async transaction(fn) {
      const client = await pool.connect();
      try {
        await client.query("BEGIN");
        const result = await fn({
          async query<T>(text: string, params?: unknown[]) {
            const res = await clock.timed(() => client.query(toQueryConfig(text, params)));
            return { rows: res.rows as T[], rowCount: res.rowCount ?? 0 };
          },
        });
        await clock.timed(() => client.query("COMMIT"));
        return result;
      } catch (err) {
        await client.query("ROLLBACK").catch(() => undefined);
        throw err;
      } finally {
        client.release();
      }
    },
    listen: (channel, onNotify) => listener.listen(channel, onNotify),
    lastAnswerAt: clock.lastAnswerAt,
    async close() {
      await listener.close();
      await pool.end();
    },
  };
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

  constructor(
    private readonly url: string,
    private readonly options: string,
    private readonly logger: Logger,
  ) {}

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
      const client = new pg.Client({ connectionString: this.url, options: this.options });
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
      for (const channel of this.handlers.keys()) await client.query(`LISTEN ${quoteIdent(channel)}`);
      this.client = client;
      return client;
    })();
    return this.connecting;
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
