/**
 * The event hub: one reader of the event stream per process, fanned out in memory to any number of
 * subscribers (a thousand browsers cost one query per wake-up, not a thousand).
 *
 * Order and completeness come from PostgreSQL, not from the notices: the hub reads `build_events` in
 * id order after its cursor and advances only over ids it has read, or over a missing id once no
 * transaction that could still commit it is running (the gap rule: event-gaps.ts). Redis pub/sub
 * (`<prefix>:events`) and PostgreSQL NOTIFY (`oculus_events_<schema>`) only wake it early; a timer
 * wakes it anyway, so a lost notice delays an event by one poll, never loses it.
 *
 * A subscriber gets the current state first (a snapshot), or, resuming after an event id, the events
 * it missed from the table, read page by page as it takes them; then live events. Both join at the
 * hub's cursor at attach time, so nothing is missed and nothing repeats. How far back a resume may go
 * is the caller's cap (checkResume; the HTTP API's OCULUS_HTTP_MAX_RESUME_EVENTS).
 */
import { type Build, type BuildStatus, FINAL_STATUSES, parseBuildId } from "../core/build.js";
import { BuildNotFoundError, ResumeTooOldError, ValidationError } from "../core/errors.js";
import type { BuildEvent, BuildSnapshot, StreamItem, SubscribeOptions } from "../core/events.js";
import type { Logger } from "../core/logger.js";
import type { Db } from "../postgres/db.js";
import type { EventStore } from "../postgres/event-store.js";
import { type RedisClient, subscribedClient } from "../redis/connection.js";
import { DEFAULT_GAP_RULE, EventCursor, type NextStep } from "./event-gaps.js";

export interface EventHubOptions {
  /** Poll even without a notice (default 500 ms). */
  pollMs: number;
  /**
   * A missing event id still held by a running writer after this long is logged (default 10 s). It
   * is never skipped: it is delivered, in order, when its writer commits (see event-gaps.ts).
   */
  gapWarnAfterMs: number;
  /** A subscriber this many events behind is ended (it resumes with its last event id). */
  maxBuffered: number;
}

export const DEFAULT_HUB_OPTIONS: EventHubOptions = {
  pollMs: 500,
  gapWarnAfterMs: 10_000,
  maxBuffered: 10_000,
};

const PAGE = 500;
/** Events per query of a catch-up (the most a stream holds of its backlog at a time). */
const CATCH_UP_PAGE = 500;
const ACTIVE_IN_SNAPSHOT = 1000;
const START_BEHIND_HEAD = 10_000;
const COUNTS_TTL_MS = 1000;

class SubscriberFellBehind extends Error {
  constructor() {
    super("subscriber fell too far behind the event stream; resume with its last event id");
  }
}

interface Subscriber {
  buildId: string | undefined;
  buffer: BuildEvent[];
  failed: Error | undefined;
  notify: (() => void) | undefined;
}

export class EventHub {
  private readonly cursor: EventCursor;
  private readonly subscribers = new Set<Subscriber>();
  private started: Promise<void> | undefined;
  private reading: Promise<void> | undefined;
  private readAgain = false;
  /** Wake-ups came while nobody was subscribed: the next read may jump ahead (see skipIdleStretch). */
  private idle = false;
  private timer: NodeJS.Timeout | undefined;
  private gapTimer: NodeJS.Timeout | undefined;
  private unlisten: (() => Promise<void>) | undefined;
  private subscriber: RedisClient | undefined;
  private closed = false;
  private counts: { at: number; value: Promise<Record<BuildStatus, number>> } | undefined;

  constructor(
    private readonly events: EventStore,
    private readonly db: Db,
    readonly pgChannel: string,
    private readonly redis: RedisClient | undefined,
    readonly redisChannel: string,
    private readonly logger: Logger,
    private readonly options: EventHubOptions = DEFAULT_HUB_OPTIONS,
  ) {
    this.cursor = new EventCursor(() => events.writers(), logger, {
      ...DEFAULT_GAP_RULE,
      warnAfterMs: options.gapWarnAfterMs,
    });
  }

