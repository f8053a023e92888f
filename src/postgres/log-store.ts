/**
 * A build's whole log in PostgreSQL (migration 0009): chunks appended by its worker, fenced by the
 * lease, up to a per-build cap; read back by byte offset. See docs/http-api.md ("Build logs").
 */
import { queries } from "../generated/assets.js";
import type { Db } from "./db.js";

export type LogStream = "stdout" | "stderr" | "system";

/** A chunk as a worker hands it over: lines of one stream, "\n"-terminated. */
export interface LogChunkInput {
  stream: LogStream;
  /** When its first line was read (ISO 8601). */
  at: string;
  text: string;
}

export interface StoredLogChunk extends LogChunkInput {
  seq: number;
  /** Byte offset of the chunk's first byte in the whole log. */
  offset: number;
}

export interface LogState {
  status: string;
  /** The log's size in bytes so far. */
  bytes: number;
  truncated: boolean;
}

export type AppendOutcome = { appended: number; truncated: boolean } | "stale";

export const TRUNCATION_MARKER = (capBytes: number) =>
  `--- log truncated: this build's output is over the cap of ${capBytes} bytes; later output is not stored ---\n`;

export class LogStore {
  constructor(private readonly db: Db) {}

  /**
   * Appends chunks while the log stays within `capBytes`; the first chunk past it is replaced by the
   * truncation marker (once), and nothing more is stored. "stale" when the lease is not the build's
   * current one or the build is not running (nothing written).
   */
  async append(id: string, lease: number, chunks: LogChunkInput[], capBytes: number): Promise<AppendOutcome> {
    return this.db.transaction(async (tx) => {
      const state = await tx.query<{ log_bytes: string; log_chunks: number; log_truncated: boolean }>(
        queries.log_state_for_append,
        [id, lease],
      );
      const row = state.rows[0];
      if (!row) return "stale";
      let bytes = Number(row.log_bytes);
      let seq = row.log_chunks;
      let truncated = row.log_truncated;
      const rows = {
        seq: [] as number[],
        stream: [] as string[],
        at: [] as string[],
        offset: [] as number[],
        text: [] as string[],
      };
      const add = (chunk: LogChunkInput) => {
        rows.seq.push(seq++);
        rows.stream.push(chunk.stream);
        rows.at.push(chunk.at);
        rows.offset.push(bytes);
        rows.text.push(chunk.text);
        bytes += Buffer.byteLength(chunk.text);
      };
      for (const chunk of chunks) {
        if (truncated) break;
        if (bytes + Buffer.byteLength(chunk.text) > capBytes) {
          add({ stream: "system", at: chunk.at, text: TRUNCATION_MARKER(capBytes) });
          truncated = true;
          break;
        }
        add(chunk);
      }
      if (rows.seq.length === 0) return { appended: 0, truncated };
      // Log output is like progress: losing the last fraction of a second of it in a database crash
      // is acceptable; the next state change's commit flushes the WAL anyway.
      await tx.query("SET LOCAL synchronous_commit TO off");
      await tx.query(queries.insert_log_chunks, [
        id,
        rows.seq,
        rows.stream,
        rows.at,
        rows.offset,
        rows.text,
        bytes,
        seq,
        truncated,
      ]);
      return { appended: rows.seq.length, truncated };
    });
  }

  async state(id: string): Promise<LogState | undefined> {
    const res = await this.db.query<{ status: string; log_bytes: string; log_truncated: boolean }>(
      queries.log_state,
      [id],
    );
    const row = res.rows[0];
    return row
      ? { status: row.status, bytes: Number(row.log_bytes), truncated: row.log_truncated }
      : undefined;
  }

  /** Chunks holding bytes at or after `offset`, in order (the first may start before it). */
  async read(id: string, offset: number, limit: number): Promise<StoredLogChunk[]> {
    const res = await this.db.query<{
      seq: number;
      stream: LogStream;
      at: Date | string;
      start_offset: string;
      text: string;
    }>(queries.read_log_chunks, [id, offset, limit]);
    return res.rows.map((r) => ({
      seq: r.seq,
      stream: r.stream,
      at: new Date(r.at).toISOString(),
      offset: Number(r.start_offset),
      text: r.text,
    }));
  }
}
