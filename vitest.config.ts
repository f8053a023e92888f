import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/helpers/global-setup.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Files run in parallel processes; each uses its own PostgreSQL schema and private redis-server.
    fileParallelism: true,
    // Three on a 2-core machine: most tests wait (leases, timeouts, ticks) far more than they compute.
    maxWorkers: 3,
  },
});
