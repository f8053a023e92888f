#!/usr/bin/env node
/**
 * The `oculus` command. Settings come from flags or the environment (flags win) and are validated
 * once: a bad value stops the command with a message naming the flag and the variable.
 *
 * Start-up is kept light: the client commands (status, submit, builds, logs, watch, ...) only talk
 * HTTP, so the modules that open stores or serve (pg, PGlite, ioredis, Fastify: server-commands.ts)
 * are loaded only for the other commands and for the full help.
 *
 * Exit codes: 0 done; 1 failed (the message says why); 2 bad usage (a missing argument, an unknown
 * command or option, a bad setting).
 */
import { readFileSync } from "node:fs";
import { Command, CommanderError, Option } from "commander";
import type { Config, loadConfig as LoadConfig } from "../core/config.js";
import { OculusError } from "../core/errors.js";
import { printableLines } from "../core/printable.js";
import { ApiError } from "./api-client.js";
import { CLIENT_COMMANDS, registerClientCommands, UsageError } from "./client-commands.js";

const program = new Command("oculus")
  .description("Oculus build queue: durable priority queue on PostgreSQL, with Redis as fast path")
  .version(packageVersion(), "-V, --version", "print the version")
  .addOption(
    new Option("--database-url <url>", "PostgreSQL URL (default: embedded PGlite)").env("DATABASE_URL"),
  )
  .addOption(
    new Option("--redis-url <url>", "Redis URL (default: none, PostgreSQL path only)").env("REDIS_URL"),
  )
  .addOption(new Option("--prefix <prefix>", "Redis key prefix").env("OCULUS_PREFIX"))
  .addOption(new Option("--schema <name>", "PostgreSQL schema").env("OCULUS_SCHEMA"))
  .addOption(new Option("--data-dir <dir>", "embedded store directory").env("OCULUS_DATA_DIR"))
  .showHelpAfterError()
  // Usage errors (missing argument, unknown command or option) exit 2, as documented, not 1.
  .exitOverride();

function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8"));
    return String(pkg.version);
  } catch {
    return "unknown";
  }
}

/** Flags given on the command line; loadConfig reads the environment itself, to name the source in errors. */
function config(loadConfig: typeof LoadConfig): Config {
  const o = program.opts();
  const fromCli = (key: string) =>
    program.getOptionValueSource(key) === "cli" ? (o[key] as string) : undefined;
  return loadConfig(
    {
      databaseUrl: fromCli("databaseUrl"),
      redisUrl: fromCli("redisUrl"),
      prefix: fromCli("prefix"),
      schema: fromCli("schema"),
      dataDir: fromCli("dataDir"),
    },
    process.env,
  );
}

/** The first word that is not an option: the command asked for (undefined: none). */
function commandName(argv: string[]): string | undefined {
  return argv.slice(2).find((arg) => !arg.startsWith("-"));
}

async function main(): Promise<void> {
  registerClientCommands(program);
  const name = commandName(process.argv);
  const versionOnly = !name && process.argv.some((arg) => arg === "-V" || arg === "--version");
  if (!versionOnly && (!name || !CLIENT_COMMANDS.includes(name))) {
    const [{ registerServerCommands }, { loadConfig }] = await Promise.all([
      import("./server-commands.js"),
      import("../core/config.js"),
    ]);
    registerServerCommands(program, () => config(loadConfig));
  }
  await program.parseAsync();
}

main().catch((err: unknown) => {
  if (err instanceof CommanderError) {
    // --help and --version end here too (code 0); commander has printed what it had to.
    process.exit(err.exitCode === 0 ? 0 : 2);
  }
  const message = err instanceof Error ? err.message : String(err);
  console.error(`oculus: ${printableLines(message)}`);
  const usage =
    err instanceof UsageError ||
    (err instanceof OculusError && err.code === "config_invalid") ||
    (err instanceof ApiError && err.code === "config_invalid");
  process.exit(usage ? 2 : 1);
});
