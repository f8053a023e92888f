/**
 * A worker handler that runs a shell command per build (`oculus worker --command "python3 build.py"`):
 * progress lines become the build's progress, output becomes its log tail, and the exit decides the
 * outcome. The command runs in a child process, so the worker's heartbeats never wait on it.
 */
import type { ProgressInput } from "../core/build.js";
import { buildBaseEnv, checkPassedNames } from "./build-env.js";
import { DEFAULT_GRACE_MS, runBuildCommand } from "./command-runner.js";
import type { BuildContext, WorkerHandler } from "./worker.js";

export interface CommandHandlerOptions {
  /** Time between SIGTERM and SIGKILL when a build is stopped or the worker shuts down. Default 10 s. */
  graceMs?: number;
  cwd?: string;
  /**
   * Names of process variables the builds get besides the allowlist (build-env.ts), e.g. a license
   * key. The queue's secrets (OCULUS_TOKENS, DATABASE_URL, REDIS_URL, ...) are refused (ConfigError).
   */
  passEnv?: readonly string[];
  /**
   * The builds' base environment, used as given (the caller has decided what is in it; passEnv is
   * then not used). Default: the allowlist and passEnv, read from process.env.
   */
  env?: NodeJS.ProcessEnv;
}

export function commandHandler(command: string, options: CommandHandlerOptions = {}): WorkerHandler {
  const passEnv = checkPassedNames(options.passEnv ?? [], "passEnv");
  return async (ctx) => {
    const progress = coalescedProgress(ctx);
    const outcome = await runBuildCommand({
      command,
      build: ctx.build,
      signal: ctx.signal,
      graceMs: options.graceMs ?? DEFAULT_GRACE_MS,
      cwd: options.cwd,
      // Read at each build: a variable the operator changes in the worker's environment is not cached.
      env: options.env ?? buildBaseEnv(process.env, passEnv),
      onProgress: progress.report,
      onLog: (line, stream) => ctx.log(line, stream),
    });
    await progress.settled();
    if (outcome.outcome === "completed") return outcome.result;
    if (outcome.outcome === "failed") throw new Error(outcome.error);
    throw new Error(
      `stopped: the command was ended by ${outcome.terminatedBy ?? "a stop before it started"}`,
    );
  };
}

/**
 * Progress writes one at a time, and only the latest: a command printing progress a thousand times a
 * second costs a few writes, and the stored value is always its last report.
 */
function coalescedProgress(ctx: BuildContext) {
  let pending: ProgressInput | undefined;
  let writing: Promise<void> | undefined;
  const drain = async () => {
    while (pending) {
      const next = pending;
      pending = undefined;
      await ctx.progress(next).catch(() => undefined); // a stale lease aborts ctx.signal: the runner stops
    }
    writing = undefined;
  };
  return {
    report(update: ProgressInput) {
      pending = update;
      writing ??= drain();
    },
    async settled() {
      await writing;
    },
  };
}
