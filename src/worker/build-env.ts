/**
 * What a build command's environment holds. A build runs code chosen by whoever submits builds, and
 * its output is readable with a `read` token: it must not see the queue's own secrets (the admin
 * token, the PostgreSQL and Redis URLs with their passwords). So a build does not inherit the
 * worker's environment: it gets the OCULUS_BUILD_* variables (command-runner.ts), a fixed allowlist
 * of harmless process variables, and the names the operator passes on purpose (`--env NAME`,
 * OCULUS_BUILD_ENV). docs/security.md describes it for operators.
 */
import { ConfigError } from "../core/errors.js";

/** Process variables every build gets when the worker has them: locale, time zone, paths, user. */
export const BUILD_ENV_ALLOWLIST: readonly string[] = [
  "PATH",
  "HOME",
  "USER",
  "LOGNAME",
  "SHELL",
  "LANG",
  "LANGUAGE",
  "TZ",
  "TMPDIR",
  "TERM",
];
/** Prefixes of allowlisted names (the locale categories LC_ALL, LC_CTYPE, ...). */
const ALLOWLIST_PREFIXES = ["LC_"];

/**
 * The queue's own secrets and settings that lead to them. Passing one with `--env` is refused: a
 * build that needs a database gets its own credentials under another name.
 */
export const QUEUE_SECRETS: readonly string[] = [
  "OCULUS_TOKENS",
  "OCULUS_TOKENS_FILE",
  "OCULUS_TOKEN",
  "DATABASE_URL",
  "REDIS_URL",
  "PGPASSWORD",
  "PGPASSFILE",
  "REDISCLI_AUTH",
];

/** An environment variable name as POSIX shells accept it. */
const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** The names in OCULUS_BUILD_ENV ("A,B, C"): empty entries are ignored. */
export function namesFromList(list: string | undefined): string[] {
  return (list ?? "")
    .split(",")
    .map((name) => name.trim())
    .filter((name) => name !== "");
}

/**
 * Checks the names an operator asks to pass (`--env`, OCULUS_BUILD_ENV): each must be a variable
 * name and none may be a queue secret or a build variable (exit 2, naming `source`).
 */
export function checkPassedNames(names: readonly string[], source: string): string[] {
  for (const name of names) {
    if (!NAME.test(name)) {
      throw new ConfigError(`${source}: "${name}" is not an environment variable name`);
    }
    if (QUEUE_SECRETS.includes(name)) {
      throw new ConfigError(
        `${source}: ${name} is one of the queue's own secrets and is never passed to builds ` +
          "(give the build its own credentials under another name; see docs/security.md)",
      );
    }
    if (name.startsWith("OCULUS_BUILD_") || name === "OCULUS_STRATEGY_ID") {
      throw new ConfigError(`${source}: ${name} is set by the worker for each build`);
    }
  }
  return [...new Set(names)];
}

export function isAllowlisted(name: string): boolean {
  return BUILD_ENV_ALLOWLIST.includes(name) || ALLOWLIST_PREFIXES.some((p) => name.startsWith(p));
}

/**
 * The base environment of a build (before the OCULUS_BUILD_* variables): the allowlisted variables
 * of `from`, and the `passed` names that are set there. Nothing else, whatever `from` holds.
 */
export function buildBaseEnv(
  from: NodeJS.ProcessEnv = process.env,
  passed: readonly string[] = [],
): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(from)) {
    if (value !== undefined && isAllowlisted(name)) env[name] = value;
  }
  for (const name of passed) {
    const value = from[name];
    if (value !== undefined) env[name] = value;
  }
  return env;
}

/**
 * The names `oculus worker` / `oculus up` pass to builds: `--env NAME` (repeatable) and
 * OCULUS_BUILD_ENV (comma-separated), checked (exit 2 on a secret). A name that is not set in the
 * worker's environment is passed as nothing: `warn` says so once at start.
 */
export function passedEnvFromFlags(
  flags: readonly string[] | undefined,
  env: NodeJS.ProcessEnv,
  warn: (message: string) => void,
): string[] {
  const names = [
    ...checkPassedNames(flags ?? [], "--env"),
    ...checkPassedNames(namesFromList(env.OCULUS_BUILD_ENV), "OCULUS_BUILD_ENV"),
  ];
  const unique = [...new Set(names)];
  const unset = unique.filter((name) => env[name] === undefined);
  if (unset.length > 0) {
    warn(`builds will not get ${unset.join(", ")}: not set in this process's environment`);
  }
  return unique;
}

/** Commander collector for a repeatable flag (`--env A --env B`). */
export function collectRepeated(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}
