/**
 * The reconciler's PostgreSQL side: its leadership (an advisory lock held for a walk) and the
 * check-and-remove step. One method per query file.
 */
import { queries } from "../generated/assets.js";
import type { Db } from "./db.js";

/** How long the lock's transaction may sit idle: longer than any walk (1,000,000 builds: seconds). */
const LOCK_IDLE_TIMEOUT_MS = 120_000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export class ReconcileStore {
  constructor(readonly db: Db) {}

  /**
   * Runs `walk` while holding the reconciler's lock for this schema; undefined, without running it,
   * when another process holds it. On PGlite (one process per data directory, enforced by a lock
   * file) there is nobody to exclude, and a transaction held open would block the walk's own queries
   * on its single connection: the walk runs unlocked.
   */
  async asReconciler<T>(walk: () => Promise<T>): Promise<{ value: T } | undefined> {
    if (this.db.engine === "pglite") return { value: await walk() };
    let outcome: { value: T } | undefined;
    try {
      await this.db.transaction(async (tx) => {
        const res = await tx.query<{ leader: boolean }>(queries.try_reconcile_lock, [
          `oculus:reconcile:${this.db.schema}`,
          String(LOCK_IDLE_TIMEOUT_MS),
        ]);
        if (res.rows[0]?.leader) outcome = { value: await walk() };
      });
    } catch (err) {
      // The walk finished but the lock's session ended meanwhile (its COMMIT failed): the walk's
      // result stands, since no step of it depends on the lock (it only saves duplicate walks).
      if (outcome) return outcome;
      throw err;
    }
    return outcome;
  }

  /**
   * Within one transaction: finds which of `ids` are removable (not queued, or unknown), locking the
   * not-queued rows, and calls `remove` with them before committing (see removable_index_ids.sql).
   * `beforeRemove` is a test hook, called with the locks held.
   */
  async removeNotQueued(
    ids: string[],
    remove: (removable: string[]) => Promise<number>,
    beforeRemove?: (removable: string[]) => Promise<void>,
  ): Promise<number> {
    // Ids that are not build ids at all (written by hand) are removable without asking.
    const malformed = ids.filter((id) => !UUID.test(id));
    const wellFormed = ids.filter((id) => UUID.test(id));
    if (wellFormed.length === 0) return malformed.length > 0 ? remove(malformed) : 0;
    return this.db.transaction(async (tx) => {
      const res = await tx.query<{ id: string }>(queries.removable_index_ids, [wellFormed]);
      const removable = [...malformed, ...res.rows.map((r) => r.id)];
      if (removable.length === 0) return 0;
      await beforeRemove?.(removable);
      return remove(removable);
    });
  }
}
