/**
 * An RDB snapshot of a running Redis, taken over its connection the way `redis-cli --rdb` does: the
 * client announces itself as a replica that only wants the snapshot (`REPLCONF capa eof`,
 * `REPLCONF rdb-only 1`), sends `SYNC`, and reads the payload. Redis answers either with
 * `$<length>\r\n` and that many bytes (snapshot written to disk first), or, diskless, with
 * `$EOF:<40 bytes>\r\n`, the data, and the same 40 bytes at the end. While it prepares the snapshot it
 * sends bare newlines to keep the connection alive. Works for any Redis we can reach (a remote or
 * containerised one whose data directory is not readable here), unless SYNC is disabled.
 */
import { once } from "node:events";
import { createWriteStream } from "node:fs";
import net from "node:net";
import tls from "node:tls";
import { redactUrl } from "../core/config.js";

const EOF_MARK_LENGTH = 40;

export interface RdbStreamResult {
  bytes: number;
  /** "disk": Redis wrote the snapshot to its disk and sent it with a length; "diskless": streamed. */
  transfer: "disk" | "diskless";
}

/** Writes an RDB snapshot of the Redis at `url` to `file`. */
export async function streamRdbSnapshot(
  url: string,
  file: string,
  idleTimeoutMs = 60_000,
): Promise<RdbStreamResult> {
  const target = new URL(url);
  const socket = await connect(target);
  socket.setTimeout(idleTimeoutMs, () =>
    socket.destroy(new Error(`no data from Redis for ${idleTimeoutMs} ms`)),
  );
  const reader = new SocketReader(socket);
  try {
    const password = decodeURIComponent(target.password);
    const username = decodeURIComponent(target.username);
    if (password) await command(socket, reader, username ? ["AUTH", username, password] : ["AUTH", password]);
    await command(socket, reader, ["REPLCONF", "capa", "eof"]).catch(() => undefined);
    // Without rdb-only Redis would go on streaming its replication feed after the snapshot.
    await command(socket, reader, ["REPLCONF", "rdb-only", "1"]).catch(() => undefined);
    socket.write(encode(["SYNC"]));
    const header = await reader.bulkHeader();
    if (header.startsWith("-")) throw new Error(`Redis refused SYNC: ${header.slice(1)}`);
    if (!header.startsWith("$")) throw new Error(`unexpected answer to SYNC: ${header.slice(0, 80)}`);
    const out = createWriteStream(file, { flags: "wx" });
    try {
      const result = header.startsWith("$EOF:")
        ? await reader.copyUntilMark(Buffer.from(header.slice(5), "latin1"), out)
        : await reader.copyExactly(Number(header.slice(1)), out);
      out.end();
      await once(out, "finish");
      return result;
    } catch (err) {
      out.destroy();
      throw err;
    }
  } catch (err) {
    throw new Error(
      `RDB snapshot over the connection to ${redactUrl(url)} failed: ${(err as Error).message}`,
    );
  } finally {
    socket.destroy();
  }
}

async function connect(url: URL): Promise<net.Socket> {
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1") || "127.0.0.1";
  const port = Number(url.port || 6379);
  const socket =
    url.protocol === "rediss:" ? tls.connect({ host, port, servername: host }) : net.connect({ host, port });
  await once(socket, url.protocol === "rediss:" ? "secureConnect" : "connect");
  return socket;
}

function encode(args: string[]): string {
  return `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`;
}

async function command(socket: net.Socket, reader: SocketReader, args: string[]): Promise<void> {
  socket.write(encode(args));
  const line = await reader.line();
  if (line.startsWith("-")) throw new Error(`${args[0]} refused: ${line.slice(1)}`);
}

/** Buffered reads from a socket: lines, and payloads copied to a stream without holding them whole. */
class SocketReader {
  private buffered = Buffer.alloc(0);
  private readonly chunks: AsyncIterator<Buffer>;

  constructor(socket: net.Socket) {
    this.chunks = (socket as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  }

  private async more(): Promise<void> {
    const next = await this.chunks.next();
    if (next.done) throw new Error("Redis closed the connection");
    this.buffered = Buffer.concat([this.buffered, next.value]);
  }

  async line(): Promise<string> {
    for (;;) {
      const end = this.buffered.indexOf("\r\n");
      if (end >= 0) {
        const text = this.buffered.subarray(0, end).toString("latin1");
        this.buffered = this.buffered.subarray(end + 2);
        return text;
      }
      await this.more();
    }
  }

  /** The payload header, skipping the keep-alive newlines Redis sends while it prepares the snapshot. */
  async bulkHeader(): Promise<string> {
    for (;;) {
      while (this.buffered.length > 0 && this.buffered[0] === 0x0a) this.buffered = this.buffered.subarray(1);
      if (this.buffered.length > 0) return this.line();
      await this.more();
    }
  }

  async copyExactly(length: number, out: NodeJS.WritableStream): Promise<RdbStreamResult> {
    if (!Number.isInteger(length) || length < 0) throw new Error(`bad snapshot length ${length}`);
    let left = length;
    while (left > 0) {
      if (this.buffered.length === 0) await this.more();
      const take = this.buffered.subarray(0, Math.min(left, this.buffered.length));
      this.buffered = this.buffered.subarray(take.length);
      left -= take.length;
      await write(out, take);
    }
    return { bytes: length, transfer: "disk" };
  }

  /** Copies until `mark` ends the stream; holds back the last bytes that may be the start of it. */
  async copyUntilMark(mark: Buffer, out: NodeJS.WritableStream): Promise<RdbStreamResult> {
    if (mark.length !== EOF_MARK_LENGTH) throw new Error("bad EOF mark in the SYNC answer");
    let bytes = 0;
    for (;;) {
      if (this.buffered.length >= mark.length) {
        const tail = this.buffered.subarray(this.buffered.length - mark.length);
        if (tail.equals(mark)) {
          const data = this.buffered.subarray(0, this.buffered.length - mark.length);
          await write(out, data);
          return { bytes: bytes + data.length, transfer: "diskless" };
        }
        const flush = this.buffered.subarray(0, this.buffered.length - mark.length);
        await write(out, flush);
        bytes += flush.length;
        this.buffered = this.buffered.subarray(flush.length);
      }
      await this.more();
    }
  }
}

async function write(out: NodeJS.WritableStream, data: Buffer): Promise<void> {
  if (data.length === 0) return;
  if (!out.write(data)) await once(out as unknown as NodeJS.EventEmitter, "drain");
}
