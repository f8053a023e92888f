/**
 * Recurring schedules (issue 14): the library's `queue.schedules` (add, update, get, list, pause,
 * resume, remove) and the scheduler loop that submits each tick's build.
 *
 * Exactly one build per tick, however many processes run the loop: a tick is one PostgreSQL
 * transaction that locks the due schedule row (`FOR UPDATE SKIP LOCKED`: another process skips it
 * instead of waiting), inserts the tick's build through the submit's own insert, with the idempotency
 * key `schedule:<name>:<tick>`, and advances `next_tick_at`. Both commit or neither does: a process
 * killed or cut off mid-tick leaves the row as it was, and the next pass (anywhere) does the tick
 * again. The key is the second guard (a schedule removed and added again under the same name does not
 * submit a tick twice). After the commit the build is indexed in Redis like any submit; if the process
 * dies in between, the reconciler indexes it (as for any submit whose Redis write was lost).
 *
 * Missed ticks: when several ticks are due at once (no scheduler ran over them), only the most recent
 * gets a build; the older ones are skipped and counted (`params.schedule.missed`, the schedule's
 * `lastMissed`). Ticks while a schedule is paused are not made up either.
 *
 * Time: ticks are computed from PostgreSQL's clock (read with the row), so every process agrees on
 * what is due whatever its own clock says. The loop sleeps until the soonest tick (at most
 * `maxSleepMs`, default 5 s) and wakes at once when a schedule changes anywhere (a NOTIFY).
 */
import type { Build, SubmitRequest } from "../core/build.js";
import { parseSubmit } from "../core/build.js";
import { ScheduleExistsError, ScheduleNotFoundError } from "../core/errors.js";
import { LogThrottle } from "../core/log-throttle.js";
import type { Logger } from "../core/logger.js";
import {
  dueTick,
  nextTickAfter,
  parseScheduleDefinition,
  parseScheduleInput,
  parseScheduleName,
  SCHEDULE_PARAMS_KEY,
  type Schedule,
  type ScheduleDefinitionInput,
  type ScheduleInput,
  tickKey,
} from "../core/schedule.js";
import type { Queryable } from "../postgres/db.js";
import type { ScheduleStore } from "../postgres/schedule-store.js";
import { asStoreError } from "./store-errors.js";

/** Submits a build inside the tick's transaction; `afterCommit` indexes and announces it. */
export type TransactionalSubmit = (
  tx: Queryable,
  request: SubmitRequest,
  actor: string,
) => Promise<{ build: Build; created: boolean; afterCommit: () => Promise<void> }>;

/** One tick a pass submitted. */
export interface ScheduledTick {
  schedule: string;
  tick: Date;
  /** Older due ticks skipped (missed-ticks policy). */
  missed: number;
  build: Build;
  /** false: the tick's key had a build already (it was not submitted twice). */
  created: boolean;
}

export interface SchedulerOptions {
  /** Longest sleep between passes (a lost NOTIFY costs at most this). Default 5000 ms. */
  maxSleepMs?: number;
}

/** Sleep after a failed pass (PostgreSQL unreachable, a terminated connection). */
const RETRY_AFTER_FAILURE_MS = 1000;
/** Sleep when a due schedule is held by another process's tick (it commits within moments). */
const OVERDUE_RECHECK_MS = 250;
/** Ticks one pass submits at most before it looks at the clock again. */
const MAX_TICKS_PER_PASS = 100;
const DEFAULT_MAX_SLEEP_MS = 5000;
/**
 * A tick's transaction may sit idle this long (between its statements: a process frozen mid-tick);
 * then PostgreSQL ends the session, the row lock goes, and another process does the tick.
 */
const TICK_MAX_IDLE_MS = 5000;
/** How long stopping waits for a pass in progress. */
const STOP_WAIT_MS = 2000;

export class Schedules {
  private readonly throttle: LogThrottle;

  constructor(
    private readonly store: ScheduleStore,
    private readonly submit: TransactionalSubmit,
    private readonly logger: Logger,
    /** PostgreSQL channel on which a schedule change wakes every scheduler. */
    readonly channel: string,
  ) {
    this.throttle = new LogThrottle(logger);
  }

  /** Creates a schedule: ValidationError naming the field, ScheduleExistsError (409) when the name is taken. */
  async add(input: ScheduleInput): Promise<Schedule> {
    const request = parseScheduleInput(input);
    const next = request.paused ? null : await this.firstTick(request.cron, request.timezone);
    const created = await this.store.insert(request, next).catch(rethrowStoreError);
    if (!created) throw new ScheduleExistsError(request.name);
    await this.announce();
    return created;
  }

