/**
 * The three ways the queue runs, for the behaviour suite that must hold on each: Redis fast path over
 * PostgreSQL, PostgreSQL only, and the embedded PGlite store.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { BuildQueue, BuildQueueOptions } from "../../src/index.js";
import { openTestQueue } from "./queue.js";
import { RedisServer } from "./redis-server.js";

export interface Backend {
  name: "redis" | "postgres" | "pglite";
  expectedMode: "redis" | "postgres";
  open(
    label: string,
    options?: BuildQueueOptions,
  ): Promise<{ queue: BuildQueue; cleanup: () => Promise<void> }>;
  teardown(): Promise<void>;
}

export function backends(): Backend[] {
  let redis: RedisServer | undefined;
  const dirs: string[] = [];
  return [
    {
      name: "redis",
      expectedMode: "redis",
      async open(label, options = {}) {
        redis ??= await RedisServer.start({ appendonly: false });
        return openTestQueue(label, { redisUrl: redis.url, ...options });
      },
      async teardown() {
        await redis?.destroy();
      },
    },
    {
      name: "postgres",
      expectedMode: "postgres",
      open: (label, options = {}) => openTestQueue(label, options),
      async teardown() {},
    },
    {
      name: "pglite",
      expectedMode: "postgres",
      async open(label, options = {}) {
        const dataDir = mkdtempSync(path.join(tmpdir(), "oculus-pglite-"));
        dirs.push(dataDir);
        const { BuildQueue } = await import("../../src/index.js");
        const queue = await BuildQueue.open({
          dataDir,
          schema: "oculus",
          backoff: { baseDelayMs: 50, maxDelayMs: 200 },
          ...options,
        });
        void label;
        return { queue, cleanup: () => queue.close() };
      },
      async teardown() {
        for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
      },
    },
  ];
}
