/**
 * The event hub's cursor: how far the stream has been read, and when a missing event id may be
 * stepped over. No fan-out, no I/O of its own: the writers are found through the probe it is given,
 * so every interleaving can be tested on its own (test/unit/event-gaps.test.ts).
 *
 * Ids are drawn before commit, so id 11 can commit before id 10, and an id can be missing for good
 * (its insert rolled back, the sequence jumped after a crash, the event was pruned). The rule:
 *
 * - Every statement that inserts into `build_events` holds a RowExclusiveLock on the table from before
 *   its executor starts (parse analysis, or the plan cache's AcquireExecutorLocks for a prepared
 *   statement) until its transaction ends; the id is drawn by the executor (the column default). So
 *   the transaction that drew a missing id N holds that lock from before it drew N until it commits or
 *   rolls back.
 * - N missing below an id M that was read had been drawn before M (one sequence, cache 1), so before
 *   that read. When the gap is first seen (after the read), its writer has either ended or still holds
 *   the lock: it is among the transactions the probe lists (`event_writers.sql`: the virtual
 *   transaction ids holding RowExclusiveLock on `build_events`, other than the reader's own backend).
 * - The gap is settled once none of those virtual transactions is listed any more (a virtual
 *   transaction id is unique while its transaction runs; a new transaction gets a new one). A
 *   transaction leaves the proc array (its commit becomes visible) before it releases its locks, so a
 *   read whose snapshot is taken after the settling probe sees N if it committed. Only such a read
 *   steps over N: if N is still missing then, it never comes.
 *
 * So a rolled-back insert or a sequence jump is stepped over at the first probe, an idle transaction
 * elsewhere in the cluster (holding an xid, but no lock on `build_events`) delays nothing, and an event
 * whose commit is slow is waited for, however long, and delivered in order. Nothing is skipped on a
 * timer: the writers are the queue's own statements, which statement_timeout and
 * idle_in_transaction_session_timeout bound (src/postgres/db.ts); a gap waited for longer than
 * `warnAfterMs` is logged with the writers that hold it, once.
 *
 * One probe covers every missing id below the highest id read before it (each of those ids was drawn
 * before that id), so a stretch of pruned progress events costs one probe, not one per gap.
 */
import type { Logger } from "../core/logger.js";
import type { EventWriter } from "../postgres/event-store.js";

export type WriterProbe = () => Promise<EventWriter[]>;

export interface GapRuleOptions {
  /** First wait before probing an open gap's writers again; doubles up to `maxRecheckMs`. */
  firstRecheckMs: number;
  maxRecheckMs: number;
  /** A gap still held by a writer after this long is logged (once per gap). */
  warnAfterMs: number;
}

export const DEFAULT_GAP_RULE: GapRuleOptions = {
  firstRecheckMs: 5,
  maxRecheckMs: 100,
  warnAfterMs: 10_000,
};

/** What the reader does after a page: read on, stop (caught up), read again now, or wait. */
export type NextStep =
  | { kind: "next-page" }
  | { kind: "caught-up" }
  | { kind: "read-again" }
  | { kind: "wait"; ms: number };

export interface PageVerdict {
  /** How many of the page's leading rows may be dispatched now (in order). */
  accepted: number;
  next: NextStep;
}

interface Gap {
  /** The first missing id. */
  firstMissing: number;
  /** The highest id read before the probe: every missing id below it is covered by this gap. */
  coversUpTo: number;
  /** Writers listed at first sight that were still listed at the last probe. */
  pending: Map<string, number | null>;
  since: number;
  /** Set when no pending writer is left: reads begun after read number `settledAtRead` may step over. */
  settledAtRead: number | undefined;
  nextProbeAt: number;
  recheckMs: number;
  warned: boolean;
}

export class EventCursor {
  private at = 0;
  private gap: Gap | undefined;
  /** Reads begun (see beginRead); orders a read after the probe that settled a gap. */
  private reads = 0;