  /**
   * Replaces a schedule's definition (every field; omitted ones take their defaults, but an omitted
   * `paused` keeps the current state), keeping its tick history. The next tick is the first one of
   * the new expression after now. ScheduleNotFoundError.
   */
  async update(name: string, definition: ScheduleDefinitionInput): Promise<Schedule> {
    parseScheduleName(name);
    const parsed = parseScheduleDefinition(definition);
    const next = await this.firstTick(parsed.cron, parsed.timezone);
    const updated = await this.store.replace(name, parsed, next).catch(rethrowStoreError);
    if (!updated) throw new ScheduleNotFoundError(name);
    await this.announce();
    return updated;
  }

  async get(name: string): Promise<Schedule> {
    parseScheduleName(name);
    const found = await this.store.get(name).catch(rethrowStoreError);
    if (!found) throw new ScheduleNotFoundError(name);
    return found.schedule;
  }

  /** Every schedule, by name. */
  async list(): Promise<Schedule[]> {
    return this.store.list().catch(rethrowStoreError);
  }

  /** Stops submitting until resume(); ticks meanwhile are skipped (not made up on resume). */
  async pause(name: string): Promise<Schedule> {
    parseScheduleName(name);
    const paused = await this.store.setPaused(name, true, null).catch(rethrowStoreError);
    if (!paused) throw new ScheduleNotFoundError(name);
    await this.announce();
    return paused;
  }

  /** Submits again from the first tick after now. */
  async resume(name: string): Promise<Schedule> {
    const current = await this.get(name);
    const next = await this.firstTick(current.cron, current.timezone);
    const resumed = await this.store.setPaused(name, false, next).catch(rethrowStoreError);
    if (!resumed) throw new ScheduleNotFoundError(name);
    await this.announce();
    return resumed;
  }

  /** Deletes a schedule; the builds it submitted stay. */
  async remove(name: string): Promise<Schedule> {
    parseScheduleName(name);
    const removed = await this.store.delete(name).catch(rethrowStoreError);
    if (!removed) throw new ScheduleNotFoundError(name);
    await this.announce();
    return removed;
  }

  /**
   * One scheduler pass: submits the due ticks (each in its own transaction) until none is due or
   * held by another process. Any number of processes may run it at once. Throws on a store fault
   * (what committed stays committed; the rest is done by the next pass).
   */
  async runDue(): Promise<ScheduledTick[]> {
    const ticks: ScheduledTick[] = [];
    for (let i = 0; i < MAX_TICKS_PER_PASS; i++) {
      const tick = await this.tickOne();
      if (!tick) break;
      if (tick !== "disabled") ticks.push(tick);
    }
    return ticks;
  }