  /** The stream: a snapshot (or the missed events), then live events; see SubscribeOptions. */
  async *subscribe(options: SubscribeOptions = {}): AsyncGenerator<StreamItem> {
    const buildId = options.buildId === undefined ? undefined : parseBuildId(options.buildId, "buildId");
    const resumeAfter = parseLastEventId(options.lastEventId);
    await this.start();
    await this.read(); // what committed before this call goes in the snapshot, not after it
    const sub: Subscriber = { buildId, buffer: [], failed: undefined, notify: undefined };
    this.subscribers.add(sub);
    const attachedAt = this.cursor.position;
    const onAbort = () => sub.notify?.();
    options.signal?.addEventListener("abort", onAbort);
    try {
      let last = resumeAfter ?? 0;
      if (resumeAfter === undefined) {
        const initial = await this.snapshotItems(buildId, attachedAt);
        for (const item of initial.items) {
          yield item;
          last = Math.max(last, Number(item.id));
        }
        if (initial.ended) return;
      } else {
        for await (const event of this.missedEvents(buildId, resumeAfter, attachedAt, options.signal)) {
          yield event;
          last = Number(event.id);
        }
        if (options.signal?.aborted || this.closed) return;
        if (buildId && (await this.buildEndedBy(buildId, last))) return;
      }
      for (;;) {
        const event = await this.next(sub, options.signal);
        if (!event) return;
        if (Number(event.id) <= last) continue;
        last = Number(event.id);
        yield event;
        if (buildId && isFinal(event)) return;
      }
    } finally {
      options.signal?.removeEventListener("abort", onAbort);
      this.subscribers.delete(sub);
    }
  }

  /**
   * Refuses a resume after `lastEventId` that would replay more than `maxEvents` events, with
   * ResumeTooOldError naming the oldest id one may resume after. Every build's stream counts by id
   * distance from the newest event (one cheap lookup; ids have gaps, so it never under-counts), one
   * build's stream by that build's own events (at most `maxEvents + 1` index entries read). Without
   * `lastEventId` (a snapshot) there is nothing to refuse.
   */
  async checkResume(options: Omit<SubscribeOptions, "signal">, maxEvents: number): Promise<void> {
    const resumeAfter = parseLastEventId(options.lastEventId);
    if (resumeAfter === undefined) return;
    const buildId = options.buildId === undefined ? undefined : parseBuildId(options.buildId, "buildId");
    const floor =
      buildId === undefined
        ? Math.max(0, (await this.events.head()) - maxEvents)
        : await this.events.buildResumeFloor(buildId, maxEvents);
    if (resumeAfter < floor) throw new ResumeTooOldError(String(resumeAfter), String(floor), maxEvents);
  }

  /**
   * Reads new events now (this process just committed some, or a notice came). With nobody
   * subscribed there is nobody to dispatch to: the read waits for the next subscriber.
   */
  wake(): void {
    if (!this.started || this.closed) return;
    if (this.subscribers.size === 0) {
      this.idle = true;
      return;
    }
    void this.read();
  }

  /** The hub's position in the stream (events up to it have been dispatched). */
  get position(): number {
    return this.cursor.position;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    clearTimeout(this.gapTimer);
    for (const sub of this.subscribers) sub.notify?.();
    await this.unlisten?.().catch(() => undefined);
    this.subscriber?.disconnect();
  }

  private start(): Promise<void> {
    this.started ??= this.listen();
    return this.started;
  }

  private async listen(): Promise<void> {
    // Start a little behind the head: an event committed after this read may carry an id below the
    // head (its transaction drew the id earlier); reading from before it, with the gap rule, gets it.
    this.cursor.jumpTo((await this.events.head()) - START_BEHIND_HEAD);
    this.unlisten = await this.db.listen(this.pgChannel, () => this.wake());
    if (this.redis) {
      this.subscriber = subscribedClient(
        this.redis,
        this.redisChannel,
        () => this.wake(),
        (err) => this.logger.debug({ err: err.message }, "event subscription pending; again on reconnect"),
      );
    }
    this.timer = setInterval(() => this.wake(), this.options.pollMs);
    this.timer.unref();
    await this.read(); // catch up before the first subscriber attaches
  }

  /**
   * Single-flight: a wake-up during a read makes the read go round once more. Resolves when a read
   * that started after the call has finished (so everything committed before it was dispatched).
   */
  private read(): Promise<void> {
    if (this.reading) {
      this.readAgain = true;
      return this.reading;
    }
    this.reading = this.readRounds().finally(() => {
      this.reading = undefined;
    });
    return this.reading;
  }

  private async readRounds(): Promise<void> {
    try {
      do {
        this.readAgain = false;
        if (this.idle) await this.skipIdleStretch();
        while (await this.readPage()) {}
      } while (this.readAgain && !this.closed);
    } catch (err) {
      this.logger.debug({ err: (err as Error).message }, "event read failed; the next poll retries");
    }
  }

  /**
   * After a stretch with no subscribers, start again where a new hub would (a little behind the
   * head) rather than read every event nobody was there to receive. Nothing is lost to anyone: a new
   * subscriber takes a snapshot or reads what it missed from the table. Runs inside the single-flight
   * read, so no page read moves the cursor meanwhile.
   */
  private async skipIdleStretch(): Promise<void> {
    this.idle = false;
    this.cursor.jumpTo((await this.events.head()) - START_BEHIND_HEAD);
  }

