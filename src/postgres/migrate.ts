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

export async function migrate(db: Db): Promise<MigrationReport> {
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
    const known = migrations.length;
    if (newest > known) {
      throw new Error(
        `database schema ${db.schema} is at migration ${newest}, newer than this version knows (${known}); upgrade oculus`,
      );
    }
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
