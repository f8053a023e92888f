/**
 * Notices that events were committed: this process's hub is woken at once, the others through Redis
 * pub/sub (`<prefix>:events`) or, on the PostgreSQL path, NOTIFY (`oculus_events_<schema>`).
 * A notice is `{"v":1,"builds":[ids]}` (`"builds": null` when more than MAX_IDS changed at once);
 * the events themselves are read from PostgreSQL (see event-hub.ts). Publishing is never awaited by
 * the operation that changed the builds, and notices raised while one is in flight go out together.
 */
const MAX_IDS = 100;

export interface NoticeTransport {
  /** false when Redis is not usable now. */
  publishRedis(payload: string): Promise<boolean>;
  notifyPostgres(payload: string): Promise<void>;
  wakeLocal(): void;
}

export class EventNotices {
  private readonly pending = new Set<string>();
  private overflow = false;
  private inFlight = false;

  constructor(private readonly transport: NoticeTransport) {}

  announce(buildIds: Iterable<string>): void {
    this.transport.wakeLocal();
    for (const id of buildIds) {
      if (this.pending.size >= MAX_IDS) this.overflow = true;
      else this.pending.add(id);
    }
    if (!this.inFlight && (this.pending.size > 0 || this.overflow)) void this.flush();
  }

  private async flush(): Promise<void> {
    this.inFlight = true;
    try {
      while (this.pending.size > 0 || this.overflow) {
        const payload = JSON.stringify({ v: 1, builds: this.overflow ? null : [...this.pending] });
        this.pending.clear();
        this.overflow = false;
        const sent = await this.transport.publishRedis(payload).catch(() => false);
        if (!sent) await this.transport.notifyPostgres(payload).catch(() => undefined);
      }
    } finally {
      this.inFlight = false;
    }
  }
}
