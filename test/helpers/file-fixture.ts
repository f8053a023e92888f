/**
 * The setup most fault-test files share: one private redis-server for the file, and a list of
 * cleanups run in reverse order after the file (each one's failure ignored, so every one runs).
 */
import { afterAll, beforeAll } from "vitest";
import { RedisServer, type RedisServerOptions } from "./redis-server.js";

export interface FileFixture {
  /** The file's private redis-server (started before the file's tests). */
  readonly server: RedisServer;
  /** Runs `cleanup` after the file, before the cleanups deferred earlier. */
  defer(cleanup: () => Promise<unknown>): void;
}

export function useFileFixture(
  options: RedisServerOptions = {},
  beforeCleanups?: () => Promise<unknown>,
): FileFixture {
  let server: RedisServer | undefined;
  const cleanups: (() => Promise<unknown>)[] = [];
  beforeAll(async () => {
    server = await RedisServer.start(options);
    cleanups.push(() => (server as RedisServer).destroy());
  });
  afterAll(async () => {
    await beforeCleanups?.();
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  });
  return {
    get server() {
      if (!server)
        throw new Error("the file's redis-server is not started yet (use it inside tests or hooks)");
      return server;
    },
    defer: (cleanup) => {
      cleanups.push(cleanup);
    },
  };
}
