/**
 * Configuration, validated once at start-up from flags and the environment (flags win). A bad value
 * stops start-up with a message that names the flag, the variable and the reason.
 */
import path from "node:path";
import { z } from "zod";
import { ConfigError } from "./errors.js";
import {
  DEFAULT_POSTGRES_SETTINGS as PG,
  type PostgresSettings,
  QUERY_TIMEOUT_MARGIN_MS,
} from "./postgres-settings.js";
import { checkPrefixForTopology, defaultPrefix, parseRedisUrl, RedisUrlError } from "./redis-url.js";

export { type PostgresSettings, postgresSettingsOf } from "./postgres-settings.js";

export interface Config extends PostgresSettings {
  /** PostgreSQL URL; undefined means the embedded PGlite store under `dataDir`. */
  databaseUrl: string | undefined;
  /** Redis URL; undefined means no Redis (PostgreSQL path only). */
  redisUrl: string | undefined;
  /** Redis key prefix (`oculus` gives `oculus:build_queue`); on Redis Cluster it carries a hash tag
   * (default `{oculus}`). */
  prefix: string;
  /** PostgreSQL schema holding the tables. */
  schema: string;
  /** Where the embedded store keeps its data. */
  dataDir: string;
  /** How often the reconciler compares the Redis index with PostgreSQL. */
  reconcileIntervalMs: number;
}

/** Milliseconds from `min` to `max`; 0 allowed (meaning "none") when `offAllowed`. */
const millis = (min: number, max: number, fallback: number, offAllowed = false) =>
  z.coerce
    .number()
    .int("must be an integer number of milliseconds")
    .refine((v) => (offAllowed && v === 0) || v >= min, {
      message: `must be at least ${min} ms${offAllowed ? " (or 0: none)" : ""}`,
    })
    .max(max, `must be at most ${max} ms`)
    .default(fallback);

const HOUR_MS = 3_600_000;

