/**
 * Configuration, validated once at start-up from flags and the environment (flags win). A bad value
 * stops start-up with a message that names the flag, the variable and the reason.
 */
import path from "node:path";
import { z } from "zod";
import { ConfigError } from "./errors.js";

export interface Config {
  /** PostgreSQL URL; undefined means the embedded PGlite store under `dataDir`. */
  databaseUrl: string | undefined;
  /** Redis URL; undefined means no Redis (PostgreSQL path only). */
  redisUrl: string | undefined;
  /** Redis key prefix (`oculus` gives `oculus:build_queue`). Use `{oculus}` on Redis Cluster. */
  prefix: string;
  /** PostgreSQL schema holding the tables. */
  schema: string;
  /** Where the embedded store keeps its data. */
  dataDir: string;
  /** How often the reconciler compares the Redis index with PostgreSQL. */
  reconcileIntervalMs: number;
}

/** One setting: its flag, its environment variable, its schema. */
const SETTINGS = {
  databaseUrl: {
    flag: "--database-url",
    env: "DATABASE_URL",
    schema: z
      .string()
      .regex(/^postgres(ql)?:\/\/.+/, "must be a postgres:// or postgresql:// URL")
      .optional(),
  },
  redisUrl: {
    flag: "--redis-url",
    env: "REDIS_URL",
    schema: z
      .string()
      .regex(/^rediss?:\/\/.+/, "must be a redis:// or rediss:// URL")
      .optional(),
  },
  prefix: {
    flag: "--prefix",
    env: "OCULUS_PREFIX",
    schema: z
      .string()
      .regex(/^[A-Za-z0-9_.{}-]{1,64}$/, "must be 1-64 characters of letters, digits, _ . - { }")
      .default("oculus"),
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
} as const;

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
    const parsed = (setting.schema as z.ZodType).safeParse(raw);
    if (!parsed.success) {
      const source = fromFlag !== undefined ? setting.flag : setting.env;
      const reason = parsed.error.issues[0]?.message ?? "is invalid";
      throw new ConfigError(`invalid ${source} (${setting.flag} / ${setting.env}): ${reason}`, {
        setting: key,
        source,
      });
    }
    out[key] = parsed.data;
  }
  const config = out as unknown as Config;
  config.dataDir = path.resolve(config.dataDir);
  return config;
}

/** A URL with its password replaced, safe to print and log. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    return parsed.toString();
  } catch {
    return "(unparseable URL)";
  }
}
