/**
 * PostgreSQL for tests: the server from DATABASE_URL, or the machine's at 127.0.0.1:5432. Each test
 * file (or test) gets its own schema, dropped afterwards, so files run in parallel without sharing.
 */
import pg from "pg";

export const TEST_DATABASE_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";

let counter = 0;

/** A schema name unique to this process and call. */
export function uniqueSchema(label: string): string {
  counter += 1;
  const clean = label
    .toLowerCase()
    .replace(/[^a-z0-9_]/g, "_")
    .slice(0, 30);
  return `t_${clean}_${process.pid}_${counter}_${Date.now() % 100000}`;
}

export async function dropSchema(schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await client.connect();
  try {
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  } finally {
    await client.end();
  }
}

/** Runs one query on the test database (outside any queue), with the schema as search_path. */
export async function sql<T = Record<string, unknown>>(schema: string, text: string, params: unknown[] = []) {
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL, options: `-c search_path=${schema}` });
  await client.connect();
  try {
    return (await client.query(text, params)).rows as T[];
  } finally {
    await client.end();
  }
}
