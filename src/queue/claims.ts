/**
 * How a claim works. With Redis up, the index proposes ids (pop_for_claim.lua) and PostgreSQL
 * arbitrates: the conditional update of claim_by_ids.sql takes only rows still queued, and bumps
 * their lease. Ids PostgreSQL refuses are stale entries and are dropped (or, for a build waiting out
 * its retry backoff, put back with its run time). Without Redis, or when it faults, claim_next.sql
 * claims on PostgreSQL (FOR UPDATE SKIP LOCKED, the same order).
 *
 * An empty pop is not proof that nothing is ready: a build can be missing from the index (its id was
 * popped by a claimer that died, or by a pop whose reply timed out; its enqueue was refused while
 * Redis was out of memory; a stale entry balances the drift check's count). So after an empty pop
 * the claimer also claims on PostgreSQL, when it wins the fleet-wide turn for that (at most one
 * claimer per FALLBACK_EVERY_MS, a SET NX in Redis): a lost build is found within about a second,
 * and an idle fleet costs PostgreSQL about one statement a second for it, whatever its size. The
 * turn is a Redis write, so a Redis that refuses writes (OOM, READONLY) is noticed by idle claimers
 * too, and they fail over to PostgreSQL.
 *
 * Routing (src/core/pools.ts): a claimer pops only from the pools whose requirements its labels
 * include, chosen from its copy of the pool registry in Redis; the pop refuses a copy whose size is
 * not the registry's (a pool was added since), and the claimer reads the registry again, so a pool
 * created a moment ago is never passed over. On PostgreSQL claim_next.sql looks the pools up in
 * build_pools. A build is never popped by a worker that cannot run it.
 */
import type { Build, ClaimedBuild } from "../core/build.js";
import type { Logger } from "../core/logger.js";
import { type Requirements, satisfies } from "../core/pools.js";
import type { BuildStore } from "../postgres/store.js";
import type { PoolRegistry } from "../redis/index-client.js";
import type { RedisFailover } from "./failover.js";

const REFUSED_RETRY_MS = 100;
/** Pop rounds per claim call: each round drops the stale ids PostgreSQL refused and pops again. */
const MAX_CLAIM_ROUNDS = 10;
/** How often the fleet as a whole looks on PostgreSQL after an empty pop. */
export const FALLBACK_EVERY_MS = 1000;
/**
 * Settled claims wait this long for the next pop to carry them out of build_claiming; then they go
 * alone. Until then a reconcile leaves their ids alone, which changes nothing for a build that is
 * running, and only delays its re-add for one whose claim failed.
 */
export const SETTLED_CARRY_MS = 100;

export class Claims {
  constructor(
    private readonly store: BuildStore,
    private readonly failover: RedisFailover,
    private readonly logger: Logger,
    /** Puts builds into the index after a commit (BuildQueue.indexBuilds). */
    private readonly indexBuilds: (builds: { build: Build; delayMs: number }[]) => Promise<void>,
  ) {}

  /** This claimer's copy of the Redis pool registry (pop_for_claim.lua says when it is out of date). */
  private registry: PoolRegistry | undefined;
  /** Popped ids whose claim has settled, for the next pop to take out of build_claiming. */
  private settled: string[] = [];
  private settledTimer: NodeJS.Timeout | undefined;

  private noteSettled(ids: string[]): void {
    this.settled.push(...ids);
    this.settledTimer ??= setTimeout(() => this.flushSettled(), SETTLED_CARRY_MS);
    this.settledTimer.unref();
  }

  private takeSettled(): string[] {
    clearTimeout(this.settledTimer);
    this.settledTimer = undefined;
    const ids = this.settled;
    this.settled = [];
    return ids;
  }

  /** Sends the settled ids no pop has carried (also on close). A lost ZREM only delays a re-add. */
  async flushSettled(): Promise<void> {
    const ids = this.takeSettled();
    if (ids.length > 0) await this.failover.tryRedis((index) => index.finishClaim(ids), true);
  }

  /** Claims up to `count` builds in dispatch order among those `labels` can run (arguments validated). */
  async next(
    workerId: string,
    count: number,
    leaseMs: number,
    labels: Requirements = {},
  ): Promise<ClaimedBuild[]> {
    const viaRedis = await this.claimViaRedis(workerId, count, leaseMs, labels);
    if (viaRedis === undefined || (viaRedis.length === 0 && (await this.fallbackTurn()))) {
      return (await this.store.claimNext(count, workerId, leaseMs, labels)) as ClaimedBuild[];
    }
    return viaRedis;
  }

