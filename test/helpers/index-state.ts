/**
 * What the fault tests compare: the Redis index as it is (read through a raw client) and the queued
 * rows of the record, plus a per-build summary of the record (status, lease, event counts).
 */
import type { Redis } from "ioredis";
import { expect } from "vitest";
import { encodeScore } from "../../src/index.js";
import { sql } from "./postgres.js";
import { eventually } from "./queue.js";

export interface IndexContents {
  /** Ready ids with their scores. */
  ready: Map<string, number>;
  /** Delayed ids (waiting out a retry backoff). */
  delayed: Set<string>;
}

export async function readIndex(client: Redis, prefix: string): Promise<IndexContents> {
  const flat = await client.zrange(`${prefix}:build_queue`, 0, -1, "WITHSCORES");
  const ready = new Map<string, number>();
  for (let i = 0; i + 1 < flat.length; i += 2) ready.set(flat[i] as string, Number(flat[i + 1]));
  const delayed = new Set(await client.zrange(`${prefix}:build_delayed`, 0, -1));
  return { ready, delayed };
}

export interface QueuedRow {
  id: string;
  priority: number;
  seq: number;
  delayed: boolean;
}

export async function queuedRows(schema: string): Promise<QueuedRow[]> {
  return sql<QueuedRow>(
    schema,
    `SELECT id, priority, seq::float8 AS seq, run_at > now() AS delayed
     FROM builds WHERE status = 'queued' ORDER BY priority DESC, seq`,
  );
}

/**
 * Differences between the index and the queued rows (empty when they are equal): ids missing from the
 * index, ids in the index that are not queued, and ready ids with a wrong score.
 */
export async function indexDiff(client: Redis, prefix: string, schema: string): Promise<string[]> {
  const [index, rows] = await Promise.all([readIndex(client, prefix), queuedRows(schema)]);
  const diff: string[] = [];
  const queued = new Set(rows.map((r) => r.id));
  for (const row of rows) {
    const score = index.ready.get(row.id);
    if (score === undefined && !index.delayed.has(row.id)) diff.push(`missing ${row.id}`);
    if (score !== undefined && score !== encodeScore(row.priority, row.seq)) {
      diff.push(`wrong score ${row.id}: ${score}`);
    }
  }
  for (const id of [...index.ready.keys(), ...index.delayed]) {
    if (!queued.has(id)) diff.push(`not queued ${id}`);
  }
  return diff;
}

export interface BuildSummary {
  id: string;
  status: string;
  lease: number;
  worker_id: string | null;
  claimed_events: number;
  completed_events: number;
}

/** Every build with its status, lease and how many 'claimed' and 'completed' events it has. */
export async function buildSummaries(schema: string): Promise<BuildSummary[]> {
  return sql<BuildSummary>(
    schema,
    `SELECT b.id, b.status, b.lease::int AS lease, b.worker_id,
            count(e.id) FILTER (WHERE e.type = 'claimed')::int AS claimed_events,
            count(e.id) FILTER (WHERE e.type = 'completed')::int AS completed_events
     FROM builds b LEFT JOIN build_events e ON e.build_id = b.id
     GROUP BY b.id`,
  );
}

export async function claimedEventCount(schema: string, id: string): Promise<number> {
  const [row] = await sql<{ n: number }>(
    schema,
    "SELECT count(*)::int AS n FROM build_events WHERE build_id = $1 AND type = 'claimed'",
    [id],
  );
  return row?.n ?? 0;
}

/** Waits until the index equals the queued rows; fails naming the first differences. */
export async function waitForIndexToMatch(client: Redis, prefix: string, schema: string, timeoutMs = 15_000) {
  let lastDiff: string[] = [];
  await eventually(async () => {
    lastDiff = await indexDiff(client, prefix, schema);
    return lastDiff.length === 0;
  }, timeoutMs).catch((err) => {
    throw new Error(`index != queued rows: ${lastDiff.slice(0, 10).join(", ")} (${(err as Error).message})`);
  });
}

/** True once no build of the schema is left unfinished or failed: every one has completed. */
export async function allCompleted(schema: string): Promise<boolean> {
  const [row] = await sql<{ n: number }>(
    schema,
    "SELECT count(*)::int AS n FROM builds WHERE status <> 'completed'",
  );
  return row?.n === 0;
}

/** Exactly the submitted builds exist, and each was claimed once and completed once, under lease 1. */
export async function expectEachCompletedOnce(schema: string, submitted: ReadonlySet<string>): Promise<void> {
  const summaries = await buildSummaries(schema);
  expect(summaries.length).toBe(submitted.size);
  const wrong = summaries.filter(
    (s) => s.status !== "completed" || s.claimed_events !== 1 || s.completed_events !== 1 || s.lease !== 1,
  );
  expect(wrong).toEqual([]);
}
