/**
 * A private redis-server with a chosen persistence (no AOF, AOF everysec, AOF always; never RDB
 * snapshots, so that they do not disturb the figures), in its own temporary directory, that can be
 * killed with SIGKILL and restarted on the same files: for bench/persistence.ts.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { RedisProcess } from "../src/ops/scratch-redis.js";

export type Persistence = "none" | "everysec" | "always";

export class PersistentRedis extends RedisProcess {
  static async start(persistence: Persistence): Promise<PersistentRedis> {
    const dir = mkdtempSync(path.join(tmpdir(), "oculus-bench-aof-"));
    const args =
      persistence === "none" ? ["--appendonly", "no"] : ["--appendonly", "yes", "--appendfsync", persistence];
    return PersistentRedis.startIn(dir, { args, timeoutMs: 30_000, killOnExit: true });
  }
}
