/**
 * A process that only runs the reaper (as every `oculus up` does), for tests that block the test
 * process's event loop on purpose. argv: schema, prefix, heartbeatMs, deadAfterMs. Prints "ready".
 */
import { BuildQueue } from "../../src/index.js";
import { TEST_DATABASE_URL } from "./postgres.js";

const [schema, prefix, heartbeatMs, deadAfterMs] = process.argv.slice(2);
const queue = await BuildQueue.open({
  databaseUrl: TEST_DATABASE_URL,
  schema,
  prefix,
  health: { heartbeatMs: Number(heartbeatMs), deadAfterMs: Number(deadAfterMs) },
});
queue.startReaper(100);
process.stdout.write("ready\n");
process.once("SIGTERM", async () => {
  await queue.close();
  process.exit(0);
});
