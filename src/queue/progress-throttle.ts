/**
 * Progress writes, throttled per build run: at most one write per `intervalMs`, always of the newest
 * value (a handler reporting 1,000 times a second costs a few writes a second, and subscribers still
 * get its latest progress at most one interval late). Each call resolves when a write carrying its
 * value or a newer one has committed, and rejects with that write's error (a stale lease).
 */
export type ProgressWrite = () => Promise<void>;

interface Waiter {
  resolve: () => void;
  reject: (err: unknown) => void;
}

interface Slot {
  /** The newest value not yet written, as the write that records it. */
  pending: ProgressWrite | undefined;
  waiters: Waiter[];
  lastWriteAt: number;
  writing: boolean;
  timer: NodeJS.Timeout | undefined;
}

export class ProgressThrottle {
  private readonly slots = new Map<string, Slot>();

  constructor(private readonly intervalMs: number) {}

  /** Queues `write` for the run `key` (build id and lease); see the module comment. */
  report(key: string, write: ProgressWrite): Promise<void> {
    const slot = this.slotFor(key);
    slot.pending = write;
    const done = new Promise<void>((resolve, reject) => slot.waiters.push({ resolve, reject }));
    this.schedule(key, slot);
    return done;
  }

  /** Writes the run's pending value now (before its result is recorded, so it comes first). */
  async flush(key: string): Promise<void> {
    const slot = this.slots.get(key);
    if (!slot) return;
    while (slot.writing) await new Promise((resolve) => setTimeout(resolve, 1));
    if (slot.pending) await this.write(key, slot);
    this.slots.delete(key);
    clearTimeout(slot.timer);
  }

  private slotFor(key: string): Slot {
    let slot = this.slots.get(key);
    if (!slot) {
      slot = { pending: undefined, waiters: [], lastWriteAt: 0, writing: false, timer: undefined };
      this.slots.set(key, slot);
    }
    return slot;
  }

  private schedule(key: string, slot: Slot): void {
    if (slot.writing || slot.timer) return; // the write in flight, or the timer, picks it up
    const wait = slot.lastWriteAt + this.intervalMs - Date.now();
    if (wait <= 0) {
      void this.write(key, slot);
      return;
    }
    slot.timer = setTimeout(() => {
      slot.timer = undefined;
      if (slot.pending) void this.write(key, slot);
      else this.slots.delete(key); // idle for a whole interval: forget the run
    }, wait);
  }

  private async write(key: string, slot: Slot): Promise<void> {
    const write = slot.pending;
    const waiters = slot.waiters;
    if (!write) return;
    slot.pending = undefined;
    slot.waiters = [];
    slot.writing = true;
    slot.lastWriteAt = Date.now();
    try {
      await write();
      for (const w of waiters) w.resolve();
    } catch (err) {
      for (const w of waiters) w.reject(err);
    } finally {
      slot.writing = false;
    }
    // Keep the slot one interval (the next value waits for it), then forget the run.
    if (this.slots.get(key) === slot) this.schedule(key, slot);
  }
}
