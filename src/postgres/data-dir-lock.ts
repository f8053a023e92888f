/**
 * One process at a time on an embedded store: PGlite has no server to arbitrate, and two processes
 * writing one data directory would corrupt it. The lock is a file holding the owner's pid, created
 * exclusively; a lock whose process is gone (killed with -9) is taken over.
 */
import { closeSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import path from "node:path";
import { ConfigError } from "../core/errors.js";

const LOCK_FILE = "oculus.lock";

export function lockDataDir(dataDir: string): () => void {
  const file = path.join(dataDir, LOCK_FILE);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, "wx");
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return () => rmSync(file, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const owner = Number(readFileSync(file, "utf8").trim());
      if (owner === process.pid || isAlive(owner)) {
        throw new ConfigError(
          `the embedded store at ${dataDir} is in use by process ${owner}; one process at a time can ` +
            "open it (set DATABASE_URL to share a queue between processes)",
        );
      }
      rmSync(file, { force: true }); // its owner is gone: take it over
    }
  }
  throw new ConfigError(`could not lock the embedded store at ${dataDir}`);
}

function isAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
