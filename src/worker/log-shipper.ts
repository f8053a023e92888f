/**
 * Ships one run's output to the build's whole log in PostgreSQL (BuildQueue.appendLog): lines are
 * gathered and written in batches (every FLUSH_MS, or sooner past FLUSH_BYTES), one write at a time,
 * fenced by the run's lease. The run's first line is a separator naming the attempt, so a retry's
 * output (after a failure, a dead worker, an operator's retry) follows the earlier output visibly.
 *
 * A worker killed with SIGKILL loses what it had not flushed yet (at most FLUSH_MS of output); what
 * was flushed stays. While the store is unreachable lines wait in memory up to MAX_PENDING_BYTES;
 * beyond that the oldest waiting lines are dropped and a marker says how many.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { LogChunkInput, LogStream } from "../postgres/log-store.js";

const FLUSH_MS = 500;
const FLUSH_BYTES = 64 * 1024;
const MAX_PENDING_BYTES = 4 * 1024 * 1024;
/** How long the end of a run retries its last lines while the store fails, before the result report. */
export const CLOSE_WAIT_MS = 2000;
/** Between attempts of that last write when the store failed. */
const CLOSE_RETRY_MS = 200;

interface PendingLine {
  stream: LogStream;
  at: string;
  text: string;
  bytes: number;
}

export interface LogSink {
  appendLog(id: string, lease: number, chunks: LogChunkInput[]): Promise<unknown>;
}

export class LogShipper {
  private pending: PendingLine[] = [];
  private pendingBytes = 0;
  private dropped = 0;
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> | undefined;
  /** Set when the lease is stale (the build is not this run's any more): nothing more is written. */
  private dead = false;

  constructor(
    private readonly sink: LogSink,
    private readonly buildId: string,
    private readonly lease: number,
    private readonly onError: (err: unknown) => void = () => undefined,
  ) {}

  /** The separator before the run's output: which attempt, on which worker, when. */
  start(attempt: number, workerId: string): void {
    this.line(`--- attempt ${attempt} (lease ${this.lease}) on worker ${workerId} ---`, "system");
  }

  line(text: string, stream: LogStream): void {
    if (this.dead) return;
    const line = `${text}\n`;
    const bytes = Buffer.byteLength(line);
    this.pending.push({ stream, at: new Date().toISOString(), text: line, bytes });
    this.pendingBytes += bytes;
    while (this.pendingBytes > MAX_PENDING_BYTES && this.pending.length > 1) {
      this.pendingBytes -= this.pending.shift()?.bytes ?? 0;
      this.dropped++;
    }
    if (this.pendingBytes >= FLUSH_BYTES) this.flushSoon(0);
    else this.flushSoon(FLUSH_MS);
  }

  /**
   * Writes what is left before the run's result is reported, so that the log is complete. Writes
   * that succeed are always waited for, however slow the store (a busy machine must not cut a log's
   * end); `waitMs` bounds only the retries while the store fails. 0 for a run that lost its build
   * (nothing it writes could count). Nothing is written after close.
   */
  async close(waitMs = CLOSE_WAIT_MS): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const deadline = Date.now() + waitMs;
    while (waitMs > 0 && !this.dead && (this.pending.length > 0 || this.writing)) {
      // Ends when everything is written, the lease is stale (dead), or a write failed (lines back).
      await this.startWrite();
      if (this.pending.length === 0 || this.dead) continue;
      const left = deadline - Date.now();
      if (left <= 0) break;
      await sleep(Math.min(CLOSE_RETRY_MS, left));
    }
    this.dead = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private flushSoon(delayMs: number): void {
    if (this.timer && delayMs > 0) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.startWrite();
    }, delayMs);
    this.timer.unref?.();
  }

  /**
   * The write in progress, or a new one. The handle is cleared by a callback of the write's own
   * promise, which always runs after this assignment: a write with nothing to do settles at once,
   * and clearing the handle inside write() would run before the assignment and leave a settled
   * promise in `writing` for good (every later flush would see a write in progress and skip, and
   * the lines would wait for the end of the run).
   */
  private startWrite(): Promise<void> {
    if (this.writing) return this.writing;
    const writing = this.write().finally(() => {
      if (this.writing === writing) this.writing = undefined;
    });
    this.writing = writing;
    return writing;
  }

  private async write(): Promise<void> {
    while (this.pending.length > 0 && !this.dead) {
      const batch = this.takeBatch();
      try {
        await this.sink.appendLog(this.buildId, this.lease, toChunks(batch));
      } catch (err) {
        if (
          (err as { code?: string }).code === "stale_lease" ||
          (err as { code?: string }).code === "invalid_state"
        ) {
          this.dead = true;
          this.pending = [];
          return;
        }
        // The store is unreachable: put the batch back and try again later.
        this.pending = [...batch, ...this.pending];
        this.pendingBytes += batch.reduce((n, l) => n + l.bytes, 0);
        this.onError(err);
        this.flushSoon(FLUSH_MS * 2);
        return;
      }
    }
  }

  private takeBatch(): PendingLine[] {
    const batch: PendingLine[] = [];
    if (this.dropped > 0) {
      const text = `--- ${this.dropped} line(s) of output lost: the store was unreachable too long ---\n`;
      batch.push({ stream: "system", at: new Date().toISOString(), text, bytes: Buffer.byteLength(text) });
      this.dropped = 0;
    }
    let bytes = 0;
    while (this.pending.length > 0 && bytes < FLUSH_BYTES * 4) {
      const line = this.pending.shift() as PendingLine;
      bytes += line.bytes;
      batch.push(line);
    }
    this.pendingBytes -= bytes;
    return batch;
  }
}

/** Consecutive lines of one stream become one chunk (the time of its first line). */
function toChunks(lines: PendingLine[]): LogChunkInput[] {
  const chunks: LogChunkInput[] = [];
  let current: LogChunkInput | undefined;
  for (const line of lines) {
    if (current && current.stream === line.stream) {
      current.text += line.text;
      continue;
    }
    current = { stream: line.stream, at: line.at, text: line.text };
    chunks.push(current);
  }
  return chunks;
}
