/**
 * The lease fence: a worker stops a build itself before its lease can lapse, so that a worker cut off
 * from PostgreSQL never runs a build at the same time as the worker the reaper hands it to.
 *
 * A build's lease runs `leaseMs` from the moment PostgreSQL executed the claim or the last heartbeat
 * that renewed it, which is after the worker SENT that statement. So, measured on the worker's own
 * monotonic clock from the send time of the last claim or heartbeat PostgreSQL acknowledged for the
 * build (the basis), the lease cannot end before basis + leaseMs, and the reaper cannot requeue the
 * build before that either (it requires `lease_expires_at < now()`; the Redis heartbeat it also
 * consults can only keep a build, never take it earlier). The fence fires at basis + leaseMs − margin
 * and gives the build's process group until basis + leaseMs − margin/2 to end (SIGTERM, then SIGKILL
 * to the group): the other half of the margin absorbs a late timer and the moment SIGKILL takes.
 * docs/architecture.md ("Lease fence") has the whole argument.
 *
 * Only PostgreSQL's acknowledgements count: a Redis heartbeat can keep a build only while the reaper
 * can read Redis, which a worker cannot know.
 */

import type { BuildRef, HeartbeatAnswer } from "./heartbeats.js";
import { monotonicMs } from "./monotonic.js";

/**
 * The fraction of the lease kept in hand: the fence fires when 80 % of it has passed unconfirmed, and
 * the build's processes get half of the rest (10 % of the lease: 1 s with the default 10 s) to end.
 * A larger margin would stop builds of a worker that is only slow (a heartbeat stuck for a second on
 * a loaded machine) more often; a smaller one leaves too little time for SIGTERM, SIGKILL and a timer
 * that fires late.
 */
const MARGIN_FRACTION = 0.2;

export interface FencePolicy {
  /** How long a claim or heartbeat extends a lease (the queue's deadAfterMs). */
  leaseMs: number;
  /** How long before the earliest possible lease end the fence fires. */
  marginMs: number;
}

export function fencePolicy(leaseMs: number): FencePolicy {
  return { leaseMs, marginMs: Math.round(leaseMs * MARGIN_FRACTION) };
}

export interface FenceHooks {
  /** Takes heartbeat answers that arrived but were not handled yet (they may move a basis). */
  takePendingAnswers(): void;
  /** Stop the build now, its processes gone within `graceMs`; `silentMs`: since its basis. */
  fence(buildId: string, graceMs: number, silentMs: number): void;
}

interface Basis {
  lease: number;
  /** monotonicMs of the send of the last claim or heartbeat PostgreSQL acknowledged for this lease. */
  sentAt: number;
  fenced: boolean;
}

export class LeaseFence {
  private readonly bases = new Map<string, Basis>();
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    readonly policy: FencePolicy,
    private readonly hooks: FenceHooks,
  ) {}

  /** A build was claimed with a request sent at `sentAt`. */
  claimed(build: BuildRef, sentAt: number): void {
    this.bases.set(build.id, { lease: build.lease, sentAt, fenced: false });
    this.schedule();
  }

  /** A heartbeat was answered: the builds PostgreSQL still lets the worker hold were renewed. */
  answered(answer: HeartbeatAnswer): void {
    for (const { id, lease } of answer.held) {
      const basis = this.bases.get(id);
      if (basis && basis.lease === lease) basis.sentAt = Math.max(basis.sentAt, answer.sentAt);
    }
    this.schedule();
  }

  /** The build's report settled: the worker holds it no more. */
  forget(buildId: string): void {
    this.bases.delete(buildId);
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private deadline(basis: Basis): number {
    return basis.sentAt + this.policy.leaseMs - this.policy.marginMs;
  }

  private schedule(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.stopped) return;
    let earliest = Number.POSITIVE_INFINITY;
    for (const basis of this.bases.values()) {
      if (!basis.fenced) earliest = Math.min(earliest, this.deadline(basis));
    }
    if (!Number.isFinite(earliest)) return;
    this.timer = setTimeout(() => this.check(), Math.max(0, earliest - monotonicMs()));
    this.timer.unref();
  }

  private check(): void {
    // Answers may be waiting behind this timer (a busy event loop): they come first.
    this.hooks.takePendingAnswers();
    const now = monotonicMs();
    for (const [id, basis] of this.bases) {
      if (basis.fenced || now < this.deadline(basis)) continue;
      basis.fenced = true;
      const killBy = basis.sentAt + this.policy.leaseMs - this.policy.marginMs / 2;
      this.hooks.fence(id, Math.max(0, Math.floor(killBy - now)), Math.round(now - basis.sentAt));
    }
    this.schedule();
  }
}