/** One setting: its flag, its environment variable, its schema. */
const SETTINGS = {
  databaseUrl: {
    flag: "--database-url",
    env: "DATABASE_URL",
    schema: z
      .string()
      .regex(/^postgres(ql)?:\/\/.+/, "must be a postgres:// or postgresql:// URL")
      // libpq's host1:port1,host2:port2 form: node-postgres connects to one host only.
      .refine((url) => !/^postgres(ql)?:\/\/([^/?#]*@)?[^/?#@]*,/.test(url), {
        message:
          "names several hosts, which node-postgres does not support: put a virtual IP or a proxy in front of the servers and give its address (docs/operations.md, PostgreSQL failover)",
      })
      .optional(),
  },
  redisUrl: {
    flag: "--redis-url",
    env: "REDIS_URL",
    // One of the three topologies (src/core/redis-url.ts); the reason names what is wrong.
    schema: z
      .string()
      .superRefine((url, ctx) => {
        try {
          parseRedisUrl(url);
        } catch (err) {
          ctx.addIssue({ code: "custom", message: err instanceof RedisUrlError ? err.reason : String(err) });
        }
      })
      .optional(),
  },
  prefix: {
    flag: "--prefix",
    env: "OCULUS_PREFIX",
    schema: z
      .string()
      .regex(/^[A-Za-z0-9_.{}-]{1,64}$/, "must be 1-64 characters of letters, digits, _ . - { }")
      // Unset: `oculus`, or `{oculus}` on a Redis Cluster (see checkRedisPrefix).
      .optional(),
  },
  schema: {
    flag: "--schema",
    env: "OCULUS_SCHEMA",
    schema: z
      .string()
      .regex(/^[a-z_][a-z0-9_]{0,62}$/, "must be a lower-case SQL identifier (letters, digits, _)")
      .default("oculus"),
  },
  dataDir: {
    flag: "--data-dir",
    env: "OCULUS_DATA_DIR",
    schema: z.string().min(1, "must not be empty").default(".oculus"),
  },
  reconcileIntervalMs: {
    flag: "--reconcile-interval",
    env: "OCULUS_RECONCILE_INTERVAL_MS",
    schema: z.coerce
      .number()
      .int("must be an integer number of milliseconds")
      .min(100, "must be at least 100 ms")
      .max(3_600_000, "must be at most one hour")
      .default(10_000),
  },
  pgConnectTimeoutMs: {
    env: "OCULUS_PG_CONNECT_TIMEOUT_MS",
    schema: millis(100, 10 * 60_000, PG.pgConnectTimeoutMs),
  },
  pgStatementTimeoutMs: {
    env: "OCULUS_PG_STATEMENT_TIMEOUT_MS",
    schema: millis(100, 24 * HOUR_MS, PG.pgStatementTimeoutMs, true),
  },
  pgIdleInTransactionTimeoutMs: {
    env: "OCULUS_PG_IDLE_IN_TRANSACTION_TIMEOUT_MS",
    schema: millis(100, 24 * HOUR_MS, PG.pgIdleInTransactionTimeoutMs, true),
  },
  pgQueryTimeoutMs: {
    env: "OCULUS_PG_QUERY_TIMEOUT_MS",
    // Unset: derived from the statement timeout (see loadConfig).
    schema: millis(100, 24 * HOUR_MS, -1, true),
  },
  pgMaxWaiting: {
    env: "OCULUS_PG_MAX_WAITING",
    schema: z.coerce
      .number()
      .int("must be an integer")
      .min(1, "must be at least 1")
      .max(1_000_000, "must be at most 1000000")
      .default(PG.pgMaxWaiting),
  },
  pgClaimTimeoutMs: {
    env: "OCULUS_PG_CLAIM_TIMEOUT_MS",
    schema: millis(100, 10 * 60_000, PG.pgClaimTimeoutMs),
  },
} as const satisfies Record<string, { flag?: string; env: string; schema: z.ZodType }>;

/** The settings a BuildQueueOptions (a Partial<Config>) carries, for loadConfig. */
export function configInput(options: Partial<Record<keyof typeof SETTINGS, unknown>>): ConfigInput {
  const input: ConfigInput = {};
  for (const key of Object.keys(SETTINGS) as (keyof typeof SETTINGS)[]) {
    const value = options[key];
    if (typeof value === "string" || typeof value === "number") input[key] = value;
  }
  return input;
}

export type ConfigInput = Partial<Record<keyof typeof SETTINGS, string | number | undefined>>;

/**
 * Builds the configuration. `flags` are what the command line gave (undefined when absent); `env` is
 * the process environment. An empty environment variable counts as unset.
 */
export function loadConfig(flags: ConfigInput = {}, env: NodeJS.ProcessEnv = process.env): Config {
  const out: Record<string, unknown> = {};
  for (const [key, setting] of Object.entries(SETTINGS)) {
    const fromFlag = flags[key as keyof typeof SETTINGS];
    const fromEnv = env[setting.env] === "" ? undefined : env[setting.env];
    const raw = fromFlag ?? fromEnv;
    const flag: string | undefined = "flag" in setting ? setting.flag : undefined;
    const parsed = (setting.schema as z.ZodType).safeParse(raw);
    if (!parsed.success) {
      const source = fromFlag !== undefined ? (flag ?? key) : setting.env;
      const reason = parsed.error.issues[0]?.message ?? "is invalid";
      const names = flag ? `${flag} / ${setting.env}` : setting.env;
      throw new ConfigError(`invalid ${source} (${names}): ${reason}`, { setting: key, source });
    }
    out[key] = parsed.data;
  }
  const config = out as unknown as Config;
  config.dataDir = path.resolve(config.dataDir);
  checkPostgresTimeouts(config);
  checkRedisPrefix(config);
  return config;
}

/** The client gives up a little after the server would have cancelled, never before. */
function checkPostgresTimeouts(config: Config): void {
  const statement = config.pgStatementTimeoutMs;
  if (config.pgQueryTimeoutMs === -1) {
    config.pgQueryTimeoutMs = statement === 0 ? 0 : statement + QUERY_TIMEOUT_MARGIN_MS;
    return;
  }
  const query = config.pgQueryTimeoutMs;
  if (query !== 0 && statement !== 0 && query <= statement) {
    throw new ConfigError(
      `invalid OCULUS_PG_QUERY_TIMEOUT_MS: ${query} ms must be above OCULUS_PG_STATEMENT_TIMEOUT_MS (${statement} ms), so that the server cancels a slow statement before the client gives up on the connection`,
      { setting: "pgQueryTimeoutMs" },
    );
  }
}

/** The default prefix per topology; on a Cluster a prefix without a hash tag is refused with the fix. */
function checkRedisPrefix(config: Config): void {
  const topology = config.redisUrl ? parseRedisUrl(config.redisUrl).topology : undefined;
  config.prefix ??= defaultPrefix(topology);
  checkPrefixForTopology(config.prefix, topology);
}

/** A URL with its password replaced, safe to print and log. */
export function redactUrl(url: string): string {
  // A sentinel's own password may come as a query parameter (src/core/redis-url.ts).
  const hideQuery = (text: string) => text.replace(/(sentinelPassword=)[^&#]*/gi, "$1***");
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    return hideQuery(parsed.toString());
  } catch {
    // Several hosts (redis-sentinel://, redis-cluster://) make no WHATWG URL: redact as text.
    const userinfo = /^([a-z][a-z0-9+.-]*:\/\/[^:@/?#]*:)[^@/?#]+@/i;
    if (userinfo.test(url)) return hideQuery(url.replace(userinfo, "$1***@"));
    return /^[a-z][a-z0-9+.-]*:\/\/[^@]*$/i.test(url) ? hideQuery(url) : "(unparseable URL)";
  }
}
