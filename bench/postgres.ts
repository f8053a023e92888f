/** The benchmark's PostgreSQL: one fresh schema per measurement, all dropped at the end. */
import pg from "pg";

export const DATABASE_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";

const created = new Set<string>();
let counter = 0;

/** A new schema name, remembered so that dropAllSchemas() removes it. */
export function newSchema(label: string): string {
  counter += 1;
  const schema = `bench_${label}_${process.pid}_${counter}`;
  created.add(schema);
  return schema;
}

/** Runs `fn` on a connection of its own to DATABASE_URL, closed afterwards. */
export async function withClient<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: DATABASE_URL });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

export async function dropSchema(schema: string): Promise<void> {
  await withClient((c) => c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`));
  created.delete(schema);
}

export async function dropAllSchemas(): Promise<void> {
  for (const schema of [...created]) await dropSchema(schema);
}

export async function postgresVersion(): Promise<string> {
  return withClient(async (c) => {
    const res = await c.query<{ server_version: string }>("SHOW server_version");
    return res.rows[0]?.server_version ?? "unknown";
  });
}

/** Builds per status in a schema (to check that every processed build is recorded). */
export async function statusCounts(schema: string): Promise<Record<string, number>> {
  return withClient(async (c) => {
    const res = await c.query<{ status: string; n: number }>(
      `SELECT status, count(*)::integer AS n FROM "${schema}".builds GROUP BY status`,
    );
    return Object.fromEntries(res.rows.map((r) => [r.status, Number(r.n)]));
  });
}

/** ANALYZE of the builds table (the planner's statistics of a table filled seconds ago are empty). */
export async function analyze(schema: string): Promise<void> {
  await withClient((c) => c.query(`ANALYZE "${schema}".builds`));
}
