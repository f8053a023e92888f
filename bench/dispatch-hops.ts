/**
 * Where one dispatch's time goes (issue 15), Redis mode: the latency benchmark's loop (bench/latency.ts:
 * one build at a time to an idle worker of the product's claim loop, in this process), with the
 * queue's own calls timed where they happen. The calls are wrapped on the live objects (the store, the Redis index);
 * nothing is replaced, so the path measured is the product's.
 *
 *   submit commit   store.insert: the INSERT and its commit in PostgreSQL
 *   index write     index.enqueue: the build into the Redis index (the script also publishes the wake-up)
 *   wake-up         from the index write's answer to the idle worker's wait returning
 *   pop             index.popForClaim: the id out of the index (Redis)
 *   claim commit    store.claimByIds: PostgreSQL takes the build (UPDATE, event, commit)
 *   handler start   from the claim's answer to the handler's first line
 *
 * The floor is two durable commits on this disk: two single-row INSERTs in a row, each its own
 * transaction with synchronous_commit on, timed from a client of their own.
 */
import pg from "pg";
import type { BuildQueue } from "../src/index.js";
import { ourLatency } from "./latency.js";
import { DATABASE_URL, dropSchema, newSchema } from "./postgres.js";
import { type Distribution, distribution } from "./stats.js";

export const HOPS = ["submitCommit", "indexWrite", "wakeUp", "pop", "claimCommit", "handlerStart"] as const;
export type Hop = (typeof HOPS)[number];

export interface DispatchHops {
  count: number;
  /** Microseconds per hop over the measured dispatches. */
  hopsUs: Record<Hop, Distribution>;
  /** The whole dispatch (submit() call to the handler's first line), microseconds. */
  totalUs: Distribution;
  /** Two durable commits in a row on this PostgreSQL, microseconds. */
  twoCommitsUs: Distribution;
  /** What is not in any hop: the calls' own JavaScript between them, microseconds (median). */
  unaccountedUs: number;
}

type Marks = Partial<Record<string, number>>;

/** Wraps `obj[name]` (an async method) so that each call records its start and end into `marks()`. */
function timeCalls<T extends object>(obj: T, name: string, marks: () => Marks, label: string): void {
  const target = obj as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
  const original = target[name];
  if (typeof original !== "function") throw new Error(`dispatch hops: no method ${name} to time`);
  target[name] = async function (this: unknown, ...args: unknown[]) {
    const m = marks();
    m[`${label}Start`] ??= performance.now();
    try {
      return await original.apply(this, args);
    } finally {
      m[`${label}End`] ??= performance.now();
    }
  };
}

export async function ourDispatchHops(
  redisUrl: string,
  count: number,
  warmup: number,
): Promise<DispatchHops> {
  let marks: Marks = {};
  const hops = Object.fromEntries(HOPS.map((h) => [h, []])) as unknown as Record<Hop, number[]>;
  const totals: number[] = [];
  const rest: number[] = [];
  await ourLatency("redis", redisUrl, count, warmup, {
    attach: (queue) => instrument(queue, () => marks),
    before: () => {
      marks = {};
    },
    measured: (t0, tStart) => {
      const m = marks;
      const span = (a: string, b: string) => ((m[b] ?? Number.NaN) - (m[a] ?? Number.NaN)) * 1000;
      const sample: Record<Hop, number> = {
        submitCommit: span("insertStart", "insertEnd"),
        indexWrite: span("enqueueStart", "enqueueEnd"),
        wakeUp: span("enqueueEnd", "wokenEnd"),
        pop: span("popStart", "popEnd"),
        claimCommit: span("claimStart", "claimEnd"),
        handlerStart: (tStart - (m.claimEnd ?? Number.NaN)) * 1000,
      };
      for (const h of HOPS) hops[h].push(sample[h]);
      const total = (tStart - t0) * 1000;
      totals.push(total);
      rest.push(total - HOPS.reduce((sum, h) => sum + sample[h], 0));
    },
  });
  const hopsUs = Object.fromEntries(HOPS.map((h) => [h, distribution(hops[h])])) as Record<Hop, Distribution>;
  return {
    count,
    hopsUs,
    totalUs: distribution(totals),
    twoCommitsUs: distribution(await twoDurableCommits(count)),
    unaccountedUs: distribution(rest).p50,
  };
}

/** Wraps the calls of one dispatch on the queue's live objects (see the header). */
function instrument(queue: BuildQueue, marks: () => Marks): void {
  timeCalls(queue.store, "insert", marks, "insert");
  timeCalls(queue.store, "claimByIds", marks, "claim");
  const failover = (queue as unknown as { failover: { index?: object } }).failover;
  if (!failover.index) throw new Error("dispatch hops: the queue has no Redis index");
  timeCalls(failover.index, "enqueue", marks, "enqueue");
  timeCalls(failover.index, "popForClaim", marks, "pop");
  // The idle worker's wait: its end is the wake-up (the first wait to return after the index write).
  const wait = queue.waitForWork.bind(queue);
  queue.waitForWork = async (timeoutMs?: number, signal?: AbortSignal) => {
    await wait(timeoutMs, signal);
    const m = marks();
    if (m.enqueueEnd !== undefined) m.wokenEnd ??= performance.now();
  };
}

/** `count` times: two single-row INSERTs in a row, each committed durably; microseconds for the pair. */
async function twoDurableCommits(count: number): Promise<number[]> {
  const client = new pg.Client({ connectionString: DATABASE_URL });
  await client.connect();
  try {
    await client.query("SET synchronous_commit = on");
    // A temporary table's rows are not WAL-logged: the floor needs a table that is.
    const schema = newSchema("floor");
    await client.query(`CREATE SCHEMA "${schema}"`);
    try {
      await client.query(`CREATE TABLE "${schema}".commit_floor (id serial PRIMARY KEY, at timestamptz)`);
      const insert = { name: "floor", text: `INSERT INTO "${schema}".commit_floor (at) VALUES (now())` };
      const samples: number[] = [];
      for (let i = 0; i < count + 20; i++) {
        const t0 = performance.now();
        await client.query(insert);
        await client.query(insert);
        if (i >= 20) samples.push((performance.now() - t0) * 1000);
      }
      return samples;
    } finally {
      await dropSchema(schema);
    }
  } finally {
    await client.end();
  }
}