  /** True when a full page was read (there may be more). */
  private async readPage(): Promise<boolean> {
    const rows = await this.events.after(this.cursor.beginRead(), PAGE);
    const verdict = await this.cursor.take(
      rows.map((e) => Number(e.id)),
      rows.length === PAGE,
    );
    for (const event of rows.slice(0, verdict.accepted)) this.dispatch(event);
    return this.follow(verdict.next);
  }

  /** Acts on the cursor's next step; true when the reader reads on at once. */
  private follow(next: NextStep): boolean {
    switch (next.kind) {
      case "next-page":
        return true;
      case "read-again":
        this.readAgain = true;
        return false;
      case "wait":
        this.recheckGapIn(next.ms);
        return false;
      case "caught-up":
        return false;
    }
  }

  private recheckGapIn(ms: number): void {
    if (this.gapTimer || this.closed) return;
    this.gapTimer = setTimeout(() => {
      this.gapTimer = undefined;
      this.wake();
    }, ms);
  }

  private dispatch(event: BuildEvent): void {
    for (const sub of this.subscribers) {
      if (sub.buildId !== undefined && sub.buildId !== event.buildId) continue;
      if (sub.failed) continue;
      if (sub.buffer.length >= this.options.maxBuffered) sub.failed = new SubscriberFellBehind();
      else sub.buffer.push(event);
      sub.notify?.();
    }
  }

  /** The subscriber's next live event; undefined when it is aborted or the hub closes. */
  private async next(sub: Subscriber, signal: AbortSignal | undefined): Promise<BuildEvent | undefined> {
    for (;;) {
      if (signal?.aborted || this.closed) return undefined;
      const event = sub.buffer.shift();
      if (event) return event;
      if (sub.failed) throw sub.failed;
      await new Promise<void>((resolve) => {
        sub.notify = resolve;
      });
      sub.notify = undefined;
    }
  }

  private async snapshotItems(
    buildId: string | undefined,
    attachedAt: number,
  ): Promise<{ items: StreamItem[]; ended: boolean }> {
    if (buildId) {
      const found = await this.events.buildSnapshot(buildId);
      if (!found) throw new BuildNotFoundError(buildId);
      const snapshot: BuildSnapshot = { kind: "snapshot", id: String(found.lastEventId), build: found.build };
      return { items: [snapshot], ended: isFinalBuild(found.build) };
    }
    const [active, counts] = await Promise.all([
      this.events.activeBuilds(ACTIVE_IN_SNAPSHOT),
      this.countsForSnapshot(),
    ]);
    return { items: [{ kind: "snapshot", id: String(attachedAt), active, counts }], ended: false };
  }

  /**
   * Counts by status for all-builds snapshots, shared for a second: a thousand browsers reconnecting
   * at once cost one full count, not a thousand.
   */
  private countsForSnapshot(): Promise<Record<BuildStatus, number>> {
    const now = Date.now();
    if (!this.counts || now - this.counts.at > COUNTS_TTL_MS) {
      const value = this.events.statusCounts();
      this.counts = { at: now, value };
      value.catch(() => {
        if (this.counts?.value === value) this.counts = undefined;
      });
    }
    return this.counts.value;
  }

  /**
   * Events after `afterId` up to the hub's cursor at attach time, from the table, a page at a time
   * (keyset by id): the next page is read only once the consumer has taken the previous one (an HTTP
   * stream takes more when its socket has drained), and none once `signal` aborts. A catch-up over a
   * long backlog so holds one page, not the backlog, and stops with its client.
   */
  private async *missedEvents(
    buildId: string | undefined,
    afterId: number,
    attachedAt: number,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<BuildEvent> {
    let from = afterId;
    for (;;) {
      if (signal?.aborted || this.closed) return;
      const page = await this.events.between(buildId, from, attachedAt, CATCH_UP_PAGE);
      for (const event of page) {
        yield event;
        if (signal?.aborted) return;
      }
      const lastOfPage = page.at(-1);
      if (!lastOfPage || page.length < CATCH_UP_PAGE) return;
      from = Number(lastOfPage.id);
    }
  }

  /** After a catch-up up to `seen`: the build is final and the client has its final event. */
  private async buildEndedBy(buildId: string, seen: number): Promise<boolean> {
    const found = await this.events.buildSnapshot(buildId);
    if (!found) throw new BuildNotFoundError(buildId);
    return isFinalBuild(found.build) && found.lastEventId <= seen;
  }
}

function isFinal(event: BuildEvent): boolean {
  return event.type === "completed" || event.type === "failed" || event.type === "stopped";
}

function isFinalBuild(build: Build): boolean {
  return FINAL_STATUSES.includes(build.status);
}

function parseLastEventId(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d{1,15}$/.test(value)) throw new ValidationError("lastEventId", "must be an event id (digits)");
  return Number(value);
}