  /** The pools `labels` satisfy, from the registry copy (undefined: Redis is not usable). */
  private async poolsFor(labels: Requirements, reread: boolean): Promise<string[] | undefined> {
    if (reread || this.registry === undefined) {
      const read = await this.failover.tryRedis((index) => index.poolRegistry());
      if (!read.ok) return undefined;
      this.registry = read.value;
    }
    const pools: string[] = [];
    for (const [pool, requires] of this.registry.pools) if (satisfies(labels, requires)) pools.push(pool);
    return pools;
  }

  /**
   * True when this claimer should look on PostgreSQL after an empty pop: it won the fleet's turn,
   * or Redis refused the turn's write (the failover has switched to PostgreSQL meanwhile).
   */
  private async fallbackTurn(): Promise<boolean> {
    const turn = await this.failover.tryRedis((index) => index.takeClaimFallbackTurn(FALLBACK_EVERY_MS));
    return !turn.ok || turn.value;
  }

  /** undefined: Redis is not usable, claim on PostgreSQL instead. */
  private async claimViaRedis(
    workerId: string,
    count: number,
    leaseMs: number,
    labels: Requirements,
  ): Promise<ClaimedBuild[] | undefined> {
    const claimed: ClaimedBuild[] = [];
    let pools = await this.poolsFor(labels, false);
    // A popped id that PostgreSQL refuses (no longer queued: a stale entry) is dropped; pop again.
    for (let attempt = 0; attempt < MAX_CLAIM_ROUNDS && claimed.length < count; attempt++) {
      if (pools === undefined) return claimed.length > 0 ? claimed : undefined;
      const want = count - claimed.length;
      const from = pools;
      const size = this.registry?.size ?? 0;
      const settled = this.takeSettled();
      const popped = await this.failover.tryRedis((index) => index.popForClaim(want, from, size, settled));
      if (!popped.ok) return claimed.length > 0 ? claimed : undefined;
      if (popped.value === "pools changed") {
        // A pool was registered since the copy was read (its first build just arrived): read again.
        pools = await this.poolsFor(labels, true);
        continue;
      }
      const proposals = popped.value;
      if (proposals.length === 0) break;
      const ids = proposals.map((p) => p.id);
      let builds: Build[];
      try {
        builds = await this.store.claimByIds(ids, workerId, leaseMs);
      } catch (err) {
        // The claim did not commit: the rows are still queued. Put the proposals back; a Redis fault
        // here goes to the failover like any other (the recovery's reconcile re-adds them then).
        await this.failover.tryRedis(
          (index) =>
            index.enqueue(
              proposals.map((p) => ({
                ...p,
                requires: this.registry?.pools.get(p.pool) ?? {},
                delayMs: 0,
              })),
            ),
          true,
        );
        // Builds claimed by an earlier round are leased to this worker: hand them out, or they would
        // stay running with nobody working on them.
        if (claimed.length > 0) return claimed;
        throw err;
      }
      claimed.push(...(builds as ClaimedBuild[]));
      this.noteSettled(ids);
      if (builds.length < proposals.length) await this.reindexRefused(proposals, builds);
      if (proposals.length < want) break;
    }
    return claimed;
  }

  /**
   * Popped ids that PostgreSQL refused: stale entries (no longer queued, or held back by their
   * concurrency key's limit) stay dropped; a build still queued is waiting out its retry backoff (its id had reappeared in the ready index) and goes back
   * into the index with its run time. Best effort: the claim has committed, so this never throws.
   */
  private async reindexRefused(popped: { id: string }[], claimed: Build[]): Promise<void> {
    const taken = new Set(claimed.map((b) => b.id));
    const refused = popped.filter((p) => !taken.has(p.id)).map((p) => p.id);
    try {
      // A held build (its concurrency key's limit was lowered after it entered the index) stays out:
      // admission puts it back when it gets a slot.
      const waiting = [...(await this.store.getMany(refused)).values()].filter(
        (b) => b.status === "queued" && !b.held,
      );
      // PostgreSQL refused them as early, so wait at least a moment, whatever this process's clock
      // says (a skew with PostgreSQL's would otherwise make every claim pop them again).
      const entries = waiting.map((build) => ({
        build,
        delayMs: Math.max(REFUSED_RETRY_MS, build.runAt.getTime() - Date.now()),
      }));
      if (entries.length > 0) await this.indexBuilds(entries);
    } catch (err) {
      this.logger.debug({ err: (err as Error).message }, "could not re-index refused ids");
    }
  }
}
