/**
 * File work for backups: copies that read a file once through an open descriptor (so a file Redis
 * replaces by rename meanwhile is still read whole), SHA-256 checksums in `sha256sum` format (so that
 * `sha256sum -c SHA256SUMS` checks a backup without us), and the backup directory names.
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, readFile, stat, writeFile } from "node:fs/promises";
import path from "node:path";

export const CHECKSUMS_FILE = "SHA256SUMS";
export const BACKUP_JSON = "backup.json";

/**
 * Copies at most `limit` bytes of `from` (default: its size when opened) to `to`, handing each chunk
 * to `onChunk`. Returns the bytes copied.
 */
export async function copyFile(
  from: string,
  to: string,
  options: { limit?: number; onChunk?: (chunk: Buffer) => void } = {},
): Promise<number> {
  const source = await open(from, "r");
  const target = await open(to, "wx");
  try {
    const { size } = await source.stat();
    const limit = Math.min(size, options.limit ?? size);
    const buffer = Buffer.alloc(1024 * 1024);
    let copied = 0;
    while (copied < limit) {
      const { bytesRead } = await source.read(buffer, 0, Math.min(buffer.length, limit - copied), copied);
      if (bytesRead === 0) break;
      const chunk = buffer.subarray(0, bytesRead);
      options.onChunk?.(chunk);
      await target.write(chunk);
      copied += bytesRead;
    }
    await target.sync();
    return copied;
  } finally {
    await source.close();
    await target.close();
  }
}

export async function sha256File(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

export interface FileSum {
  /** Path relative to the backup directory, with forward slashes. */
  path: string;
  sha256: string;
  bytes: number;
}

/** Computes the checksums of `files` (relative to `dir`) and writes SHA256SUMS. */
export async function writeChecksums(dir: string, files: string[]): Promise<FileSum[]> {
  const sums: FileSum[] = [];
  for (const file of files) {
    const full = path.join(dir, file);
    const { size } = await stat(full);
    sums.push({ path: file, sha256: await sha256File(full), bytes: size });
  }
  await writeFile(path.join(dir, CHECKSUMS_FILE), sums.map((s) => `${s.sha256}  ${s.path}\n`).join(""));
  return sums;
}

/** Parses SHA256SUMS (`<hex>  <path>` or `<hex> *<path>` per line). */
export async function readChecksums(dir: string): Promise<{ path: string; sha256: string }[]> {
  const text = await readFile(path.join(dir, CHECKSUMS_FILE), "utf8");
  const out: { path: string; sha256: string }[] = [];
  for (const [n, line] of text.split("\n").entries()) {
    if (line.trim() === "") continue;
    const match = /^([0-9a-f]{64}) [ *](.+)$/.exec(line);
    if (!match) throw new Error(`${CHECKSUMS_FILE} line ${n + 1} is not "<sha256>  <file>": ${line}`);
    const file = match[2] as string;
    if (path.isAbsolute(file) || file.split("/").includes("..")) {
      throw new Error(`${CHECKSUMS_FILE} line ${n + 1} names a file outside the backup: ${file}`);
    }
    out.push({ sha256: match[1] as string, path: file });
  }
  return out;
}

const NAME = /^redis-(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z(?:-\d+)?$/;

/** `redis-20261125T221800Z` for that instant (UTC, to the second). */
export function backupDirName(at: Date): string {
  return `redis-${at
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d{3}/, "")}`;
}

/** The instant a backup directory's name gives; undefined for a name that is not a backup's. */
export function backupDirDate(name: string): Date | undefined {
  const m = NAME.exec(name);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s] = m.map(Number) as number[];
  return new Date(Date.UTC(y as number, (mo as number) - 1, d, h, mi, s));
}
