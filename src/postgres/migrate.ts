/**
 * Applies the numbered, append-only migrations (embedded at build time) in one transaction under an
 * advisory lock, so that several processes starting at once apply each migration exactly once.
 */
import { migrations } from "../generated/assets.js";
import type { Db } from "./db.js";

export interface MigrationReport {
  applied: { version: number; name: string }[];
  current: number;
}

const quoteIdent = (name: string) => `"${name.replaceAll('"', '""')}"`;

/**
 * Brings the schema up to date. A schema already at the newest migration is only read, so a runtime
 * role with no privilege beyond reading and writing rows (docs/operations.md, "PostgreSQL
 * privileges") can open the queue; applying migrations needs a role that may create in the schema.
 */
export async function migrate(db: Db): Promise<MigrationReport> {
  const known = migrations.length;
  const applied = await appliedMigrations(db);
  if (applied !== undefined) {
    refuseNewer(db.schema, applied.newest, known);
    // Versions are 1..known: all of them there is the only current state.
    if (applied.count === known && applied.newest === known) return { applied: [], current: known };
  }
  try {
    return await applyPending(db);
  } catch (err) {
    throw explainPrivileges(err, db.schema, applied?.newest ?? 0, known);
  }
}

/**
 * How many migrations are applied and the newest of them, read without a lock and without DDL;
 * none when the schema or its migrations table does not exist yet; undefined when it cannot be read
 * here (a role without SELECT on it: applyPending then says what is missing).
 */
async function appliedMigrations(db: Db): Promise<{ count: number; newest: number } | undefined> {
  try {
    const res = await db.query<{ count: number; newest: number }>(
      `SELECT count(*)::int AS count, coalesce(max(version), 0)::int AS newest FROM ${quoteIdent(db.schema)}.schema_migrations`,
    );
    return { count: Number(res.rows[0]?.count ?? 0), newest: Number(res.rows[0]?.newest ?? 0) };
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    // 3F000 invalid_schema_name, 42P01 undefined_table: a new database.
    if (code === "3F000" || code === "42P01") return { count: 0, newest: 0 };
    if (code === "42501") return undefined;
    throw err;
  }
}

function refuseNewer(schema: string, current: number, known: number): void {
  if (current > known) {
    throw new Error(
      `database schema ${schema} is at migration ${current}, newer than this version knows (${known}); upgrade oculus`,
    );
  }
}

async function applyPending(db: Db): Promise<MigrationReport> {
  const schema = quoteIdent(db.schema);
  return db.transaction(async (tx) => {
    // Transaction-scoped: released by COMMIT or ROLLBACK, even if this process dies.
    await tx.query("SELECT pg_advisory_xact_lock(hashtext($1))", [`oculus:migrate:${db.schema}`]);
    await tx.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    await tx.query(`SET LOCAL search_path TO ${schema}`);
    await tx.query(
      `CREATE TABLE IF NOT EXISTS schema_migrations (
         version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
    );
    const done = await tx.query<{ version: number }>("SELECT version FROM schema_migrations");
    const have = new Set(done.rows.map((r) => Number(r.version)));
    const newest = Math.max(0, ...have);
    refuseNewer(db.schema, newest, migrations.length);
    const applied: MigrationReport["applied"] = [];
    for (const m of migrations) {
      if (have.has(m.version)) continue;
      for (const statement of splitStatements(m.sql)) await tx.query(statement);
      await tx.query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", [m.version, m.name]);
      applied.push({ version: m.version, name: m.name });
    }
    return { applied, current: Math.max(newest, ...applied.map((a) => a.version)) };
  });
}

/**
 * A permission error while migrating, said in the operator's terms: which migrations are missing
 * and which role may apply them. Keeps SQLSTATE 42501, so start-up reports it as a configuration
 * error (exit 2) instead of waiting for it to pass.
 */
function explainPrivileges(err: unknown, schema: string, current: number, known: number): unknown {
  if ((err as { code?: unknown } | null)?.code !== "42501") return err;
  const pending =
    current < known ? `is at migration ${current} and this version needs ${known}` : "needs migrating";
  // No `cause`: the start-up report quotes the innermost error that has a code, and this one says more.
  const explained = new Error(
    `schema ${schema} ${pending}, and this role may not apply migrations (${(err as Error).message}): run "oculus migrate" as a role that may create in the database and the schema, then start again (docs/operations.md, "PostgreSQL privileges")`,
  );
  return Object.assign(explained, { code: "42501" });
}

/**
 * Splits a migration into statements (one round trip each inside the transaction, which both engines
 * accept). Migrations keep to plain DDL: no semicolons inside strings or dollar-quoted bodies.
 */
function splitStatements(sql: string): string[] {
  return sql
    .split("\n")
    .filter((line) => !line.trimStart().startsWith("--"))
    .join("\n")
    .split(";")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}
