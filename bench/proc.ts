/** A process's CPU time and memory from /proc (Linux), for the benchmarks that measure a child. */
import { readFileSync } from "node:fs";

/** USER_HZ: the unit of the CPU times in /proc/PID/stat (100 on Linux; `getconf CLK_TCK`). */
const CLOCK_TICKS_PER_SEC = 100;

/** User + system CPU time of the process (all its threads) so far, in ms. */
export function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // The fields after the command name (which may hold spaces): state, ppid, ... utime (14), stime (15).
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS_PER_SEC;
}

/** Resident memory of the process, in bytes. */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN) * 1024;
}
