/**
 * What the Redis log says about the server's last start. Redis reports a truncated AOF that it loaded
 * anyway (`aof-load-truncated yes`) only in its log, not in INFO, so reading the log is the only way
 * to tell the operator that the writes in the cut tail were lost from Redis.
 */
import { open } from "node:fs/promises";
import path from "node:path";

/** How much of the end of the log is read (a start's lines are a few KiB; a busy log can be large). */
const TAIL_BYTES = 1024 * 1024;

const START_MARKER = "Redis is starting";

export type LastStart =
  | { readable: false; reason: string }
  | {
      readable: true;
      file: string;
      /** The start was found in the tail of the log. */
      found: boolean;
      /** The AOF was cut short and loaded anyway: the log line says where. */
      truncatedAof: string | undefined;
      /** Redis created a new, empty AOF at start: there was none (a new or lost data directory). */
      createdEmptyAof: boolean;
      /** Redis loaded its data from the AOF (true) or an RDB file (false); undefined: neither line seen. */
      loadedFrom: "aof" | "rdb" | undefined;
    };

/**
 * Reads the tail of `logfile` (CONFIG GET logfile) and describes the last start found in it. A relative
 * logfile is relative to `dir`: Redis changes into its data directory while reading its configuration
 * and opens the log file afterwards. `pid` (INFO process_id) must be the pid that start logged: the
 * same path on this machine may be another Redis's log (a remote server's path read here).
 */
export async function readLastStart(
  logfile: string | undefined,
  dir?: string,
  pid?: string,
): Promise<LastStart> {
  if (logfile === undefined) return { readable: false, reason: "CONFIG GET logfile is not available" };
  if (logfile === "") return { readable: false, reason: "Redis logs to stdout (logfile is empty)" };
  if (!path.isAbsolute(logfile)) {
    if (!dir) return { readable: false, reason: `logfile "${logfile}" is relative and dir is unknown` };
    logfile = path.join(dir, logfile);
  }
  let text: string;
  try {
    text = await readTail(logfile, TAIL_BYTES);
  } catch (err) {
    return {
      readable: false,
      reason: `${logfile} is not readable here (${(err as NodeJS.ErrnoException).code})`,
    };
  }
  const start = text.lastIndexOf(START_MARKER);
  const since = start < 0 ? "" : text.slice(start);
  const loggedPid = /pid=(\d+), just started/.exec(since)?.[1];
  if (pid && loggedPid && loggedPid !== pid) {
    return {
      readable: false,
      reason: `${logfile} here was last started by pid ${loggedPid}, not this Redis (pid ${pid}): another server's log`,
    };
  }
  const truncated = /# (.*loaded anyway because aof-load-truncated is enabled.*)/.exec(since)?.[1];
  return {
    readable: true,
    file: logfile,
    found: start >= 0,
    truncatedAof: truncated,
    createdEmptyAof: /Creating AOF base file .* on server start/.test(since),
    loadedFrom: /DB loaded from append only file/.test(since)
      ? "aof"
      : /DB loaded from disk/.test(since)
        ? "rdb"
        : undefined,
  };
}

async function readTail(file: string, bytes: number): Promise<string> {
  const handle = await open(file, "r");
  try {
    const { size } = await handle.stat();
    const length = Math.min(size, bytes);
    const buffer = Buffer.alloc(length);
    await handle.read(buffer, 0, length, size - length);
    return buffer.toString("utf8");
  } finally {
    await handle.close();
  }
}
