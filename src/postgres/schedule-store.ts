/**
 * The PostgreSQL record of recurring schedules (migration 0012): one method per query file, rows
 * mapped to the Schedule model here and nowhere else. The scheduler's tick runs in a transaction
 * (`takeDue`, the build's insert, `advance`: src/queue/scheduler.ts).
 */
import type { Schedule, ScheduleRequest } from "../core/schedule.js";
import { queries } from "../generated/assets.js";
import type { Db, Queryable } from "./db.js";

interface ScheduleRow {
  name: string;
  cron: string;
  timezone: string;
  strategy_id: string;
  params: Record<string, unknown>;
  priority: number;
  requires: Record<string, string>;
  max_retries: number | null;
  timeout_seconds: number | null;
  concurrency_key: string | null;
  paused: boolean;
  next_tick_at: Date | null;
  last_tick_at: Date | null;
  last_build_id: string | null;
  last_missed: number;
  last_error: string | null;
  created_at: Date;
  updated_at: Date;
  db_now?: Date;
}

/** A schedule read with PostgreSQL's clock at the time of the read. */
export interface TimedSchedule {
  schedule: Schedule;
  dbNow: Date;
}

function toSchedule(row: ScheduleRow): Schedule {
  return {
    name: row.name,
    cron: row.cron,
    timezone: row.timezone,
    strategyId: row.strategy_id,
    params: row.params ?? {},
    priority: row.priority,
    requires: row.requires ?? {},
    maxRetries: row.max_retries,
    timeoutSeconds: row.timeout_seconds,
    concurrencyKey: row.concurrency_key,
    paused: row.paused,
    nextTickAt: row.next_tick_at,
    lastTickAt: row.last_tick_at,
    lastBuildId: row.last_build_id,
    lastMissed: row.last_missed,
    lastError: row.last_error,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

const timed = (row: ScheduleRow): TimedSchedule => ({
  schedule: toSchedule(row),
  dbNow: row.db_now ?? new Date(),
});

function definitionParams(
  name: string,
  s: Omit<ScheduleRequest, "name" | "paused"> & { paused?: boolean },
  nextTickAt: Date | null,
) {
  return [
    name,
    s.cron,
    s.timezone,
    s.strategyId,
    JSON.stringify(s.params),
    s.priority,
    JSON.stringify(s.requires),
    s.maxRetries ?? null,
    s.timeoutSeconds ?? null,
    s.paused ?? null,
    nextTickAt,
    s.concurrencyKey ?? null,
  ];
}

export class ScheduleStore {
  constructor(readonly db: Db) {}

  /** PostgreSQL's clock: every process computes ticks from it, so they agree on what is due. */
  async now(): Promise<Date> {
    const res = await this.db.query<{ now: Date }>(queries.db_now);
    return res.rows[0]?.now ?? new Date();
  }

  /** Creates a schedule; undefined when the name is taken. */
  async insert(s: ScheduleRequest, nextTickAt: Date | null): Promise<Schedule | undefined> {
    const res = await this.db.query<ScheduleRow>(
      queries.schedule_insert,
      definitionParams(s.name, s, nextTickAt),
    );
    return res.rows[0] ? toSchedule(res.rows[0]) : undefined;
  }

  /**
   * Replaces a schedule's definition; `paused` undefined keeps the current state (`nextTickAt` then
   * applies only if it is not paused). Undefined when there is no such schedule.
   */
  async replace(
    name: string,
    s: Omit<ScheduleRequest, "name" | "paused"> & { paused?: boolean },
    nextTickAt: Date,
  ): Promise<Schedule | undefined> {
    const res = await this.db.query<ScheduleRow>(
      queries.schedule_replace,
      definitionParams(name, s, nextTickAt),
    );
    return res.rows[0] ? toSchedule(res.rows[0]) : undefined;
  }

  async get(name: string): Promise<TimedSchedule | undefined> {
    const res = await this.db.query<ScheduleRow>(queries.schedule_select, [name]);
    return res.rows[0] ? timed(res.rows[0]) : undefined;
  }

  async list(): Promise<Schedule[]> {
    const res = await this.db.query<ScheduleRow>(queries.schedule_list);
    return res.rows.map(toSchedule);
  }

  async delete(name: string): Promise<Schedule | undefined> {
    const res = await this.db.query<ScheduleRow>(queries.schedule_delete, [name]);
    return res.rows[0] ? toSchedule(res.rows[0]) : undefined;
  }

  /** Pauses, or resumes with `nextTickAt` (the first tick after now); undefined when there is none. */
  async setPaused(name: string, paused: boolean, nextTickAt: Date | null): Promise<Schedule | undefined> {
    const res = await this.db.query<ScheduleRow>(queries.schedule_set_paused, [name, paused, nextTickAt]);
    return res.rows[0] ? toSchedule(res.rows[0]) : undefined;
  }

  /**
   * Locks one due schedule for the transaction `tx` (skipping those others hold); undefined: none
   * due. The transaction may then sit idle at most `maxIdleMs` (a frozen process loses the lock).
   */
  async takeDue(tx: Queryable, maxIdleMs: number): Promise<TimedSchedule | undefined> {
    await tx.query(queries.schedule_tick_idle_timeout, [String(maxIdleMs)]);
    const res = await tx.query<ScheduleRow>(queries.schedule_take_due);
    return res.rows[0] ? timed(res.rows[0]) : undefined;
  }

  async advance(
    tx: Queryable,
    name: string,
    tick: { tick: Date; buildId: string; missed: number; next: Date },
  ): Promise<void> {
    await tx.query(queries.schedule_advance, [name, tick.tick, tick.buildId, tick.missed, tick.next]);
  }

  /** Pauses a schedule the scheduler cannot make a build for, with the reason (in `tx`). */
  async disable(tx: Queryable, name: string, why: string): Promise<void> {
    await tx.query(queries.schedule_disable, [name, why]);
  }

  /** Milliseconds until the soonest unpaused tick (negative: overdue); undefined when none. */
  async msUntilNextDue(): Promise<number | undefined> {
    const res = await this.db.query<{ ms: number | null }>(queries.schedule_next_due);
    const ms = res.rows[0]?.ms;
    return ms === null || ms === undefined ? undefined : Number(ms);
  }

  /** Wakes every scheduler (their LISTEN) after a schedule changed. */
  async notifyChanged(channel: string): Promise<void> {
    await this.db.query(queries.notify, [channel, ""]);
  }
}