  constructor(
    private readonly probe: WriterProbe,
    private readonly logger: Logger,
    private readonly options: GapRuleOptions = DEFAULT_GAP_RULE,
    private readonly clock: () => number = Date.now,
  ) {}

  /** Events up to this id have been accepted (dispatched). */
  get position(): number {
    return this.at;
  }

  /** Moves the cursor without reading (a starting hub, or after a stretch with no subscribers). */
  jumpTo(position: number): void {
    if (position <= this.at) return;
    this.at = position;
    this.gap = undefined;
  }

  /** Call before sending a read; returns the id to read after. */
  beginRead(): number {
    this.reads += 1;
    return this.at;
  }

  /**
   * Takes the ids of a page read after the position (ascending; `full` when the page was full) and
   * says how many of them may be dispatched now and what the reader does next. Probes the writers
   * when a gap is first seen and when its recheck is due.
   */
  async take(ids: readonly number[], full: boolean): Promise<PageVerdict> {
    const highestRead = ids.at(-1) ?? 0;
    let accepted = 0;
    for (const id of ids) {
      if (id !== this.at + 1) {
        const step = await this.atGap(id, highestRead);
        if (step) return { accepted, next: step };
      }
      this.at = id;
      accepted += 1;
      if (this.gap && this.at >= this.gap.coversUpTo) this.gap = undefined;
    }
    return { accepted, next: full ? { kind: "next-page" } : { kind: "caught-up" } };
  }

  /** Undefined: step over the missing ids before `nextId`; otherwise what to do instead. */
  private async atGap(nextId: number, highestRead: number): Promise<NextStep | undefined> {
    const gap = this.gap;
    const now = this.clock();
    if (!gap || nextId > gap.coversUpTo || this.at + 1 < gap.firstMissing) {
      await this.firstSight(highestRead, now);
      // A fresh read: the missing event has usually committed meanwhile, and a gap with no writer
      // left may be stepped over only by a read that begins after the probe.
      return { kind: "read-again" };
    }
    if (gap.settledAtRead !== undefined) {
      if (this.reads > gap.settledAtRead) return undefined;
      return { kind: "read-again" };
    }
    if (now < gap.nextProbeAt) return { kind: "wait", ms: gap.nextProbeAt - now };
    await this.recheck(gap, now);
    if (gap.settledAtRead !== undefined) return { kind: "read-again" };
    return { kind: "wait", ms: gap.recheckMs };
  }

  private async firstSight(highestRead: number, now: number): Promise<void> {
    const writers = await this.probe();
    const gap: Gap = {
      firstMissing: this.at + 1,
      coversUpTo: highestRead,
      pending: new Map(writers.map((w) => [w.vxid, w.pid])),
      since: now,
      settledAtRead: undefined,
      nextProbeAt: now + this.options.firstRecheckMs,
      recheckMs: this.options.firstRecheckMs,
      warned: false,
    };
    if (gap.pending.size === 0) gap.settledAtRead = this.reads;
    this.gap = gap;
  }

  private async recheck(gap: Gap, now: number): Promise<void> {
    const running = new Set((await this.probe()).map((w) => w.vxid));
    for (const vxid of gap.pending.keys()) if (!running.has(vxid)) gap.pending.delete(vxid);
    if (gap.pending.size === 0) {
      gap.settledAtRead = this.reads;
      return;
    }
    gap.recheckMs = Math.min(gap.recheckMs * 2, this.options.maxRecheckMs);
    gap.nextProbeAt = now + gap.recheckMs;
    if (!gap.warned && now - gap.since >= this.options.warnAfterMs) {
      gap.warned = true;
      this.logger.warn(
        {
          missing: gap.firstMissing,
          waitedMs: now - gap.since,
          writers: [...gap.pending].map(([vxid, pid]) => ({ vxid, pid })),
        },
        "event id still missing while a transaction that may commit it runs; waiting for it (see pg_locks)",
      );
    }
  }
}
