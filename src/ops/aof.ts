/**
 * Redis 7 multi-part AOF, as far as a backup needs it: the manifest (which files make up the AOF) and
 * a scanner that finds where the last complete command of an incremental file ends. A copy of the
 * file Redis is appending to can end in the middle of a command (or of a MULTI ... EXEC block, which
 * is how Redis 7 logs a Lua script's writes); the backup keeps only the complete part, so that it
 * passes `redis-check-aof` and loads without `aof-load-truncated`.
 */

/** `b` base (an RDB or AOF snapshot), `i` incremental (appended commands), `h` history (to be deleted). */
export type AofFileType = "b" | "h" | "i";

export interface ManifestEntry {
  file: string;
  seq: number;
  type: AofFileType;
}

/**
 * Parses a manifest (`file appendonly.aof.1.base.rdb seq 1 type b` per line). Redis quotes a file
 * name only when it holds unusual characters; quoted names are unquoted here.
 */
export function parseManifest(text: string): ManifestEntry[] {
  const entries: ManifestEntry[] = [];
  for (const [n, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const fields = line.match(/"(?:[^"\\]|\\.)*"|\S+/g) ?? [];
    const record = new Map<string, string>();
    for (let i = 0; i + 1 < fields.length; i += 2) {
      record.set(fields[i] as string, unquote(fields[i + 1] as string));
    }
    const file = record.get("file");
    const seq = Number(record.get("seq"));
    const type = record.get("type");
    if (!file || !Number.isInteger(seq) || (type !== "b" && type !== "h" && type !== "i")) {
      throw new Error(`AOF manifest line ${n + 1} is not "file NAME seq N type b|h|i": ${line}`);
    }
    if (file.includes("/")) throw new Error(`AOF manifest line ${n + 1} names a path, not a file: ${file}`);
    entries.push({ file, seq, type });
  }
  return entries;
}

function unquote(value: string): string {
  return value.startsWith('"') && value.endsWith('"') ? value.slice(1, -1).replace(/\\(.)/g, "$1") : value;
}

/** The files Redis loads (base and incremental), in load order; history files are left out. */
export function filesToLoad(entries: ManifestEntry[]): ManifestEntry[] {
  const base = entries.filter((e) => e.type === "b");
  const incr = entries.filter((e) => e.type === "i").sort((a, b) => a.seq - b.seq);
  return [...base, ...incr];
}

type State = "start" | "bulkStart" | "line" | "bulkBody" | "bulkEnd";

const MAX_LINE = 128;
const CR = 0x0d;
const LF = 0x0a;

/**
 * Feeds on an AOF's bytes, chunk by chunk, and tracks the end of the last complete command that is not
 * inside an unfinished MULTI block. Bulk payloads are skipped without being buffered, so any size of
 * file is scanned in constant memory.
 */
export class AofScanner {
  /** Bytes seen so far. */
  private offset = 0;
  /** End of the last complete command outside MULTI (a safe place to cut). */
  private safe = 0;
  private state: State = "start";
  private line: number[] = [];
  private lineKind: "command" | "bulk" | "annotation" = "command";
  private argsLeft = 0;
  private bodyLeft = 0;
  private bulkEndLeft = 0;
  /** The first bytes of the command's name (enough to recognise MULTI and EXEC). */
  private name: number[] = [];
  private readingName = false;
  private inMulti = false;
  private malformed: { at: number; reason: string } | undefined;

  push(chunk: Buffer): void {
    let i = 0;
    while (i < chunk.length && !this.malformed) {
      if (this.state === "bulkBody") {
        i += this.skipBody(chunk, i);
        continue;
      }
      this.step(chunk[i] as number);
      this.offset += 1;
      i += 1;
    }
  }

  /** Where a copy may be cut so that it ends on a complete command; `malformed` when it is damaged. */
  result(): { completeLength: number; totalLength: number; malformed?: { at: number; reason: string } } {
    return {
      completeLength: this.safe,
      totalLength: this.offset,
      ...(this.malformed ? { malformed: this.malformed } : {}),
    };
  }

  private skipBody(chunk: Buffer, i: number): number {
    const take = Math.min(this.bodyLeft, chunk.length - i);
    if (this.readingName) {
      for (let k = 0; k < take && this.name.length < 8; k++) this.name.push(chunk[i + k] as number);
    }
    this.bodyLeft -= take;
    this.offset += take;
    if (this.bodyLeft === 0) this.expectBulkEnd();
    return take;
  }

  private fail(reason: string): void {
    this.malformed = { at: this.offset, reason };
  }

  private step(byte: number): void {
    switch (this.state) {
      case "start":
        if (byte === 0x2a /* * */) this.beginLine("command");
        else if (byte === 0x23 /* # */) this.beginLine("annotation");
        else this.fail(`expected '*' at the start of a command, got byte ${byte}`);
        return;
      case "bulkStart":
        if (byte === 0x24 /* $ */) this.beginLine("bulk");
        else this.fail(`expected '$' at the start of an argument, got byte ${byte}`);
        return;
      case "line":
        this.lineByte(byte);
        return;
      case "bulkEnd":
        if (byte !== (this.bulkEndLeft === 2 ? CR : LF)) {
          this.fail("expected \\r\\n after an argument");
          return;
        }
        this.bulkEndLeft -= 1;
        if (this.bulkEndLeft === 0) this.argDone();
        return;
      case "bulkBody":
        return;
    }
  }

  private beginLine(kind: "command" | "bulk" | "annotation"): void {
    this.state = "line";
    this.lineKind = kind;
    this.line = [];
  }

  private lineByte(byte: number): void {
    if (byte !== LF) {
      if (this.line.length >= MAX_LINE) {
        this.fail("header line too long");
        return;
      }
      this.line.push(byte);
      return;
    }
    if (this.line[this.line.length - 1] !== CR) {
      this.fail("header line does not end with \\r\\n");
      return;
    }
    const text = Buffer.from(this.line.slice(0, -1)).toString("latin1");
    if (this.lineKind === "annotation") {
      this.state = "start";
      this.commandDone(undefined);
      return;
    }
    const n = /^\d+$/.test(text) ? Number(text) : Number.NaN;
    if (this.lineKind === "command") {
      if (!(n >= 1)) {
        this.fail(`bad argument count "${text}"`);
        return;
      }
      this.argsLeft = n;
      this.name = [];
      this.readingName = true;
      this.state = "bulkStart";
      return;
    }
    if (!(n >= 0)) {
      this.fail(`bad argument length "${text}"`);
      return;
    }
    this.bodyLeft = n;
    if (n === 0) this.expectBulkEnd();
    else this.state = "bulkBody";
  }

  private expectBulkEnd(): void {
    this.state = "bulkEnd";
    this.bulkEndLeft = 2;
  }

  private argDone(): void {
    this.readingName = false;
    this.argsLeft -= 1;
    if (this.argsLeft > 0) {
      this.state = "bulkStart";
      return;
    }
    this.state = "start";
    this.commandDone(Buffer.from(this.name).toString("latin1").toLowerCase());
  }

  /** Called on the command's last byte (offset not yet advanced past it). */
  private commandDone(name: string | undefined): void {
    if (name === "multi") this.inMulti = true;
    else if (name === "exec") this.inMulti = false;
    if (!this.inMulti) this.safe = this.offset + 1;
  }
}
