/**
 * `pg_dump` of the queue's schema (builds, build_events, workers and the migrations table), in
 * pg_dump's custom format (compressed; restore with `pg_restore`). The password goes to pg_dump in
 * its environment, not on its command line, where every user of the machine could read it.
 */
import { stat } from "node:fs/promises";
import { lastLines, runTool, ToolMissingError } from "./tools.js";

const MISSING =
  "--pg-dump: pg_dump is not installed or not on PATH (Debian: apt-get install postgresql-client)";

/** Fails early, before any backup work, when pg_dump cannot run. Returns its version line. */
export async function pgDumpVersion(): Promise<string> {
  try {
    const run = await runTool("pg_dump", ["--version"]);
    if (run.code !== 0) throw new Error(`--pg-dump: pg_dump --version failed: ${lastLines(run.stderr)}`);
    return run.stdout.trim();
  } catch (err) {
    throw err instanceof ToolMissingError ? new Error(MISSING) : err;
  }
}

export async function dumpPostgresSchema(databaseUrl: string, schema: string, file: string): Promise<number> {
  const url = new URL(databaseUrl);
  const password = decodeURIComponent(url.password);
  url.password = "";
  const env = { ...process.env, ...(password ? { PGPASSWORD: password } : {}) };
  const args = [
    `--dbname=${url.toString()}`,
    `--schema=${schema}`,
    "--format=custom",
    "--no-owner",
    `--file=${file}`,
  ];
  let run: Awaited<ReturnType<typeof runTool>>;
  try {
    run = await runTool("pg_dump", args, { env });
  } catch (err) {
    throw err instanceof ToolMissingError ? new Error(MISSING) : err;
  }
  if (run.code !== 0) {
    throw new Error(
      `--pg-dump: pg_dump of schema ${schema} failed (exit ${run.code}): ${lastLines(run.stderr)}`,
    );
  }
  return (await stat(file)).size;
}