  /**
   * Runs the scheduler loop until the returned function is called. A failed pass (PostgreSQL away,
   * the connection terminated) logs a warning and is retried a second later; it never throws. The
   * returned function's promise resolves once a pass in progress has ended (or after 2 s).
   */
  start(options: SchedulerOptions = {}): () => Promise<void> {
    const maxSleepMs = options.maxSleepMs ?? DEFAULT_MAX_SLEEP_MS;
    let stopped = false;
    let wake: (() => void) | undefined;
    let woken = false;
    const wakeNow = () => {
      woken = true;
      wake?.();
    };
    const unlisten = this.store.db.listen(this.channel, wakeNow).catch((err: Error) => {
      this.logger.warn(
        { err: err.message },
        "scheduler: no LISTEN for schedule changes; rereading every few seconds",
      );
      return undefined;
    });
    const sleep = (ms: number) =>
      new Promise<void>((resolve) => {
        if (woken || stopped) return resolve();
        const timer = setTimeout(resolve, ms);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    const loop = async () => {
      while (!stopped) {
        woken = false;
        const ms = await this.pass(maxSleepMs);
        await sleep(ms);
        wake = undefined;
      }
    };
    const running = loop();
    return async () => {
      stopped = true;
      wake?.();
      // A pass stuck on an unreachable PostgreSQL must not hold a shutdown: wait a little, not for
      // its timeout (an interrupted tick commits nothing; the next pass anywhere does it).
      await Promise.race([running, new Promise((resolve) => setTimeout(resolve, STOP_WAIT_MS).unref())]);
      await unlisten.then((stop) => stop?.()).catch(() => undefined);
    };
  }

  /** One pass of the loop; returns how long to sleep before the next. */
  private async pass(maxSleepMs: number): Promise<number> {
    try {
      const ticks = await this.runDue();
      for (const t of ticks) this.logTick(t);
      this.throttle.reset("pass");
      const ms = await this.store.msUntilNextDue();
      if (ms === undefined) return maxSleepMs;
      // Overdue after a pass: another process holds it mid-tick; look again shortly.
      if (ms <= 0) return OVERDUE_RECHECK_MS;
      return Math.min(maxSleepMs, Math.ceil(ms) + 5);
    } catch (err) {
      this.throttle.log(
        "warn",
        "pass",
        { err: (err as Error).message },
        "scheduler pass failed; retrying (a tick not committed is done by the next pass)",
      );
      return RETRY_AFTER_FAILURE_MS;
    }
  }

  private logTick(t: ScheduledTick): void {
    const fields = {
      schedule: t.schedule,
      tick: t.tick.toISOString(),
      buildId: t.build.id,
      missed: t.missed,
    };
    if (t.missed > 0)
      this.logger.warn(fields, "schedule: submitted the latest due tick, skipped older missed ones");
    else this.logger.info(fields, "schedule: submitted its tick's build");
  }

  /** Locks one due schedule and submits its tick, in one transaction. */
  private async tickOne(): Promise<ScheduledTick | "disabled" | undefined> {
    let afterCommit: (() => Promise<void>) | undefined;
    const result = await this.store.db.transaction(async (tx) => {
      const due = await this.store.takeDue(tx, TICK_MAX_IDLE_MS);
      if (!due?.schedule.nextTickAt) return undefined;
      const { schedule, dbNow } = due;
      let plan: { tick: Date; missed: number; next: Date; request: SubmitRequest };
      try {
        plan = planTick(schedule, dbNow);
      } catch (err) {
        // Deterministic (the definition, not the store): pause it, or it would block every pass.
        const why = `its tick's build cannot be made: ${(err as Error).message}`;
        this.logger.error(
          { schedule: schedule.name, err: (err as Error).message },
          `schedule paused: ${why}`,
        );
        await this.store.disable(tx, schedule.name, why);
        return "disabled" as const;
      }
      const submitted = await this.submit(tx, plan.request, `schedule:${schedule.name}`);
      await this.store.advance(tx, schedule.name, {
        tick: plan.tick,
        buildId: submitted.build.id,
        missed: plan.missed,
        next: plan.next,
      });
      afterCommit = submitted.afterCommit;
      return {
        schedule: schedule.name,
        tick: plan.tick,
        missed: plan.missed,
        build: submitted.build,
        created: submitted.created,
      };
    });
    await afterCommit?.().catch((err: Error) =>
      this.logger.warn(
        { err: err.message },
        "scheduled build committed; indexing it failed (the reconciler will)",
      ),
    );
    return result;
  }

  /** The first tick after now, by PostgreSQL's clock. */
  private async firstTick(cron: string, timezone: string): Promise<Date> {
    const now = await this.store.now().catch(rethrowStoreError);
    return nextTickAfter(cron, timezone, now);
  }

  /** Wakes the schedulers of every process (this one's too, through its LISTEN). */
  private async announce(): Promise<void> {
    await this.store.notifyChanged(this.channel).catch(() => undefined);
  }
}

/** The tick to submit now (missed-ticks policy: the most recent due one) and its build. */
function planTick(schedule: Schedule, now: Date) {
  const { tick, missed, next } = dueTick(schedule.cron, schedule.timezone, schedule.nextTickAt ?? now, now);
  const request = parseSubmit({
    strategyId: schedule.strategyId,
    priority: schedule.priority,
    params: {
      ...schedule.params,
      [SCHEDULE_PARAMS_KEY]: { name: schedule.name, tick: tick.toISOString(), missed },
    },
    requires: schedule.requires,
    ...(schedule.maxRetries === null ? {} : { maxRetries: schedule.maxRetries }),
    ...(schedule.timeoutSeconds === null ? {} : { timeoutSeconds: schedule.timeoutSeconds }),
    ...(schedule.concurrencyKey === null ? {} : { concurrencyKey: schedule.concurrencyKey }),
    idempotencyKey: tickKey(schedule.name, tick),
  });
  return { tick, missed, next, request };
}

/** A store fault as StoreUnavailableError (503); the queue's own errors pass as they are. */
function rethrowStoreError(err: unknown): never {
  throw asStoreError(err);
}
