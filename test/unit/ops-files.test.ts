/**
 * The pure parts of the backup: where a copied AOF may be cut (every cut point of a real-looking AOF,
 * MULTI/EXEC blocks, annotations, damage), the manifest, backup directory names, and the `save`
 * setting's longest interval.
 */
import { describe, expect, it } from "vitest";
import { AofScanner, filesToLoad, parseManifest } from "../../src/ops/aof.js";
import { backupDirDate, backupDirName } from "../../src/ops/backup-files.js";
import { longestSaveInterval } from "../../src/ops/persistence-checks.js";

const resp = (...args: string[]) =>
  `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`;

/** An AOF as Redis 7 writes it for our scripts: SELECT, plain commands, MULTI/EXEC blocks, an annotation. */
const commands = [
  resp("SELECT", "0"),
  resp("ZADD", "oculus:build_queue", "1.5", "id-1"),
  "#TS:1795645724\r\n",
  resp("MULTI"),
  resp("ZADD", "oculus:build_queue", "2", "id-2"),
  resp("PUBLISH", "oculus:wake", "x\r\ny"),
  resp("EXEC"),
  resp("SET", "oculus:index_marker", ""),
];
const aof = Buffer.from(commands.join(""));

/** Offsets where a cut leaves only whole commands outside MULTI. */
function safeCuts(): number[] {
  const cuts = [0];
  let offset = 0;
  let inMulti = false;
  for (const c of commands) {
    offset += Buffer.byteLength(c);
    if (c === resp("MULTI")) inMulti = true;
    if (c === resp("EXEC")) inMulti = false;
    if (!inMulti) cuts.push(offset);
  }
  return cuts;
}

function scan(bytes: Buffer, chunk: number) {
  const scanner = new AofScanner();
  for (let i = 0; i < bytes.length; i += chunk) scanner.push(bytes.subarray(i, i + chunk));
  return scanner.result();
}

describe("AofScanner", () => {
  it("finds the last whole command for a copy cut at any byte, in any chunking", () => {
    const cuts = safeCuts();
    for (let cut = 0; cut <= aof.length; cut++) {
      const expected = Math.max(...cuts.filter((c) => c <= cut));
      for (const chunk of [1, 3, 7, 4096]) {
        const result = scan(aof.subarray(0, cut), chunk);
        expect(result.malformed, `cut ${cut}`).toBeUndefined();
        expect(result.completeLength, `cut ${cut}, chunk ${chunk}`).toBe(expected);
      }
    }
  });

  it("does not cut inside a MULTI block that is complete up to its EXEC", () => {
    const untilExec = commands.slice(0, 6).join("");
    const result = scan(Buffer.from(untilExec), 5);
    expect(result.completeLength).toBe(Buffer.byteLength(commands.slice(0, 3).join("")));
  });

  it("reports damage (not a cut) with its offset", () => {
    const damaged = Buffer.from(aof);
    damaged[Buffer.byteLength(commands[0] as string)] = "?".charCodeAt(0);
    const result = scan(damaged, 64);
    expect(result.malformed?.at).toBe(Buffer.byteLength(commands[0] as string));
    expect(result.malformed?.reason).toMatch(/expected '\*'/);
  });
});

describe("AOF manifest", () => {
  it("parses Redis 7's manifest and lists the files to load, base first, history left out", () => {
    const text =
      "file appendonly.aof.2.base.rdb seq 2 type h\n" +
      "file appendonly.aof.3.base.rdb seq 3 type b\n" +
      "file appendonly.aof.4.incr.aof seq 4 type i\n" +
      'file "appendonly.aof.3.incr.aof" seq 3 type i\n';
    expect(filesToLoad(parseManifest(text)).map((e) => e.file)).toEqual([
      "appendonly.aof.3.base.rdb",
      "appendonly.aof.3.incr.aof",
      "appendonly.aof.4.incr.aof",
    ]);
  });

  it("refuses a line that is not a manifest line, or a path", () => {
    expect(() => parseManifest("appendonly.aof\n")).toThrow(/line 1 is not "file NAME seq N type/);
    expect(() => parseManifest("file ../x seq 1 type b\n")).toThrow(/names a path/);
  });
});

describe("backup directory names", () => {
  it("round-trips the UTC timestamp and ignores other names", () => {
    const at = new Date("2026-11-25T22:18:07.123Z");
    expect(backupDirName(at)).toBe("redis-20261125T221807Z");
    expect(backupDirDate("redis-20261125T221807Z")?.toISOString()).toBe("2026-11-25T22:18:07.000Z");
    expect(backupDirDate("redis-20261125T221807Z-2")?.toISOString()).toBe("2026-11-25T22:18:07.000Z");
    expect(backupDirDate("notes")).toBeUndefined();
    expect(backupDirDate(".redis-20261125T221807Z.partial")).toBeUndefined();
  });
});

describe("longestSaveInterval", () => {
  it("takes the seconds of each save point", () => {
    expect(longestSaveInterval("3600 1 300 100 60 10000")).toBe(3600);
    expect(longestSaveInterval("")).toBeUndefined();
    expect(longestSaveInterval(undefined)).toBeUndefined();
  });
});
