/**
 * The doctor's checks beyond Redis persistence: is PostgreSQL (the record) reachable and migrated,
 * and does the Redis index agree with it. The same check shapes as persistence-checks.ts.
 */
import type { Redis } from "ioredis";
import pg from "pg";
import { redactUrl } from "../core/config.js";
import { poolKeys, redisKeys } from "../redis/keys.js";
import type { PersistenceCheck } from "./persistence-checks.js";

export interface PostgresFacts {
  checks: PersistenceCheck[];
  /** Queued builds in the schema now (undefined when unreachable or not migrated). */
  queued: number | undefined;
}

/** Connects to `databaseUrl`, reads the server version and the queued builds of `schema`. */
export async function checkPostgres(databaseUrl: string, schema: string): Promise<PostgresFacts> {
  const client = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: 5000 });
  client.on("error", () => undefined);
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => undefined);
    const check: PersistenceCheck = {
      name: "postgres",
      status: "fail",
      value: redactUrl(databaseUrl),
      message: `cannot connect: ${(err as Error).message}; PostgreSQL is the record, nothing is accepted without it`,
      fix: "check DATABASE_URL (--database-url) and that the server is up",
    };
    return { checks: [check], queued: undefined };
  }
  try {
    // SHOW answers in a column named after the setting (server_version), not an alias.
    const version =
      (await client.query<{ server_version: string }>("SHOW server_version")).rows[0]?.server_version ??
      "unknown";
    const reachable: PersistenceCheck = {
      name: "postgres",
      status: "pass",
      value: version,
      message: `reachable (${redactUrl(databaseUrl)})`,
      fix: null,
    };
    const queued = await queuedCount(client, schema);
    return { checks: [reachable, schemaCheck(schema, queued)], queued };
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function queuedCount(client: pg.Client, schema: string): Promise<number | undefined> {
  const table = (
    await client.query<{ t: string | null }>("SELECT to_regclass($1)::text AS t", [`"${schema}".builds`])
  ).rows[0]?.t;
  if (!table) return undefined;
  const res = await client.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM "${schema}".builds WHERE status = 'queued'`,
  );
  return res.rows[0]?.n ?? 0;
}

function schemaCheck(schema: string, queued: number | undefined): PersistenceCheck {
  if (queued === undefined) {
    return {
      name: "postgres_schema",
      status: "warn",
      value: schema,
      message: `schema ${schema} has no builds table yet`,
      fix: "run `oculus migrate` (every command that opens the queue also does it)",
    };
  }
  return {
    name: "postgres_schema",
    status: "pass",
    value: `${schema}: migrated, ${queued} queued`,
    message: `schema ${schema} is migrated; ${queued} builds are queued`,
    fix: null,
  };
}

/**
 * The index marker of `prefix` (its absence: this Redis is new or lost its data) and, given the queued
 * count from PostgreSQL, whether the index holds as many ids.
 */
export async function checkQueueIndex(
  redis: Redis,
  prefix: string,
  queuedInPostgres: number | undefined,
): Promise<PersistenceCheck[]> {
  const keys = redisKeys(prefix);
  // Every pool's sets (routing): the default pool's plus those of the pools in the registry.
  const pools = ["default", ...(await redis.hkeys(keys.pools)).filter((p) => p !== "default")];
  const [marker, ...sizes] = await Promise.all([
    redis.exists(keys.indexMarker),
    ...pools.flatMap((pool) => {
      const k = poolKeys(keys, pool);
      return [redis.zcard(k.queue), redis.zcard(k.delayed)];
    }),
  ]);
  const inIndex = sizes.reduce((n, size) => n + size, 0);
  const checks: PersistenceCheck[] = [
    marker === 1
      ? { name: "index_marker", status: "pass", value: keys.indexMarker, message: "present", fix: null }
      : {
          name: "index_marker",
          status: "warn",
          value: keys.indexMarker,
          message:
            "missing: this Redis is new or has lost its data (a restart without its AOF, FLUSHALL); " +
            "a running queue rebuilds the index from PostgreSQL at its next check",
          fix: "`oculus reconcile` rebuilds it now",
        },
  ];
  if (queuedInPostgres !== undefined) checks.push(indexSizeCheck(inIndex, queuedInPostgres));
  return checks;
}

function indexSizeCheck(inIndex: number, queued: number): PersistenceCheck {
  const value = `${inIndex} in Redis, ${queued} queued in PostgreSQL`;
  if (inIndex === queued) {
    return {
      name: "index_size",
      status: "pass",
      value,
      message: "the index holds every queued build",
      fix: null,
    };
  }
  return {
    name: "index_size",
    status: "warn",
    value,
    message:
      "the index and the record differ (claims in flight make brief differences; a running queue " +
      "reconciles lasting ones within two reconcile intervals)",
    fix: "`oculus reconcile` makes them equal now",
  };
}
