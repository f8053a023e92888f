/**
 * Benchmark child processes: a bench script run by the same Node.js, from dist/ (the .js next to
 * this file) or, when the benchmark itself runs from source through tsx, from the .ts source.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

/** Spawns `bench/<name>` with `args`, stdio piped. `withoutRedisUrl`: the child decides its own mode. */
export function spawnBenchScript(
  name: string,
  args: string[],
  options: { withoutRedisUrl?: boolean } = {},
): ChildProcess {
  const fromSource = import.meta.url.endsWith(".ts");
  const script = fileURLToPath(new URL(`./${name}${fromSource ? ".ts" : ".js"}`, import.meta.url));
  const nodeArgs = fromSource ? ["--import", "tsx", script] : [script];
  const env = { ...process.env };
  if (options.withoutRedisUrl) delete env.REDIS_URL;
  return spawn(process.execPath, [...nodeArgs, ...args], { stdio: ["pipe", "pipe", "pipe"], env });
}
