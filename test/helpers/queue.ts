import { BuildQueue, type BuildQueueOptions } from "../../src/index.js";
import { dropSchema, TEST_DATABASE_URL, uniqueSchema } from "./postgres.js";

let prefixCounter = 0;

/** A queue on the test PostgreSQL with its own schema and Redis key prefix; `cleanup` drops both. */
export async function openTestQueue(
  label: string,
  options: BuildQueueOptions = {},
): Promise<{ queue: BuildQueue; schema: string; prefix: string; cleanup: () => Promise<void> }> {
  const schema = options.schema ?? uniqueSchema(label);
  prefixCounter += 1;
  const prefix = options.prefix ?? `test${process.pid}x${prefixCounter}`;
  const queue = await BuildQueue.open({
    databaseUrl: TEST_DATABASE_URL,
    reconcileIntervalMs: 500,
    backoff: { baseDelayMs: 50, maxDelayMs: 200 },
    ...options,
    schema,
    prefix,
  });
  return {
    queue,
    schema,
    prefix,
    cleanup: async () => {
      await queue.close();
      if (!options.schema) await dropSchema(schema);
    },
  };
}

/** Polls until `check` returns a truthy value (or throws after `timeoutMs`). */
export async function eventually<T>(
  check: () => Promise<T | undefined | false>,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline)
      throw new Error(`condition not met in ${timeoutMs} ms: ${String(lastError ?? "")}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
