/**
 * Concurrency keys in the record (migration 0011): limits, and admission. A keyed build is queued
 * `held` until admitted; admission locks the key's concurrency_limits row, then counts the key's
 * running, stopping and admitted builds in a later statement (a snapshot taken after the lock) and
 * admits held builds into the free slots. Every admission of a key is serialized by that lock, so the
 * count a later admission reads includes every earlier one, and running + admitted never exceeds the
 * limit; claims only turn admitted builds into running ones.
 */
import type { Build } from "../core/build.js";
import { type ConcurrencyLimit, DEFAULT_CONCURRENCY_LIMIT } from "../core/concurrency.js";
import { queries } from "../generated/assets.js";
import type { Db, Queryable } from "./db.js";
import { type BuildRow, toBuild } from "./store.js";

/** What one admission changed. */
export interface Admission {
  /** Builds now claimable (they go into the dispatch index). */
  admitted: Build[];
  /** Admitted builds held back again because their key's limit was lowered (out of the index). */
  heldBack: Build[];
}

export const NO_ADMISSION: Admission = { admitted: [], heldBack: [] };

interface LimitRow {
  key: string;
  max_running: number;
  updated_at: Date;
  running: number;
  admitted: number;
  waiting: number;
}

const toLimit = (row: LimitRow): ConcurrencyLimit => ({
  key: row.key,
  limit: Number(row.max_running),
  running: Number(row.running),
  admitted: Number(row.admitted),
  waiting: Number(row.waiting),
  updatedAt: row.updated_at,
});

/** The distinct keys, sorted (every transaction locks keys in this order). */
export function keysOf(builds: Iterable<{ concurrencyKey: string | null }>): string[] {
  const keys = new Set<string>();
  for (const b of builds) if (b.concurrencyKey !== null) keys.add(b.concurrencyKey);
  return [...keys].sort();
}

export class ConcurrencyStore {
  constructor(private readonly db: Db) {}

  /**
   * Fits the keys' builds to their limits, inside the caller's transaction `tx` (or a transaction of
   * its own): locks the keys' rows (created with the default limit if missing), then admits held
   * builds into free slots, or holds back admitted ones of a key over its limit.
   */
  async admit(keys: string[], tx?: Queryable): Promise<Admission> {
    if (keys.length === 0) return NO_ADMISSION;
    const sorted = [...new Set(keys)].sort();
    const run = async (q: Queryable): Promise<Admission> => {
      await q.query(queries.ensure_concurrency_keys, [sorted]);
      await q.query(queries.lock_concurrency_keys, [sorted]);
      const res = await q.query<BuildRow & { admitted: boolean }>(queries.admit_waiting, [sorted]);
      const out: Admission = { admitted: [], heldBack: [] };
      for (const row of res.rows) (row.admitted ? out.admitted : out.heldBack).push(toBuild(row));
      return out;
    };
    return tx ? run(tx) : this.db.transaction(run);
  }

  /** Sets a key's limit and fits its builds to it, in one transaction. */
  async setLimit(key: string, limit: number): Promise<Admission> {
    return this.db.transaction(async (tx) => {
      await tx.query(queries.set_concurrency_limit, [key, limit]);
      return this.admit([key], tx);
    });
  }

  /** A key's limit and counts (the default limit and zero counts for a key never seen). */
  async limit(key: string): Promise<ConcurrencyLimit> {
    const res = await this.db.query<LimitRow>(queries.concurrency_limit, [key]);
    const row = res.rows[0];
    if (row) return toLimit(row);
    return { key, limit: DEFAULT_CONCURRENCY_LIMIT, running: 0, admitted: 0, waiting: 0, updatedAt: null };
  }

  /** Keys in order, after `afterKey` ("" for the first page), at most `count`. */
  async limits(afterKey: string, count: number): Promise<ConcurrencyLimit[]> {
    const res = await this.db.query<LimitRow>(queries.concurrency_limits, [afterKey, count]);
    return res.rows.map(toLimit);
  }

  /** Keys with held builds whose run time has come (the reaper's sweep admits them). */
  async keysDue(count: number): Promise<string[]> {
    const res = await this.db.query<{ key: string }>(queries.keys_due, [count]);
    return res.rows.map((r) => r.key);
  }

  /** Queued builds held back by their key's limit. */
  async countHeld(): Promise<number> {
    const res = await this.db.query<{ n: number }>(queries.count_held);
    return Number(res.rows[0]?.n ?? 0);
  }
}
