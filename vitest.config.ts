import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/helpers/global-setup.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Files run in parallel processes; each uses its own PostgreSQL schema and private redis-server.
    fileParallelism: true,
    // Each of the three processes imports the sources once and runs its files one after another in
    // that module graph (isolated, every file imported them again: 163 s of the suite's CPU against
    // 19 s, and 667 s against 593 s in all on a clean clone). So a file must undo what it changes in the process (process.env, process
    // listeners) and keep its state in its own schema, Redis and objects, as every file does.
    isolate: false,
    // Three on a 2-core machine: most tests wait (leases, timeouts, ticks) far more than they compute.
    maxWorkers: 3,
  },
});
