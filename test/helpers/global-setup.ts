/**
 * Checks, before any test runs, that what the tests need is here, and says exactly what is missing:
 * the redis-server binary (tests start private servers), a reachable PostgreSQL, pg_dump and
 * pg_restore (backup with --pg-dump), PostgreSQL's server binaries (fault tests start private
 * clusters: test/helpers/pg-cluster.ts), and Chromium (the dashboard's browser test).
 */
import { execFileSync } from "node:child_process";
import pg from "pg";
import { CHROMIUM_PATH } from "./browser.js";
import { pgClusterUnavailable } from "./pg-cluster.js";
import { TEST_DATABASE_URL } from "./postgres.js";

export default async function setup(): Promise<void> {
  const missing: string[] = [];
  try {
    execFileSync("redis-server", ["--version"], { stdio: "pipe" });
  } catch {
    missing.push(
      "redis-server is not installed or not on PATH: the tests start private Redis servers " +
        "(Debian: apt-get install redis-server)",
    );
  }
  try {
    execFileSync(CHROMIUM_PATH, ["--version"], { stdio: "pipe" });
  } catch {
    missing.push(
      `Chromium is not at ${CHROMIUM_PATH}: the dashboard test drives a real browser ` +
        "(Debian: apt-get install chromium, or set CHROMIUM_PATH)",
    );
  }
  for (const tool of ["pg_dump", "pg_restore"]) {
    try {
      execFileSync(tool, ["--version"], { stdio: "pipe" });
    } catch {
      missing.push(
        `${tool} is not installed: \`oculus backup --pg-dump\` is tested (Debian: apt-get install postgresql-client)`,
      );
    }
  }
  const noCluster = pgClusterUnavailable();
  if (noCluster) missing.push(noCluster);
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL, connectionTimeoutMillis: 5000 });
  try {
    await client.connect();
    await client.query("SELECT 1");
  } catch (err) {
    missing.push(
      `PostgreSQL is not reachable at ${TEST_DATABASE_URL.replace(/:[^:@/]*@/, ":***@")} ` +
        `(${(err as Error).message}). Start it, or set DATABASE_URL to a server the tests may create schemas in.`,
    );
  } finally {
    await client.end().catch(() => undefined);
  }
  if (missing.length > 0) throw new Error(`The tests cannot run:\n- ${missing.join("\n- ")}`);
}
